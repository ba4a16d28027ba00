"""Learning: the model, its prepared inputs, the epoch loop, Ray Train training."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "augment": "predict_dihedral",
        "model": "CrystalNet MEAN ModelSpec SPEC_FILE STD WEIGHTS_FILE load_model predict_arrays spec_for unwrap",
        "prepared": "Prepared",
        "train": "content_digest ray_storage require_gpus train_model",
    },
)
