# 2026-12-02, 2 CPUs, wall time 59.6 min (python -m bench.run_all --only space_study_bench)
crystalvision pipeline run pipelines/space-grouped.yaml --json
# model intervals (pooled_model_*_lo/_hi) added 2026-12-02 from the run's own evaluation/oof_predictions.parquet with oof.summarise (2,000 resamples, seed 0); no retraining
# 2026-12-07: tabular trees baseline and the baselines' balanced accuracy on the record's own folds; the image model's balanced accuracy and its differences from the trees need the run again (64 majority / 1-NN numbers reproduced (max difference 0)):
python docs/study/baseline_record.py annotate docs/study/records/space-grouped.json
