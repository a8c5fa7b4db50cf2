"""Image encoders: the weight-free default, and the timm / open_clip wiring (with stand-in modules)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from robustmsa.features.image import HandcraftedImageEncoder, load_image_encoder


def picture(colour, size=(30, 20), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.zeros((size[1], size[0], 3), np.uint8) + np.asarray(colour, np.uint8)
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def test_handcrafted_is_deterministic_fixed_length_and_finite():
    encoder = load_image_encoder()
    assert isinstance(encoder, HandcraftedImageEncoder) and encoder.dim == 456
    images = [picture((200, 120, 30)), picture((30, 60, 200), size=(131, 77)), np.zeros((5, 9, 3), np.uint8)]
    vectors = encoder.encode(images)
    assert vectors.shape == (3, 456) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    np.testing.assert_array_equal(vectors, encoder.encode(images))
    np.testing.assert_array_equal(vectors[1:2], encoder.encode(images[1:2]))  # no batch effect
    assert encoder.encode([]).shape == (0, 456)
    assert encoder.fingerprint == HandcraftedImageEncoder().fingerprint


def test_handcrafted_separates_colours_more_than_noise():
    encoder = load_image_encoder("handcrafted")
    warm_a, warm_b, cold = encoder.encode([picture((220, 140, 40), seed=1), picture((220, 140, 40), seed=2),
                                           picture((40, 70, 210), seed=1)])
    assert np.linalg.norm(warm_a - warm_b) < 0.5 * np.linalg.norm(warm_a - cold)


def test_unknown_encoder_and_missing_optional_packages(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="expected handcrafted, timm:<folder> or open_clip"):
        load_image_encoder("resnet50")
    with pytest.raises(ValueError, match="open_clip:<model name>:<checkpoint file>"):
        load_image_encoder("open_clip:ViT-B-32")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now fails as if it were not installed
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(ModuleNotFoundError, match=r"timm is not installed \(pip install timm\)"):
        load_image_encoder(f"timm:{tmp_path}")
    with pytest.raises(ModuleNotFoundError, match=r"open_clip is not installed \(pip install open_clip_torch\)"):
        load_image_encoder(f"open_clip:ViT-B-32:{tmp_path / 'w.pt'}")
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install scikit-image"):
        load_image_encoder()


class TinyBackbone(nn.Module):
    """Stands in for a timm model: conv + global pooling, `num_features` like timm's models."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.num_features = 6

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_timm_folder_encoder_loads_weights_and_preprocesses(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    created = []
    fake = types.SimpleNamespace(create_model=lambda name, pretrained, num_classes: created.append(name) or TinyBackbone())
    monkeypatch.setitem(sys.modules, "timm", fake)
    torch.manual_seed(0)
    weights = TinyBackbone().state_dict()
    save_file(weights, str(tmp_path / "model.safetensors"))
    config = {"architecture": "tiny_net", "pretrained_cfg": {"input_size": [3, 32, 32], "crop_pct": 1.0}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    encoder = load_image_encoder(f"timm:{tmp_path}")
    assert created == ["tiny_net"] and encoder.dim == 6 and encoder.name == "timm:tiny_net"
    assert torch.equal(encoder.model.conv.weight, weights["conv.weight"])
    vectors = encoder.encode([picture((10, 200, 30)), picture((200, 10, 30), size=(50, 90))])
    assert vectors.shape == (2, 6) and np.isfinite(vectors).all()
    np.testing.assert_array_equal(vectors, encoder.encode([picture((10, 200, 30)), picture((200, 10, 30), size=(50, 90))]))
    fingerprint = encoder.fingerprint
    save_file({k: v + 1 for k, v in weights.items()}, str(tmp_path / "model.safetensors"))
    assert load_image_encoder(f"timm:{tmp_path}").fingerprint != fingerprint  # new weights, new cache folder
    save_file({"conv.weight": weights["conv.weight"]}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="weights do not fit tiny_net"):
        load_image_encoder(f"timm:{tmp_path}")
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_image_encoder(f"timm:{tmp_path}")


def test_open_clip_encoder_uses_the_image_tower(monkeypatch, tmp_path):
    class TinyClip(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = TinyBackbone()
            self.visual.image_size = 24

        def encode_image(self, x):
            assert x.shape[1:] == (3, 24, 24)
            return self.visual(x)

    checkpoint = tmp_path / "clip.pt"
    checkpoint.write_bytes(b"weights")
    calls = []
    fake = types.SimpleNamespace(create_model=lambda name, pretrained: calls.append((name, pretrained)) or TinyClip())
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    encoder = load_image_encoder(f"open_clip:ViT-Tiny:{checkpoint}")
    assert calls[0] == ("ViT-Tiny", str(checkpoint)) and encoder.dim == 6
    assert encoder.encode([picture((1, 2, 3)), picture((9, 9, 9))]).shape == (2, 6)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_encoder(f"open_clip:ViT-Tiny:{tmp_path / 'absent.pt'}")
