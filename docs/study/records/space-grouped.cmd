# 2026-12-07, 2-core x86-64 VM (23 GiB), commit 3ff762a (python -m bench.run_all --only space_study_bench)
# Wall time 102.7 min, not a speed measurement: the cores were shared with other work for most of
# the run (fold 0: 37 min; folds 1-4: 8-16 min each), and a first start, 12 minutes in, was stopped and started again.
# Training and every baseline ran on the record's own folds; the trees and CGCNN (3 x 64, early stopping) are the
# pipeline's own, in every fold.
crystalvision pipeline run pipelines/space-grouped.yaml --json
# tables in docs/study.md:
python docs/study/space_table.py docs/study/records/space-grouped.json --readme docs/study.md
# README's honest-number bullet and headline table (with paper-grouped.json):
python docs/study/readme_headline.py --readme README.md
