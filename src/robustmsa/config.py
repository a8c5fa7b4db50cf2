"""Run configuration: dataclass defaults < `key=value` overrides; unknown keys are errors.

A run config is saved beside its checkpoint and hashed; the hash names the run directory, so
the same config always lands in the same place (and a rerun finds its finished seeds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A bad option: unknown key, wrong type or value out of range. One line."""


SELECT_RULES = ("mixed", "complete", "missing")
LR_SCHEDULES = ("constant", "linear")  # training/schedule.py implements them


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    patience: int = 6  # epochs without validation improvement before stopping
    eval_batch_size: int = 256
    # Model selection (early stopping, best checkpoint) on the validation split: "mixed" = mean of
    # the primary metric on complete validation and on validation under `select_protocol` (masks
    # seeded by the run seed: the same for every method); "complete" / "missing" = one of the two.
    # modality:0.3 = a moderate, whole-modality rate inside the modality curve's 0..0.7 range, so
    # the chosen checkpoint must hold up when modalities go missing, not only on complete data.
    select_on: str = "mixed"
    select_protocol: str = "modality:0.3"
    # labeled_ratio < 1: supervised phases draw labeled rows with replacement until an epoch has as
    # many optimizer steps as a full-data epoch (a baseline is not under-trained next to SSL)
    equal_budget: bool = True
    num_threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # Per-phase learning-rate schedule of every parameter group (training/schedule.py): "constant",
    # or "linear" = warmup over the first `warmup` fraction of the phase's steps, then linear decay
    # to zero at its last epoch (the usual recipe for fine-tuning a pretrained text encoder).
    lr_schedule: str = "constant"
    warmup: float = 0.1

    # Options added after runs were cached: hashed only when set to something else than their
    # default, so the folders and bench rows of runs made before they existed stay valid.
    LATE_OPTIONS: typing.ClassVar[dict[str, Any]] = {"lr_schedule": "constant", "warmup": 0.1}

    def to_dict(self) -> dict:
        """The options as saved and hashed (late options at their default left out)."""
        values = asdict(self)
        return {k: v for k, v in values.items() if k not in self.LATE_OPTIONS or v != self.LATE_OPTIONS[k]}

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.patience < 1:
            raise ConfigError(f"train.patience must be >= 1, got {self.patience}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"train.warmup must be in [0, 1), got {self.warmup}")
        if self.select_on not in SELECT_RULES:
            raise ConfigError(f"train.select_on must be one of {', '.join(SELECT_RULES)}, got {self.select_on!r}")
        from robustmsa.missing import Protocol  # here: missing.py imports torch

        try:
            Protocol.parse(self.select_protocol)
        except ValueError as error:
            raise ConfigError(f"train.select_protocol: {error}") from None

    def selection_rule(self) -> str:
        """How the checkpoint was chosen, for table headers."""
        if self.select_on == "complete":
            return "complete validation"
        if self.select_on == "missing":
            return f"validation under {self.select_protocol}"
        return f"mean of complete validation and validation under {self.select_protocol}"


@dataclass
class DataConfig:
    labeled_ratio: float = 1.0  # fraction of training labels kept (PROTOCOLS.md label scarcity)
    standardize: bool = True  # per-feature standardization with training statistics (data/standardize.py)

    def validate(self) -> None:
        if not 0.0 < self.labeled_ratio <= 1.0:
            raise ConfigError(f"data.labeled_ratio must be in (0, 1], got {self.labeled_ratio}")


@dataclass
class RunConfig:
    method: str
    method_options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "method_options": dict(sorted(self.method_options.items())),
            "train": self.train.to_dict(),
            "data": asdict(self.data),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(d["method"], dict(d.get("method_options", {})), TrainConfig(**_legacy_train(d["train"])),
                   DataConfig(**d["data"]))

    def budget(self) -> str:
        """Optimizer steps per epoch, for table headers."""
        if self.data.labeled_ratio >= 1.0:
            return "full data"
        if self.train.equal_budget:
            return "equal: labeled rows drawn with replacement, full-data steps per epoch"
        return "labeled rows once per epoch"

    def hash(self, data_hash: str = "") -> str:
        """Short stable hash of everything that changes the trained model (seed excluded:
        seeds are subfolders of one run)."""
        from robustmsa.methods.base import resolved_options  # lazy: methods import this module

        options = resolved_options(self.method, self.method_options)
        payload = json.dumps({**self.to_dict(), "method_options": options, "data_hash": data_hash}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _legacy_train(train: dict) -> dict:
    """Configs saved before `select_on` held `valid_protocol` (select on that protocol alone, no
    equal budget); read them as what they meant."""
    if "valid_protocol" not in train:
        return train
    train = dict(train)
    protocol = train.pop("valid_protocol")
    train.setdefault("select_on", "complete" if protocol == "none" else "missing")
    train.setdefault("select_protocol", "modality:0.3" if protocol == "none" else protocol)
    train.setdefault("equal_budget", False)
    return train


def _coerce(text: str, annotation: Any, key: str) -> Any:
    """Turn a CLI string into the field's type (bool, int, float, str, optional of those)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        annotation = options[0]
    try:
        if annotation is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if annotation in (int, float, str):
            return annotation(text)
    except ValueError:
        raise ConfigError(f"option {key}={text!r}: expected {annotation.__name__}") from None
    raise ConfigError(f"option {key}: unsupported type {annotation}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply_overrides(run: RunConfig, overrides: list[str], method_config_class: type) -> RunConfig:
    """Apply `key=value` strings. Keys are `train.X`, `data.X`, `method.X`, or a bare `X` that
    names exactly one option across those sections."""
    sections = {"train": type(run.train), "data": type(run.data), "method": method_config_class}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        section, name = _locate(key.strip(), sections)
        typed = _coerce(value.strip(), _field_types(sections[section])[name], key)
        if section == "method":
            run.method_options[name] = typed
        else:
            setattr(getattr(run, section), name, typed)
    run.train.validate()
    run.data.validate()
    validate_method_options(run.method_options, method_config_class)
    return run


def validate_method_options(options: dict[str, Any], config_class: type) -> None:
    """Integer method options are sizes and counts (d, heads, segments, queue sizes, ...): they
    must be >= 1, unless the field declares another floor (`field(metadata={"min": 0})`)."""
    types_ = _field_types(config_class)
    floors = {f.name: f.metadata.get("min", 1) for f in dataclasses.fields(config_class)}
    for name, value in options.items():
        if types_.get(name) is int and value < floors[name]:
            raise ConfigError(f"method.{name} must be >= {floors[name]}, got {value}")


def _locate(key: str, sections: dict[str, type]) -> tuple[str, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in sections:
            raise ConfigError(f"unknown option {key!r}: sections are {', '.join(sections)}")
        known = {f.name for f in dataclasses.fields(sections[section])}
        if name not in known:
            raise ConfigError(f"unknown option {key!r}; {section} options: {', '.join(sorted(known))}")
        return section, name
    hits = [s for s, cls in sections.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if not hits:
        every = sorted(f"{s}.{f.name}" for s, cls in sections.items() for f in dataclasses.fields(cls))
        raise ConfigError(f"unknown option {key!r}; known: {', '.join(every)}")
    if len(hits) > 1:
        raise ConfigError(f"option {key!r} is ambiguous; write one of {', '.join(h + '.' + key for h in hits)}")
    return hits[0], key
