# Learning curve on the Li-Mn-Ni-O space, reduced budget (2026-12-02, 2-core Xeon CPU, 24 GiB; one background run,
# niced, sharing the cores with the test suite for part of the time). The full-size point was stopped before it
# ran (about 37 more minutes); the record holds the two finished sizes, rebuilt from their k-fold runs:
crystalvision curve pipelines/space-curve.yaml --set render.views_per_structure=4 --set train.epochs=8 \
    --set train.patience=3 --set 'learning_curve.sizes=[62, 250]'
python docs/study/curve_record.py pipelines/space-curve.yaml --set render.views_per_structure=4 \
    --set train.epochs=8 --set train.patience=3 --set 'learning_curve.sizes=[62, 250]' \
    --run 62=0bf374260a994136afaf2da4859c2516 --run 250=5319d0619793472a8fcb4b105557fc15 --out docs/study/records/space-curve
python docs/study/space_table.py docs/study/records/space-curve/learning_curve.json --readme docs/study.md
