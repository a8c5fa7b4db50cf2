"""Shared test fixtures: tiny in-memory datasets with a planted signal."""

from __future__ import annotations

import numpy as np
import pytest

from robustmsa.data.schema import (
    REGRESSION_MOSI,
    Dataset,
    DatasetSpec,
    LabelSpec,
    ModalitySpec,
    Split,
)

TINY_MODALITIES = (("text", 12, 8), ("audio", 20, 4), ("vision", 15, 6))  # (name, max_len, dim)


def make_tiny_dataset(
    n: int = 48,
    modalities=TINY_MODALITIES,
    classification: bool = False,
    seed: int = 0,
) -> Dataset:
    """Every modality sees a shared sentiment factor plus noise; variable lengths, zero padding."""
    rng = np.random.default_rng(seed)
    specs = tuple(ModalitySpec(name, dim, max_len) for name, max_len, dim in modalities)
    label = LabelSpec("classification", classes=("negative", "neutral", "positive")) if classification else REGRESSION_MOSI
    splits = {}
    for split_index, split in enumerate(("train", "valid", "test")):
        size = n if split == "train" else max(n // 3, 8)
        latent = rng.normal(size=size)
        features, lengths = {}, {}
        for m in specs:
            length = rng.integers(1, m.max_len + 1, size=size)
            direction = np.random.default_rng(100 + len(m.name)).normal(size=m.dim)
            x = latent[:, None, None] * direction[None, None, :] + 0.5 * rng.normal(size=(size, m.max_len, m.dim))
            x *= (np.arange(m.max_len)[None, :] < length[:, None])[..., None]
            features[m.name], lengths[m.name] = x.astype(np.float32), length.astype(np.int64)
        if classification:
            labels = np.digitize(latent, [-0.5, 0.5]).astype(np.int64)
        else:
            labels = np.clip(np.round(latent * 1.5 * 3) / 3, -3, 3).astype(np.float32)
        ids = [f"v{split_index}$_${i}" for i in range(size)]
        splits[split] = Split(split, ids, features, lengths, labels)
    spec = DatasetSpec("tiny", specs, label)
    return Dataset(spec, splits, source="<tiny>", source_hash=f"tiny-{seed}-{n}-{classification}")


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_tiny_dataset()
