"""The audio front-end on tones the tests synthesize: frame count, pitch class, zero crossings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("librosa", reason="audio features need librosa")
soundfile = pytest.importorskip("soundfile", reason="writing test audio needs soundfile")

from robustmsa.cli import main  # noqa: E402
from robustmsa.data import DataError  # noqa: E402
from robustmsa.features.audio import (  # noqa: E402
    FEATURE_DIM,
    FRONT_END,
    egemaps_functionals,
    extract_audio_dir,
    wav_features,
)

A4 = 440.0  # pitch class A = chroma index 9 (C = 0)


def write_tone(path: Path, seconds: float, sample_rate: int, frequency: float = A4) -> Path:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * frequency * t), sample_rate)
    return path


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wavs")
    write_tone(folder / "a_long.wav", 1.0, 22050)
    write_tone(folder / "b_short.wav", 0.5, 16000)  # resampled to 22050 Hz on load
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_tone_features_shape_pitch_and_zero_crossings(tones: Path):
    features = wav_features(tones / "a_long.wav")
    assert features.shape == (1 + 22050 // 512, FEATURE_DIM) and features.dtype == np.float32
    assert np.isfinite(features).all()
    middle = features[5:-5]
    assert (middle[:, 20:32].argmax(axis=1) == 9).all()  # chroma peaks on A
    assert np.median(middle[:, 32]) == pytest.approx(2 * A4 / 22050, rel=0.05)  # ZCR of a sine: 2f / sr
    short = wav_features(tones / "b_short.wav")
    assert short.shape == (1 + 11025 // 512, FEATURE_DIM)
    assert np.median(short[3:-3, 32]) == pytest.approx(2 * A4 / 22050, rel=0.05)  # same pitch after resampling


def test_folder_to_npz_and_cli(tones: Path, tmp_path: Path, capsys):
    path = extract_audio_dir(tones, tmp_path / "audio.npz", egemaps=False, progress=False)
    archive = np.load(path)
    assert archive["ids"].tolist() == ["a_long", "b_short"]
    assert archive["features"].shape == (2, 44, FEATURE_DIM) and archive["lengths"].tolist() == [44, 22]
    assert not archive["features"][1, 22:].any() and str(archive["front_end"]) == FRONT_END
    assert np.isfinite(archive["features"]).all() and archive["features"][0, :44].any(axis=1).all()

    assert main(["features", "audio", "--wav-dir", str(tones), "--out", str(tmp_path / "cli.npz"), "--max-frames", "10"]) == 0
    assert np.load(tmp_path / "cli.npz")["features"].shape == (2, 10, FEATURE_DIM)
    assert main(["features", "audio", "--wav-dir", str(tmp_path / "none"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "none: no such folder (expected a folder of .wav files)" in capsys.readouterr().err


def test_bad_audio_is_a_one_line_error(tmp_path: Path):
    with pytest.raises(DataError, match="no audio file"):
        extract_audio_dir(tmp_path, tmp_path / "out.npz", progress=False)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not a wave file")
    with pytest.raises(DataError, match=r"broken.wav: not a readable audio file"):
        wav_features(tmp_path / "broken.wav")
    soundfile.write(tmp_path / "empty.wav", np.zeros(0), 22050)
    with pytest.raises(DataError, match="empty.wav: the audio is empty"):
        wav_features(tmp_path / "empty.wav")


@pytest.mark.skipif(importlib.util.find_spec("opensmile") is None, reason="eGeMAPS needs the optional package opensmile")
def test_egemaps_functionals(tones: Path):
    assert egemaps_functionals(tones / "a_long.wav").shape == (88,)


def test_predictor_runs_the_recorded_audio_front_end_on_wav(tones: Path, tmp_path: Path):
    """A checkpoint whose audio was made by this front-end accepts a WAV path, with the same result
    as the feature array."""
    from conftest import make_tiny_dataset
    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.methods.base import method_class
    from robustmsa.predict import Predictor
    from robustmsa.training.trainer import Trainer

    dataset = make_tiny_dataset(n=16, modalities=(("text", 4, 6), ("audio", 50, FEATURE_DIM)))
    dataset.metadata = {"features": {"audio": {"kind": "front-end", "front_end": FRONT_END}}}
    run = apply_overrides(RunConfig("late_fusion"), ["method.d=8", "train.epochs=1"], method_class("late_fusion").config_class)
    predictor = Predictor.load(Trainer(tmp_path, verbose=False).fit(run, dataset, 0).path)
    wav = tones / "b_short.wav"
    from_wav, from_array = predictor.predict([{"audio": str(wav)}, {"audio": wav_features(wav)}])
    assert from_wav.present == ["audio"] and from_wav.score == pytest.approx(from_array.score, abs=1e-6)
