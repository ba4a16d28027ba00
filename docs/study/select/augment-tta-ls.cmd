crystalvision pipeline run pipelines/paper-grouped.yaml --set render.image_size=64 --set train.epochs=6 --set train.patience=3 --set evaluate.saliency=false --set train.augment.enabled=true --set evaluate.tta=dihedral --set train.label_smoothing=0.1
# 2026-12-07: every <metric>_std is now the sample std over folds (ddof=1): the run wrote the population std (ddof=0), multiplied by sqrt(n / (n - 1)) with the n folds of each metric; no retraining:
python docs/study/sample_std.py docs/study/select/augment-tta-ls.json
