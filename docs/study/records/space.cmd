# 2026-12-02, 2-core AMD EPYC VM (23 GiB), wall time 23.7 min, sharing the cores with the test suite for most of it; registered lmno-space-efficientnet-b0 v1 (champion)
crystalvision pipeline run pipelines/space.yaml --json
