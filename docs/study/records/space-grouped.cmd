# 2026-12-02, 2 CPUs, wall time 59.6 min (python -m bench.run_all --only space_study_bench)
crystalvision pipeline run pipelines/space-grouped.yaml --json
