crystalvision pipeline run pipelines/paper-grouped.yaml --set render.image_size=96 --set train.epochs=8 --set train.patience=3 --set train.augment.enabled=true --set evaluate.tta=dihedral
