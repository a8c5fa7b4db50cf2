"""FeatureQueue: a FIFO of recent clean training features that stands in for a modality's
feature distribution (DRF), with a running mean and a shrunk covariance for Mahalanobis distances.

Everything the queue holds is a buffer, so it travels with the model's state_dict (and hence
with the safetensors checkpoint): a restored model scores quality against the very features it
was selected with. The queue only grows in training mode; at evaluation it is read-only, so
test data can never leak into the reference distribution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustmsa.nn.distribution import mahalanobis


def ledoit_wolf_shrinkage(centred: Tensor) -> float:
    """Ledoit-Wolf (2004) optimal weight of the scaled-identity target for samples (n, d) that are
    already centred: the covariance estimate is (1 - s) * S + s * (tr(S) / d) * I.

    The same estimator as sklearn.covariance.ledoit_wolf (tests check the two agree).
    """
    n, d = centred.shape
    squares = centred.pow(2)
    variances = squares.sum(0) / n  # diagonal of S
    mu = variances.sum() / d
    gram = centred.t() @ centred
    # ||S - mu I||_F^2 / d: how far S is from the target
    distance = ((gram / n).pow(2).sum() - 2 * mu * variances.sum() + d * mu.pow(2)) / d
    # the estimated variance of S's entries (beta in the paper), capped by the distance
    spread = ((squares.t() @ squares).sum() / n - (gram / n).pow(2).sum()) / (n * d)
    spread = torch.minimum(spread, distance)
    if float(distance) <= 0.0:
        return 1.0  # S is already a multiple of I (or n is tiny): the target is all there is
    return float((spread / distance).clamp(0.0, 1.0))


class FeatureQueue(nn.Module):
    """FIFO of the last `size` feature vectors (d,) with their mean and (shrunk) precision matrix.

    shrinkage: None = Ledoit-Wolf's data-driven weight, else a fixed weight in [0, 1] of the
    scaled-identity target (1 = ignore correlations). `min_count`: fewer entries than this and
    the queue is not `ready` (statistics of one or two vectors are meaningless).

    >>> queue = FeatureQueue(dim=4, size=8)
    >>> queue.push(torch.randn(5, 4)); int(queue.count), queue.contents().shape
    (5, torch.Size([5, 4]))
    """

    def __init__(self, dim: int, size: int, shrinkage: float | None = None, min_count: int = 8):
        super().__init__()
        if size < 2:
            raise ValueError(f"feature queue: size must be >= 2, got {size}")
        if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"feature queue: shrinkage must be in [0, 1] or None (Ledoit-Wolf), got {shrinkage}")
        self.dim, self.size, self.shrinkage, self.min_count = dim, size, shrinkage, min_count
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # filled slots, <= size
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("precision", torch.eye(dim))  # inverse of the shrunk covariance

    @property
    def ready(self) -> bool:
        return int(self.count) >= self.min_count

    def contents(self) -> Tensor:
        """The held features, oldest first: (count, d)."""
        count, pointer = int(self.count), int(self.pointer)
        if count < self.size:
            return self.features[:count]
        return torch.cat([self.features[pointer:], self.features[:pointer]])

    @torch.no_grad()
    def push(self, values: Tensor) -> None:
        """Append (n, d) features, dropping the oldest past `size`, and refresh the statistics.
        A no-op in eval mode: evaluation never changes the reference distribution."""
        if not self.training or values.numel() == 0:
            return
        if values.dim() != 2 or values.shape[1] != self.dim:
            raise ValueError(f"feature queue: expected features (n, {self.dim}), got {tuple(values.shape)}")
        values = values.detach().to(self.features.dtype)[-self.size :]
        n, pointer = values.shape[0], int(self.pointer)
        slots = (pointer + torch.arange(n, device=values.device)) % self.size
        self.features[slots] = values
        self.pointer.fill_((pointer + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))
        self._refresh()

    def _refresh(self) -> None:
        """Mean, shrunk covariance and its inverse from the current contents. The products run in
        float32 (they dominate the cost); the inversion runs in float64, where a near-singular
        covariance would otherwise give garbage distances."""
        held = self.contents()
        mean = held.mean(0)
        centred = held - mean
        weight = self.shrinkage if self.shrinkage is not None else ledoit_wolf_shrinkage(centred)
        covariance = (centred.t() @ centred / held.shape[0]).double()
        scale = covariance.diagonal().mean().clamp_min(1e-12)
        eye = torch.eye(self.dim, dtype=covariance.dtype, device=covariance.device)
        shrunk = (1.0 - weight) * covariance + (weight + 1e-6) * scale * eye
        self.mean.copy_(mean)
        self.precision.copy_(torch.linalg.inv(shrunk))

    def mahalanobis(self, x: Tensor) -> Tensor:
        """Distance of each row to the queue's distribution, per dimension (see
        `distribution.mahalanobis`): (B, d) -> (B,), about 1 for a typical queued feature."""
        return mahalanobis(x, self.mean, self.precision)

    def whiten(self, x: Tensor) -> Tensor:
        """Coordinates in which the queue's distribution is white: (x - mean) L with L L^T the
        precision (Cholesky, in float64), so ||row||^2 / d is the squared `mahalanobis`: (B, d) -> (B, d)."""
        return (x - self.mean) @ self._precision_factor().to(x.dtype)

    def _precision_factor(self) -> Tensor:
        """Cholesky factor of the precision, computed once per value of it: a refresh or a loaded
        state dict writes the precision in place, which bumps its version and so the key."""
        key = (self.precision.data_ptr(), self.precision._version, self.precision.device)
        if getattr(self, "_factor_key", None) != key:
            self._factor = torch.linalg.cholesky(self.precision.double())
            self._factor_key = key
        return self._factor

    def top_k_cosine(self, x: Tensor, k: int) -> Tensor:
        """Mean of the k largest cosine similarities between each row and the queue: (B, d) -> (B,)."""
        held = nn.functional.normalize(self.contents(), dim=-1)
        similarity = nn.functional.normalize(x, dim=-1) @ held.t()
        return similarity.topk(min(k, similarity.shape[1]), dim=-1).values.mean(-1)

    def sample(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """Up to `count` held features drawn without replacement (for batch-level distribution
        losses, where the whole queue would cost count^2 kernel entries)."""
        held = self.contents()
        if held.shape[0] <= count:
            return held
        pick = torch.randperm(held.shape[0], generator=generator, device=held.device)[:count]
        return held[pick]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, size={self.size}, shrinkage={self.shrinkage}"
