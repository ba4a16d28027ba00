crystalvision pipeline run pipelines/paper-uniform.yaml --set render.image_size=64 --set train.epochs=8 --set train.patience=4
