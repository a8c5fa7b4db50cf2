"""Batch: what every method receives. Missing data is zeros plus a mask, never a dropped sample.

A `SplitTensors` holds one split with one missing pattern applied, as torch tensors, so that
batching is plain indexing (fast on CPU, no DataLoader workers needed for in-memory data).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from robustmsa.data.schema import DatasetSpec, Split


@dataclass
class MissingPattern:
    """Masks produced by a protocol (see `robustmsa.missing`); applied by `SplitTensors`.

    present: bool (N, M), False = whole modality missing for that sample (method is told).
    frame_keep: per modality bool (N, L), False = that frame/token dropped (method is told via
        Batch.frame_mask). Padding positions are always True: protocols never touch padding.
    corrupt: per modality bool broadcastable to (N, L, D) - (N, L, 1) for frame corruption,
        (N, 1, D) for element corruption of single-vector features. True = value zeroed and the
        method is NOT told (a low-quality modality, DRF's "corrupt").
    """

    present: np.ndarray
    frame_keep: dict[str, np.ndarray]
    corrupt: dict[str, np.ndarray]

    @classmethod
    def complete(cls, split: Split, modalities: tuple[str, ...]) -> MissingPattern:
        n = len(split)
        return cls(np.ones((n, len(modalities)), dtype=bool), {}, {})


@dataclass
class Batch:
    """features[m]: (B, L, D), zero where missing/dropped/corrupted; frame_mask[m]: (B, L) True on
    valid, kept frames; present: (B, M) bool in `modalities` order; labels: (B,); labeled: (B,) bool;
    index: (B,) row numbers in the split."""

    modalities: tuple[str, ...]
    features: dict[str, Tensor]
    frame_mask: dict[str, Tensor]
    lengths: dict[str, Tensor]
    present: Tensor
    labels: Tensor
    labeled: Tensor
    index: Tensor

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def is_present(self, modality: str) -> Tensor:
        """(B,) bool: the modality is there for each sample."""
        return self.present[:, self.modalities.index(modality)]

    def to(self, device: torch.device | str) -> Batch:
        def move(v):
            if isinstance(v, Tensor):
                return v.to(device)
            if isinstance(v, dict):
                return {k: t.to(device) for k, t in v.items()}
            return v

        return Batch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def with_present(self, present: Tensor) -> Batch:
        """A view where modalities absent in `present` are zeroed and masked (used by training-time
        missing augmentation; frame masks of removed modalities become all False)."""
        present = present & self.present
        features, frame_mask = {}, {}
        for j, m in enumerate(self.modalities):
            keep = present[:, j]
            features[m] = self.features[m] * keep[:, None, None]
            frame_mask[m] = self.frame_mask[m] & keep[:, None]
        return replace(self, features=features, frame_mask=frame_mask, present=present)


class SplitTensors:
    """One split with a missing pattern applied, held as tensors; `batch(idx)` slices it."""

    def __init__(
        self,
        split: Split,
        spec: DatasetSpec,
        pattern: MissingPattern | None = None,
        labeled: np.ndarray | None = None,
    ):
        mods = spec.modality_names
        pattern = pattern or MissingPattern.complete(split, mods)
        n = len(split)
        if pattern.present.shape != (n, len(mods)):
            raise ValueError(f"pattern.present has shape {pattern.present.shape}, expected {(n, len(mods))}")
        self.modalities = mods
        present = pattern.present.copy()
        self.features: dict[str, Tensor] = {}
        self.frame_mask: dict[str, Tensor] = {}
        self.lengths: dict[str, Tensor] = {}
        for j, m in enumerate(mods):
            x = split.features[m]
            length = split.lengths[m]
            valid = np.arange(x.shape[1])[None, :] < length[:, None]
            present[:, j] &= length > 0
            keep = valid & pattern.frame_keep.get(m, True) & present[:, j : j + 1]
            values = x * keep[:, :, None]
            if m in pattern.corrupt:
                values = values * ~pattern.corrupt[m]
            self.features[m] = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
            self.frame_mask[m] = torch.from_numpy(keep)
            self.lengths[m] = torch.from_numpy(length.astype(np.int64))
        self.present = torch.from_numpy(present)
        label_dtype = np.float32 if spec.label.is_regression else np.int64
        self.labels = torch.from_numpy(split.labels.astype(label_dtype))
        labeled = np.ones(n, dtype=bool) if labeled is None else labeled
        self.labeled = torch.from_numpy(labeled.astype(bool))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: Tensor | np.ndarray | slice) -> Batch:
        """Rows `index`; a slice gives zero-copy views (ordered evaluation pays no gather)."""
        if isinstance(index, slice):
            rows = index
            index = torch.arange(len(self))[index]
        else:
            index = torch.as_tensor(index, dtype=torch.long)
            rows = index
        return Batch(
            modalities=self.modalities,
            features={m: t[rows] for m, t in self.features.items()},
            frame_mask={m: t[rows] for m, t in self.frame_mask.items()},
            lengths={m: t[rows] for m, t in self.lengths.items()},
            present=self.present[rows],
            labels=self.labels[rows],
            labeled=self.labeled[rows],
            index=index,
        )

    def batches(self, batch_size: int, generator: torch.Generator | None = None, rows: int | None = None):
        """Yield batches in order, or shuffled with `generator` (training only). `rows` above the
        split's size makes an epoch of that many rows (see `epoch_order`)."""
        n = len(self)
        if generator is None:
            for start in range(0, n, batch_size):
                yield self.batch(slice(start, start + batch_size))
            return
        order = epoch_order(n, rows or n, generator)
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size])


def epoch_order(n: int, rows: int, generator: torch.Generator) -> Tensor:
    """Row order of one training epoch of `rows` draws from `n` rows: a permutation when rows = n;
    otherwise every row once (a permutation) topped up with rows drawn with replacement, so a small
    labeled set gets as many optimizer steps as the full set without dropping any row.

    >>> epoch_order(3, 7, torch.Generator().manual_seed(0)).shape
    torch.Size([7])
    """
    if rows < n:
        raise ValueError(f"an epoch must draw every row: rows={rows} < {n}")
    order = torch.randperm(n, generator=generator)
    if rows == n:
        return order
    extra = torch.randint(0, n, (rows - n,), generator=generator)
    return torch.cat([order, extra])[torch.randperm(rows, generator=generator)]
