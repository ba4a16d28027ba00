# 2026-12-07, 2-core x86-64 VM: 14 s (reading the snapshot; the folds are instant). Deterministic: the same command
# makes the same file (tests/data/test_holdout.py makes it again and compares ids and sha256).
crystalvision holdout -c pipelines/space-grouped.yaml --fraction 0.15 --seed 0 --out docs/study/records/holdout.json
