"""Learning: the road from a pipeline to prepared data, the model, the epoch loop, Ray Train training."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "augment": "predict_dihedral",
        "model": "CrystalNet MEAN ModelSpec SPEC_FILE STD WEIGHTS_FILE load_model predict_arrays unwrap",
        "prepare": "Prepared from_labels is_kfold plan_folds",
        "train": "content_digest ray_storage require_gpus train_model",
    },
    modules="prepare",
)
