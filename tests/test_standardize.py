"""Per-feature input standardization with training statistics: fitted on valid frames only,
stored in the checkpoint, applied the same way by training, evaluation and the Predictor."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from conftest import make_tiny_dataset
from robustmsa.config import RunConfig, apply_overrides
from robustmsa.data.batch import SplitTensors
from robustmsa.data.standardize import FeatureStats, fit_feature_stats
from robustmsa.evaluation.evaluate import evaluate, predict_tensors, split_tensors
from robustmsa.methods.base import method_class
from robustmsa.missing import Protocol
from robustmsa.predict import Predictor
from robustmsa.training.checkpoint import load_checkpoint
from robustmsa.training.trainer import Trainer


def _run(method: str, *overrides: str) -> RunConfig:
    base = ["train.epochs=3", "train.batch_size=16", "method.d=16", "train.patience=10"]
    return apply_overrides(RunConfig(method), base + list(overrides), method_class(method).config_class)


def _raw_units(dataset, modality: str = "audio"):
    """The same data with one modality in raw units, each feature on its own scale and offset as
    openSMILE's are (about -11 to 376; a per-layer LayerNorm does not undo that), on valid frames
    only: padding stays 0, as a reader pads."""
    raw = copy.deepcopy(dataset)
    dim = dataset.spec.modality(modality).dim
    scale, offset = np.logspace(-2, 2, dim), np.linspace(-11, 376, dim)
    for split in raw.splits.values():
        x, lengths = split.features[modality], split.lengths[modality]
        valid = (np.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
        split.features[modality] = np.where(valid, x * scale + offset, 0.0).astype(np.float32)
    raw.source_hash += "-raw"
    return raw


def test_statistics_come_from_valid_frames_of_present_samples_only():
    train = make_tiny_dataset(n=40, seed=3)["train"]
    audio, lengths = train.features["audio"], train.lengths["audio"].copy()
    lengths[:5] = 0  # these samples miss audio: their (garbage) values must not count
    audio[:5] = 1e4
    padding = np.arange(audio.shape[1])[None, :] >= lengths[:, None]
    audio[padding] = -1e4  # padding frames must not count either
    train.lengths["audio"] = lengths
    stats = fit_feature_stats(train)
    valid_frames = audio[~padding]
    np.testing.assert_allclose(stats.mean["audio"], valid_frames.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.std["audio"], valid_frames.std(0), rtol=1e-5)
    tensors = SplitTensors(train, make_tiny_dataset().spec, stats=stats)
    kept = tensors.frame_mask["audio"].numpy()
    standardized = tensors.features["audio"].numpy()
    assert np.abs(standardized[~kept]).max() == 0.0  # padding and missing samples stay 0
    np.testing.assert_allclose(standardized[kept].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(standardized[kept].std(0), 1.0, atol=1e-4)


def test_statistics_round_trip_through_json_exactly():
    stats = fit_feature_stats(make_tiny_dataset(seed=4)["train"])
    back = FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    for m in stats.mean:
        assert np.array_equal(back.mean[m], stats.mean[m]) and np.array_equal(back.std[m], stats.std[m])
    assert FeatureStats.from_dict(None) is None


def test_a_constant_feature_and_an_absent_modality_give_no_nan(tmp_path):
    dataset = make_tiny_dataset(n=48, seed=5)
    for split in dataset.splits.values():
        split.features["text"][..., 0] = 7.0  # constant feature (std 0), padding included
        split.lengths["vision"][:] = 0  # vision missing everywhere
    stats = fit_feature_stats(dataset["train"])
    assert stats.std["text"][0] == 1.0 and np.all(np.isfinite(stats.std["vision"]))
    result = Trainer(tmp_path, verbose=False).fit(_run("late_fusion", "train.epochs=2"), dataset, seed=0)
    pred = predict_tensors(load_checkpoint(result.path).method, SplitTensors(dataset["test"], dataset.spec, stats=stats))
    assert np.all(np.isfinite(pred)) and all(np.isfinite(v) for v in result.valid_metrics.values())


@pytest.mark.parametrize("method", ["late_fusion", "misa"])
def test_raw_unit_and_standardized_inputs_give_the_same_predictions(method, tmp_path, one_torch_thread):
    dataset = make_tiny_dataset(n=64, seed=6)
    raw = _raw_units(dataset)
    run = _run(method, "train.epochs=6", "train.lr=3e-3")
    fitted = {name: load_checkpoint(Trainer(tmp_path / name, verbose=False).fit(run, data, seed=0).path)
              for name, data in (("plain", dataset), ("raw", raw))}
    plain = predict_tensors(fitted["plain"].method, split_tensors(dataset, "test", Protocol.parse("none"), 0,
                                                                  fitted["plain"].method.input_stats))
    on_raw = predict_tensors(fitted["raw"].method, split_tensors(raw, "test", Protocol.parse("none"), 0,
                                                                 fitted["raw"].method.input_stats))
    assert np.std(plain) > 0.1  # a model that learned something, not a constant
    # float32 raw values carry rounding (376 + 0.01 x) that training amplifies a little; without
    # standardization the same comparison differs by 0.5 (late_fusion) to 0.7 (misa)
    np.testing.assert_allclose(on_raw, plain, atol=0.05)
    # evaluation from the checkpoint alone applies the recorded statistics
    assert evaluate(fitted["raw"].method, raw, "test")["mae"] == pytest.approx(evaluate(fitted["plain"].method, dataset, "test")["mae"], abs=0.02)
    # the Predictor takes raw-unit arrays and applies the same statistics
    test = raw["test"]
    samples = [{m: test.features[m][i, : test.lengths[m][i]].tolist() for m in raw.spec.modality_names}
               for i in range(len(test))]
    scores = [p.score for p in Predictor(fitted["raw"]).predict(samples)]
    np.testing.assert_allclose(scores, np.clip(on_raw, -3, 3), atol=1e-4)


def test_standardize_false_opts_out(tmp_path):
    dataset = make_tiny_dataset(n=48, seed=7)
    on = Trainer(tmp_path, verbose=False).fit(_run("mean_impute", "train.epochs=1"), dataset, seed=0)
    off = Trainer(tmp_path, verbose=False).fit(_run("mean_impute", "train.epochs=1", "data.standardize=false"), dataset, seed=0)
    assert on.path.parent != off.path.parent  # a different model, a different run folder
    assert json.loads((off.path / "config.json").read_text())["standardize"] is None
    assert load_checkpoint(off.path).method.input_stats is None
    recorded = json.loads((on.path / "config.json").read_text())["standardize"]
    assert set(recorded) == set(dataset.spec.modality_names)
    assert load_checkpoint(on.path).method.input_stats is not None


def test_corruption_zeroes_the_stored_values_and_missing_ones_are_zero_after_standardization():
    from robustmsa.data.batch import MissingPattern

    dataset = make_tiny_dataset(n=24, seed=8)
    split, spec = dataset["train"], dataset.spec
    stats = fit_feature_stats(split)
    present = np.ones((len(split), 3), dtype=bool)
    present[0, 1] = False  # sample 0 misses audio (the method is told)
    corrupt = {"audio": np.zeros((len(split), 1, 1), dtype=bool)}
    corrupt["audio"][1] = True  # sample 1's audio zeroed as stored (the method is not told)
    tensors = SplitTensors(split, spec, MissingPattern(present, {}, corrupt), stats=stats)
    audio, kept = tensors.features["audio"].numpy(), tensors.frame_mask["audio"].numpy()
    assert not kept[0].any() and np.all(audio[0] == 0)
    frames = split.lengths["audio"][1]
    assert kept[1, :frames].all()
    np.testing.assert_allclose(audio[1, :frames], np.broadcast_to(-stats.mean["audio"] / stats.std["audio"],
                                                                   (frames, spec.modality("audio").dim)), rtol=1e-6)
