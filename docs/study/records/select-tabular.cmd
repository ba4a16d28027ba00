# 2026-12-07 05:29-05:34 UTC, 2-core x86-64 VM shared with other test runs (load average 15-18): 5.1 min
python docs/study/baseline_record.py select pipelines/space-grouped.yaml
# the pick (rf-half) is pinned as crystalvision.evaluate.tabular.RECIPE; a first run of this command, with gradient
# boosting as a fourth candidate, was stopped after 30 minutes inside that candidate (see "not a candidate")
