"""Serving: the logged pyfunc model, bounded prediction input, rendering for prediction, predictions for people."""
