# 2026-11-27, 2-core x86-64 VM without a GPU (MLflow run 17671d85d6bd466c9944b4e163a5f3bf, committed that day)
crystalvision pipeline run pipelines/paper-grouped.yaml --set render.image_size=96 --set train.epochs=8 --set train.patience=3 --set train.augment.enabled=true --set evaluate.tta=dihedral
# 2026-12-07: every <metric>_std is now the sample std over folds (ddof=1): the run wrote the population std (ddof=0), multiplied by sqrt(n / (n - 1)) with the n folds of each metric; no retraining:
python docs/study/sample_std.py docs/study/records/paper-grouped.json
# README's honest-number bullet and headline table (with space-grouped.json):
python docs/study/readme_headline.py --readme README.md
