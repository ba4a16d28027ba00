# Learning curve on the Li-Mn-Ni-O space, full budget (pipelines/space-curve.yaml), on the 2-core x86-64 VM (23 GiB),
# each point from a git worktree of commit 107b23c at nice 10. Point 62: 2026-12-07 21:38-22:48 UTC, 69.5 min (tests
# shared the cores during its first two folds, 19 and 16 min of training against about 10 min for each of the other
# three). Point 125: 2026-12-08 00:33-01:35 UTC, 61 min (tests shared the cores during its first two folds, 12.5 and 19
# min of training against 8.5-8.7 min for each of the other three). Points 250, 500 and all: NOT RUN YET; run them from
# a worktree of the same commit (git worktree add --detach DIR 107b23c), each part's record copied into
# docs/study/records/space-curve, then the table line below.
#
# A point of size n: each fold's training + validation structures cut to n together, in the fold's own train:val
# ratio (about 80:20; nested, class-balanced subsets); the image model trains on the training part and keeps its best
# validation epoch, CGCNN likewise, majority, 1-NN and the trees are fit on all n. The 5 test folds are never cut:
# every point is scored on the same 883 structures, each once, pooled out of fold, per structure. Budget, the same at
# every point: 8 views of 64 px, 12 epochs of the full folds' one pass in optimiser steps (train.steps_per_epoch,
# about 283 steps of batch 16, so about 3,400 steps; smaller sets cycle through reshuffled passes), no early stopping,
# one seed. Sizes 62, 125, 250, 500 and all (about 706 = 565 + 141 per fold).
#
# One part per point, from the repository root with the environment active; each writes its record
# (space-curve/point-<n>.json) when it finishes, and a part whose record is there is skipped. A killed part resumes
# its fold trainings from their checkpoints when run again (as long as the package's code is unchanged: a code
# change trains that point from the start). On the 2-core VM with the cores free a point takes about 1 h (the step
# budget is the same at every point: 5 x 12 epochs of 283 steps, about 8.5-10 min of training a fold; plus start-up,
# model logging, evaluation, and CGCNN, which grows with n: about 15 min more at all, from baselines.cmd's 17.6 min
# for every baseline on these folds). The images are space-grouped.yaml's (same render config): reused.
nice -n 10 crystalvision curve pipelines/space-curve.yaml --size 62 --out docs/study/records/space-curve
nice -n 10 crystalvision curve pipelines/space-curve.yaml --size 125 --out docs/study/records/space-curve
nice -n 10 crystalvision curve pipelines/space-curve.yaml --size 250 --out docs/study/records/space-curve
nice -n 10 crystalvision curve pipelines/space-curve.yaml --size 500 --out docs/study/records/space-curve
nice -n 10 crystalvision curve pipelines/space-curve.yaml --size all --out docs/study/records/space-curve
# table (between docs/study.md's space-table markers) and figure (space-curve/learning_curve.png), from the point
# records present (the points not run yet are named):
python docs/study/curve_record.py docs/study/records/space-curve --sizes 62 125 250 500 all --readme docs/study.md
#
# Superseded: space-curve/learning_curve.json as committed until point 62 replaced it (git show dcc9006:...) was made on 2026-12-02
# (2-core VM) by the earlier protocol, whose points cut only the training part (each fold kept its ~142 validation
# structures, which the baselines were fit on too), at a reduced budget (4 views, at most 8 epochs, patience 3; one
# pass an epoch, so the steps grew with the size), sizes 62 and 250 only (the full-size point stopped before it ran):
#   crystalvision curve pipelines/space-curve.yaml --set render.views_per_structure=4 --set train.epochs=8 \
#       --set train.patience=3 --set 'learning_curve.sizes=[62, 250]'
#   python docs/study/curve_record.py ... --run 62=0bf374260a994136afaf2da4859c2516 \
#       --run 250=5319d0619793472a8fcb4b105557fc15 --out docs/study/records/space-curve   (the script of that time)
#   python docs/study/space_table.py docs/study/records/space-curve/learning_curve.json --readme docs/study.md   (its curve mode, gone since)
