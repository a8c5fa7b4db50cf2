"""Predictor and `robustmsa predict`: any subset of modalities, same features as the build, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_dataset
from robustmsa.cli import main
from robustmsa.data import DataError, load_dataset
from robustmsa.data.batch import SplitTensors
from robustmsa.evaluation.evaluate import predict_tensors, split_tensors
from robustmsa.missing import Protocol
from robustmsa.predict import Predictor, read_samples, sentiment_class


@pytest.fixture(scope="module")
def predictor(tiny_real_checkpoint) -> Predictor:
    return Predictor.load(tiny_real_checkpoint)


def _raw_test_inputs(source: Path, dataset):
    """The test split's transcripts and raw (un-standardized) audio vectors, from the release."""
    archive = np.load(source / "audio_opensmile73.npz")
    audio = dict(zip(archive["ids"], archive["features"]))
    test = dataset["test"]
    return test.raw_text, [audio[i.replace("$_$", "_")] for i in test.ids]


def test_raw_inputs_give_what_the_model_gives_on_the_built_dataset(predictor, tiny_real):
    source, path = tiny_real
    dataset = load_dataset(path)
    texts, audio = _raw_test_inputs(source, dataset)
    method = predictor.method

    both = predictor.predict([{"text": t, "audio": a.tolist()} for t, a in zip(texts, audio)])
    expected = predict_tensors(method, SplitTensors(dataset["test"], dataset.spec, stats=method.input_stats))
    np.testing.assert_allclose([p.score for p in both], np.clip(expected, -3, 3), atol=1e-4)
    assert all(p.present == ["text", "audio"] for p in both)

    text_only = predictor.predict([{"text": t} for t in texts])  # audio missing
    expected = predict_tensors(method, split_tensors(dataset, "test", Protocol.parse("subset:l"), 0, method.input_stats))
    np.testing.assert_allclose([p.score for p in text_only], np.clip(expected, -3, 3), atol=1e-4)
    assert all(p.present == ["text"] for p in text_only)

    audio_only = predictor.predict([{"a": a} for a in audio])  # short alias, numpy input
    expected = predict_tensors(method, split_tensors(dataset, "test", Protocol.parse("subset:a"), 0, method.input_stats))
    np.testing.assert_allclose([p.score for p in audio_only], np.clip(expected, -3, 3), atol=1e-4)


def test_the_trained_model_reads_sentiment_from_raw_text(predictor):
    predictions = predictor.predict([{"text": "the movie was really wonderful", "id": "good"},
                                     {"text": "this film was really awful", "id": "bad", "audio": None}])
    assert [p.id for p in predictions] == ["good", "bad"]
    assert predictions[0].score > predictions[1].score
    assert (predictions[0].label, predictions[1].label) == ("positive", "negative")


def test_sentiment_classes_follow_the_metric_family():
    assert [sentiment_class(s, "mosi") for s in (-2.0, -0.4, 0.3, 0.6)] == ["negative", "neutral", "neutral", "positive"]
    assert [sentiment_class(s, "sims") for s in (-0.2, -0.1, 0.1, 0.11)] == ["negative", "negative", "neutral", "positive"]


BAD_SAMPLES = [
    ({"text": "fine", "video": [1.0]}, r"sample 1: unknown field 'video'; this checkpoint takes id, text, audio"),
    ({"audio": [1.0, 2.0, 3.0]}, r"sample 1 field 'audio': expected 73 values per frame, .* got shape \(3,\)"),
    ({"audio": [[0.0] * 73] * 2 + [[np.nan] * 73]}, r"field 'audio': expected finite numbers"),
    ({"audio": "nowhere.npy"}, r"field 'audio': no such file 'nowhere.npy'"),
    ({"id": "x"}, r"sample 1: no modality given \(expected at least one of text, audio\)"),
    ({"text": "", "audio": None}, r"no modality given"),
    ("just a string", r"sample 1: expected an object of modality -> input, got str"),
    ({"audio": {"a": 1}}, r"field 'audio': expected numbers"),
]


@pytest.mark.parametrize("sample,message", BAD_SAMPLES)
def test_bad_input_is_a_one_line_error(predictor, sample, message):
    with pytest.raises(DataError, match=message) as error:
        predictor.predict([sample])
    assert "\n" not in str(error.value)


def test_wav_refused_when_the_checkpoint_features_cannot_be_made_from_audio(predictor, tmp_path: Path):
    wav = tmp_path / "clip.wav"
    wav.write_bytes(b"RIFF")
    with pytest.raises(DataError, match=r"audio features \(opensmile73-bclstm\) cannot be computed from .wav files"):
        predictor.predict([{"audio": str(wav)}])


def test_npy_input_and_encoder_fingerprint_check(predictor, tiny_real_checkpoint, tmp_path: Path):
    vector = np.linspace(-1, 1, 73, dtype=np.float32)
    np.save(tmp_path / "a.npy", vector)
    from_file = predictor.predict([{"audio": str(tmp_path / "a.npy")}])[0]
    assert from_file.score == pytest.approx(predictor.predict([{"audio": vector}])[0].score)
    other = Predictor.load(tiny_real_checkpoint, text_encoder_path=tmp_path)  # a folder with other files
    with pytest.raises(DataError, match="fingerprint differs from the one .* was trained with"):
        other.predict([{"text": "hello"}])


def test_read_samples_jsonl_csv_json_text(tmp_path: Path):
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"id": "a", "text": "good"}\n\n{"audio": [1, 2]}\n')
    samples, where = read_samples(jsonl)
    assert samples == [{"id": "a", "text": "good"}, {"audio": [1, 2]}] and where[1].endswith("s.jsonl: line 3")

    table = tmp_path / "s.csv"
    table.write_text('id,text,audio\nx,"good, really",\ny,,"[0.5, 1.5]"\n')
    samples, where = read_samples(table)
    assert samples == [{"id": "x", "text": "good, really", "audio": ""}, {"id": "y", "text": "", "audio": [0.5, 1.5]}]
    assert where == [f"{table}: line 2", f"{table}: line 3"]

    array = tmp_path / "s.json"
    array.write_text('[{"text": "a"}, {"text": "b"}]')
    assert read_samples(array)[0] == [{"text": "a"}, {"text": "b"}]
    lines = tmp_path / "s.txt"
    lines.write_text("great film\n\nawful film\n")
    assert read_samples(lines)[0] == [{"text": "great film"}, {"text": "awful film"}]

    jsonl.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"s.jsonl: line 2: not valid JSON"):
        read_samples(jsonl)
    with pytest.raises(DataError, match="no such input file"):
        read_samples(tmp_path / "none.jsonl")


def test_cli_predict_flags_files_and_errors(tiny_real_checkpoint, tmp_path: Path, capsys):
    checkpoint = str(tiny_real_checkpoint)
    assert main(["predict", checkpoint, "--text", "the acting was really brilliant", "--text", "the story was really bad",
                 "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["label"] for line in lines] == ["positive", "negative"]
    assert lines[0]["present"] == ["text"] and set(lines[0]) == {"id", "score", "label", "present"}

    samples = tmp_path / "in.csv"
    samples.write_text("id,text,audio\nfirst,the ending was really lovely,\nsecond,,\"" + json.dumps([0.1] * 73) + "\"\n")
    assert main(["predict", str(tiny_real_checkpoint.parent), "--input", str(samples)]) == 0  # run folder, one seed
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "score", "label", "present", "extras"]
    assert table[1].split()[0] == "first" and table[1].split()[3] == "text"
    assert table[2].split()[0] == "second" and table[2].split()[3] == "audio"

    assert main(["predict", checkpoint, "--text", "a", "--text", "b", "--audio", "[1]"]) == 2
    assert "each flag must be given once per sample; got --text 2 time(s), --audio 1 time(s)" in capsys.readouterr().err
    assert main(["predict", checkpoint, "--vision", "[1, 2]"]) == 2
    assert "unknown field 'vision'; this checkpoint takes id, text, audio" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--text", "a"]) == 2
    assert "no checkpoint (model.safetensors) found" in capsys.readouterr().err


def test_classification_checkpoint_gives_class_names_and_probabilities(tmp_path: Path):
    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.methods.base import method_class
    from robustmsa.training.trainer import Trainer

    dataset = make_tiny_dataset(n=32, modalities=(("text", 10, 6), ("audio", 1, 9)), classification=True)
    run = apply_overrides(RunConfig("late_fusion"), ["method.d=8", "train.epochs=2"], method_class("late_fusion").config_class)
    predictor = Predictor.load(Trainer(tmp_path, verbose=False).fit(run, dataset, 0).path)
    test = dataset["test"]
    predictions = predictor.predict([{"text": test.features["text"][0, : test.lengths["text"][0]]},
                                     {"audio": test.features["audio"][1, 0]}])
    assert [p.present for p in predictions] == [["text"], ["audio"]]
    for p in predictions:
        assert p.label in ("negative", "neutral", "positive")
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert p.score == pytest.approx(max(p.probabilities.values()))
    with pytest.raises(DataError, match="text features were not made by a recorded text encoder; give a feature array of 6"):
        predictor.predict([{"text": "raw words"}])
