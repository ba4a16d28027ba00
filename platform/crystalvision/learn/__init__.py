"""Learning: the road from a pipeline to prepared data, the model, the epoch loop, Ray Train training."""
