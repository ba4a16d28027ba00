"""EfficientNet-B0 (timm) with four heads: band gap, e_above_hull (regression), crystal system, space group.

A trained model is saved as a folder (like MatGL): ``weights.pt`` (state dict) and ``model.json``
(:class:`ModelSpec`: architecture, classes, target scaling, image size, training-data snapshot and label
sources, training domain), so a model can be rebuilt anywhere without the training code's state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, Field, model_validator
from torch import nn

from crystalvision.core import (
    TABLE,
    TARGETS_CLASSIFICATION,
    TARGETS_REGRESSION,
    ModelError,
    PipelineConfig,
    __version__,
)
from crystalvision.learn.backbone import create_backbone, load_backbone_weights  # noqa: F401 - re-exported

if TYPE_CHECKING:
    import numpy as np

WEIGHTS_FILE = "weights.pt"
SPEC_FILE = "model.json"
# ImageNet statistics: the normalisation EfficientNet expects (kept when training from scratch too).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ModelSpec(BaseModel):
    """Everything needed to rebuild a model and interpret its outputs.

    ``class_names``: classification target of :mod:`crystalvision.core.targets` -> class names (index = class id).
    Specs saved before it (one ``<name>_classes`` field per head) still load.
    """

    backbone: str = "efficientnet_b0"
    class_names: dict[str, list[str]]
    target_mean: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(TARGETS_REGRESSION, 0.0))
    target_std: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(TARGETS_REGRESSION, 1.0))
    image_size: int = 224
    snapshot_sha256: str | None = None
    snapshot_id: str | None = None
    label_source: dict[str, str] = Field(default_factory=dict)
    render_config: dict = Field(default_factory=dict)
    crystalvision_version: str = __version__
    # the training domain, for out-of-domain warnings at prediction (empty/None in models saved before them)
    training_elements: list[str] = Field(default_factory=list)
    max_training_sites: int | None = None
    spacegroup_crystal_system: dict[str, str] = Field(default_factory=dict)
    # measured on unseen structures by a grouped k-fold run of the same recipe (card.py); empty: never measured
    generalisation: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _legacy_class_fields(cls, data: Any) -> Any:
        """Fold the older ``<target>_classes`` fields into ``class_names``; every classification head needs one."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        names = dict(data.pop("class_names", None) or {})
        for t in TARGETS_CLASSIFICATION:
            if f"{t}_classes" in data:
                names.setdefault(t, data.pop(f"{t}_classes"))
        missing = [t for t in TARGETS_CLASSIFICATION if t not in names]
        if missing:
            raise ValueError(f"model spec has no class names for {missing}; it was not saved by this crystalvision")
        data["class_names"] = names
        return data

    def classes(self, target: str) -> list[str]:
        """Class names of a classification target (index = class id)."""
        return self.class_names[target]

    def class_lists(self) -> dict[str, list[str]]:
        """Classification target -> class names."""
        return {t: self.classes(t) for t in TARGETS_CLASSIFICATION}


def spec_for(cfg: PipelineConfig, snapshot: Any) -> ModelSpec:
    """The spec of a model trained by pipeline ``cfg`` on ``snapshot``
    (a :class:`~crystalvision.data.snapshot.Snapshot`)."""
    return ModelSpec(
        backbone=cfg.train.backbone,
        class_names={t: list(snapshot.encoders.classes(t)) for t in TARGETS_CLASSIFICATION},
        image_size=cfg.render.image_size,
        snapshot_sha256=snapshot.manifest.content_sha256,
        snapshot_id=snapshot.manifest.snapshot_id,
        label_source=snapshot.manifest.label_source,
        render_config=cfg.render.model_dump(mode="json"),
        **training_domain(snapshot.records),
    )


def training_domain(records: list[Any]) -> dict[str, Any]:
    """Elements, largest site count and space group -> crystal system of the training records (MaterialRecord)."""
    from pymatgen.core import Composition

    elements = {el.symbol for r in records for el in Composition(r.formula).elements}
    return {
        "training_elements": sorted(elements),
        "max_training_sites": max((r.nsites for r in records), default=None),
        "spacegroup_crystal_system": {r.spacegroup_symbol: r.crystal_system for r in records},
    }


class CrystalNet(nn.Module):
    """Shared timm backbone, one linear head per target. ``forward`` returns a dict of tensors.

    Regression outputs are in standardised units (see :meth:`denormalise`); classification outputs are logits.
    """

    def __init__(
        self,
        spec: ModelSpec,
        pretrained_checkpoint: str | None = None,
        drop_rate: float = 0.2,
        pretrained: str | None = None,
    ):
        super().__init__()
        self.spec = spec
        self.backbone = create_backbone(
            spec.backbone, drop_rate=drop_rate, pretrained=pretrained, checkpoint=pretrained_checkpoint
        )
        width = self.backbone.num_features
        self.heads = nn.ModuleDict(
            {t.name: nn.Linear(width, 1 if t.is_regression else len(spec.classes(t.name))) for t in TABLE}
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        out = {name: head(features) for name, head in self.heads.items()}
        for t in TARGETS_REGRESSION:
            out[t] = out[t].squeeze(-1)
        return out

    def denormalise(self, target: str, values: torch.Tensor) -> torch.Tensor:
        """Standardised regression output -> physical units (eV, eV/atom)."""
        return values * self.spec.target_std[target] + self.spec.target_mean[target]


def save_model(model: CrystalNet, folder: str | Path) -> Path:
    """Write ``weights.pt`` and ``model.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    (folder / SPEC_FILE).write_text(unwrap(model).spec.model_dump_json(indent=1))
    return folder


def load_model(folder: str | Path, map_location: str | torch.device = "cpu") -> CrystalNet:
    """Rebuild a model saved by :func:`save_model`, in eval mode."""
    folder = Path(folder)
    try:
        spec = ModelSpec.model_validate(json.loads((folder / SPEC_FILE).read_text()))
        state = torch.load(folder / WEIGHTS_FILE, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"{folder} is not a crystalvision model folder ({exc.filename} missing)") from exc
    model = CrystalNet(spec)
    model.load_state_dict(state)
    return model.eval()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def preprocess(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 NHWC (or HWC) RGB images -> float NCHW normalised with ImageNet statistics."""
    import numpy as np

    t = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.shape[-1] != 3:
        raise ModelError(f"expected RGB images shaped (N, H, W, 3), got {tuple(t.shape)}")
    t = t.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN, device=t.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=t.device).view(1, 3, 1, 1)
    return (t - mean) / std


def plain_outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One forward pass: regression outputs (the model's units, float32) and ``<head>_proba`` class probabilities."""
    outputs = {}
    for name, value in model(x).items():
        if name in TARGETS_REGRESSION:
            outputs[name] = value.float()
        else:
            outputs[f"{name}_proba"] = value.float().softmax(-1)
    return outputs


@torch.no_grad()
def predict_arrays(
    model: CrystalNet,
    images: np.ndarray,
    batch_size: int = 64,
    forward: Callable[..., dict] | None = None,
    on_batch: Callable[[], None] | None = None,
) -> dict[str, np.ndarray]:
    """Predict a stack of uint8 images: regression in physical units, class probabilities per head. ``forward``
    (default :func:`plain_outputs`) maps (model, batch) to those outputs, e.g. ``augment.predict_dihedral`` for
    test-time averaging over the 8 in-plane views; ``on_batch`` runs before each batch (progress)."""
    import numpy as np

    model.eval()
    forward = forward or plain_outputs
    device = next(model.parameters()).device
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        if on_batch:
            on_batch()
        out = forward(model, preprocess(images[start : start + batch_size]).to(device))
        for t in TARGETS_REGRESSION:
            chunks.setdefault(t, []).append(model.denormalise(t, out[t].float()).cpu().numpy())
        for t in TARGETS_CLASSIFICATION:
            chunks.setdefault(f"{t}_proba", []).append(out[f"{t}_proba"].float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}
