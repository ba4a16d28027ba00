crystalvision pipeline run pipelines/paper.yaml --set render.image_size=96 --set train.epochs=12 --set train.patience=4
