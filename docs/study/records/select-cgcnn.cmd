# 2026-12-07 05:57-07:03 UTC, 2-core x86-64 VM shared with other test runs (load average 4-7): 65 min (15 trainings)
python docs/study/baseline_record.py select-graph pipelines/space-grouped.yaml
# written to docs/study/select/cgcnn.json by the script of that time and moved here (select/ holds the image
# recipe's pipeline records); the pick (per-head early stopping, lr 1e-3) is the default of GraphConfig. A first run
# of the reference size with the summed-loss stopping (joint-lr3e-3) on the test folds was stopped after the study's
# folds: its regressions scored below the training mean, which is what made this selection run
