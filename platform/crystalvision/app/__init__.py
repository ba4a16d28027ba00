"""The front doors: the command line, the command table that Ray Jobs share, and the runs that span the stages
(pipeline, sweep, learning curve, scheduled retraining)."""
