"""The trainer: learning, determinism, selection on validation, atomic checkpoints, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_dataset
from robustmsa.config import RunConfig, apply_overrides
from robustmsa.evaluation.evaluate import evaluate
from robustmsa.methods.base import method_class
from robustmsa.training.checkpoint import load_checkpoint, load_weights
from robustmsa.training.trainer import Trainer


def run_config(method="late_fusion", *overrides):
    base = ["train.epochs=6", "train.batch_size=16", "method.d=16", "train.patience=10"]
    return apply_overrides(RunConfig(method), base + list(overrides), method_class(method).config_class)


@pytest.fixture(scope="module")
def dataset():
    return make_tiny_dataset(n=96, seed=1)


def test_training_learns_and_beats_chance(dataset, tmp_path):
    result = Trainer(tmp_path, verbose=False).fit(run_config(), dataset, seed=0)
    log = [json.loads(line) for line in (result.path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["train"]["loss"] < log[0]["train"]["loss"]
    test = evaluate(load_checkpoint(result.path).method, dataset, "test")
    assert test["acc2_non0"] > 75.0  # chance is ~50 on this balanced planted signal


def test_same_seed_same_numbers_other_seed_other_numbers(dataset, tmp_path):
    a = Trainer(tmp_path / "a", verbose=False).fit(run_config(), dataset, seed=0)
    b = Trainer(tmp_path / "b", verbose=False).fit(run_config(), dataset, seed=0)
    c = Trainer(tmp_path / "c", verbose=False).fit(run_config(), dataset, seed=1)
    wa, wb, wc = (load_weights(r.path / "model.safetensors") for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.path.name == "seed0" and c.path.name == "seed1" and a.path.parent.name == c.path.parent.name


def test_best_checkpoint_is_selected_on_validation(dataset, tmp_path):
    result = Trainer(tmp_path, verbose=False).fit(run_config(), dataset, seed=0)
    log = [json.loads(line) for line in (result.path / "log.jsonl").read_text().splitlines()]
    best_epoch = int(np.argmax([r["selection"]["score"] for r in log])) + 1  # tests/test_selection.py: the score
    saved = json.loads((result.path / "metrics.json").read_text())
    assert saved["epoch"] == best_epoch
    assert saved["valid"]["mae"] == pytest.approx(log[best_epoch - 1]["valid"]["mae"])
    reloaded = evaluate(load_checkpoint(result.path).method, dataset, "valid")
    assert reloaded["mae"] == pytest.approx(saved["valid"]["mae"], abs=1e-5)
    assert not any("test" in r for r in log)  # the test split is never looked at while training


def test_early_stopping_stops(dataset, tmp_path):
    run = run_config("late_fusion", "train.epochs=50", "train.patience=2", "train.lr=0.3")
    result = Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    assert result.epochs_run < 50


def test_resume_after_interruption_gives_identical_weights(dataset, tmp_path, monkeypatch):
    run = run_config("misa")
    reference = Trainer(tmp_path / "ref", verbose=False).fit(run, dataset, seed=0)

    calls = {"n": 0}
    original = Trainer._train_epoch

    def crash_on_third_epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", crash_on_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tmp_path / "resumed", verbose=False).fit(run, dataset, seed=0)
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    resumed = Trainer(tmp_path / "resumed", verbose=False).fit(run, dataset, seed=0)
    assert resumed.resumed and resumed.epochs_run == 4
    w_ref, w_res = load_weights(reference.path / "model.safetensors"), load_weights(resumed.path / "model.safetensors")
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    again = Trainer(tmp_path / "resumed", verbose=False).fit(run, dataset, seed=0)
    assert again.skipped and again.epochs_run == 0


def test_checkpoint_folder_is_complete_and_loads_without_pickle(dataset, tmp_path):
    result = Trainer(tmp_path, verbose=False).fit(run_config("mean_impute"), dataset, seed=2)
    names = {p.name for p in result.path.iterdir()}
    assert {"config.json", "model.safetensors", "metrics.json", "log.jsonl", "state.json"} <= names
    assert not any(n.endswith(".tmp") for n in names)
    config = json.loads((result.path / "config.json").read_text())
    assert config["seed"] == 2 and config["run"]["method"] == "mean_impute"
    assert config["data"]["sha256"] == dataset.source_hash
    ckpt = load_checkpoint(result.path)
    assert ckpt.method.mean_text.abs().sum() > 0  # training-set means travel in the checkpoint


def test_labeled_ratio_trains_on_the_labeled_part_only(dataset, tmp_path, monkeypatch):
    seen = []
    original = Trainer._train_epoch

    def spy(self, fabric, model, method, optimizer, data, *args, **kwargs):
        seen.append((len(data), bool(data.labeled.all())))
        return original(self, fabric, model, method, optimizer, data, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", spy)
    Trainer(tmp_path, verbose=False).fit(run_config("late_fusion", "labeled_ratio=0.25", "train.epochs=1"), dataset, seed=0)
    assert seen == [(24, True)]
