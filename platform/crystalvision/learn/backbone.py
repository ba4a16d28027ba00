"""The image backbone: a timm network, from scratch, with ImageNet weights, or with a local checkpoint.

- ``train.pretrained: imagenet`` uses timm's own loader (``timm.create_model(pretrained=True)``), which reads the
  weights from the Hugging Face cache (``cache_dir``, default ``$HF_HUB_CACHE``, layout
  ``models--timm--<name>.<tag>/snapshots/<rev>/model.safetensors``) or downloads them when the network allows it.
  Offline machines: put the file in that cache (or set ``HF_HUB_OFFLINE=1`` to forbid any download).
- ``train.pretrained_checkpoint: <file>`` loads a local timm/torchvision state dict
  (:func:`crystalvision.learn.model.load_backbone_weights`).
Loading never executes code: safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from crystalvision.core import ModelError

log = logging.getLogger(__name__)
PRETRAINED_SOURCES = ("imagenet",)


def create_backbone(
    name: str,
    *,
    drop_rate: float = 0.2,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    cache_dir: str | Path | None = None,
) -> nn.Module:
    """A timm feature extractor (``num_classes=0``) with the requested initial weights."""
    if pretrained is not None and pretrained not in PRETRAINED_SOURCES:
        raise ModelError(f"train.pretrained = {pretrained!r} is unknown; allowed: {list(PRETRAINED_SOURCES)} or null")
    if pretrained and checkpoint:
        raise ModelError("set either train.pretrained or train.pretrained_checkpoint, not both")
    if not pretrained:
        backbone = timm.create_model(name, pretrained=False, num_classes=0, drop_rate=drop_rate)
        if checkpoint:
            load_backbone_weights(backbone, checkpoint)
        return backbone
    if not timm.is_model_pretrained(name):
        raise ModelError(f"timm has no pretrained weights for backbone {name!r}; unset train.pretrained")
    try:
        backbone = timm.create_model(name, pretrained=True, num_classes=0, drop_rate=drop_rate, cache_dir=cache_dir)
    except Exception as exc:  # hub offline, file missing from the cache, corrupt file: one clear message
        where = cache_dir or "the Hugging Face cache ($HF_HUB_CACHE)"
        raise ModelError(
            f"ImageNet weights of {name} are not in {where} and could not be downloaded ({type(exc).__name__}: "
            f"{exc}); put timm's model.safetensors there or set train.pretrained_checkpoint to a local file"
        ) from exc
    log.info("backbone %s: ImageNet weights via timm (%s)", name, backbone.pretrained_cfg.get("hf_hub_id", ""))
    return backbone


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """Load local backbone weights (a timm/torchvision state dict); classifier keys are ignored."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"pretrained checkpoint {p} not found; pass a local .pth/.pt file (no downloads here)")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc."))}
    missing, _unexpected = backbone.load_state_dict(state, strict=False)
    if len(missing) > len(state) // 2:
        raise ModelError(f"{p} does not look like {type(backbone).__name__} weights ({len(missing)} keys missing)")
