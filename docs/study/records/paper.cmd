# 2026-11-27, 2-core x86-64 VM without a GPU (MLflow run c401c6dec2f34010aa25fe8e4e2c7f8e, committed that day)
crystalvision pipeline run pipelines/paper.yaml --set render.image_size=96 --set train.epochs=12 --set train.patience=4
