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
from robustmsa.data.standardize import FeatureStats


@dataclass
class MissingPattern:
    """Masks produced by a protocol (see `robustmsa.missing`); applied by `SplitTensors`.

    present: bool (N, M), False = whole modality missing for that sample (method is told).
    frame_keep: per modality bool (N, L), False = that frame/token dropped (method is told via
        Batch.frame_mask). Padding positions are always True: protocols never touch padding.
        Key "text_bert" (N, L_tokens): word pieces dropped from `Split.text_bert` (mask zeroed).
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
    index: (B,) row numbers in the split; text_bert: (B, 3, L) int64 word-piece ids, attention
    mask and segment ids (mask zero where text is missing or a token dropped), or None."""

    modalities: tuple[str, ...]
    features: dict[str, Tensor]
    frame_mask: dict[str, Tensor]
    lengths: dict[str, Tensor]
    present: Tensor
    labels: Tensor
    labeled: Tensor
    index: Tensor
    text_bert: Tensor | None = None

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
            return v  # None (no text_bert) and tuples stay as they are

        return Batch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def with_present(self, present: Tensor, frame_mask: dict[str, Tensor] | None = None) -> Batch:
        """A view where modalities absent in `present` are zeroed and masked (used by training-time
        missing augmentation; frame masks of removed modalities become all False). `frame_mask`
        (subsets of this batch's frame masks) also drops frames, in the same single pass over the
        features: on MOSI-sized batches each pass is a copy of ~13 MB, a tenth of a training step."""
        present = present & self.present
        frame_mask = self.frame_mask if frame_mask is None else frame_mask
        features, masks = {}, {}
        for j, m in enumerate(self.modalities):
            masks[m] = frame_mask[m] & present[:, j, None]
            if frame_mask is self.frame_mask:
                features[m] = self.features[m] * present[:, j, None, None]
            else:
                features[m] = self.features[m] * masks[m].unsqueeze(-1).to(self.features[m].dtype)
        frame_mask = masks
        text_bert = self.text_bert
        if text_bert is not None and "text" in self.modalities:
            text_bert = mask_tokens(text_bert, present[:, self.modalities.index("text"), None])
        return replace(self, features=features, frame_mask=frame_mask, present=present, text_bert=text_bert)


def mask_tokens(text_bert: Tensor, keep: Tensor) -> Tensor:
    """text_bert with its attention mask (row 1) zeroed where `keep` (broadcast to (B, L)) is False."""
    out = text_bert.clone()
    out[:, 1] = out[:, 1] * keep.to(out.dtype)
    return out


def masked_features(x: np.ndarray, keep: np.ndarray, corrupt: np.ndarray | None = None) -> Tensor:
    """x (N, L, D) as float32, zero where `keep` (N, L) is False or `corrupt` is True.

    Complete data has zeros on its padding already, so nothing changes and the tensor shares the
    dataset's memory (no copy of the ~250 MB of a MOSI training split); otherwise one torch
    multiply, the same IEEE products as numpy's, several times faster for a bool mask."""
    values = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    keep_t = torch.from_numpy(keep)
    if corrupt is None and not bool((values.any(dim=-1) & ~keep_t).any()):
        return values
    values = values * keep_t.unsqueeze(-1)
    return values if corrupt is None else values * ~torch.from_numpy(corrupt)


class SplitTensors:
    """One split with a missing pattern applied, held as tensors; `batch(idx)` slices it.
    `stats`: the training statistics to standardize features with (data/standardize.py). Protocols
    act on the data as stored: a corrupted value (the method is not told) is a stored 0, then
    standardized like any other; a missing, dropped or padded one is 0 after standardization.
    The tensors may share memory with the split's arrays: both are read-only by convention."""

    def __init__(
        self,
        split: Split,
        spec: DatasetSpec,
        pattern: MissingPattern | None = None,
        labeled: np.ndarray | None = None,
        stats: FeatureStats | None = None,
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
            if stats is None:
                self.features[m] = masked_features(x, keep, pattern.corrupt.get(m))
            else:  # corrupt as stored, then standardize, then zero what is missing / dropped / padded
                values = x * ~pattern.corrupt[m] if m in pattern.corrupt else x
                self.features[m] = masked_features(stats.apply(m, values), keep)
            self.frame_mask[m] = torch.from_numpy(keep)
            self.lengths[m] = torch.from_numpy(length.astype(np.int64))
        self.present = torch.from_numpy(present)
        self.text_bert = self._tokens(split, pattern, present)
        label_dtype = np.float32 if spec.label.is_regression else np.int64
        self.labels = torch.from_numpy(split.labels.astype(label_dtype))
        labeled = np.ones(n, dtype=bool) if labeled is None else labeled
        self.labeled = torch.from_numpy(labeled.astype(bool))

    def _tokens(self, split: Split, pattern: MissingPattern, present: np.ndarray) -> Tensor | None:
        """Split.text_bert with the mask zeroed where text is missing or a token was dropped."""
        if split.text_bert is None or "text" not in self.modalities:
            return None
        keep = present[:, self.modalities.index("text"), None] & pattern.frame_keep.get("text_bert", True)
        return mask_tokens(torch.from_numpy(np.ascontiguousarray(split.text_bert, dtype=np.int64)), torch.from_numpy(keep))

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
            text_bert=None if self.text_bert is None else self.text_bert[rows],
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
