# The Li-Mn-Ni-O space headline grouped by reduced formula, 3 training seeds, on the 2-core x86-64 VM (23 GiB), all
# from a git worktree of commit 127b3d6, on 2026-12-07. Seed 0: 11:31-13:01 UTC, 89.8 min wall, not a timing (test
# runs shared the cores for its first 45 minutes: epochs took 140-300 s there, 27-45 s after). Seeds 1 and 2: one
# after the other, 15:09-16:00 and 16:00-16:56 UTC (51.4 and 56.1 min wall), run without nice in a session whose
# autogroup was set to nice -10, other work sharing the cores at lower priority (epochs 33-41 s; fold trainings
# 265-553 s).
#
# Protocol: pipelines/space-grouped.yaml with split.group_by=formula: 5 grouped folds over the 883 unflagged
# structures of the lmno-space snapshot, every structure of one reduced formula in one fold (the strictest grouping
# the data allows), stratified by crystal system; space-grouped.yaml's recipe and budget (8 uniform views of 64 px,
# EfficientNet-B0 from scratch, at most 12 epochs, patience 4; the trees, CGCNN 3 x 64, 1-NN and the majority class
# refit on the same folds in every part). Three training seeds, one part per seed (`train.seeds=[<s>]`), the same
# folds in every part (split.seed is fixed). Each part prints its record; `seed_record.py export` checks that the
# part's MLflow run finished and that its per-structure out-of-fold table reproduces the record's pooled scores, then
# keeps the record, the table (seed-<s>.oof.parquet) and the run's config, dates, hardware and commit
# (seed-<s>.run.json) in docs/study/records/space-formula. Estimated about 1.5-2 h per part on the 2-core VM
# (space-grouped.json, the same recipe on material-grouped folds: 102.7 min on shared cores).
#
# From the repository root with the environment active; the parts and the exports use one CRYSTALVISION_HOME (the
# default, .crystalvision in the repository root), where the runs' MLflow store is. Run seeds 1 and 2 with seed 0's
# code (commit 127b3d6, e.g. from the same git worktree), so that the parts differ in their seed only: merge checks
# data, config, folds and structures, not the code; each part's commit is in its run file and in the table's header.
# seed 0 (run):
nice -n 10 crystalvision pipeline run pipelines/space-grouped.yaml --set split.group_by=formula --set name=space-formula-seed0 --set 'train.seeds=[0]' --json > space-formula-seed-0.json
python docs/study/seed_record.py export space-formula-seed-0.json --out docs/study/records/space-formula
# seed 1 (run):
nice -n 10 crystalvision pipeline run pipelines/space-grouped.yaml --set split.group_by=formula --set name=space-formula-seed1 --set 'train.seeds=[1]' --json > space-formula-seed-1.json
python docs/study/seed_record.py export space-formula-seed-1.json --out docs/study/records/space-formula
# seed 2 (run):
nice -n 10 crystalvision pipeline run pipelines/space-grouped.yaml --set split.group_by=formula --set name=space-formula-seed2 --set 'train.seeds=[2]' --json > space-formula-seed-2.json
python docs/study/seed_record.py export space-formula-seed-2.json --out docs/study/records/space-formula
# merged record (space-formula/merged.json) and tables (between docs/study.md's space-formula-table markers), from
# the parts present (the seeds not run yet would be named):
python docs/study/seed_record.py merge docs/study/records/space-formula --seeds 0 1 2 --readme docs/study.md
