"""A synthetic raw MVSA-Single folder (JPEG images, text files, labelResultAll.txt), offline.

It lets the whole raw pipeline (read_posts -> features text / image -> train -> eval) run
without the real download. Story, per post: a latent score c ~ N(0, 1); the text annotator sees
c + 0.4 e_t and the image annotator c + 0.6 e_i, each cut into negative / neutral / positive at
the 30 / 15 / 55 % quantiles of N(0, 1); after the merge about 8 % of the posts are dropped and
about 5 % are neutral (real MVSA-Single: 7 % and 10 %). The text is a templated sentence whose sentiment
word follows the text view; the image's colour follows the image view (blue and dark for
negative, orange and bright for positive, pale for neutral) under random shapes, sizes and pixel
noise. Posts whose two labels are opposite exist, and the reader drops them, as on real MVSA.

Version 2 (default) adds per-post quality (`Knobs.low_quality`, `attenuation`): in that fraction
of the posts one modality is degraded after the annotators saw it (a re-compressed picture, a
garbled transcript): half pure noise (the picture becomes pixel noise, the sentiment word a neutral
one), half attenuated (the picture's colour pulled towards grey by `attenuation`, the sentence
diluted in filler). Its draws use a stream of their own, so every other byte is version 1's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from robustmsa.data.imageposts import MVSA_CLASSES, MVSA_LABEL_FILE
from robustmsa.data.io import atomic_write, atomic_write_text
from robustmsa.data.synthetic import DEFAULT_VERSION, VERSIONS, _sentences
from robustmsa.data.synthetic_v2 import Knobs

THRESHOLDS = (-0.5244, -0.1257)  # z-scores of the 30 % and 45 % quantiles
TEXT_NOISE, IMAGE_NOISE = 0.4, 0.6


def write_raw_mvsa(
    out: str | os.PathLike, n: int = 300, seed: int = 0, version: int = DEFAULT_VERSION, knobs: Knobs | None = None
) -> Path:
    """Write `n` posts as <out>/data/<id>.jpg + <id>.txt and <out>/labelResultAll.txt
    (version 2 also <out>/synthetic.json: the knobs and which posts were degraded).

    >>> write_raw_mvsa("/tmp/mvsa_raw", n=200)  # doctest: +SKIP
    PosixPath('/tmp/mvsa_raw')
    """
    if n < 30:
        raise ValueError(f"n must be at least 30 (got {n}) so that every split has a few posts")
    if version not in VERSIONS:
        raise ValueError(f"unknown synthetic data version {version!r}; choose one of {', '.join(map(str, VERSIONS))}")
    if version == 1 and knobs is not None and knobs.changed():
        raise ValueError(f"synthetic version 1 has no knobs (got {', '.join(knobs.changed())}); use --version 2")
    out = Path(out)
    rng = np.random.default_rng(seed)
    score = rng.standard_normal(n)
    text_view = score + TEXT_NOISE * rng.standard_normal(n)
    image_view = score + IMAGE_NOISE * rng.standard_normal(n)
    texts = _sentences(rng, 1.5 * text_view, rng.integers(5, 16, n))
    degraded = _Degradation(seed, n, knobs or Knobs()) if version == 2 else None
    lines = ["ID\ttext,image"]
    for i in range(n):
        post_id = str(i + 1)
        labels = [MVSA_CLASSES[int(np.digitize(v, THRESHOLDS))] for v in (text_view[i], image_view[i])]
        lines.append(f"{post_id}\t{labels[0]},{labels[1]}")
        text, picture = texts[i], _image(rng, image_view[i])
        if degraded is not None:
            text, picture = degraded.text(i, text), degraded.image(i, picture)
        atomic_write_text(out / "data" / f"{post_id}.txt", text + "\n")
        with atomic_write(out / "data" / f"{post_id}.jpg") as f:
            picture.save(f, format="JPEG", quality=90)
    atomic_write_text(out / MVSA_LABEL_FILE, "\n".join(lines) + "\n")
    if degraded is not None:
        atomic_write_text(out / "synthetic.json", json.dumps(degraded.record(), sort_keys=True) + "\n")
    return out


class _Degradation:
    """Version 2's per-post quality, drawn from its own stream ([seed, 2]) so the posts it leaves
    alone are byte-for-byte version 1's. kind: 0 good, 1 pure noise, 2 attenuated."""

    def __init__(self, seed: int, n: int, knobs: Knobs):
        self.rng = np.random.default_rng([seed, 2])
        self.knobs = knobs
        low = self.rng.random(n) < knobs.low_quality
        self.modality = self.rng.integers(0, 2, n)  # 0 text, 1 image
        self.kind = np.where(low, np.where(self.rng.random(n) < 0.5, 1, 2), 0)

    def _hit(self, i: int, modality: int) -> int:
        return int(self.kind[i]) if self.modality[i] == modality else 0

    def text(self, i: int, text: str) -> str:
        kind = self._hit(i, 0)
        if kind == 1:  # the sentiment word lost: a neutral sentence of the same length
            return _sentences(self.rng, np.zeros(1), np.array([len(text.split())]))[0]
        if kind == 2:  # diluted: the same sentence after twice its length of filler
            return _sentences(self.rng, np.zeros(1), np.array([2 * len(text.split())]))[0] + " " + text
        return text

    def image(self, i: int, picture):
        from PIL import Image

        kind = self._hit(i, 1)
        if kind == 0:
            return picture
        pixels = np.asarray(picture, dtype=np.float32)
        if kind == 1:
            pixels = self.rng.uniform(0, 255, pixels.shape)
        else:
            pixels = 128 + self.knobs.attenuation * (pixels - 128) + 24 * self.rng.standard_normal(pixels.shape)
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    def record(self) -> dict:
        names = ("good", "noise", "attenuated")
        return {"version": 2, "knobs": dataclasses.asdict(self.knobs),
                "degraded": {str(i + 1): [("text", "image")[int(self.modality[i])], names[int(k)]]
                             for i, k in enumerate(self.kind) if k}}


def _image(rng: np.random.Generator, view: float):
    """A picture whose hue and brightness follow the image view, under nuisance shapes and noise."""
    import colorsys

    from PIL import Image, ImageDraw

    width, height = (int(v) for v in rng.integers(48, 97, 2))
    polarity = 1.0 / (1.0 + np.exp(-1.5 * view))  # 0 negative .. 1 positive
    hue = (0.62 - 0.54 * polarity + 0.05 * rng.standard_normal()) % 1.0
    saturation = float(np.clip(0.15 + 0.6 * abs(2 * polarity - 1) + 0.1 * rng.standard_normal(), 0, 1))
    value = float(np.clip(0.35 + 0.5 * polarity + 0.08 * rng.standard_normal(), 0.05, 1))
    background = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))
    picture = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        x1, y1 = x0 + int(rng.integers(6, width // 2 + 8)), y0 + int(rng.integers(6, height // 2 + 8))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    pixels = np.asarray(picture, dtype=np.float32) + 12.0 * rng.standard_normal((height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
