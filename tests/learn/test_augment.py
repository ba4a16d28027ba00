"""Colour-keeping augmentation, dihedral test-time averaging, label smoothing, pretrained backbones."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from crystalvision.core.config import AugmentConfig, TrainConfig
from crystalvision.core.errors import ModelError
from crystalvision.learn.augment import (
    augment_batch,
    background_value,
    classification_loss,
    dihedral_views,
    predict_dihedral,
)
from crystalvision.learn.backbone import create_backbone
from crystalvision.learn.model import CrystalNet, ModelSpec, preprocess


def disc_image(size: int = 32) -> torch.Tensor:
    """uint8 NCHW: a centred red disc and an off-centre blue square on white."""
    img = np.full((size, size, 3), 255, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    img[(yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < (size / 4) ** 2] = (220, 20, 20)
    img[2:8, 3:7] = (20, 20, 220)
    return torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0)


def test_right_angle_rotation_is_exact_and_flips_are_mirrors():
    x = disc_image().repeat(16, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, AugmentConfig(enabled=True, rotate="right_angles", flip=False, scale=(1, 1)), generator=g)
    assert out.dtype == torch.uint8
    rots = [torch.rot90(x[0], k, dims=(1, 2)) for k in range(4)]
    seen = {next(k for k, r in enumerate(rots) if torch.equal(o, r)) for o in out}
    assert len(seen) > 1  # exact rotations, and more than one of them
    flips = augment_batch(x, AugmentConfig(enabled=True, rotate="none", flip=True, scale=(1, 1)), generator=g)
    mirrors = [x[0], x[0].flip(2), x[0].flip(1), x[0].flip(1).flip(2)]
    assert all(any(torch.equal(o, m) for m in mirrors) for o in flips)


def test_any_angle_rotation_keeps_colour():
    x = disc_image(48)
    g = torch.Generator().manual_seed(3)
    out = augment_batch(x, AugmentConfig(enabled=True, rotate="any", flip=False, scale=(1, 1)), generator=g)
    red = lambda t: ((t[0, 0] > 200) & (t[0, 1] < 40)).sum().item()  # noqa: E731
    # the centred disc keeps its pure colour and size (only its rim is blended by bilinear resampling)
    assert red(out) == pytest.approx(red(x), rel=0.15)
    colour = lambda t: t.float().mean((0, 2, 3)).tolist()  # noqa: E731
    assert colour(out) == pytest.approx(colour(x), abs=3.0)  # same colour balance
    assert not torch.equal(out, x)  # the blue square moved


def test_zoom_out_fills_background_in_either_unit():
    red = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    red[:, 0] = 255
    cfg = AugmentConfig(enabled=True, rotate="none", flip=False, scale=(0.5, 0.5))
    out = augment_batch(red, cfg)
    assert out[:, :, 0, 0].tolist() == [[255, 255, 255]] * 2  # corner: white background, not black
    assert out[:, :, 8, 8].tolist() == [[255, 0, 0]] * 2  # centre: still red
    norm = preprocess(red.permute(0, 2, 3, 1).numpy())
    out_n = augment_batch(norm, cfg)
    assert torch.allclose(out_n[:, :, 0, 0], background_value(norm, True).view(1, 3).expand(2, 3), atol=1e-5)


def test_disabled_is_identity():
    x = disc_image()
    assert augment_batch(x, AugmentConfig(enabled=False)) is x


def test_dihedral_averaging():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert len({tuple(v.flatten().tolist()) for v in dihedral_views(x)}) == 8

    class Corner(torch.nn.Module):
        def forward(self, v):
            return {"band_gap": v[:, 0, 0, 0], "crystal_system": torch.stack([v[:, 0, 0, 0], -v[:, 0, 0, 0]], 1)}

    out = predict_dihedral(Corner(), x)
    assert out["band_gap"].item() == pytest.approx((0 + 3 + 12 + 15) / 4)  # each corner seen twice
    assert out["crystal_system_proba"].sum().item() == pytest.approx(1.0)


def test_evaluate_tta_makes_predictions_invariant_to_right_angle_turns():
    """evaluate.tta = dihedral (predict_arrays(forward=predict_dihedral)): a turned copy of an image gets the same
    prediction, which a plain forward pass of an untrained network does not give."""
    from crystalvision.core.config import EvaluateConfig
    from crystalvision.learn.model import predict_arrays

    torch.manual_seed(0)
    spec = ModelSpec(backbone="test_efficientnet", crystal_system_classes=["a", "b"], spacegroup_classes=["x", "y"])
    net = CrystalNet(spec)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    stack = np.concatenate([image, np.rot90(image, 1, axes=(1, 2)), image[:, :, ::-1]])
    plain = predict_arrays(net, stack)
    tta = predict_arrays(net, stack, forward=predict_dihedral)
    assert set(tta) == set(plain)
    assert not np.allclose(plain["band_gap"][0], plain["band_gap"][1], rtol=1e-4)
    for key, value in tta.items():
        np.testing.assert_allclose(value[1:], np.repeat(value[:1], 2, axis=0), rtol=1e-4, atol=1e-5, err_msg=key)
    assert EvaluateConfig(tta="dihedral").tta == "dihedral"
    with pytest.raises(ValueError, match="tta"):
        EvaluateConfig(tta="flips")


def test_label_smoothing_loss():
    logits, y = torch.tensor([[10.0, -10.0]]), torch.tensor([0])
    assert classification_loss(logits, y, 0.2) > classification_loss(logits, y, 0.0) + 0.5
    assert TrainConfig(label_smoothing=0.1, augment={"enabled": True}).augment.rotate == "any"


def test_imagenet_weights_from_timm_cache_layout(tmp_path, monkeypatch):
    """train.pretrained: imagenet reads timm's Hugging Face cache; no network (offline mode)."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    name = "test_efficientnet"
    hub_id = timm.create_model(name).pretrained_cfg["hf_hub_id"]  # timm/test_efficientnet.r160_in1k
    torch.manual_seed(1)
    reference = timm.create_model(name)  # with its 1000-class classifier, like the published file
    rev = "0" * 40
    repo = tmp_path / f"models--{hub_id.replace('/', '--')}"
    (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()}, repo / "snapshots" / rev / "model.safetensors"
    )

    loaded = create_backbone(name, pretrained="imagenet", cache_dir=tmp_path)
    ref_state = reference.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    scratch = create_backbone(name)
    assert not torch.equal(scratch.state_dict()["conv_stem.weight"], ref_state["conv_stem.weight"])

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="not in .*empty.*pretrained_checkpoint"):
        create_backbone(name, pretrained="imagenet", cache_dir=empty)
    with pytest.raises(ModelError, match="train.pretrained"):
        create_backbone(name, pretrained="imagenet21k")


def test_crystalnet_takes_a_local_checkpoint(tmp_path):
    spec = ModelSpec(backbone="test_efficientnet", crystal_system_classes=["a", "b"], spacegroup_classes=["x"])
    torch.manual_seed(2)
    ref = timm.create_model("test_efficientnet")
    torch.save(ref.state_dict(), tmp_path / "b.pth")
    net = CrystalNet(spec, pretrained_checkpoint=str(tmp_path / "b.pth"))
    assert torch.equal(net.backbone.state_dict()["conv_stem.weight"], ref.state_dict()["conv_stem.weight"])
    with pytest.raises(ModelError, match="either"):
        CrystalNet(spec, pretrained_checkpoint=str(tmp_path / "b.pth"), pretrained="imagenet")
