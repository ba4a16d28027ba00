"""MLflow tracking: experiments and runs, rank-0 logging from Ray Train workers, run descriptions, model cards."""
