# 2026-12-07 07:17-07:47 UTC, 2-core x86-64 VM shared with other test runs (load average 1-4): 29.8 min (grouped by
# material 17.6 min, by formula 12.0 min; torch 1 thread). The folds by material are space-grouped.json's: the
# majority and 1-NN baselines reproduce exactly the 16 pooled numbers its run wrote for them (and the 4 balanced
# accuracies annotate added; `verified` in the record).
python docs/study/baseline_record.py run pipelines/space-grouped.yaml --group-by material formula --verify docs/study/records/space-grouped.json
# tables in docs/study.md:
python docs/study/baseline_record.py table docs/study/records/baselines.json --readme docs/study.md
