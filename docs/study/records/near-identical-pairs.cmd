# 2026-12-07, 2-core x86-64 VM shared with other test runs (load average 5-15), 6.4 min (the pairwise matching)
python docs/study/baseline_record.py pairs pipelines/space-grouped.yaml
# summarised, with the pairs whose crystal systems differ, in platform/crystalvision/data/snapshots/lmno-space/labels.md
