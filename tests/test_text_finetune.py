"""MMSA `text_bert`: read, validate, batch, mask; a text transformer fine-tuned inside the model:
train, checkpoint, predict from raw text (a tiny random BERT, no download)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from robustmsa.config import RunConfig, apply_overrides
from robustmsa.data import load_dataset
from robustmsa.data.batch import SplitTensors
from robustmsa.data.mmsa import read_mmsa, write_mmsa
from robustmsa.data.schema import DataError
from robustmsa.data.synthetic import write_synthetic
from robustmsa.methods.base import method_class
from robustmsa.missing import Protocol, make_pattern
from robustmsa.nn.text_transformer import TextTransformer, tokenizer_fingerprint
from robustmsa.training.checkpoint import load_checkpoint
from robustmsa.training.trainer import Trainer


@pytest.fixture(scope="module")
def synthetic_pickle(tmp_path_factory) -> Path:
    return write_synthetic("mosi", tmp_path_factory.mktemp("synth") / "mosi.pkl", n=60, seed=0)


def test_text_bert_is_read_kept_per_split_and_written_back(synthetic_pickle, tmp_path):
    dataset = read_mmsa(synthetic_pickle)
    with open(synthetic_pickle, "rb") as f:
        raw = pickle.load(f)
    for name, split in dataset.splits.items():
        assert split.text_bert.dtype == np.int64 and split.text_bert.shape == (len(split), 3, 50)
        np.testing.assert_array_equal(split.text_bert, raw[name]["text_bert"])
    rows = np.array([3, 0, 5])
    np.testing.assert_array_equal(dataset["train"].subset(rows).text_bert, dataset["train"].text_bert[rows])
    again = read_mmsa(write_mmsa(dataset, tmp_path / "again.pkl"))
    np.testing.assert_array_equal(again["test"].text_bert, dataset["test"].text_bert)
    np.testing.assert_array_equal(again["test"].lengths["text"], dataset["test"].lengths["text"])


def _malformed(raw: dict, change) -> dict:
    bad = copy.deepcopy(raw)
    bad["valid"]["text_bert"] = change(np.array(bad["valid"]["text_bert"]))
    return bad


def _set(array, index, value):
    array[index] = value
    return array


@pytest.mark.parametrize("change, message", [
    (lambda t: t[:, :2], r"expected shape \(\d+, 3, L\)"),
    (lambda t: t[:, 0], r"expected shape \(\d+, 3, L\)"),
    (lambda t: _set(t, (2, 0, 1), 30522), r"expected token ids in \[0, 30522\) .* got 30522 at row 2"),
    (lambda t: _set(t, (1, 0, 1), -4), r"expected token ids in \[0, 30522\)"),
    (lambda t: _set(t, (0, 1, 3), 2), r"expected an attention mask of 0/1 .* got 2 at row 0"),
    (lambda t: t.astype(np.float32) + 0.5, "expected whole-number token ids"),
    (lambda t: t.astype(str), "expected integer token ids"),
])
def test_malformed_text_bert_is_a_one_line_error(synthetic_pickle, tmp_path, change, message):
    with open(synthetic_pickle, "rb") as f:
        raw = pickle.load(f)
    path = write_mmsa(_malformed(raw, change), tmp_path / "bad.pkl")
    with pytest.raises(DataError, match=message) as error:
        read_mmsa(path)
    assert "\n" not in str(error.value) and "split 'valid' key 'text_bert'" in str(error.value)


def test_recorded_vocab_size_bounds_the_ids(synthetic_pickle, tmp_path):
    with open(synthetic_pickle, "rb") as f:
        raw = pickle.load(f)
    raw["metadata"] = {"text_bert": {"vocab_size": 2000}}
    with pytest.raises(DataError, match=r"token ids in \[0, 2000\)"):
        read_mmsa(write_mmsa(raw, tmp_path / "small_vocab.pkl"))


def test_missing_text_and_the_frame_protocol_zero_the_token_mask(synthetic_pickle):
    dataset = read_mmsa(synthetic_pickle)
    split, spec = dataset["test"], dataset.spec
    tokens_mask = torch.from_numpy(split.text_bert[:, 1])
    subset = SplitTensors(split, spec, make_pattern(split, spec, Protocol.parse("subset:a,v"), 0))
    assert int(subset.text_bert[:, 1].sum()) == 0
    np.testing.assert_array_equal(subset.text_bert[:, 0], split.text_bert[:, 0])

    frame = SplitTensors(split, spec, make_pattern(split, spec, Protocol.parse("frame:0.5"), 0))
    kept = frame.text_bert[:, 1]
    assert bool((kept <= tokens_mask).all())
    assert 0.35 < float(kept.sum() / tokens_mask.sum()) < 0.65
    # the feature masks are drawn first: the same as a split without word pieces gets
    plain = copy.copy(split)
    plain.text_bert = None
    without = SplitTensors(plain, spec, make_pattern(plain, spec, Protocol.parse("frame:0.5"), 0))
    assert without.text_bert is None
    for m in spec.modality_names:
        assert torch.equal(without.frame_mask[m], frame.frame_mask[m])


def test_synthetic_pickle_trains_checkpoints_and_predicts_with_a_finetuned_branch(
        synthetic_pickle, tiny_bert, tmp_path, one_torch_thread):
    from robustmsa.evaluation.evaluate import predict_tensors
    from robustmsa.predict import Predictor

    dataset = load_dataset(synthetic_pickle)
    run = apply_overrides(RunConfig("late_fusion"), [
        "method.d=16", "method.text_encoder=finetune", f"method.text_model={tiny_bert}", "method.text_lr=1e-3",
        "train.epochs=2", "train.batch_size=16",
    ], method_class("late_fusion").config_class)
    result = Trainer(tmp_path, verbose=False).fit(run, dataset, 0)
    assert result.epochs_run == 2 and np.isfinite(result.valid_metrics["mae"])

    # the checkpoint holds the fine-tuned transformer (not the folder's weights) and the tokenizer's hash
    checkpoint = load_checkpoint(result.path)
    branch = checkpoint.method.encoders.text_branch

    untrained = TextTransformer.from_folder(tiny_bert, 16)
    trained_weights = branch.model.encoder.layer[1].output.dense.weight
    assert not torch.allclose(trained_weights, untrained.model.encoder.layer[1].output.dense.weight)
    assert branch.tokenizer_fingerprint == tokenizer_fingerprint(tiny_bert)
    test = SplitTensors(dataset["test"], dataset.spec)
    np.testing.assert_allclose(predict_tensors(checkpoint.method, test, 32),
                               predict_tensors(checkpoint.method, test, 7), atol=1e-5)

    predictor = Predictor.load(result.path)
    texts = ["the movie was great", "the movie was awful and boring"]
    predictions = predictor.predict([{"text": texts[0]}, {"text": texts[1], "audio": None}, {"audio": np.zeros(5)}])
    assert [p.present for p in predictions] == [["text"], ["text"], ["audio"]]
    # the Predictor's word pieces are the tokenizer's; the branch sees exactly them
    tokens = predictor.text_bert([{"text": t} for t in texts], ["a", "b"])
    assert tokens[0, 0, 0] == 101 and tokens[0, 1].sum() == 6  # [CLS] the movie was great [SEP]
    with pytest.raises(DataError, match="reads raw text, not feature arrays"):
        predictor.predict([{"text": np.zeros(768).tolist()}])


def test_predictor_refuses_a_tokenizer_with_another_fingerprint(synthetic_pickle, tiny_bert, tmp_path, one_torch_thread):
    from conftest import write_tiny_bert
    from robustmsa.predict import Predictor

    run = apply_overrides(RunConfig("late_fusion"), [
        "method.d=16", "method.text_encoder=finetune", f"method.text_model={tiny_bert}", "train.epochs=1",
    ], method_class("late_fusion").config_class)
    path = Trainer(tmp_path / "runs", verbose=False).fit(run, load_dataset(synthetic_pickle), 0).path
    other = write_tiny_bert(tmp_path / "other_bert", vocab_size=30600)
    with pytest.raises(DataError, match="differs from the one .* was trained with"):
        Predictor.load(path, text_encoder_path=other).predict([{"text": "great"}])


def test_mosi_real_writes_word_pieces_of_the_encoder_tokenizer(tmp_path, text_encoder):
    from conftest import write_mosi_source
    from robustmsa.data.mosi_real import build_mosi_real

    source = write_mosi_source(tmp_path / "source", sizes=(8, 4, 4))
    plain = build_mosi_real(source, tmp_path / "plain.pkl", text_encoder, progress=False, cache_dir=None)
    built = build_mosi_real(source, tmp_path / "bert.pkl", text_encoder, progress=False, cache_dir=None,
                            text_bert=True, max_tokens=12)
    dataset = read_mmsa(built.path)
    tokens = dataset["train"].text_bert
    assert tokens.shape == (8, 3, 12) and (tokens[:, 0, 0] == 101).all()
    first = dataset["train"].raw_text[0].lower()
    expected = text_encoder.tokenizer(first)["input_ids"]
    np.testing.assert_array_equal(tokens[0, 0, :len(expected)], expected)
    assert tokens[0, 1].sum() == len(expected)
    info = dataset.metadata["text_bert"]
    assert info["vocab_size"] == 30522 and info["max_tokens"] == 12 and len(info["tokenizer"]["fingerprint"]) == 64
    assert read_mmsa(plain.path)["train"].text_bert is None
    # the same inputs give the same build: nothing re-encoded
    assert build_mosi_real(source, tmp_path / "bert.pkl", text_encoder, progress=False, cache_dir=None,
                           text_bert=True, max_tokens=12).cached


@pytest.mark.filterwarnings("ignore:.*looks collapsed")  # one epoch on 16 rows: the check is exactness, not skill
def test_joined_branch_predicts_raw_text_as_on_the_built_dataset(text_encoder, tmp_path, one_torch_thread):
    """`finetune+features`: the Predictor both tokenizes a raw transcript for the fine-tuned
    transformer and encodes it with the recorded sentence encoder, exactly as the build did."""
    from conftest import write_mosi_source
    from robustmsa.data.mosi_real import build_mosi_real
    from robustmsa.evaluation.evaluate import predict_tensors
    from robustmsa.predict import Predictor

    source = write_mosi_source(tmp_path / "source", sizes=(16, 8, 8))
    path = build_mosi_real(source, tmp_path / "mosi.pkl", text_encoder, progress=False, cache_dir=None,
                           text_bert=True).path
    dataset = load_dataset(path)
    run = apply_overrides(RunConfig("late_fusion"), [
        "method.d=16", "method.text_encoder=finetune+features", "train.epochs=1", "train.batch_size=16",
    ], method_class("late_fusion").config_class)
    result = Trainer(tmp_path / "runs", verbose=False).fit(run, dataset, 0)
    predictor = Predictor.load(result.path)
    assert predictor.text_branch.with_features

    test = dataset["test"]
    archive = np.load(source / "audio_opensmile73.npz")
    audio = dict(zip(archive["ids"], archive["features"]))
    samples = [{"text": t, "audio": audio[i.replace("$_$", "_")].tolist()} for t, i in zip(test.raw_text, test.ids)]
    method = predictor.method
    expected = predict_tensors(method, SplitTensors(test, dataset.spec, stats=method.input_stats))
    np.testing.assert_allclose([p.score for p in predictor.predict(samples)], np.clip(expected, -3, 3), atol=1e-4)
