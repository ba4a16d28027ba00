# The Li-Mn-Ni-O space headline on the structure hold-out (holdout-plan.cmd parts 8-10), one part per training seed,
# on the 2-core x86-64 VM (23 GiB), all from a git worktree of commit 107b23c. Seed 0: 2026-12-07 20:25-20:37 UTC,
# 12.4 min wall; seed 1: 20:42-20:55 UTC, 12.6 min wall; seed 2: 21:25-21:36 UTC, 10.7 min wall (all three run
# without nice in a session whose autogroup was set to nice -5; light edits beside them). Merged the same day.
#
# Protocol: pipelines/space-grouped.yaml tested on exactly the 127 structures of docs/study/records/holdout.json
# (split.holdout.use: test, one fold; training + validation carved from the other 756 structures, grouped by
# material), with the picks the selections made without the hold-out where they differ from space-grouped.yaml
# (holdout/*.cmd): no augmentation, CGCNN at lr 3e-3. Each part prints its record; seed_record.py export keeps the
# record, its per-structure predictions (seed-<s>.oof.parquet) and its run file (config, dates, hardware, commit)
# in docs/study/records/space-holdout; merge checks that the parts differ in their seed only.
crystalvision pipeline run pipelines/space-grouped.yaml --set split.folds=null --set split.holdout.ids=docs/study/records/holdout.json --set split.holdout.use=test --set train.augment.enabled=false --set evaluate.graph_lr=0.003 --set name=space-holdout-seed0 --set 'train.seeds=[0]' --json > space-holdout-seed-0.json
python docs/study/seed_record.py export space-holdout-seed-0.json --out docs/study/records/space-holdout
crystalvision pipeline run pipelines/space-grouped.yaml --set split.folds=null --set split.holdout.ids=docs/study/records/holdout.json --set split.holdout.use=test --set train.augment.enabled=false --set evaluate.graph_lr=0.003 --set name=space-holdout-seed1 --set 'train.seeds=[1]' --json > space-holdout-seed-1.json
python docs/study/seed_record.py export space-holdout-seed-1.json --out docs/study/records/space-holdout
crystalvision pipeline run pipelines/space-grouped.yaml --set split.folds=null --set split.holdout.ids=docs/study/records/holdout.json --set split.holdout.use=test --set train.augment.enabled=false --set evaluate.graph_lr=0.003 --set name=space-holdout-seed2 --set 'train.seeds=[2]' --json > space-holdout-seed-2.json
python docs/study/seed_record.py export space-holdout-seed-2.json --out docs/study/records/space-holdout
# merged record (space-holdout/merged.json) and the table between docs/study.md's space-holdout-table markers:
python docs/study/seed_record.py merge docs/study/records/space-holdout --seeds 0 1 2 --readme docs/study.md --marker space-holdout-table
