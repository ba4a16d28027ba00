python docs/study/first_numbers.py /tmp/first-numbers --views 28 --candidates 64 --check 50
# 2026-12-02 11:43-12:07 UTC on the 2-core CPU machine, shared: load average 4.7 at the start, 8-14 during the run
# (other test runs); 1,427 s in all (render 8 s, leakage search 1,205 s, CGCNN + baselines 199 s; torch 1 thread)
# README tables: python docs/study/first_numbers.py --table docs/study/records/first-numbers.json --readme docs/study.md
