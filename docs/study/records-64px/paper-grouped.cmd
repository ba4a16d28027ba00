crystalvision pipeline run pipelines/paper-grouped.yaml --set render.image_size=64 --set train.epochs=6 --set train.patience=3
