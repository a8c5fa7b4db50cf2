"""Datasets: read any supported format into one `Dataset`, or synthesize one.

>>> ds = load_dataset("synthetic:mosi:n=60")
>>> ds.spec.modality_names
('text', 'audio', 'vision')
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from robustmsa.data.imageposts import looks_raw
from robustmsa.data.imagetext import read_imagetext, write_imagetext
from robustmsa.data.mmsa import read_mmsa, write_mmsa
from robustmsa.data.schema import (
    REGRESSION_MOSI,
    REGRESSION_SIMS,
    SPLITS,
    DataError,
    Dataset,
    DatasetSpec,
    LabelSpec,
    ModalitySpec,
    Split,
)
from robustmsa.data.synthetic import DEFAULT_VERSION, LIKES, synthesize, write_synthetic
from robustmsa.data.synthetic_v2 import Knobs

__all__ = [
    "REGRESSION_MOSI",
    "REGRESSION_SIMS",
    "SPLITS",
    "DataError",
    "Dataset",
    "DatasetSpec",
    "LabelSpec",
    "ModalitySpec",
    "Split",
    "describe",
    "load_dataset",
    "read_imagetext",
    "read_mmsa",
    "synthesize",
    "write_imagetext",
    "write_mmsa",
    "write_synthetic",
]

# "synthetic:mosi", "synthetic:mosi:n=200", "synthetic:mosi:n=200:seed=3", then ":v=1" (the
# first generator) or ":v=2" (default) and v2 knobs ":events=3:low_quality=0.5" (also the `source`
# that `synthesize` records, "n=full" included, so a synthetic source can be loaded again)
_SYNTHETIC = re.compile(r"synthetic:(?P<like>\w+)(?::n=(?P<n>\d+|full))?(?::seed=(?P<seed>\d+))?"
                        r"(?::v=(?P<version>\d+))?(?P<knobs>(?::\w+=[-+.\w]+)*)")


def load_dataset(path: str | os.PathLike) -> Dataset:
    """A folder is read as image-text pairs, a file as an MMSA pickle; "synthetic:<like>[:n=N][:seed=S]"
    synthesizes one in memory.

    >>> load_dataset("MOSI/Processed/unaligned_50.pkl").spec.name  # doctest: +SKIP
    'unaligned_50'
    """
    text = str(path)
    match = _SYNTHETIC.fullmatch(text)
    if match and not Path(text).exists():
        if match["like"] not in LIKES:
            raise DataError(f"{text}: unknown synthetic dataset {match['like']!r}; choose one of {', '.join(LIKES)}")
        return _synthesize_source(text, match)
    path = Path(path)
    if path.is_dir():
        if looks_raw(path):
            raise DataError(f"{path}: a raw image-text folder (images and texts, no features/); encode it first: "
                            f"robustmsa features text --data {path} --out FEATURES, then features image")
        return read_imagetext(path)
    if path.is_file():
        return read_mmsa(path)
    raise DataError(f"{path}: no such file or folder (expected an MMSA pickle or an image-text folder)")


def _synthesize_source(text: str, match: re.Match) -> Dataset:
    n = None if match["n"] in (None, "full") else int(match["n"])
    version = int(match["version"] or DEFAULT_VERSION)
    items = dict(item.split("=", 1) for item in match["knobs"].split(":")[1:])
    try:
        knobs = Knobs.from_strings(items) if items else None
        return synthesize(match["like"], n=n, seed=int(match["seed"] or 0), version=version, knobs=knobs)
    except ValueError as error:
        raise DataError(f"{text}: {error}") from None


def describe(dataset: Dataset) -> str:
    """A human summary for `robustmsa data info`: sizes, modalities, lengths, labels, hash.

    >>> print(describe(synthesize("mosi", n=60)).splitlines()[0])
    dataset synthetic_mosi (synthetic:mosi:n=60:seed=0)
    """
    spec = dataset.spec
    lines = [f"dataset {spec.name} ({dataset.source or 'in memory'})"]
    lines.append(f"sha256  {dataset.source_hash or '-'}")
    lines.append("splits  " + ", ".join(f"{name} {len(split)}" for name, split in dataset.splits.items()))
    lines.append("")
    lines.append(f"{'modality':<10}{'dim':>6}{'max_len':>9}   length min / mean / max")
    for m in spec.modalities:
        lengths = np.concatenate([split.lengths[m.name] for split in dataset.splits.values()])
        lines.append(
            f"{m.name:<10}{m.dim:>6}{m.max_len:>9}   {lengths.min()} / {lengths.mean():.1f} / {lengths.max()}"
        )
    lines.append("")
    lines.extend(_describe_labels(dataset))
    return "\n".join(lines)


def _describe_labels(dataset: Dataset) -> list[str]:
    label = dataset.spec.label
    if label.is_regression:
        lines = [f"labels  regression in [{label.low:g}, {label.high:g}] ({label.metric_family} metrics)"]
        for name, split in dataset.splits.items():
            y = split.labels
            lines.append(
                f"  {name:<6} min {y.min():+.2f}  max {y.max():+.2f}  mean {y.mean():+.3f}  "
                f"std {y.std():.3f}  exact zeros {100 * np.mean(y == 0):.1f}%"
            )
        if any(split.extra_labels for split in dataset.splits.values()):
            keys = sorted({k for split in dataset.splits.values() for k in split.extra_labels})
            lines.append(f"  extra labels: {', '.join(keys)}")
        return lines
    lines = [f"labels  classification, {len(label.classes)} classes: {', '.join(label.classes)}"]
    for name, split in dataset.splits.items():
        counts = np.bincount(split.labels, minlength=len(label.classes))
        lines.append(f"  {name:<6} " + "  ".join(f"{c} {k}" for c, k in zip(label.classes, counts)))
    return lines
