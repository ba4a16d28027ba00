"""Evaluation of a trained model: metrics, baselines, out-of-fold scoring, leakage, saliency, plots, HTML report."""
