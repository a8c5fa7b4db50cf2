"""Learning-rate schedule within a phase: constant, or linear warmup then linear decay to zero.

Fine-tuning a pretrained transformer at a constant rate disturbs its weights most in the first
steps, when the freshly initialised head still sends large, noisy gradients back into it; a
short warmup lets the head settle first, and decaying to zero at the phase's last epoch makes the
late epochs (the ones early stopping usually keeps) small refinements instead of random jumps.

The factor is a pure function of the step within the phase, so a resumed run recomputes it from
the epoch it resumes at: no scheduler state to save.
"""

from __future__ import annotations

import math

import torch

from robustmsa.config import LR_SCHEDULES



def lr_factor(kind: str, step: int, total: int, warmup: float) -> float:
    """Multiplier of every group's base rate at optimizer step `step` (0-based) of `total`.
    linear: rises from 1/warm to 1 over the first `warm = ceil(warmup * total)` steps, then falls
    linearly so that the phase's last step still trains (factor 1/(total - warm + 1) > 0)."""
    if kind == "constant" or total <= 0:
        return 1.0
    if kind != "linear":
        raise ValueError(f"lr schedule {kind!r} not one of {', '.join(LR_SCHEDULES)}")
    warm = min(total, math.ceil(warmup * total - 1e-9))
    if step < warm:
        return (step + 1) / warm
    return (total - step) / (total - warm)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Scale every parameter group to `factor` times the rate it was created with."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
