# 2026-12-02, 2-core AMD EPYC (23 GiB), wall time 16.8 min; the radii comparison: 3 grouped folds, 4 views, other settings of space-grouped.yaml
crystalvision pipeline run pipelines/space-grouped.yaml --set render.radii=vesta --set split.folds=3 --set render.views_per_structure=4 --set evaluate.graph_baseline=false --json
# 2026-12-07: tabular trees baseline and the baselines' balanced accuracy on the record's own folds; the image model's balanced accuracy and its differences from the trees need the run again (64 majority / 1-NN numbers reproduced (max difference 0)):
python docs/study/baseline_record.py annotate docs/study/records/radii-vesta.json
