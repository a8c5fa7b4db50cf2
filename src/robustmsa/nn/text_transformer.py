"""A pretrained text transformer inside the model, fine-tuned end to end from `text_bert` ids.

The field's best MOSI numbers come from training the text encoder with the rest of the model
instead of reading frozen vectors. This block loads a local transformers / sentence-transformers
folder (the packaged all-MiniLM-L6-v2 by default: a 6-layer BERT with the bert-base-uncased
vocabulary, so MMSA's `text_bert` ids feed it directly), offline, and maps word-piece ids to
per-token states and a pooled vector of the method's width, the same triple `SequenceEncoder`
returns, so any method can take its text branch from it (`method.text_encoder=finetune`).

Rows whose text is missing (or whose every token was dropped) never enter the transformer: their
states and pooled vector are exact zeros, so a missing text cannot affect the output. The other
rows run in chunks of similar length, each trimmed to its longest text: MOSI sentences average 15
word pieces with a tail to 50, so padding a whole batch to its longest would triple the CPU time.

>>> branch = TextTransformer.from_folder(None, d=64)          # doctest: +SKIP
>>> states, mask, pooled = branch(batch.text_bert, batch.is_present("text"))  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from robustmsa.data.io import files_sha256
from robustmsa.nn.encoders import masked_mean

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "sentencepiece.bpe.model", "spiece.model", "merges.txt", "vocab.json")


def transformer_folder(path: str | os.PathLike | None) -> Path:
    """The folder holding the transformer's config.json: a transformers folder as is, or the
    Transformer module of a sentence-transformers folder (per its modules.json). None = packaged MiniLM."""
    from robustmsa.features.text import resolve_encoder_path

    folder = resolve_encoder_path(path or None)
    modules = folder / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if str(module.get("type", "")).endswith("models.Transformer"):
                folder = folder / module.get("path", "")
                break
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"text transformer: {folder} has no config.json (expected a transformers model folder)")
    return folder


def tokenizer_fingerprint(folder: str | os.PathLike) -> str:
    """sha256 over the tokenizer files of a model folder: the same ids for the same text."""
    folder = Path(folder)
    files = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not files:
        raise FileNotFoundError(f"text transformer: {folder} holds no tokenizer file ({', '.join(TOKENIZER_FILES[:3])}, ...)")
    return files_sha256(files, folder)


def load_tokenizer(folder: str | os.PathLike):
    """The folder's tokenizer, offline."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def tokenize(tokenizer, texts: list[str], max_tokens: int):
    """int64 (N, 3, max_tokens): ids, attention mask, segment ids, as MMSA's `text_bert` stores them."""
    import numpy as np

    tokens = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_tokens, return_tensors="np")
    segments = tokens.get("token_type_ids", np.zeros_like(tokens["input_ids"]))
    return np.stack([tokens["input_ids"], tokens["attention_mask"], segments], axis=1).astype(np.int64)


class TextTransformer(nn.Module):
    """Word-piece ids -> (states (B, T, d), mask (B, T), pooled (B, d)); T = the batch's longest text.

    freeze_layers: the embeddings and the first k transformer layers get no gradient (k < 0: the
    whole transformer is frozen); checkpointing: recompute activations in backward (less memory,
    ~30% slower), off by default; with_features: the text branch also encodes the dataset's text
    vectors (`ModalityEncoders` keeps its feature encoder for text and joins the two).
    """

    def __init__(self, model: nn.Module, d: int, freeze_layers: int = 0, checkpointing: bool = False,
                 dropout: float = 0.1, tokenizer_sha256: str = "", chunk_rows: int = 16, with_features: bool = False):
        super().__init__()
        self.chunk_rows = chunk_rows
        self.with_features = with_features
        # saved with the weights, so a checkpoint names the tokenizer its ids came from (zeros: unknown)
        digest = bytes.fromhex(tokenizer_sha256) if tokenizer_sha256 else bytes(32)
        self.register_buffer("tokenizer_sha256", torch.tensor(list(digest), dtype=torch.uint8))
        self.model = model
        hidden = int(model.config.hidden_size)
        self.vocab_size = int(model.config.vocab_size)
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, d))
        self.out_norm = nn.LayerNorm(d)
        self.d = d
        # BERT-style models take segment ids; others (DistilBERT, ...) do not
        self.takes_segments = "token_type_ids" in inspect.signature(model.forward).parameters
        self._freeze(freeze_layers)
        if checkpointing:
            model.gradient_checkpointing_enable()

    @classmethod
    def from_folder(cls, path: str | os.PathLike | None, d: int, **options) -> TextTransformer:
        """Pretrained weights from a local folder (None or "": the packaged all-MiniLM-L6-v2)."""
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder must never trigger a download
        from transformers import AutoModel
        from transformers.utils import logging

        folder = transformer_folder(path)
        was_enabled, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
        logging.disable_progress_bar()
        logging.set_verbosity_error()  # the unused pooler's "load report" is noise in every run
        try:
            model = AutoModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False)
        except TypeError:  # architectures without a pooling layer do not take the argument
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        finally:
            logging.set_verbosity(verbosity)
            if was_enabled:
                logging.enable_progress_bar()
        has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES)
        return cls(model, d, tokenizer_sha256=tokenizer_fingerprint(folder) if has_tokenizer else "", **options)

    @property
    def tokenizer_fingerprint(self) -> str:
        """The recorded tokenizer's sha256 ("" when the model folder had none)."""
        digest = bytes(self.tokenizer_sha256.tolist())
        return digest.hex() if any(digest) else ""

    def _freeze(self, layers: int) -> None:
        if layers == 0:
            return
        if layers < 0:
            self.model.requires_grad_(False)
            return
        self.model.get_input_embeddings().requires_grad_(False)
        embeddings = getattr(self.model, "embeddings", None)
        if embeddings is not None:
            embeddings.requires_grad_(False)
        blocks = getattr(getattr(self.model, "encoder", None), "layer", None)
        if blocks is None:
            raise ValueError(f"text_freeze_layers: {type(self.model).__name__} has no encoder.layer list to freeze")
        for block in list(blocks)[:layers]:
            block.requires_grad_(False)

    def forward(self, text_bert: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """text_bert (B, 3, L) ids / mask / segments, present (B,) bool -> states, mask, pooled."""
        b = text_bert.shape[0]
        mask = text_bert[:, 1].bool() & present.unsqueeze(1)
        rows = mask.any(dim=1).nonzero().squeeze(1)
        width = int(mask.any(dim=0).nonzero().max()) + 1 if len(rows) else 1
        states = self.out_norm.weight.new_zeros(b, width, self.d)
        if len(rows) and int(text_bert[rows, 0].max()) >= self.vocab_size:
            raise ValueError(f"text_bert: token id {int(text_bert[rows, 0].max())} outside the text model's "
                             f"vocabulary ({self.vocab_size}); the ids were made with another tokenizer")
        ends = mask.long().cumsum(1).argmax(1) + 1  # one past each row's last kept token
        rows = rows[ends[rows].argsort(stable=True)]
        for chunk in rows.split(self.chunk_rows) if len(rows) else ():  # splitting no rows gives one empty chunk
            states = states.index_copy(0, chunk, self._encode(text_bert[chunk], mask[chunk], width))
        mask = mask[:, :width]
        return states, mask, masked_mean(states, mask)

    def _encode(self, text_bert: Tensor, mask: Tensor, width: int) -> Tensor:
        """(b, width, d) states of rows that all have text, computed at their own longest length."""
        length = int((mask.long().cumsum(1).argmax(1) + 1).max())
        mask = mask[:, :length]
        extra = {"token_type_ids": text_bert[:, 2, :length]} if self.takes_segments else {}
        hidden = self.model(input_ids=text_bert[:, 0, :length], attention_mask=mask.long(), **extra).last_hidden_state
        encoded = self.out_norm(self.project(hidden)) * mask.unsqueeze(-1)
        return torch.nn.functional.pad(encoded, (0, 0, 0, width - length))
