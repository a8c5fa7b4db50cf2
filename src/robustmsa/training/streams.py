"""Separate labeled and unlabeled streams for semi-supervised phases (`Phase.paired`).

One loader that mixes labeled and unlabeled rows gives a supervised term that averages over a
handful of rows at a low labeled ratio (about 6 of 64 at ratio 0.1) while the unlabeled terms
average over the rest. Here every step pairs a labeled batch of `batch_size` rows with an
unlabeled batch of k times that size, so both terms always see full batches, whatever the ratio.
An epoch is one pass over the unlabeled stream (every training row, its label hidden); the
labeled rows are drawn with replacement when there are fewer than the epoch needs (the same
`epoch_order` the equal-budget supervised phases use).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from robustmsa.data.batch import Batch, SplitTensors, epoch_order


def paired_steps(unlabeled_rows: int, batch_size: int, k: int) -> int:
    """Optimizer steps of one epoch: one pass over the unlabeled stream in batches of k * batch_size."""
    return math.ceil(unlabeled_rows / (k * batch_size))


def stream_order(n: int, rows: int, generator: torch.Generator) -> torch.Tensor:
    """`rows` draws from `n` rows: a prefix of a permutation when rows <= n (no repeats), else every
    row once topped up with replacement (`epoch_order`)."""
    if rows <= n:
        return torch.randperm(n, generator=generator)[:rows]
    return epoch_order(n, rows, generator)


def paired_batches(labeled: SplitTensors, unlabeled: SplitTensors, batch_size: int, k: int,
                   generator: torch.Generator) -> Iterator[tuple[Batch, Batch]]:
    """Yield (labeled batch, unlabeled batch) pairs for one epoch; both orders from `generator`."""
    if k < 1:
        raise ValueError(f"train.unlabeled_ratio_k must be >= 1, got {k}")
    if not len(labeled):
        raise ValueError("a paired phase needs at least one labeled training row")
    steps = paired_steps(len(unlabeled), batch_size, k)
    unlabeled_order = torch.randperm(len(unlabeled), generator=generator)
    labeled_order = stream_order(len(labeled), steps * batch_size, generator)
    for step in range(steps):
        u = unlabeled_order[step * k * batch_size : (step + 1) * k * batch_size]
        yield labeled.batch(labeled_order[step * batch_size : (step + 1) * batch_size]), unlabeled.batch(u)


class PairedStreams:
    """A paired phase's training data: `batches()` yields (labeled, unlabeled) pairs; the
    unlabeled stream is every training row with its label hidden."""

    def __init__(self, labeled: SplitTensors, every_row: SplitTensors, k: int):
        self.labeled, self.unlabeled, self.k = labeled, hide_labels(every_row), k

    def __len__(self) -> int:
        return len(self.unlabeled)

    def steps(self, batch_size: int) -> int:
        return paired_steps(len(self.unlabeled), batch_size, self.k)

    def batches(self, batch_size: int, generator: torch.Generator, rows: int | None = None):
        """`rows` is ignored: the unlabeled pass fixes the epoch."""
        return paired_batches(self.labeled, self.unlabeled, batch_size, self.k, generator)


def hide_labels(split: SplitTensors) -> SplitTensors:
    """The same tensors with every row marked unlabeled (shares memory; the labels stay for
    nothing but shape: `task_loss` ignores unlabeled rows)."""
    hidden = object.__new__(SplitTensors)
    hidden.__dict__.update(split.__dict__)
    hidden.labeled = torch.zeros_like(split.labeled)
    return hidden
