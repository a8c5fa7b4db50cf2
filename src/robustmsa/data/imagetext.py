"""Image-text pairs with pre-extracted features (MVSA-Single / -Multiple, TumEmo): PROTOCOLS.md 1.

Folder layout:

    train.jsonl  valid.jsonl (or dev.jsonl)  test.jsonl    one {"id", "text", "label"} per line;
                                                           a .json file holding a JSON array works
                                                           too, and "emotion_label" may replace "label"
    labels.json                                            optional JSON list of class names
    features/{modality}.npz                                `ids` (str), `features` (N, D) or (N, L, D),
                                                           optional `lengths`

Without labels.json the classes are the sorted labels seen in train (MVSA: negative, neutral,
positive), so a label that appears only in valid / test is an error rather than a new class the
model never saw. Single-vector features (N, D) become sequences of length 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustmsa.data.io import atomic_write, atomic_write_text, files_sha256, parse_json
from robustmsa.data.mmsa import last_nonzero_lengths
from robustmsa.data.schema import SPLITS, DataError, Dataset, DatasetSpec, LabelSpec, ModalitySpec, Split

SPLIT_FILE_STEMS = {"train": ("train",), "valid": ("valid", "dev"), "test": ("test",)}
LABEL_KEYS = ("label", "emotion_label")
METADATA_FILE = "metadata.json"  # optional: how the folder was made (e.g. synthetic v2 knobs)


@dataclass(frozen=True)
class _Record:
    id: str
    text: str
    label: str
    where: str  # "file:line" for error messages


@dataclass(frozen=True)
class _Features:
    ids: list[str]
    values: np.ndarray  # float32 (N, L, D)
    lengths: np.ndarray  # int64 (N,)


def read_imagetext(folder: str | os.PathLike) -> Dataset:
    """Read and validate an image-text folder.

    >>> ds = read_imagetext("MVSA-Single/")  # doctest: +SKIP
    >>> ds.spec.label.classes  # doctest: +SKIP
    ('negative', 'neutral', 'positive')
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    split_files = {split: _split_file(folder, split) for split in SPLITS}
    records = {split: _read_records(path) for split, path in split_files.items()}
    labels_file = folder / "labels.json"
    classes = _read_classes(labels_file) if labels_file.is_file() else _classes_seen(records["train"])
    feature_files = _feature_files(folder)
    features = {m: _read_npz(path) for m, path in feature_files.items()}

    splits = {}
    for split in SPLITS:
        labels = np.array([_class_index(r, classes) for r in records[split]], dtype=np.int64)
        ids = [r.id for r in records[split]]
        values, lengths = {}, {}
        for m, feats in features.items():
            rows = _align(feats, ids, feature_files[m], split)
            values[m], lengths[m] = feats.values[rows], feats.lengths[rows]
        splits[split] = Split(split, ids, values, lengths, labels, [r.text for r in records[split]])

    modalities = tuple(ModalitySpec(m, f.values.shape[2], f.values.shape[1]) for m, f in features.items())
    spec = DatasetSpec(folder.name, modalities, LabelSpec("classification", classes=tuple(classes)))
    optional = [f for f in (labels_file, folder / METADATA_FILE) if f.is_file()]
    used = [*split_files.values(), *feature_files.values(), *optional]
    return Dataset(spec, splits, source=str(folder), source_hash=files_sha256(used, folder),
                   metadata=_read_metadata(folder / METADATA_FILE))


def _read_metadata(path: Path) -> dict:
    if not path.is_file():
        return {}
    metadata = parse_json(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(metadata, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(metadata).__name__}")
    return metadata


def _split_file(folder: Path, split: str) -> Path:
    candidates = [folder / f"{stem}{ext}" for stem in SPLIT_FILE_STEMS[split] for ext in (".jsonl", ".json")]
    for path in candidates:
        if path.is_file():
            return path
    names = ", ".join(p.name for p in candidates)
    raise DataError(f"{folder}: no file for split {split!r} (looked for {names})")


def _read_records(path: Path) -> list[_Record]:
    """Records of one split file; every problem names the file and line (or array item)."""
    if path.suffix == ".jsonl":
        items = []
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                if line.strip():
                    items.append((parse_json(line, f"{path}:{line_number}"), f"{path}:{line_number}"))
    else:
        array = parse_json(path.read_text(encoding="utf-8"), str(path))
        if not isinstance(array, list):
            raise DataError(f"{path}: expected a JSON array of objects, got {type(array).__name__}")
        items = [(item, f"{path} item {i}") for i, item in enumerate(array)]
    records = [_record(item, where) for item, where in items]
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise DataError(f"{r.where}: duplicate id {r.id!r}")
        seen.add(r.id)
    if not records:
        raise DataError(f"{path}: no records")
    return records



def _record(item: object, where: str) -> _Record:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
    for key in ("id", "text"):
        if key not in item:
            raise DataError(f"{where}: missing key {key!r}")
    label_key = next((k for k in LABEL_KEYS if k in item), None)
    if label_key is None:
        raise DataError(f"{where}: missing key 'label' (or 'emotion_label')")
    return _Record(str(item["id"]), str(item["text"]), str(item[label_key]), where)


def _read_classes(path: Path) -> list[str]:
    classes = parse_json(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(classes, list) or not classes or len(set(map(str, classes))) != len(classes):
        raise DataError(f"{path}: expected a non-empty JSON list of distinct class names")
    return [str(c) for c in classes]


def _classes_seen(records: list[_Record]) -> list[str]:
    """Sorted train labels; numerically when they are all integers, so '10' follows '9'."""
    labels = {r.label for r in records}
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _class_index(record: _Record, classes: list[str]) -> int:
    try:
        return classes.index(record.label)
    except ValueError:
        raise DataError(f"{record.where}: unknown label {record.label!r} (classes: {', '.join(classes)})") from None


def _feature_files(folder: Path) -> dict[str, Path]:
    """features/*.npz by modality name; text first, then the rest sorted, for a stable order."""
    paths = sorted((folder / "features").glob("*.npz"))
    if not paths:
        raise DataError(f"{folder}: no features/*.npz (pre-extracted features are required, one file per modality)")
    by_name = {p.stem: p for p in paths}
    order = sorted(by_name, key=lambda m: (m != "text", m))
    return {m: by_name[m] for m in order}


def _read_npz(path: Path) -> _Features:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # object arrays, truncated files, not a zip: all mean "unreadable"
        detail = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: not a readable .npz of plain arrays ({type(exc).__name__}: {detail})") from exc
    for key in ("ids", "features"):
        if key not in arrays:
            raise DataError(f"{path}: missing key {key!r}")
    ids = [v.decode() if isinstance(v, bytes) else str(v) for v in arrays["ids"].reshape(-1)]
    values = _feature_values(arrays["features"], path, len(ids))
    if "lengths" in arrays:
        lengths = np.clip(arrays["lengths"].reshape(-1).astype(np.int64), 0, values.shape[1])
        if lengths.shape[0] != len(ids):
            raise DataError(f"{path}: key 'lengths': expected {len(ids)} rows (as key 'ids'), got {lengths.shape[0]}")
    else:
        lengths = last_nonzero_lengths(values) if values.shape[1] > 1 else np.ones(len(ids), dtype=np.int64)
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: key 'ids': duplicate ids")
    return _Features(ids, values, lengths)


def _feature_values(array: np.ndarray, path: Path, n: int) -> np.ndarray:
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: key 'features': expected shape (N, D) or (N, L, D), got {array.shape}")
    if array.shape[0] != n:
        raise DataError(f"{path}: key 'features': expected {n} rows (as key 'ids'), got {array.shape[0]}")
    try:
        values = array.astype(np.float32, copy=False)
    except (TypeError, ValueError):
        raise DataError(f"{path}: key 'features': expected numbers, got dtype {array.dtype}") from None
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise DataError(f"{path}: key 'features': expected finite values, found {bad} NaN/inf")
    return values[:, None, :] if values.ndim == 2 else values


def _align(features: _Features, ids: list[str], path: Path, split: str) -> np.ndarray:
    """Row of each split id in the feature file; every id must be there."""
    row_of = {id_: row for row, id_ in enumerate(features.ids)}
    missing = [id_ for id_ in ids if id_ not in row_of]
    if missing:
        count = f"{len(missing)} of {len(ids)} missing"
        raise DataError(f"{path}: split {split!r}: ids not aligned: id {missing[0]!r} not found ({count})")
    return np.array([row_of[id_] for id_ in ids], dtype=np.int64)


def write_imagetext(
    folder: str | os.PathLike,
    splits: dict[str, list[dict]],
    features: dict[str, tuple[Sequence[str], np.ndarray] | tuple[Sequence[str], np.ndarray, np.ndarray]],
    classes: Sequence[str],
    metadata: dict | None = None,
) -> Path:
    """Write an image-text folder: `{split}.jsonl`, `labels.json`, `features/{modality}.npz`, and
    `metadata.json` when given (how the data was made; read back into `Dataset.metadata`).

    Each file is written atomically (the folder as a whole is not: a crash may leave some files
    from the previous write beside the new ones, never a truncated file).

    >>> write_imagetext("/tmp/pairs", {"train": [{"id": "1", "text": "so happy", "label": "positive"}], ...},
    ...                 {"text": (["1", ...], feats)}, ["negative", "neutral", "positive"])  # doctest: +SKIP
    """
    folder = Path(folder)
    for split, records in splits.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        atomic_write_text(folder / f"{split}.jsonl", lines)
    atomic_write_text(folder / "labels.json", json.dumps(list(classes), ensure_ascii=False) + "\n")
    if metadata is not None:
        atomic_write_text(folder / METADATA_FILE, json.dumps(metadata, sort_keys=True) + "\n")
    for modality, entry in features.items():
        ids, values = entry[0], entry[1]
        arrays = {"ids": np.asarray(list(ids), dtype=str), "features": np.asarray(values, dtype=np.float32)}
        if len(entry) > 2:
            arrays["lengths"] = np.asarray(entry[2], dtype=np.int64)
        with atomic_write(folder / "features" / f"{modality}.npz") as f:
            np.savez(f, **arrays)
    return folder
