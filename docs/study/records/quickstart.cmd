# 2026-12-07 15:41-15:57 UTC, 2-core x86-64 VM (23 GiB) without a GPU, commit f195a47: the command README's first
# command, `make run`, runs (.venv/bin/crystalvision), with CRYSTALVISION_HOME a fresh folder (the render and the
# MLflow store started empty). 16.0 min wall time, not a timing: a study and other runs shared the cores (load
# average 6-264); stages 129 s render, 78 s train, 536 s evaluate, 9 s log_model, 1 s register (stage_seconds).
# quickstart.json is the result the summary was printed from (the dict --json prints), kept by a wrapper around the
# CLI in the same run; the summary printed from it by readme_quickstart.py is the one the run printed, line for line
# (its home shown as .../.crystalvision).
CRYSTALVISION_HOME=/tmp/qs-run.u8jp/home nice -n 10 crystalvision pipeline run pipelines/quickstart.yaml
# log: logs/20261207T154130Z-pipeline-11475.log
# README's sample of the summary, printed from quickstart.json by the current code:
python docs/study/readme_quickstart.py --readme README.md
