# 2026-11-27, 2-core x86-64 VM without a GPU (MLflow run b77e52af059b45feaba9f8ba48e771e9, committed that day)
crystalvision pipeline run pipelines/paper-uniform.yaml --set render.image_size=96 --set train.epochs=10 --set train.patience=4
