"""Per-feature standardization with training statistics: the input space every method sees.

Real feature files come in raw units (openSMILE / COVAREP audio from about -11 to 376, Facet
action units), and a model fed those collapses to a constant on that modality. So, unless a run
sets `data.standardize=false`, each feature dimension of each modality is shifted and scaled by
the mean and std of the training split's valid frames (padding frames and samples whose modality
is missing are excluded: they are zeros that say nothing about the feature). The statistics are
fitted once per training run, recorded in the checkpoint's `config.json`, and applied when split
tensors are built (`SplitTensors(..., stats=...)`): by the trainer, by evaluation and by the
Predictor, so a checkpoint always sees inputs in the space it was trained in. A missing, dropped
or padded value is 0 after standardization (the training mean; the method is told by its mask),
while protocols that corrupt without telling (DRF's "corrupt") zero the values as stored, as
they would zero the raw features of an MMSA pickle.

>>> stats = fit_feature_stats(dataset["train"])                          # doctest: +SKIP
>>> tensors = SplitTensors(dataset["test"], dataset.spec, stats=stats)   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustmsa.data.schema import Split

CHUNK_ROWS = 512  # samples per pass: bounds the float64 temporaries on large datasets (MOSEI)
CONSTANT_TOLERANCE = 1e-6  # std <= this * (1 + |mean|): a constant feature, left unscaled


@dataclass(frozen=True)
class FeatureStats:
    """mean[m], std[m]: float32 (D_m,) per modality; std is never 0 (constant features get 1)."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    def apply(self, modality: str, values: np.ndarray) -> np.ndarray:
        """(..., D) raw values -> standardized float32 values (callers re-zero padding/missing)."""
        if modality not in self.mean:
            return values
        return (values - self.mean[modality]) / self.std[modality]

    def to_dict(self) -> dict:
        """JSON-able (float32 values round-trip exactly through Python floats)."""
        return {m: {"mean": self.mean[m].tolist(), "std": self.std[m].tolist()} for m in self.mean}

    @classmethod
    def from_dict(cls, payload: dict | None) -> FeatureStats | None:
        """The inverse of `to_dict`; None (a checkpoint trained without standardization) stays None."""
        if not payload:
            return None
        mean = {m: np.asarray(v["mean"], np.float32) for m, v in payload.items()}
        std = {m: np.asarray(v["std"], np.float32) for m, v in payload.items()}
        return cls(mean, std)


def fit_feature_stats(split: Split) -> FeatureStats:
    """Mean and std of every feature over the valid frames of `split` (two passes, float64)."""
    mean, std = {}, {}
    for modality, values in split.features.items():
        lengths = split.lengths[modality]
        count = int(np.minimum(lengths, values.shape[1]).sum())
        dim = values.shape[-1]
        if count == 0:  # a modality absent from every training sample: nothing to learn from
            mean[modality], std[modality] = np.zeros(dim, np.float32), np.ones(dim, np.float32)
            continue
        centre = sum(frames.sum(0, dtype=np.float64) for frames in _valid_frames(values, lengths)) / count
        spread = np.sqrt(sum(((frames - centre) ** 2).sum(0) for frames in _valid_frames(values, lengths)) / count)
        constant = spread <= CONSTANT_TOLERANCE * (1.0 + np.abs(centre))
        mean[modality] = centre.astype(np.float32)
        std[modality] = np.where(constant, 1.0, spread).astype(np.float32)
    return FeatureStats(mean, std)


def _valid_frames(values: np.ndarray, lengths: np.ndarray):
    """Yield (frames, D) arrays of the valid (non-padding) frames, CHUNK_ROWS samples at a time."""
    positions = np.arange(values.shape[1])[None, :]
    for start in range(0, len(values), CHUNK_ROWS):
        valid = positions < lengths[start : start + CHUNK_ROWS, None]
        yield values[start : start + CHUNK_ROWS][valid].astype(np.float64)
