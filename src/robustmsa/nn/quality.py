"""Modality quality against a feature distribution, and quality-aware fusion weights (DRF).

A feature far from its modality's clean training distribution (held by a `FeatureQueue`) is
probably corrupted. D_m is the (per-dimension) Mahalanobis distance to the queue, or 1 - the mean
of the top-k cosine similarities to the queued features; the reported quality is
q_m = exp(-D_m / tau), in (0, 1]. The Mahalanobis distance may weight the queue's whitened
directions (`DirectionWeights`): the scorer's own parameters, which a ranking loss on detached
features can train to look where corruption shows, without ever moving the features.

Being atypical is not the same as being useless: a modality with half its elements zeroed can
still tell more than a clean weak one. So the fusion weights are not a fixed function of D but a
learned, monotone one (`QualityGate`): softmax over the modalities a sample has of
beta_m - alpha_m * z_m, alpha_m >= 0, z_m = log(1 + D_m) on the scale of clean inputs, with a
learned offset instead for a recovered modality. It starts at plain fusion (alpha ~ 0, beta = 0)
and the task loss decides how far to trust the distance; it can always fall back to plain fusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustmsa.nn.encoders import masked_mean
from robustmsa.nn.queue import FeatureQueue

QUALITY_MEASURES = ("mahalanobis", "cosine")
SPREAD_FLOOR = 0.01  # least std of clean log(1 + D) the gate divides by (a constant column is not infinitely informative)


def modality_distance(queue: FeatureQueue, features: Tensor, measure: str = "mahalanobis", top_k: int = 16,
                      emphasis: Tensor | None = None) -> Tensor:
    """D_m for each row of `features` (B, d): 0 while the queue is not ready (no reference yet,
    so every feature counts as typical and fusion stays uniform). `emphasis` (d,), mean 1: the
    weight of each whitened direction in the Mahalanobis distance (None: all 1, the plain one)."""
    if not queue.ready:
        return features.new_zeros(features.shape[0])
    if measure == "mahalanobis":
        if emphasis is None:
            return queue.mahalanobis(features)
        return ((queue.whiten(features).pow(2) * emphasis).mean(-1).clamp_min(0.0) + 1e-12).sqrt()
    if measure == "cosine":
        return 1.0 - queue.top_k_cosine(features, top_k)
    raise ValueError(f"quality measure {measure!r}: expected one of {', '.join(QUALITY_MEASURES)}")


def standardized_input(features: Tensor, frame_mask: Tensor) -> Tensor:
    """A modality's input as one vector on a fixed scale, with no parameters: each frame
    standardized across its elements (layer norm without affine), then the mean over valid frames:
    (B, L, D), (B, L) -> (B, D). Corruption (zeroed elements or frames) shows here whatever the
    encoder learns, and nothing a loss does can hide it.
    """
    return masked_mean(nn.functional.layer_norm(features, features.shape[-1:]), frame_mask)


class DirectionWeights(nn.Module):
    """Per modality, a learned weight of each whitened direction of its queue in the Mahalanobis
    distance: dim * softmax(v_m), mean 1, starting at 1 everywhere (the plain distance)."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.logits = nn.ParameterList([nn.Parameter(torch.zeros(dim)) for dim in dims])

    def forward(self, index: int) -> Tensor:
        logits = self.logits[index]
        return torch.softmax(logits, dim=-1) * logits.shape[0]


def quality_margin_loss(log_quality_clean: Tensor, log_quality_corrupted: Tensor, margin: float) -> Tensor:
    """Ranking loss on paired features (the same sample clean and corrupted): the clean one's
    log-quality should exceed the corrupted one's by `margin`. Mean of a smooth hinge,
    softplus(margin - gap): it fades once the gap is well past the margin but never stops at an
    exact 0, so the scorer keeps a gradient on every pair."""
    return nn.functional.softplus(margin - (log_quality_clean - log_quality_corrupted)).mean()


def fusion_weights(logits: Tensor, available: Tensor) -> Tensor:
    """Softmax of `logits` over the available modalities of each row: (B, M) -> (B, M), rows sum to
    1 over `available` and are exactly 0 elsewhere (all 0 for a row with nothing available).

    >>> w = fusion_weights(torch.tensor([[0.0, -1.0, 5.0]]), torch.tensor([[True, True, False]]))
    >>> [round(v, 3) for v in w[0].tolist()]
    [0.731, 0.269, 0.0]
    """
    lowest = torch.finfo(logits.dtype).min
    weights = torch.softmax(logits.masked_fill(~available, lowest), dim=-1)
    return torch.where(available, weights, torch.zeros_like(weights))


def uniform_weights(available: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Equal weights over the available modalities (plain fusion): (B, M) -> (B, M)."""
    weights = available.to(dtype)
    return weights / weights.sum(dim=-1, keepdim=True).clamp_min(1.0)


class QualityGate(nn.Module):
    """Fusion weights as a learned monotone function of the queue distances:
    w = softmax over available m of (beta_m - alpha_m * z_m), z_m = (log(1 + D_m) - c_m) / s_m,
    and for a recovered modality (no input of its own to score) beta_m + gamma_m instead.

    alpha_m = |a_m| >= 0, so more distance never means more weight, and its gradient never
    vanishes (a square or a ReLU would stall at 0). a_m starts at `init` (small), beta_m and gamma_m
    at 0: training starts at plain fusion and learns how far each modality's distance is worth
    trusting. log(1 + D) keeps a heavily corrupted input (D in the tens) on the scale of a typical one.

    Why standardize (`standardize`): on clean data log(1 + D) sits near log 2 with a spread of a few
    hundredths, so a corrupted input is many spreads away but only ~1 unit of log(1 + D) away; with
    raw log(1 + D) an alpha of order 1 barely moves the weights and the task loss' gradient on alpha
    is tiny (the previous gate stayed at alpha <= 0.07). With c_m, s_m the running mean and std of
    log(1 + D_m) over clean, present training inputs (`observe`, buffers saved with the model), z_m
    is ~N(0, 1) on clean data and an O(1) alpha has an O(1) effect.

    Why gamma (`recovered_offset`): a recovered modality is g_m of the others; how much it adds
    depends on how well its sources predict m, which its distance to the clean features does not
    measure (the distribution loss pulls it to look typical). gamma_m learns it from the task: a
    text recovered from near-chance audio can weigh little, and fusion falls back to what is there.

    >>> gate = QualityGate(2, init=0.0)
    >>> gate(torch.tensor([[1.0, 50.0]]), torch.tensor([[True, True]])).tolist()
    [[0.5, 0.5]]
    """

    def __init__(self, modalities: int, init: float = 0.01, standardize: bool = True,
                 recovered_offset: bool = True, momentum: float = 0.05):
        super().__init__()
        self.standardize, self.recovered_offset, self.momentum = standardize, recovered_offset, momentum
        self.slope = nn.Parameter(torch.full((modalities,), float(init)))  # a_m; alpha_m = |a_m|
        self.bias = nn.Parameter(torch.zeros(modalities))  # beta_m
        if recovered_offset:
            self.offset = nn.Parameter(torch.zeros(modalities))  # gamma_m
        self.register_buffer("center", torch.zeros(modalities))  # c_m
        self.register_buffer("spread", torch.ones(modalities))  # s_m
        self.register_buffer("observed", torch.zeros(modalities, dtype=torch.bool))

    @property
    def alpha(self) -> Tensor:
        return self.slope.abs()

    @torch.no_grad()
    def observe(self, distance: Tensor, clean: Tensor) -> None:
        """Update c_m, s_m (running mean and std of log(1 + D_m)) from the entries of `distance`
        (B, M) flagged in `clean` (B, M): clean, present, scored inputs. Training mode only."""
        if not (self.training and self.standardize):
            return
        values = torch.log1p(distance.detach())
        for m in range(values.shape[1]):
            column = values[clean[:, m], m]
            if column.numel() < 2:
                continue
            mean, std = column.mean(), column.std().clamp_min(SPREAD_FLOOR)
            if not bool(self.observed[m]):  # the first batch sets the scale; later ones refine it
                self.center[m], self.spread[m], self.observed[m] = mean, std, True
            else:
                self.center[m].lerp_(mean, self.momentum)
                self.spread[m].lerp_(std, self.momentum)

    def score(self, distance: Tensor) -> Tensor:
        """z: log(1 + D), standardized by the clean running statistics where enabled: (B, M)."""
        value = torch.log1p(distance)
        return (value - self.center) / self.spread if self.standardize else value

    def forward(self, distance: Tensor, available: Tensor, recovered: Tensor | None = None) -> Tensor:
        logits = self.bias - self.alpha * self.score(distance)
        if recovered is not None and self.recovered_offset:
            logits = torch.where(recovered, self.bias + self.offset, logits)
        return fusion_weights(logits, available)


@dataclass
class Quality:
    """(B, M) each, in modality order: distance D_m, log q_m = -D_m / tau, q_m (0 where
    unavailable) and the fusion weights."""

    distance: Tensor
    log_quality: Tensor
    quality: Tensor
    weights: Tensor

    @classmethod
    def of(cls, distance: Tensor, available: Tensor, tau: float, weights: Tensor) -> Quality:
        log_quality = -distance / tau
        quality = torch.where(available, log_quality.exp(), torch.zeros_like(log_quality))
        return cls(distance, log_quality, quality, weights)
