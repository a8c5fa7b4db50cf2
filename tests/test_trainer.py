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
    assert saved["collapsed"] is False and saved["collapse_reason"] == ""  # a model that learned


def test_early_stopping_stops(dataset, tmp_path):
    run = run_config("late_fusion", "train.epochs=50", "train.patience=2", "train.lr=0.3")
    result = Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    assert result.epochs_run < 50


@pytest.mark.parametrize("method, options", [("misa", ()), ("late_fusion", ("train.lr_schedule=linear",))])
def test_resume_after_interruption_gives_identical_weights(dataset, tmp_path, monkeypatch, method, options):
    run = run_config(method, *options)  # a linear schedule resumes at its step: nothing saved for it
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


# --- exact resume of a multi-phase method (sslmm: pre-train, then fine-tune) -----------------

SSLMM_SMALL = ["train.epochs=2", "train.batch_size=32", "method.d=16", "method.segments=4", "method.rounds=1",
               "method.heads=2", "method.pretrain_epochs=2", "train.patience=10", "labeled_ratio=0.5"]


@pytest.fixture(scope="module")
def sslmm_reference(dataset, tmp_path_factory, one_torch_thread):
    run = apply_overrides(RunConfig("sslmm"), list(SSLMM_SMALL), method_class("sslmm").config_class)
    return run, Trainer(tmp_path_factory.mktemp("ref"), verbose=False).fit(run, dataset, seed=0)


# Epochs: pretrain 1, 2 | finetune 1, 2. Killed as epoch `kill_at` starts: 2 = within pre-training,
# 3 = the phase boundary (the first fine-tune epoch), 4 = within fine-tuning.
@pytest.mark.parametrize("kill_at", [2, 3, 4])
def test_multi_phase_resume_equals_an_uninterrupted_run(dataset, sslmm_reference, tmp_path, monkeypatch, capsys, kill_at):
    run, reference = sslmm_reference
    calls = {"n": 0}
    original = Trainer._train_epoch

    def killed(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    resumed = Trainer(tmp_path, verbose=True).fit(run, dataset, seed=0)
    assert resumed.resumed and resumed.epochs_run == 4 - (kill_at - 1)
    phase = "pretrain" if kill_at <= 2 else "finetune"
    assert f"resumed at phase {phase}" in capsys.readouterr().out
    w_ref, w_res = load_weights(reference.path / "model.safetensors"), load_weights(resumed.path / "model.safetensors")
    assert w_ref.keys() == w_res.keys() and all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    assert resumed.valid_metrics == reference.valid_metrics


def test_a_claimed_seed_folder_makes_a_second_process_wait(dataset, tmp_path, monkeypatch):
    """Another process holds the seed folder's lock: fit waits (told who holds it), then trains."""
    import subprocess
    import sys
    import time

    import robustmsa.training.trainer as trainer_module
    from robustmsa.training.lock import claim_folder
    from robustmsa.training.trainer import run_dir

    run = run_config("late_fusion", "train.epochs=1")
    folder = run_dir(tmp_path, run, dataset.source_hash) / "seed0"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, fcntl, pathlib; f = pathlib.Path(sys.argv[1]); f.mkdir(parents=True);"
        "h = open(f / '.lock', 'a+'); fcntl.flock(h, fcntl.LOCK_EX); h.write('pid 4242 on elsewhere'); h.flush();"
        "print('claimed', flush=True); time.sleep(2)"), str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "claimed"
    waited = []
    monkeypatch.setattr(trainer_module, "claim_folder",
                        lambda folder, on_wait: claim_folder(folder, lambda who: (waited.append(who), on_wait(who))))
    start = time.perf_counter()
    result = Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    holder.wait()
    assert waited == ["pid 4242 on elsewhere"] and time.perf_counter() - start > 0.5
    assert result.epochs_run == 1 and not result.skipped


def test_a_rejected_config_leaves_no_run_folder(dataset, tmp_path):
    run = run_config("mult_lite", "method.heads=3")  # 16 is not divisible by 3 heads
    with pytest.raises(Exception):
        Trainer(tmp_path / "runs", verbose=False).fit(run, dataset, seed=0)
    assert not (tmp_path / "runs").exists()


def test_linear_schedule_warms_up_then_decays_every_group(dataset, tmp_path):
    run = run_config("late_fusion", "train.lr_schedule=linear", "train.warmup=0.2", "train.lr=0.01")
    result = Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    log = [json.loads(line) for line in (result.path / "log.jsonl").read_text().splitlines()]
    ends = [r["lr_end"][0] for r in log]
    assert len(log) == 6 and max(ends) <= 0.01 + 1e-12
    assert ends[0] < 0.01 * 0.8 and ends[1] > ends[0]  # still warming up at the end of epoch 1 (warmup = 1.2 epochs)
    assert all(a > b for a, b in zip(ends[1:], ends[2:]))  # then it only decays
    assert 0 < ends[-1] < 0.01 * 0.2  # the last step still trains, at a small rate
    constant = Trainer(tmp_path / "c", verbose=False).fit(run_config("late_fusion", "train.lr=0.01"), dataset, seed=0)
    assert all(json.loads(line)["lr_end"] == [0.01] for line in (constant.path / "log.jsonl").read_text().splitlines())
