"""Predictor: a trained checkpoint -> sentiment for new samples with any subset of modalities.

A sample is a dict of modality -> input; a modality left out (or None / "") is missing, which
every method handles by design. Inputs are featurized exactly as the training data was, from
what the checkpoint recorded at `data build` time (`config.json` -> data.metadata.features):

- text: a raw string, encoded with the recorded text encoder (its fingerprint is checked), or
  a feature array; a checkpoint that fine-tuned its text transformer (`text_encoder=finetune`)
  tokenizes the string with the tokenizer whose fingerprint its weights carry (and, with
  `text_encoder=finetune+features`, also encodes it with the recorded encoder);
- any modality: a feature array, (D,) or (L, D), as its front-end produces it (a recorded
  standardization is applied), or a path to a `.npy` file holding one;
- audio: a path to a `.wav` / `.flac` / `.ogg` file, where the checkpoint names an audio
  front-end this package can run (`librosa-sims33`).

>>> predictor = Predictor.load("runs/late_fusion-abc/seed0")            # doctest: +SKIP
>>> predictor.predict([{"text": "what a wonderful film"}])[0].label      # doctest: +SKIP
'positive'
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustmsa.data.batch import SplitTensors
from robustmsa.data.io import parse_json
from robustmsa.data.schema import DataError, DatasetSpec, Split
from robustmsa.evaluation.metrics import SIMS_EDGES_ACC3, sims_bins
from robustmsa.nn.text_transformer import TextTransformer, load_tokenizer, tokenize, tokenizer_fingerprint, transformer_folder
from robustmsa.training.checkpoint import Checkpoint, find_checkpoints, load_checkpoint

SENTIMENT_CLASSES = ("negative", "neutral", "positive")
ID_FIELD = "id"
INPUT_FORMATS = ("auto", "json", "jsonl", "csv", "text")


@dataclass
class Prediction:
    """One sample's result. `score`: the sentiment score (regression, clipped to the label range)
    or the predicted class's probability (classification); `label`: negative / neutral /
    positive, or the class name; `present`: the modalities the model received."""

    id: str
    score: float
    label: str
    present: list[str]
    probabilities: dict[str, float] | None = None
    extras: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"id": self.id, "score": self.score, "label": self.label, "present": self.present}
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        if self.extras:
            out["extras"] = self.extras
        return out


class Predictor:
    """Wraps a loaded checkpoint; `predict(samples)` featurizes, batches and runs the method."""

    def __init__(self, checkpoint: Checkpoint, text_encoder_path: str | os.PathLike | None = None):
        """`text_encoder_path`: a folder to use instead of the recorded one (its fingerprint must
        match the recorded fingerprint)."""
        self.checkpoint = checkpoint
        self.method = checkpoint.method.eval()
        self.spec: DatasetSpec = checkpoint.method.spec
        self.features_info: dict = checkpoint.config.get("data", {}).get("metadata", {}).get("features", {})
        self.text_encoder_path = text_encoder_path
        self._text_encoder = None
        self._tokenizer = None
        self.text_branch = next((m for m in self.method.modules() if isinstance(m, TextTransformer)), None)

    @classmethod
    def load(cls, path: str | os.PathLike, text_encoder_path: str | os.PathLike | None = None) -> Predictor:
        """A seed folder, or a run folder holding exactly one seed."""
        found = find_checkpoints([path])
        if len(found) > 1:
            raise FileNotFoundError(f"{path}: holds {len(found)} checkpoints ({', '.join(p.name for p in found)}); "
                                    "name one seed folder")
        return cls(load_checkpoint(found[0]), text_encoder_path)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modality_names

    # --- featurizing --------------------------------------------------------------------
    @property
    def text_encoder(self):
        """The recorded encoder, loaded on first use and checked by fingerprint."""
        if self._text_encoder is None:
            self._text_encoder = _load_recorded_encoder(self.features_info.get("text", {}), self.text_encoder_path,
                                                        self.checkpoint.path)
        return self._text_encoder

    def featurize(self, samples: list[dict], where: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(features[m] (N, L_m, D_m), lengths[m] (N,)); length 0 marks a missing modality."""
        n = len(samples)
        features = {m.name: np.zeros((n, m.max_len, m.dim), np.float32) for m in self.spec.modalities}
        lengths = {m.name: np.zeros(n, np.int64) for m in self.spec.modalities}
        raw_texts: list[tuple[int, str]] = []
        for i, sample in enumerate(samples):
            given = self._check_fields(sample, where[i])
            for m, value in given.items():
                if m == "text" and isinstance(value, str) and not _is_array_file(value):
                    raw_texts.append((i, value))
                    continue
                if m == "text" and self.text_branch is not None:
                    raise DataError(f"{where[i]} field 'text': this checkpoint fine-tuned its text transformer "
                                    "and reads raw text, not feature arrays")
                array = self._array(m, value, where[i])
                features[m][i, : len(array)] = array
                lengths[m][i] = len(array)
        if raw_texts and (self.text_branch is None or self.text_branch.with_features):
            text, text_lengths = self._encode_texts([t for _, t in raw_texts], where)
            rows = [i for i, _ in raw_texts]
            features["text"][rows] = text
            lengths["text"][rows] = text_lengths
        elif raw_texts:  # the fine-tuned transformer reads word pieces; the text features stay unread
            lengths["text"][[i for i, _ in raw_texts]] = 1
        return features, lengths

    def text_bert(self, samples: list[dict], where: list[str]) -> np.ndarray | None:
        """(N, 3, L) word pieces of the samples' raw texts (mask 0 elsewhere), for a fine-tuned
        text branch; None for a checkpoint that reads text features."""
        if self.text_branch is None:
            return None
        texts = [self._raw_text(sample) for sample in samples]
        info = self.checkpoint.config.get("data", {}).get("metadata", {}).get("text_bert", {})
        if info.get("lowercase"):
            texts = [t.lower() for t in texts]
        tokens = tokenize(self.tokenizer(where), [t or "" for t in texts], int(info.get("max_tokens", 50)))
        tokens[[i for i, t in enumerate(texts) if not t], 1] = 0
        return tokens

    def _raw_text(self, sample: dict) -> str:
        for key, value in sample.items():
            if key != ID_FIELD and self.spec.resolve_modality(key) == "text" and isinstance(value, str) \
                    and value.strip() and not _is_array_file(value):
                return value
        return ""

    def tokenizer(self, where: list[str]):
        """The tokenizer of the checkpoint's text model folder (or `text_encoder_path`), checked
        against the fingerprint its weights carry."""
        if self._tokenizer is None:
            folder = transformer_folder(self.text_encoder_path or self.method.cfg.text_model or None)
            wanted = self.text_branch.tokenizer_fingerprint
            if wanted and tokenizer_fingerprint(folder) != wanted:
                raise DataError(f"{where[0]} field 'text': the tokenizer in {folder} differs from the one "
                                f"{self.checkpoint.path} was trained with ({wanted[:12]}); pass --text-encoder PATH")
            self._tokenizer = load_tokenizer(folder)
        return self._tokenizer

    def _check_fields(self, sample: dict, where: str) -> dict:
        if not isinstance(sample, dict):
            raise DataError(f"{where}: expected an object of modality -> input, got {type(sample).__name__}")
        given = {}
        for key, value in sample.items():
            if key == ID_FIELD:
                continue
            try:
                modality = self.spec.resolve_modality(key)
            except KeyError:
                raise DataError(f"{where}: unknown field {key!r}; this checkpoint takes "
                                f"{', '.join((ID_FIELD,) + self.modalities)}") from None
            if value is None or (isinstance(value, str) and not value.strip()):
                continue  # missing modality
            given[modality] = value
        if not given:
            raise DataError(f"{where}: no modality given (expected at least one of {', '.join(self.modalities)})")
        return given

    def _array(self, modality: str, value, where: str) -> np.ndarray:
        """A feature array (L, D) of one modality in the dataset's space, at most max_len frames."""
        spec = self.spec.modality(modality)
        info = self.features_info.get(modality, {})
        if isinstance(value, str):
            array = self._array_from_file(modality, Path(value), info, where)
        else:
            try:
                array = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError):
                raise DataError(f"{where} field {modality!r}: expected numbers, a .npy path or (audio) a .wav path") from None
        shape = array.shape
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != spec.dim or len(array) == 0:
            raise DataError(f"{where} field {modality!r}: expected {spec.dim} values per frame, shape ({spec.dim},) "
                            f"or (frames, {spec.dim}), got shape {shape}")
        if not np.isfinite(array).all():
            raise DataError(f"{where} field {modality!r}: expected finite numbers (found NaN or inf)")
        standardize = info.get("standardize")
        if standardize:  # the build standardized this modality with training statistics
            array = (array - np.asarray(standardize["mean"], np.float32)) / np.asarray(standardize["std"], np.float32)
        return array[: spec.max_len].astype(np.float32)

    def _array_from_file(self, modality: str, path: Path, info: dict, where: str) -> np.ndarray:
        from robustmsa.features.audio import AUDIO_SUFFIXES, FRONT_END

        if not path.is_file():
            raise DataError(f"{where} field {modality!r}: no such file {str(path)!r}")
        if path.suffix == ".npy":
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise DataError(f"{where} field {modality!r}: {path} is not a readable .npy ({error})".splitlines()[0]) from None
        if modality == "audio" and path.suffix.lower() in AUDIO_SUFFIXES:
            front_end = info.get("front_end")
            if front_end != FRONT_END:
                raise DataError(f"{where} field 'audio': this checkpoint's audio features "
                                f"({front_end or 'unrecorded front-end'}) cannot be computed from {path.suffix} "
                                f"files; give a feature array of {self.spec.modality('audio').dim} values")
            from robustmsa.features.audio import wav_features

            return wav_features(path)
        raise DataError(f"{where} field {modality!r}: {path.name}: expected a .npy file"
                        + (f" or an audio file ({', '.join(AUDIO_SUFFIXES)})" if modality == "audio" else ""))

    def _encode_texts(self, texts: list[str], where: list[str]) -> tuple[np.ndarray, np.ndarray]:
        info = self.features_info.get("text", {})
        if info.get("kind") != "text-encoder":
            raise DataError(f"{where[0]} field 'text': this checkpoint's text features were not made by a recorded "
                            f"text encoder; give a feature array of {self.spec.modality('text').dim} values")
        if info.get("lowercase"):
            texts = [t.lower() for t in texts]
        return self.text_encoder.sequences(texts, info.get("level", "sentence"), self.spec.modality("text").max_len,
                                           progress=False)

    # --- predicting ---------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, samples: Iterable[dict], batch_size: int = 64, where: list[str] | None = None) -> list[Prediction]:
        """Predictions for `samples` (dicts of modality -> input, optional "id"), in order.
        `where` names each sample in error messages (default "sample <k>")."""
        samples = list(samples)
        if not samples:
            return []
        where = where or [f"sample {i + 1}" for i in range(len(samples))]
        features, lengths = self.featurize(samples, where)
        ids = [str(s.get(ID_FIELD, i + 1)) if isinstance(s, dict) else str(i + 1) for i, s in enumerate(samples)]
        label_dtype = np.float32 if self.spec.label.is_regression else np.int64
        split = Split("predict", ids, features, lengths, np.zeros(len(samples), label_dtype),
                      text_bert=self.text_bert(samples, where))
        tensors = SplitTensors(split, self.spec, stats=self.method.input_stats)
        preds, extras = [], {}
        for batch in tensors.batches(batch_size):
            out = self.method(batch)
            preds.append(out.pred.float().cpu())
            for key, value in out.extras.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch.size:
                    extras.setdefault(key, []).append(value.detach().float().cpu())
        pred = torch.cat(preds).numpy()
        extras_np = {k: torch.cat(v).numpy() for k, v in extras.items()}
        present = tensors.present.numpy()
        return [self._prediction(ids[i], pred[i], present[i], {k: v[i].tolist() for k, v in extras_np.items()})
                for i in range(len(samples))]

    def _prediction(self, sample_id: str, pred: np.ndarray, present: np.ndarray, extras: dict) -> Prediction:
        label_spec = self.spec.label
        kept = [m for m, p in zip(self.modalities, present) if p]
        if label_spec.is_regression:
            score = float(np.clip(pred, label_spec.low, label_spec.high))
            return Prediction(sample_id, score, sentiment_class(score, label_spec.metric_family), kept, extras=extras)
        probabilities = torch.softmax(torch.as_tensor(pred), dim=-1).numpy()
        best = int(probabilities.argmax())
        return Prediction(sample_id, float(probabilities[best]), label_spec.classes[best], kept,
                          {c: float(p) for c, p in zip(label_spec.classes, probabilities)}, extras)


def sentiment_class(score: float, family: str) -> str:
    """negative / neutral / positive of a regression score: SIMS uses its acc3 boundaries
    (-0.1, 0.1]; MOSI / MOSEI clip to [-1, 1] and round, as their multi-class accuracies do."""
    if family == "sims":
        return SENTIMENT_CLASSES[int(sims_bins(np.array([score]), SIMS_EDGES_ACC3)[0])]
    return SENTIMENT_CLASSES[int(np.round(np.clip(score, -1.0, 1.0))) + 1]


def _is_array_file(value: str) -> bool:
    return value.endswith(".npy") and Path(value).is_file()


def _load_recorded_encoder(info: dict, override: str | os.PathLike | None, checkpoint: Path):
    """The encoder the training data was built with (see features.text.load_recorded_encoder)."""
    from robustmsa.features.text import load_recorded_encoder

    return load_recorded_encoder(info.get("encoder", {}), override, f"{checkpoint} was trained with")


# --------------------------------------------------------------------------- inputs

def read_samples(source: str | os.PathLike | io.TextIOBase, input_format: str = "auto") -> tuple[list[dict], list[str]]:
    """Samples from a JSON (object or array), JSONL, CSV (header = fields; cells holding JSON
    arrays are parsed as arrays) or plain-text (one sentence per line) file, or a text stream
    such as stdin. Returns (samples, where) with `where` naming file and line for errors."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input format {input_format!r}: expected one of {', '.join(INPUT_FORMATS)}")
    if isinstance(source, io.TextIOBase):
        name, text = "<stdin>", source.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such input file")
        name, text = str(path), path.read_text(encoding="utf-8")
        if input_format == "auto":
            input_format = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".txt": "text"}.get(path.suffix.lower(), "auto")
    if input_format == "auto":
        input_format = _sniff(text)
    reader = {"json": _read_json, "jsonl": _read_jsonl, "csv": _read_csv, "text": _read_text}[input_format]
    samples, where = reader(text, name)
    if not samples:
        raise DataError(f"{name}: no sample found (expected {input_format} input)")
    return samples, where


def _sniff(text: str) -> str:
    stripped = text.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        try:
            json.loads(stripped)
            return "json"
        except json.JSONDecodeError:
            return "jsonl"
    return "text"


def _read_json(text: str, name: str) -> tuple[list[dict], list[str]]:
    value = parse_json(text, name)
    items = value if isinstance(value, list) else [value]
    return items, [f"{name}: item {i + 1}" for i in range(len(items))]


def _read_jsonl(text: str, name: str) -> tuple[list[dict], list[str]]:
    samples, where = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        samples.append(parse_json(line, f"{name}: line {number}"))
        where.append(f"{name}: line {number}")
    return samples, where


def _read_csv(text: str, name: str) -> tuple[list[dict], list[str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    samples = [{k: v if k in _TEXT_FIELDS else _csv_cell(v) for k, v in row.items() if k is not None} for row in rows]
    return samples, [f"{name}: line {i + 2}" for i in range(len(rows))]


_TEXT_FIELDS = (ID_FIELD, "text", "l", "t")  # kept as written: a transcript may start with "["


def _csv_cell(value: str | None):
    if value is not None and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _read_text(text: str, name: str) -> tuple[list[dict], list[str]]:
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    return [{"text": line} for _, line in lines], [f"{name}: line {number}" for number, _ in lines]


def format_table(predictions: list[Prediction]) -> str:
    """A plain aligned table: id, score, label, present modalities, extras (short)."""
    header = ["id", "score", "label", "present", "extras"]
    rows = [[p.id, f"{p.score:+.3f}", p.label, ",".join(p.present), _short_extras(p.extras)] for p in predictions]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _short_extras(extras: dict) -> str:
    def short(value) -> str:
        if isinstance(value, list):
            return "[" + ",".join(short(v) for v in value[:4]) + (",…" if len(value) > 4 else "") + "]"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    return " ".join(f"{k}={short(v)}" for k, v in extras.items()) or "-"
