crystalvision pipeline run pipelines/paper.yaml --set render.image_size=64 --set train.epochs=10 --set train.patience=4
