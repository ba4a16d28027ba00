crystalvision pipeline run pipelines/paper-uniform.yaml --set render.image_size=96 --set train.epochs=10 --set train.patience=4
