"""The method interface and the registry: the one seam between methods and everything else.

A method is an nn.Module that takes a `Batch` (any subset of modalities present) and returns an
`Output`; `loss()` returns named terms so the trainer can log them and ablations are switches.
The trainer knows nothing about a method; a method knows nothing about files, CLIs or metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch, SplitTensors
from robustmsa.data.schema import DatasetSpec
from robustmsa.data.standardize import FeatureStats


@dataclass
class Phase:
    """One stage of training. `select=True`: early stopping and best-checkpoint selection on the
    validation split's primary metric; `select=False` (e.g. self-supervised pre-training): run all
    epochs and keep the last weights. `uses_unlabeled`: the phase sees unlabeled training samples
    (supervised phases train on the labeled part only). `unlabeled_k` > 0: paired streams
    (training/streams.py): each step `loss(labeled_batch, phase, unlabeled=batch)` gets a batch
    of labeled rows and one of k times as many rows with labels hidden; an epoch is one pass over
    the unlabeled stream (every training row)."""

    name: str = "train"
    epochs: int | None = None  # None: the training config's epochs
    lr: float | None = None  # None: the training config's lr
    select: bool = True
    uses_unlabeled: bool = False
    unlabeled_k: int = 0


@dataclass
class Output:
    """pred: (B,) sentiment score for regression, (B, C) logits for classification.
    extras: method-specific per-sample tensors (quality scores, fusion weights, ...)."""

    pred: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base class. Subclasses set `name` and `config_class` and implement forward() and loss()."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, spec: DatasetSpec, cfg: Any):
        super().__init__()
        self.spec = spec
        self.cfg = cfg
        self.modalities = spec.modality_names
        self.num_outputs = spec.label.num_outputs
        # The training statistics its inputs are standardized with (data/standardize.py); set by
        # the trainer and by load_checkpoint, and read by whoever builds its input tensors.
        self.input_stats: FeatureStats | None = None

    def forward(self, batch: Batch) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, batch: Batch, phase: str) -> dict[str, Tensor]:
        """Default: the supervised task loss on labeled samples."""
        out = self(batch)
        task = self.task_loss(out.pred, batch)
        return {"loss": task, "task": task}

    def phases(self) -> list[Phase]:
        return [Phase("train")]

    def serving_options(self) -> list[str]:
        """Alternative predictors the trainer scores on validation at each selection (e.g. a
        mean teacher next to its student); the best is served and saved with the weights.
        Default: none, the method itself."""
        return []

    def serve(self, option: str) -> None:
        """Predict with `option` (one of `serving_options()`) from now on."""
        raise ValueError(f"{self.name}: no serving option {option!r}")

    def prepare(self, train: SplitTensors) -> None:
        """Called once before training with the (labeled) training tensors, e.g. to compute
        training-set statistics. Default: nothing."""

    def after_step(self) -> None:
        """Called after each optimizer step (queues, EMA teachers). Default: nothing."""

    def task_loss(self, pred: Tensor, batch: Batch) -> Tensor:
        """L1 for regression (MMSA's choice for MOSI/SIMS), cross-entropy for classes; labeled
        samples only. A batch with no labeled sample gives a zero that keeps the graph."""
        labeled = batch.labeled
        if not bool(labeled.any()):
            return pred.sum() * 0.0
        if self.spec.label.is_regression:
            return torch.nn.functional.l1_loss(pred[labeled], batch.labels[labeled])
        return torch.nn.functional.cross_entropy(pred[labeled], batch.labels[labeled])

    def present_dict(self, batch: Batch) -> dict[str, Tensor]:
        return {m: batch.is_present(m) for m in self.modalities}


_REGISTRY: dict[str, type[Method]] = {}


def register_method(name: str):
    """Class decorator: `@register_method("late_fusion")` makes the method creatable by name."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _ensure_builtin_methods() -> None:
    import robustmsa.methods.baselines  # noqa: F401  (registers on import)
    import robustmsa.methods.drf  # noqa: F401
    import robustmsa.methods.fsrf  # noqa: F401
    import robustmsa.methods.sslmm  # noqa: F401


def list_methods() -> list[str]:
    _ensure_builtin_methods()
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    _ensure_builtin_methods()
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_method(name: str, spec: DatasetSpec, **overrides: Any) -> Method:
    """Build a registered method with its config defaults updated by `overrides`."""
    cls = method_class(name)
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise KeyError(f"method {name!r} has no option {unknown[0]!r}; options: {', '.join(sorted(known))}")
    return cls(spec, cls.config_class(**overrides))
