"""Image encoders: uint8 RGB images -> one fixed-length float32 vector each.

    handcrafted                  the default: colour histograms, a coarse colour layout, HOG and
                                 LBP texture at a fixed 128 x 128 size (scikit-image); no weights,
                                 deterministic, 456 numbers per image
    timm:<folder>                a timm model exported as the Hugging Face hub stores it
                                 (config.json with "architecture" + model.safetensors or
                                 pytorch_model.bin); pooled features before the classifier
    open_clip:<model>:<file>     an open_clip model name and a local checkpoint file;
                                 the image tower's embedding

timm and open_clip are optional and imported only when asked for (a missing one is a clear
error, never an install). Preprocessing for them is done here with PIL and numpy (resize,
centre crop, normalize), so torchvision is never needed by this package.
Every encoder has a `fingerprint` (weights + settings + code version) that keys the cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np

from robustmsa.data.io import files_sha256

HANDCRAFTED_VERSION = 1  # bump when the handcrafted features change, so caches are not reused
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class ImageEncoder(Protocol):
    name: str
    fingerprint: str
    dim: int

    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        """uint8 (H, W, 3) images of any sizes -> float32 (len(images), dim)."""


def load_image_encoder(spec: str | None = None) -> ImageEncoder:
    """'handcrafted' (default), 'timm:<folder>' or 'open_clip:<model>:<checkpoint file>'.

    >>> load_image_encoder().dim
    456
    """
    spec = (spec or "handcrafted").strip()
    kind, _, rest = spec.partition(":")
    if kind in ("handcrafted", "hist") and not rest:
        return HandcraftedImageEncoder()
    if kind == "timm" and rest:
        return TimmImageEncoder(Path(rest).expanduser())
    if kind == "open_clip" and rest:
        model, sep, checkpoint = rest.partition(":")
        if not sep or not model or not checkpoint:
            raise ValueError(f"image encoder {spec!r}: expected open_clip:<model name>:<checkpoint file>")
        return OpenClipImageEncoder(model, Path(checkpoint).expanduser())
    raise ValueError(f"image encoder {spec!r}: expected handcrafted, timm:<folder> or open_clip:<model>:<checkpoint file>")


PIP_NAMES = {"skimage": "scikit-image", "timm": "timm", "open_clip": "open_clip_torch"}


def _optional(module: str, encoder: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        hint = "" if module == "skimage" else ", or use the default encoder 'handcrafted'"
        raise ModuleNotFoundError(f"image encoder {encoder}: the package {module} is not installed "
                                  f"(pip install {PIP_NAMES[module]}){hint}") from None


# ----------------------------------------------------------------------------- handcrafted


class HandcraftedImageEncoder:
    """Colour, layout, shape and texture statistics that need no learned weights.

    Blocks (scaled so each block's entries are of order 1, because the methods' input LayerNorm
    mixes them): RGB histograms 3 x 16, HSV histograms 16 + 8 + 8, colour mean and std in a 2 x 2
    grid (24), HOG 9 orientations on 32-pixel cells (324), uniform LBP histograms (P=8, R=1: 10;
    P=16, R=2: 18).
    """

    name = "handcrafted"
    size = 128
    dim = 48 + 32 + 24 + 324 + 28

    def __init__(self):
        skimage = _optional("skimage", "handcrafted")
        settings = {"v": HANDCRAFTED_VERSION, "size": self.size, "skimage": skimage.__version__.rsplit(".", 1)[0]}
        self.fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._describe(image) for image in images]).astype(np.float32)

    def _describe(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image
        from skimage.color import rgb2gray, rgb2hsv
        from skimage.feature import hog, local_binary_pattern

        resized = Image.fromarray(image).resize((self.size, self.size), Image.Resampling.BILINEAR)
        rgb = np.asarray(resized, dtype=np.float64) / 255.0
        hsv = rgb2hsv(rgb)
        gray = rgb2gray(rgb)
        blocks = [_histogram(rgb[..., c], 16) for c in range(3)]
        blocks += [_histogram(hsv[..., 0], 16), _histogram(hsv[..., 1], 8), _histogram(hsv[..., 2], 8)]
        half = self.size // 2
        quadrants = [rgb[r:r + half, c:c + half] for r in (0, half) for c in (0, half)]
        blocks.append(4.0 * np.concatenate([[q.mean(axis=(0, 1)), q.std(axis=(0, 1))] for q in quadrants]).ravel())
        hog_features = hog(gray, orientations=9, pixels_per_cell=(32, 32), cells_per_block=(2, 2),
                           block_norm="L2-Hys", feature_vector=True)
        blocks.append(6.0 * hog_features)  # each 36-number block has unit L2 norm
        gray8 = np.round(gray * 255).astype(np.uint8)
        for points, radius in ((8, 1), (16, 2)):
            codes = local_binary_pattern(gray8, points, radius, method="uniform")
            blocks.append(_histogram(codes / (points + 2), points + 2))
        return np.concatenate(blocks)


def _histogram(values: np.ndarray, bins: int) -> np.ndarray:
    """Histogram of values in [0, 1] as fractions times `bins` (mean entry 1)."""
    counts = np.bincount(np.clip((values.ravel() * bins).astype(np.int64), 0, bins - 1), minlength=bins)
    return counts * (bins / counts.sum())


# ------------------------------------------------------------------------ deep encoders


def _preprocess(images: list[np.ndarray], size: int, mean, std, crop_pct: float = 1.0, resample: str = "bicubic"):
    """Resize the short side to size / crop_pct, centre-crop size x size, scale to [0, 1], normalize.

    Returns a float32 torch tensor (B, 3, size, size), as timm / open_clip evaluation transforms make it.
    """
    import torch
    from PIL import Image

    method = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}.get(resample, Image.Resampling.BICUBIC)
    scaled = int(round(size / crop_pct))
    batch = []
    for image in images:
        picture = Image.fromarray(image)
        width, height = picture.size
        ratio = scaled / min(width, height)
        picture = picture.resize((max(size, round(width * ratio)), max(size, round(height * ratio))), method)
        left, top = (picture.size[0] - size) // 2, (picture.size[1] - size) // 2
        array = np.asarray(picture.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        batch.append((array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
    return torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy())


def _settings_fingerprint(files: list[Path], root: Path, settings: dict) -> str:
    digest = hashlib.sha256(files_sha256(files, root).encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def _load_state_dict(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class TimmImageEncoder:
    """A timm backbone from a local folder; classifier removed (num_classes=0): pooled features."""

    def __init__(self, folder: Path):
        timm = _optional("timm", f"timm:{folder}")
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"image encoder timm: {config_file} not found (expected a timm model folder: "
                                    "config.json + model.safetensors or pytorch_model.bin)")
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if "architecture" not in config:
            raise ValueError(f"{config_file}: field 'architecture': missing (expected a timm model name)")
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"image encoder timm: no model.safetensors or pytorch_model.bin in {folder}")
        self.model = timm.create_model(config["architecture"], pretrained=False, num_classes=0)
        # num_classes=0 turns the classifier into an identity: its weights are merely unexpected.
        missing = self.model.load_state_dict(_load_state_dict(weights), strict=False).missing_keys
        if missing:
            raise ValueError(f"{weights}: weights do not fit {config['architecture']} (missing {missing[0]!r}, {len(missing)} in all)")
        self.model.eval()
        pretrained = config.get("pretrained_cfg", config)
        self.size = int(pretrained.get("input_size", [3, 224, 224])[-1])
        self.mean = tuple(pretrained.get("mean", IMAGENET_MEAN))
        self.std = tuple(pretrained.get("std", IMAGENET_STD))
        self.crop_pct = float(pretrained.get("crop_pct", 0.875))
        self.resample = str(pretrained.get("interpolation", "bicubic"))
        self.name = f"timm:{config['architecture']}"
        self.dim = int(self.model.num_features)
        settings = {"size": self.size, "mean": self.mean, "std": self.std, "crop": self.crop_pct, "resample": self.resample}
        self.fingerprint = _settings_fingerprint([config_file, weights], folder, settings)

    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = _preprocess(images, self.size, self.mean, self.std, self.crop_pct, self.resample)
        with torch.inference_mode():
            return self.model(batch).float().reshape(len(images), -1).numpy()


class OpenClipImageEncoder:
    """An open_clip image tower from a named architecture and a local checkpoint file."""

    def __init__(self, model_name: str, checkpoint: Path):
        open_clip = _optional("open_clip", f"open_clip:{model_name}")
        if not checkpoint.is_file():
            raise FileNotFoundError(f"image encoder open_clip: checkpoint {checkpoint} not found (expected a local file)")
        self.model = open_clip.create_model(model_name, pretrained=str(checkpoint))
        self.model.eval()
        visual = self.model.visual
        size = getattr(visual, "image_size", 224)
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(getattr(visual, "image_mean", None) or OPENAI_MEAN)
        self.std = tuple(getattr(visual, "image_std", None) or OPENAI_STD)
        self.name = f"open_clip:{model_name}"
        with_probe = self.encode([np.zeros((self.size, self.size, 3), np.uint8)])
        self.dim = int(with_probe.shape[1])
        settings = {"model": model_name, "size": self.size, "mean": self.mean, "std": self.std}
        self.fingerprint = _settings_fingerprint([checkpoint], checkpoint.parent, settings)

    def encode(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, getattr(self, "dim", 0)), np.float32)
        batch = _preprocess(images, self.size, self.mean, self.std)
        with torch.inference_mode():
            return self.model.encode_image(batch).float().numpy()
