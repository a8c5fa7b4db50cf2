"""Modality quality against a feature distribution, and quality-weighted fusion weights (DRF).

A feature far from its modality's clean training distribution (held by a `FeatureQueue`) is
probably corrupted, so it should count less in fusion. Quality q_m = exp(-D_m / tau), where
D_m is the (per-dimension) Mahalanobis distance to the queue, or 1 - the mean of the top-k
cosine similarities to the queued features. Fusion weights are a softmax of log q_m over the
modalities a sample has; a modality it does not have gets exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustmsa.nn.queue import FeatureQueue

QUALITY_MEASURES = ("mahalanobis", "cosine")


def modality_distance(queue: FeatureQueue, features: Tensor, measure: str = "mahalanobis", top_k: int = 16) -> Tensor:
    """D_m for each row of `features` (B, d): 0 while the queue is not ready (no reference yet,
    so every feature counts as typical and fusion stays uniform)."""
    if not queue.ready:
        return features.new_zeros(features.shape[0])
    if measure == "mahalanobis":
        return queue.mahalanobis(features)
    if measure == "cosine":
        return 1.0 - queue.top_k_cosine(features, top_k)
    raise ValueError(f"quality measure {measure!r}: expected one of {', '.join(QUALITY_MEASURES)}")


def fusion_weights(log_quality: Tensor, available: Tensor) -> Tensor:
    """Softmax of log q over the available modalities of each row: (B, M) -> (B, M), rows sum to 1
    over `available` and are exactly 0 elsewhere (all 0 for a row with nothing available).

    >>> w = fusion_weights(torch.tensor([[0.0, -1.0, 5.0]]), torch.tensor([[True, True, False]]))
    >>> [round(v, 3) for v in w[0].tolist()]
    [0.731, 0.269, 0.0]
    """
    lowest = torch.finfo(log_quality.dtype).min
    weights = torch.softmax(log_quality.masked_fill(~available, lowest), dim=-1)
    return torch.where(available, weights, torch.zeros_like(weights))


def uniform_weights(available: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Equal weights over the available modalities (the quality ablation): (B, M) -> (B, M)."""
    weights = available.to(dtype)
    return weights / weights.sum(dim=-1, keepdim=True).clamp_min(1.0)


def quality_margin_loss(log_quality_clean: Tensor, log_quality_corrupted: Tensor, margin: float) -> Tensor:
    """Ranking loss on paired features (the same sample clean and corrupted): the clean one's
    log-quality should exceed the corrupted one's by at least `margin`. Mean of the hinge."""
    return torch.relu(margin - (log_quality_clean - log_quality_corrupted)).mean()


@dataclass
class Quality:
    """(B, M) each, in modality order: distance D_m, log q_m, q_m (0 where unavailable), weights."""

    distance: Tensor
    log_quality: Tensor
    quality: Tensor
    weights: Tensor


def score_modalities(
    queues: dict[str, FeatureQueue] | torch.nn.ModuleDict,
    features: dict[str, Tensor],
    available: Tensor,
    tau: float,
    measure: str = "mahalanobis",
    top_k: int = 16,
    weighted: bool = True,
) -> Quality:
    """Quality of each modality's feature against its queue, and the fusion weights.
    `weighted=False` gives uniform weights over the available modalities (quality still reported)."""
    distance = torch.stack([modality_distance(queues[m], f, measure, top_k) for m, f in features.items()], dim=1)
    log_quality = -distance / tau
    quality = torch.where(available, log_quality.exp(), torch.zeros_like(log_quality))
    weights = fusion_weights(log_quality, available) if weighted else uniform_weights(available, distance.dtype)
    return Quality(distance, log_quality, quality, weights)
