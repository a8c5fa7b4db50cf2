"""Fusion helpers that respect which modalities are present."""

from __future__ import annotations

import torch
from torch import Tensor


def present_mean(vectors: dict[str, Tensor], present: dict[str, Tensor]) -> Tensor:
    """Mean of per-modality vectors (B, d) over the modalities present for each sample."""
    total = sum(v * present[m].unsqueeze(-1).to(v.dtype) for m, v in vectors.items())
    count = sum(present[m].to(total.dtype) for m in vectors).clamp_min(1.0)
    return total / count.unsqueeze(-1)


def stack_tokens(vectors: dict[str, Tensor], present: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Stack per-modality vectors into a token sequence (B, M, d) with its validity mask (B, M)."""
    tokens = torch.stack(list(vectors.values()), dim=1)
    mask = torch.stack([present[m] for m in vectors], dim=1)
    return tokens * mask.unsqueeze(-1).to(tokens.dtype), mask
