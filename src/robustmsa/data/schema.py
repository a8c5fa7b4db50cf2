"""What a dataset is: modalities, their shapes, the label kind, and the arrays of each split.

Every reader (MMSA pickle, image-text folders, the synthesizer) produces a `Dataset`; nothing
downstream knows which file format it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "valid", "test")

# Short names used by the field's tables ({l}, {a}, {v}) -> our modality names.
MODALITY_ALIASES = {"l": "text", "t": "text", "a": "audio", "v": "vision", "i": "image"}


class DataError(ValueError):
    """Bad input data. The message is one line naming the file, split, key and what was expected."""


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    dim: int
    max_len: int


@dataclass(frozen=True)
class LabelSpec:
    """`regression` labels lie in [low, high]; `classification` labels are ints in [0, len(classes))."""

    kind: str  # "regression" | "classification"
    low: float | None = None
    high: float | None = None
    classes: tuple[str, ...] = ()

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def num_outputs(self) -> int:
        return 1 if self.is_regression else len(self.classes)

    @property
    def metric_family(self) -> str:
        """Which metric definitions apply (PROTOCOLS.md section 3): 'mosi', 'sims' or 'classification'."""
        if not self.is_regression:
            return "classification"
        return "sims" if self.high is not None and self.high <= 1.0 else "mosi"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "low": self.low, "high": self.high, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSpec:
        return cls(d["kind"], d.get("low"), d.get("high"), tuple(d.get("classes", ())))


REGRESSION_MOSI = LabelSpec("regression", -3.0, 3.0)
REGRESSION_SIMS = LabelSpec("regression", -1.0, 1.0)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    modalities: tuple[ModalitySpec, ...]
    label: LabelSpec

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    def modality(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(f"unknown modality {name!r}; this dataset has {', '.join(self.modality_names)}")

    def resolve_modality(self, name: str) -> str:
        """Accept 'text' or the field's short alias 'l'; return the dataset's modality name."""
        full = MODALITY_ALIASES.get(name, name)
        if full not in self.modality_names:
            raise KeyError(f"unknown modality {name!r}; this dataset has {', '.join(self.modality_names)}")
        return full

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "modalities": [{"name": m.name, "dim": m.dim, "max_len": m.max_len} for m in self.modalities],
            "label": self.label.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> DatasetSpec:
        mods = tuple(ModalitySpec(m["name"], int(m["dim"]), int(m["max_len"])) for m in d["modalities"])
        return cls(d["name"], mods, LabelSpec.from_dict(d["label"]))


@dataclass
class Split:
    """One split's arrays. Sequences are zero-padded to the modality's max_len.

    features[m]: float32 (N, L_m, D_m); lengths[m]: int64 (N,) valid frames (0 = modality absent
    in the source data); labels: float32 (N,) for regression, int64 (N,) for classification.
    text_bert: int64 (N, 3, L_tokens) word-piece ids, attention mask (0/1) and segment ids, as
    MMSA pickles carry them; what a text encoder fine-tuned inside the model reads (None: absent).
    """

    name: str
    ids: list[str]
    features: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    labels: np.ndarray
    raw_text: list[str] | None = None
    extra_labels: dict[str, np.ndarray] = field(default_factory=dict)
    text_bert: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> Split:
        """Rows `index` of this split (used by tests and by label-scarce views)."""
        return Split(
            name=self.name,
            ids=[self.ids[i] for i in index],
            features={m: a[index] for m, a in self.features.items()},
            lengths={m: a[index] for m, a in self.lengths.items()},
            labels=self.labels[index],
            raw_text=None if self.raw_text is None else [self.raw_text[i] for i in index],
            extra_labels={k: v[index] for k, v in self.extra_labels.items()},
            text_bert=None if self.text_bert is None else self.text_bert[index],
        )


@dataclass
class Dataset:
    spec: DatasetSpec
    splits: dict[str, Split]
    source: str = ""  # the file or folder it was read from
    source_hash: str = ""  # sha256 of the source file(s), for reports
    # How the features were made (e.g. metadata["features"]["text"] names the text encoder), so a
    # trained model can featurize new raw inputs the same way. JSON-able; empty when unknown.
    metadata: dict = field(default_factory=dict)

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise KeyError(f"{self.source}: no split {split!r}; have {', '.join(self.splits)}")
        return self.splits[split]
