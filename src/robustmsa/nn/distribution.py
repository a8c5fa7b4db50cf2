"""Distribution-level losses and distances shared by MISA, FSRF and DRF: CMD, multi-bandwidth RBF
MMD, the Mahalanobis distance, soft orthogonality (DiffLoss), a Gaussian-prior KL, and
stop-gradient (bidirectional) distillation KL over soft bins or logits."""

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


def gaussian_prior_kl(mean: Tensor, logvar: Tensor | None = None) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per dimension, averaged over samples and dimensions.

    Averaging (not summing) over dimensions keeps the term's scale independent of the width d.
    `logvar=None` means unit variance, leaving 0.5 * mean^2.

    >>> float(gaussian_prior_kl(torch.zeros(4, 3), torch.zeros(4, 3)))
    0.0
    """
    if logvar is None:
        logvar = torch.zeros_like(mean)
    return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0).mean()


def distill_kl(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """KL(p_teacher || p_student) over the last axis, mean over samples. The teacher side is
    detached (stop-gradient), so only the student is pulled toward the teacher.

    >>> float(distill_kl(torch.zeros(2, 5), torch.zeros(2, 5)))
    0.0
    """
    teacher = torch.log_softmax(teacher_logits.detach(), dim=-1)
    student = torch.log_softmax(student_logits, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(-1).mean()


def bidirectional_kl(logits_a: Tensor, logits_b: Tensor) -> tuple[Tensor, Tensor]:
    """Two-way self-distillation: (KL(p_a || p_b) teaching b, KL(p_b || p_a) teaching a), each
    with a stop-gradient on its target, so each direction moves only its own student.

    >>> a_teaches_b, b_teaches_a = bidirectional_kl(torch.zeros(2, 3), torch.zeros(2, 3))
    """
    return distill_kl(logits_a, logits_b), distill_kl(logits_b, logits_a)


def bin_logits(values: Tensor, centres: Tensor, temperature: float = 1.0) -> Tensor:
    """A scalar prediction as a distribution over sentiment bins: logits -(v - c)^2 / T with
    distances measured in bin widths, so T means the same on [-3, 3] and [-1, 1].
    values (B,), centres (K,) evenly spaced -> (B, K).

    >>> bin_logits(torch.tensor([0.0]), torch.tensor([-1.0, 0.0, 1.0])).argmax(-1).item()
    1
    """
    width = (centres[1] - centres[0]).abs() if centres.numel() > 1 else centres.new_tensor(1.0)
    distance = (values.unsqueeze(-1) - centres) / width
    return -distance.pow(2) / temperature


def batch_standardize(values: Tensor, eps: float = 1e-6) -> Tensor:
    """Z-score a batch of scalars (B,): what remains is the samples' relative order and spacing,
    invariant to (and carrying no gradient along) the batch's own shift and spread.

    >>> [round(v, 4) for v in batch_standardize(torch.tensor([1.0, 2.0, 3.0])).tolist()]
    [-1.2247, 0.0, 1.2247]
    """
    centred = values - values.mean()
    return centred / (centred.pow(2).mean() + eps).sqrt()


def rbf_mmd(x: Tensor, y: Tensor, scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> Tensor:
    """Squared Maximum Mean Discrepancy (Gretton et al. 2012) between samples x (n, d) and y (m, d)
    with a sum of RBF kernels exp(-||a - b||^2 / (2 s^2 h^2)) over `scales` s.

    h^2 is the mean pairwise squared distance of the pooled sample (detached: the bandwidth follows
    the data but is not a way to shrink the loss), so the kernels fit any feature scale. The biased
    (V-statistic) estimate: never negative, near 0 for two samples of one distribution, growing
    with a shift of mean or spread.

    >>> x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    >>> bool(rbf_mmd(x, x + 2.0) > 10 * rbf_mmd(x[:100], x[100:]))
    True
    """
    pooled = torch.cat([x, y])
    squared = torch.cdist(pooled, pooled).pow(2)
    bandwidth = squared.detach().mean().clamp_min(1e-12)
    kernel = sum(torch.exp(-squared / (2.0 * s * s * bandwidth)) for s in scales) / len(scales)
    n = x.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2.0 * kernel[:n, n:].mean()


def mahalanobis(x: Tensor, mean: Tensor, precision: Tensor) -> Tensor:
    """Per-row Mahalanobis distance sqrt((x - mean)^T P (x - mean) / d), divided by sqrt(d) so a
    typical in-distribution vector scores about 1 whatever the width d: (B, d) -> (B,).

    >>> float(mahalanobis(torch.ones(1, 4), torch.zeros(4), torch.eye(4))[0])
    1.0
    """
    centred = x - mean
    squared = ((centred @ precision) * centred).sum(-1) / x.shape[-1]
    return (squared.clamp_min(0.0) + 1e-12).sqrt()
