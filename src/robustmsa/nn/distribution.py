"""Distribution-level losses shared by MISA, FSRF and DRF: CMD, soft orthogonality (DiffLoss)."""

from __future__ import annotations

import torch
from torch import Tensor


def cmd(x: Tensor, y: Tensor, k: int = 5) -> Tensor:
    """Central Moment Discrepancy (Zellinger et al. 2017), as used by MISA with K=5.

    Distance between the means plus distances between central moments 2..k of two batches
    (B, d). Zero for identical samples; grows with a shift in mean or spread.
    """
    mean_x, mean_y = x.mean(0), y.mean(0)
    centred_x, centred_y = x - mean_x, y - mean_y
    total = torch.linalg.vector_norm(mean_x - mean_y)
    for order in range(2, k + 1):
        total = total + torch.linalg.vector_norm(centred_x.pow(order).mean(0) - centred_y.pow(order).mean(0))
    return total


def diff_loss(a: Tensor, b: Tensor) -> Tensor:
    """Soft orthogonality (MISA's DiffLoss): centre each batch, L2-normalise rows, mean of the
    squared entries of A^T B. Zero when the two representations are orthogonal."""
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    a = torch.nn.functional.normalize(a, dim=1, eps=1e-6)
    b = torch.nn.functional.normalize(b, dim=1, eps=1e-6)
    return (a.t() @ b).pow(2).mean()


def pairwise_over_present(
    values: dict[str, Tensor], present: dict[str, Tensor], fn, min_samples: int = 2
) -> Tensor:
    """Mean of fn(values[m][both], values[n][both]) over modality pairs, using only the samples
    where both modalities are present; pairs with fewer than `min_samples` such samples are
    skipped (moments of one sample are meaningless)."""
    names = list(values)
    terms = []
    for i, m in enumerate(names):
        for n in names[i + 1 :]:
            both = present[m] & present[n]
            if int(both.sum()) >= min_samples:
                terms.append(fn(values[m][both], values[n][both]))
    if not terms:
        return next(iter(values.values())).sum() * 0.0
    return torch.stack(terms).mean()
