"""Build real CMU-MOSI (transcripts + utterance-level audio vectors) into an MMSA pickle.

The release at ../shared/data/mosi has no BERT / COVAREP / Facet arrays, only the transcripts,
one openSMILE vector per segment, labels and the standard folds. So text features are computed
here with an offline sentence encoder (lower-cased text, as the README's reference), joined to
the audio by segment id, and written as an MMSA pickle with two modalities (text, audio), so
that every reader, method and bench preset uses it unchanged.

The pickle's `metadata` names the text encoder (path, fingerprint, level) and the audio
standardization, so `robustmsa predict` can featurize new sentences exactly as training saw
them; its `build.key` hashes the inputs + encoder fingerprint, so rebuilding the same thing is
a no-op instead of minutes of encoding.

>>> build_mosi_real("../shared/data/mosi", "data/mosi_real.pkl").path  # doctest: +SKIP
PosixPath('data/mosi_real.pkl')
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustmsa.data.io import file_sha256
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

BUILDER = "mosi-real/2"  # bump when the recipe changes: old caches then rebuild
SEGMENTS_FILE = "segments.csv"
AUDIO_FILE = "audio_opensmile73.npz"
SEGMENT_COLUMNS = ("segment_id", "video_id", "clip_id", "text", "label", "split")
TEXT_LEVELS = ("sentence", "token")
AUDIO_FRONT_END = "opensmile73-bclstm"  # utterance-level openSMILE vectors of the bc-LSTM release


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


def build_mosi_real(source: str | os.PathLike, out: str | os.PathLike, text_encoder=None,
                    text_level: str = "sentence", max_tokens: int = 50, progress: bool = True,
                    text_bert: bool = False) -> BuildResult:
    """Encode, join and write; skipped when `out` already holds a build of the same inputs.

    `text_encoder`: None (the packaged all-MiniLM-L6-v2), a sentence-transformers folder, or an
    already loaded `TextEncoder` (saves loading it again). `text_bert`: also write MMSA's
    `text_bert` (the encoder's word pieces, `max_tokens` with [CLS] / [SEP]), for fine-tuning.
    """
    from robustmsa.features.text import TextEncoder, encoder_fingerprint, load_text_encoder, resolve_encoder_path

    start = time.perf_counter()
    if text_level not in TEXT_LEVELS:
        raise ValueError(f"text level {text_level!r}: expected one of {', '.join(TEXT_LEVELS)}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DataError(f"{source}: no such folder (expected the CMU-MOSI release with {SEGMENTS_FILE} and {AUDIO_FILE})")
    segments = read_segments(source / SEGMENTS_FILE)
    audio = read_audio(source / AUDIO_FILE, segments.ids)
    loaded = text_encoder if isinstance(text_encoder, TextEncoder) else None
    fingerprint = loaded.fingerprint if loaded else encoder_fingerprint(resolve_encoder_path(text_encoder))
    key = _build_key(source, fingerprint, text_level, max_tokens, text_bert)
    sizes = {s: int((segments.splits == s).sum()) for s in SPLITS}
    if _stored_key(out) == key:
        return BuildResult(out, True, time.perf_counter() - start, sizes)

    encoder = loaded or load_text_encoder(text_encoder)
    text, text_lengths = encoder.sequences([t.lower() for t in segments.texts], text_level, max_tokens, progress)
    audio, mean, std = _standardize(audio, segments.splits == "train")
    audio = audio[:, None, :]  # one vector per segment = a sequence of one frame

    tokens, tokens_info = _word_pieces(encoder.path, segments.texts, max_tokens) if text_bert else (None, None)
    splits = {}
    for name in SPLITS:
        rows = np.flatnonzero(segments.splits == name)
        splits[name] = Split(
            name, [segments.mmsa_ids[i] for i in rows],
            {"text": text[rows], "audio": audio[rows]},
            {"text": text_lengths[rows], "audio": np.ones(len(rows), np.int64)},
            segments.labels[rows], raw_text=[segments.texts[i] for i in rows],
            text_bert=None if tokens is None else tokens[rows],
        )
    spec = DatasetSpec("mosi_real", (ModalitySpec("text", encoder.dim, text.shape[1]),
                                     ModalitySpec("audio", audio.shape[2], 1)), REGRESSION_MOSI)
    metadata = {
        "builder": BUILDER,
        "build": {"key": key},  # no source path: the same inputs give the same file, wherever they lie
        "features": {
            "text": {"kind": "text-encoder", "encoder": encoder.info(), "level": text_level,
                     "max_tokens": max_tokens if text_level == "token" else None, "lowercase": True},
            "audio": {"kind": "precomputed", "front_end": AUDIO_FRONT_END, "dim": int(audio.shape[2]),
                      "standardize": {"mean": mean.tolist(), "std": std.tolist()}},
        },
    }
    if tokens_info:
        metadata["text_bert"] = tokens_info
    write_mmsa(Dataset(spec, splits, source=str(source), metadata=metadata), out)
    return BuildResult(out, False, time.perf_counter() - start, sizes)



def _word_pieces(encoder_path: Path, texts: list[str], max_tokens: int) -> tuple[np.ndarray, dict]:
    """MMSA's `text_bert` (N, 3, max_tokens) from the encoder's own tokenizer (lower-cased text),
    and what the Predictor needs to tokenize new text the same way (checked by fingerprint)."""
    from robustmsa.nn.text_transformer import load_tokenizer, tokenize, tokenizer_fingerprint, transformer_folder

    folder = transformer_folder(encoder_path)
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
    splits = table["split"].str.strip().to_numpy()
    bad = np.flatnonzero(~np.isin(splits, SPLITS))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}: line {i + 2} field 'split': expected one of {', '.join(SPLITS)}, got {splits[i]!r}")
    for name in SPLITS:
        if not (splits == name).any():
            raise DataError(f"{path}: field 'split': no segment in split {name!r}")
    mmsa_ids = [f"{v}$_${c}" for v, c in zip(table["video_id"], table["clip_id"])]
    return Segments(ids, mmsa_ids, table["text"].tolist(), labels.astype(np.float32), splits)


def read_audio(path: Path, segment_ids: list[str]) -> np.ndarray:
    """audio_opensmile73.npz -> float32 (N, D) in `segment_ids` order (joined by id)."""
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
    absent = [s for s in segment_ids if s not in row_of]
    if absent:
        raise DataError(f"{path}: key 'ids': {len(absent)} segment(s) of {SEGMENTS_FILE} have no audio row "
                        f"(first: {absent[0]!r})")
    return features[[row_of[s] for s in segment_ids]].astype(np.float32)


def _build_key(source: Path, fingerprint: str, text_level: str, max_tokens: int, text_bert: bool = False) -> str:
    payload = {
        "builder": BUILDER, "segments": file_sha256(source / SEGMENTS_FILE), "audio": file_sha256(source / AUDIO_FILE),
        "encoder": fingerprint, "text_level": text_level, "max_tokens": max_tokens if text_level == "token" else None,
    }
    if text_bert:  # only then: builds without word pieces keep their key (no rebuild)
        payload["text_bert"] = max_tokens
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _stored_key(out: Path) -> str | None:
    """The build key recorded in an existing output (our own file), or None."""
    if not out.is_file():
        return None
    try:
        with open(out, "rb") as f:
            raw = pickle.load(f)  # a file this builder wrote (checked by its key below)
        return raw.get("metadata", {}).get("build", {}).get("key")
    except Exception:  # unreadable or foreign: rebuild over it
        return None
