"""The MMSA pickle (CMU-MOSI, CMU-MOSEI, CH-SIMS): the field's de-facto format (PROTOCOLS.md 1).

A pickle of {"train", "valid", "test"} -> dict of arrays, one row per sample. Users hold many
variants of it (aligned / unaligned, with or without BERT token ids, two or three modalities),
so everything is read from the arrays themselves: modalities are whichever of text / audio /
vision keys exist, dims and max_len come from the shapes, valid lengths from `*_lengths`,
the BERT attention mask, or the last non-zero frame. Anything inconsistent is a `DataError`
with a one-line message naming the file, split, key and what was expected, because a silently
misread dataset costs far more than a refused one.

An optional top-level `metadata` dict (JSON-able; written by `data build`) says how the
features were made; it becomes `Dataset.metadata`. Readers that know only the three splits
ignore it.

`text_bert` (BERT word-piece ids, attention mask, segment ids; (N, 3, L)) is kept as
`Split.text_bert` for a text encoder fine-tuned inside the model; its ids must lie in the
vocabulary (`metadata["text_bert"]["vocab_size"]`, else bert-base-uncased's 30522).

Mapping to `Split`: `regression_labels` -> labels; SIMS unimodal labels
`regression_labels_T/A/V` -> extra_labels["text" / "audio" / "vision"];
`classification_labels` -> extra_labels["classification"].
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np

from robustmsa.data.io import atomic_write, file_sha256
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

MODALITY_KEYS = ("text", "audio", "vision")
UNIMODAL_LABEL_KEYS = {"regression_labels_T": "text", "regression_labels_A": "audio", "regression_labels_V": "vision"}
REQUIRED_KEYS = ("id", "regression_labels")
LABEL_BOUND = 3.0  # the widest label range in the family (MOSI / MOSEI)
BERT_VOCAB_SIZE = 30522  # bert-base-uncased: MMSA's English text_bert (bert-base-chinese's is smaller)
_ROW_CHUNK = 1024  # rows per step when scanning big feature arrays, to keep temporaries small


def read_mmsa(path: str | os.PathLike) -> Dataset:
    """Read and validate an MMSA pickle.

    >>> ds = read_mmsa("MOSI/Processed/unaligned_50.pkl")  # doctest: +SKIP
    >>> ds.spec.modality("audio")  # doctest: +SKIP
    ModalitySpec(name='audio', dim=5, max_len=375)
    """
    path = Path(path)
    raw = _load_pickle(path)
    dataset = parse_mmsa(raw, source=str(path), name=path.stem)
    dataset.source_hash = file_sha256(path)
    return dataset


# The only globals an MMSA pickle needs: numpy arrays / dtypes / scalars (numpy 1.x wrote them
# under `numpy.core`, 2.x under `numpy._core`), protocol-2 bytes, and plain containers. Anything
# else (os.system, a class with a crafted __reduce__) is refused before it is called.
_NUMPY_HELPERS = {"multiarray": {"_reconstruct", "scalar"}, "numeric": {"_frombuffer"}}
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    *{(f"numpy.{core}.{module}", name) for core in ("core", "_core")
      for module, names in _NUMPY_HELPERS.items() for name in names},
    *{(builtins, name) for builtins in ("builtins", "__builtin__")
      for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int", "float",
                   "bool", "complex", "slice", "range")},
}


_NUMPY_CORE = "numpy._core." if int(np.__version__.split(".")[0]) >= 2 else "numpy.core."


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds data, never runs code: loading a pickle runs whatever callable
    it names, so a crafted file could otherwise do anything `data info` is pointed at."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS and not _is_numpy_dtype_class(module, name):
            raise _RefusedGlobal(f"{module}.{name}")
        for core in ("numpy.core.", "numpy._core."):  # a file from either numpy major, read by this one
            if module.startswith(core):
                module = _NUMPY_CORE + module.removeprefix(core)
        return super().find_class(module, name)


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _is_numpy_dtype_class(module: str, name: str) -> bool:
    """numpy 2 may pickle a dtype through its class (numpy.dtypes.Float32DType)."""
    return module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier()


def load_restricted_pickle(path: str | os.PathLike) -> object:
    """Unpickle a data file allowing only numpy arrays and builtin containers (see above).

    A refused global raises `DataError` naming the file and the global; other failures propagate.
    """
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f).load()
        except _RefusedGlobal as exc:
            raise DataError(f"{path}: refused to load: the pickle calls {exc}, not a numpy array or builtin "
                            "container (MMSA pickles are read restricted, so a pickle cannot run code)") from None


def _load_pickle(path: Path) -> object:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return load_restricted_pickle(path)
    except (MemoryError, DataError):
        raise
    except Exception as exc:  # any unpickling failure means "this is not an MMSA pickle"
        detail = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {detail})") from exc


def parse_mmsa(raw: object, source: str, name: str) -> Dataset:
    """Validate an in-memory MMSA dict and turn it into a `Dataset` (no file access).

    Used by `read_mmsa` and by the synthesizer, so synthetic data goes through the same checks.
    To avoid copying gigabytes, float32 feature arrays of `raw` are fixed in place (+-inf and
    padding set to 0) and shared with the returned Dataset.
    """
    if not isinstance(raw, dict):
        raise DataError(f"{source}: expected a dict of splits train/valid/test, got {type(raw).__name__}")
    for split in SPLITS:
        if split not in raw:
            found = ", ".join(map(str, raw)) or "nothing"
            raise DataError(f"{source}: missing split {split!r} (found: {found})")
    train = _as_table(raw["train"], source, "train")
    modalities = tuple(m for m in MODALITY_KEYS if m in train)
    if not modalities:
        raise DataError(f"{source}: split 'train': no feature key (expected at least one of text, audio, vision)")

    metadata = _metadata(raw, source)
    vocab_size = _vocab_size(metadata, source)
    inf_counts: dict[str, int] = {}
    shapes: dict[str, tuple[int, int]] = {}  # modality -> (max_len, dim) as found in train
    splits = {}
    for split in SPLITS:
        table = _as_table(raw[split], source, split)
        splits[split] = _parse_split(table, source, split, modalities, shapes, inf_counts, vocab_size)
    _warn_replaced(source, inf_counts)

    label = _label_spec(splits)
    for s in splits.values():
        np.clip(s.labels, label.low, label.high, out=s.labels)
    spec = DatasetSpec(name, tuple(ModalitySpec(m, shapes[m][1], shapes[m][0]) for m in modalities), label)
    return Dataset(spec=spec, splits=splits, source=source, metadata=metadata)


def _metadata(raw: dict, source: str) -> dict:
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DataError(f"{source}: key 'metadata': expected a dict, got {type(metadata).__name__}")
    return metadata


def _vocab_size(metadata: dict, source: str) -> int:
    """The token vocabulary `text_bert` ids must lie in: recorded by `data build`, else BERT's."""
    recorded = metadata.get("text_bert")
    value = recorded.get("vocab_size", BERT_VOCAB_SIZE) if isinstance(recorded, dict) else BERT_VOCAB_SIZE
    if not isinstance(value, int) or value < 1:
        raise DataError(f"{source}: key 'metadata' field 'text_bert.vocab_size': expected a positive integer, got {value!r}")
    return value


def _as_table(value: object, source: str, split: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"{source}: split {split!r}: expected a dict of arrays, got {type(value).__name__}")
    return value


def _error(source: str, split: str, key: str, expectation: str) -> DataError:
    return DataError(f"{source}: split {split!r} key {key!r}: {expectation}")


def _parse_split(
    table: dict,
    source: str,
    split: str,
    modalities: tuple[str, ...],
    shapes: dict[str, tuple[int, int]],
    inf_counts: dict[str, int],
    vocab_size: int = BERT_VOCAB_SIZE,
) -> Split:
    for key in REQUIRED_KEYS:
        if key not in table:
            raise _error(source, split, key, "missing (required)")
    for m in modalities:
        if m not in table:
            raise _error(source, split, m, "missing (present in train)")

    ids = _strings(table["id"], source, split, "id")
    n = len(ids)
    text_bert = _text_bert(table["text_bert"], source, split, n, vocab_size) if "text_bert" in table else None
    features, lengths = {}, {}
    for m in modalities:
        x = _features(table[m], source, split, m, n, inf_counts)
        _check_shape_as_train(x, source, split, m, shapes)
        lengths[m] = _lengths(table, x, source, split, m, text_bert)
        _zero_padding(x, lengths[m])
        features[m] = x

    raw_text = _strings(table["raw_text"], source, split, "raw_text", n) if "raw_text" in table else None
    labels = _labels(table["regression_labels"], source, split, "regression_labels", n)
    extra = {m: _labels(table[key], source, split, key, n) for key, m in UNIMODAL_LABEL_KEYS.items() if key in table}
    if "classification_labels" in table:
        extra["classification"] = _vector(table["classification_labels"], source, split, "classification_labels", n)
    return Split(split, ids, features, lengths, labels, raw_text, extra, text_bert)


def _row_count(value: object) -> int:
    shape = getattr(value, "shape", None)
    return int(shape[0]) if shape else len(value)


def _check_rows(value: object, source: str, split: str, key: str, n: int) -> None:
    try:
        rows = _row_count(value)
    except TypeError:
        raise _error(source, split, key, f"expected one row per sample, got {type(value).__name__}") from None
    if rows != n:
        raise _error(source, split, key, f"expected {n} rows (as key 'id'), got {rows}")


def _strings(value: object, source: str, split: str, key: str, n: int | None = None) -> list[str]:
    if isinstance(value, (str, bytes, dict)):
        raise _error(source, split, key, f"expected a list of strings, got {type(value).__name__}")
    try:
        items = list(value)
    except TypeError:
        raise _error(source, split, key, f"expected a list of strings, got {type(value).__name__}") from None
    if n is not None:
        _check_rows(items, source, split, key, n)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in items]


def _vector(value: object, source: str, split: str, key: str, n: int) -> np.ndarray:
    """A float32 (N,) vector; (N, 1) columns are accepted because some MMSA files store them so."""
    _check_rows(value, source, split, key, n)
    try:
        v = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise _error(source, split, key, "expected numbers") from None
    if v.size != n:
        raise _error(source, split, key, f"expected shape ({n},), got {v.shape}")
    return v.reshape(n).copy()


def _labels(value: object, source: str, split: str, key: str, n: int) -> np.ndarray:
    y = _vector(value, source, split, key, n)
    nan = np.flatnonzero(np.isnan(y))
    if nan.size:
        raise _error(source, split, key, f"expected no NaN labels, found {nan.size} (first at row {nan[0]})")
    outside = np.flatnonzero(~(np.abs(y) <= LABEL_BOUND + 1e-4))
    if outside.size:
        i = outside[0]
        raise _error(source, split, key, f"expected labels in [-3, 3], got {y[i]:g} at row {i}")
    return y


def _features(value: object, source: str, split: str, key: str, n: int, inf_counts: dict[str, int]) -> np.ndarray:
    """A float32 (N, L, D) array with NaN refused and +-inf set to 0 (counted for one warning)."""
    try:
        x = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise _error(source, split, key, f"expected a numeric array, got {type(value).__name__}") from None
    if x.ndim != 3:
        raise _error(source, split, key, f"expected a 3-D array (N, L, D), got shape {x.shape}")
    if x.shape[0] != n:
        raise _error(source, split, key, f"expected {n} rows (as key 'id'), got {x.shape[0]}")
    nan_count = sum(int(np.isnan(x[i : i + _ROW_CHUNK]).sum()) for i in range(0, n, _ROW_CHUNK))
    if nan_count:
        raise _error(source, split, key, f"expected finite features, found {nan_count} NaN value(s)")
    if not x.flags.writeable:
        x = x.copy()  # padding and inf values are fixed in place below
    inf_count = sum(int(np.isinf(x[i : i + _ROW_CHUNK]).sum()) for i in range(0, n, _ROW_CHUNK))
    if inf_count:
        for i in range(0, n, _ROW_CHUNK):
            chunk = x[i : i + _ROW_CHUNK]
            chunk[np.isinf(chunk)] = 0.0
        inf_counts[f"{split}/{key}"] = inf_count
    return x


def _check_shape_as_train(x: np.ndarray, source: str, split: str, key: str, shapes: dict[str, tuple[int, int]]) -> None:
    max_len, dim = x.shape[1], x.shape[2]
    if key not in shapes:
        shapes[key] = (max_len, dim)
        return
    train_len, train_dim = shapes[key]
    if dim != train_dim:
        raise _error(source, split, key, f"expected feature dim {train_dim} (as in train), got {dim}")
    if max_len != train_len:
        raise _error(source, split, key, f"expected max_len {train_len} (as in train), got {max_len}")


def _text_bert(value: object, source: str, split: str, n: int, vocab_size: int) -> np.ndarray:
    """int64 (N, 3, L): word-piece ids in [0, vocab_size), attention mask of 0/1, segment ids >= 0.
    Some MMSA files store them as floats; whole numbers are accepted."""
    try:
        tokens = np.asarray(value)
    except (TypeError, ValueError):
        raise _error(source, split, "text_bert", f"expected an integer array (N, 3, L), got {type(value).__name__}") from None
    if tokens.ndim != 3 or tokens.shape[0] != n or tokens.shape[1] != 3:
        raise _error(source, split, "text_bert", f"expected shape ({n}, 3, L) (ids, attention mask, segment ids), "
                                                 f"got {tokens.shape}")
    if not (np.issubdtype(tokens.dtype, np.integer) or np.issubdtype(tokens.dtype, np.floating)):
        raise _error(source, split, "text_bert", f"expected integer token ids, got dtype {tokens.dtype}")
    if np.issubdtype(tokens.dtype, np.floating) and not (np.isfinite(tokens).all() and (tokens == np.round(tokens)).all()):
        raise _error(source, split, "text_bert", "expected whole-number token ids (found NaN, inf or fractions)")
    tokens = tokens.astype(np.int64)
    for row, what, bad in (
        (0, f"token ids in [0, {vocab_size}) (the vocabulary)", lambda v: (v < 0) | (v >= vocab_size)),
        (1, "an attention mask of 0/1", lambda v: (v != 0) & (v != 1)),
        (2, "segment ids >= 0", lambda v: v < 0),
    ):
        hits = np.argwhere(bad(tokens[:, row]))
        if len(hits):
            i, j = hits[0]
            raise _error(source, split, "text_bert", f"expected {what} in [:, {row}, :], got {tokens[i, row, j]} at row {i}")
    return tokens


def _lengths(table: dict, x: np.ndarray, source: str, split: str, key: str,
             text_bert: np.ndarray | None = None) -> np.ndarray:
    """Valid frames per sample: `{key}_lengths` (unaligned files; `write_mmsa` adds it for every
    modality, so a round trip keeps lengths exactly), else the BERT attention mask for text, else up
    to the last non-zero frame."""
    n, max_len = x.shape[:2]
    if f"{key}_lengths" not in table and key == "text" and text_bert is not None:
        return np.clip(text_bert[:, 1, :].sum(axis=1), 0, max_len).astype(np.int64)
    if f"{key}_lengths" in table:
        length_key = f"{key}_lengths"
        lengths = _vector(table[length_key], source, split, length_key, n)
        if np.isnan(lengths).any():
            raise _error(source, split, length_key, "expected integers, found NaN")
        return np.clip(lengths, 0, max_len).astype(np.int64)
    return last_nonzero_lengths(x)


def last_nonzero_lengths(x: np.ndarray) -> np.ndarray:
    """(N,) one past the last frame with any non-zero value (0 for an all-zero sample).

    >>> last_nonzero_lengths(np.array([[[1.0], [0.0], [2.0], [0.0]], [[0.0], [0.0], [0.0], [0.0]]]))
    array([3, 0])
    """
    n, max_len = x.shape[:2]
    lengths = np.empty(n, dtype=np.int64)
    for i in range(0, n, _ROW_CHUNK):
        nonzero = (x[i : i + _ROW_CHUNK] != 0).any(axis=2)
        last_from_end = np.argmax(nonzero[:, ::-1], axis=1)
        lengths[i : i + _ROW_CHUNK] = np.where(nonzero.any(axis=1), max_len - last_from_end, 0)
    return lengths


def _zero_padding(x: np.ndarray, lengths: np.ndarray) -> None:
    """Enforce the Split contract (zero beyond `lengths`) in place: BERT features are non-zero at
    padding tokens, and pooling over them would leak padding into every method."""
    beyond = np.arange(x.shape[1])[None, :] >= lengths[:, None]
    if beyond.any():
        x[beyond] = 0.0


def _warn_replaced(source: str, inf_counts: dict[str, int]) -> None:
    if not inf_counts:
        return
    total = sum(inf_counts.values())
    where = ", ".join(f"{k}: {v}" for k, v in inf_counts.items())
    warnings.warn(f"{source}: replaced {total} infinite feature values with 0 ({where})", stacklevel=3)


def _label_spec(splits: dict[str, Split]) -> LabelSpec:
    """SIMS labels live in [-1, 1], MOSI / MOSEI in [-3, 3]; the values tell which file this is."""
    largest = max(float(np.abs(s.labels).max(initial=0.0)) for s in splits.values())
    return REGRESSION_SIMS if largest <= 1.0 + 1e-6 else REGRESSION_MOSI


def write_mmsa(data: Dataset | dict, path: str | os.PathLike) -> Path:
    """Write an MMSA pickle atomically (a raw MMSA dict, or a regression `Dataset`).

    >>> write_mmsa(synthesize("mosi", n=60), "/tmp/mosi_small.pkl")  # doctest: +SKIP
    PosixPath('/tmp/mosi_small.pkl')
    """
    raw = data if isinstance(data, dict) else to_mmsa_dict(data)
    with atomic_write(path) as f:
        pickle.dump(raw, f, protocol=4)  # 4: large arrays, and loadable by older Pythons
    return Path(path)


def to_mmsa_dict(dataset: Dataset) -> dict:
    """The MMSA layout of a regression `Dataset`. Lengths are stored as `{modality}_lengths` for
    every modality (the reader accepts `text_lengths` too), so a round trip keeps them exactly."""
    if not dataset.spec.label.is_regression:
        raise DataError(f"{dataset.source or dataset.spec.name}: MMSA pickles hold regression labels only")
    unimodal_keys = {m: key for key, m in UNIMODAL_LABEL_KEYS.items()}
    raw = {}
    for name, split in dataset.splits.items():
        table: dict = {"id": list(split.ids), "raw_text": list(split.raw_text or [""] * len(split))}
        for m, x in split.features.items():
            x = x.copy()
            _zero_padding(x, split.lengths[m])
            table[m] = x
            table[f"{m}_lengths"] = [int(v) for v in split.lengths[m]]
        if split.text_bert is not None:
            table["text_bert"] = split.text_bert
        table["regression_labels"] = split.labels.astype(np.float32)
        for m, y in split.extra_labels.items():
            key = "classification_labels" if m == "classification" else unimodal_keys.get(m)
            if key is not None:
                table[key] = y.astype(np.float32)
        raw[name] = table
    if dataset.metadata:
        raw["metadata"] = dataset.metadata
    return raw
