"""The fair-comparison rules: selection on validation including missingness, equal optimizer budgets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import make_tiny_dataset
from robustmsa.config import ConfigError, RunConfig, apply_overrides
from robustmsa.data.batch import SplitTensors, epoch_order
from robustmsa.evaluation.evaluate import evaluate
from robustmsa.methods.base import method_class
from robustmsa.training.checkpoint import load_checkpoint
from robustmsa.training.trainer import Trainer

BATCH = 16


def run_config(method="late_fusion", *overrides):
    base = ["train.epochs=3", f"train.batch_size={BATCH}", "method.d=16", "train.patience=10"]
    return apply_overrides(RunConfig(method), base + list(overrides), method_class(method).config_class)


@pytest.fixture(scope="module")
def dataset():
    return make_tiny_dataset(n=96, seed=1)


def saved_selection(result) -> dict:
    return json.loads((result.path / "metrics.json").read_text())["selection"]


# --------------------------------------------------------------------------- selection


def test_selection_score_is_the_mean_of_complete_and_missing_validation(dataset, tmp_path):
    result = Trainer(tmp_path, verbose=False).fit(run_config(), dataset, seed=0)
    saved = json.loads((result.path / "metrics.json").read_text())
    selection = saved["selection"]
    assert selection["rule"] == "mixed" and selection["protocol"] == "modality:0.3" and selection["metric"] == "mae"
    method = load_checkpoint(result.path).method
    complete = evaluate(method, dataset, "valid")
    missing = evaluate(method, dataset, "valid", "modality:0.3", seed=0)  # the run seed's masks
    assert complete["mae"] != pytest.approx(missing["mae"])
    assert saved["valid"]["mae"] == pytest.approx(complete["mae"], abs=1e-5)
    assert selection["valid_missing"]["mae"] == pytest.approx(missing["mae"], abs=1e-5)
    assert selection["score"] == pytest.approx(-(complete["mae"] + missing["mae"]) / 2, abs=1e-5)
    log = [json.loads(line) for line in (result.path / "log.jsonl").read_text().splitlines()]
    assert saved["epoch"] == max(range(len(log)), key=lambda i: log[i]["selection"]["score"]) + 1


def test_every_method_of_a_seed_is_selected_on_the_same_masks(dataset, tmp_path):
    trainer = Trainer(tmp_path, verbose=False)
    late = saved_selection(trainer.fit(run_config("late_fusion"), dataset, seed=0))
    impute = saved_selection(trainer.fit(run_config("mean_impute"), dataset, seed=0))
    other_seed = saved_selection(trainer.fit(run_config("late_fusion"), dataset, seed=1))
    assert late["masks_sha256"] == impute["masks_sha256"] != other_seed["masks_sha256"]


def test_select_on_complete_keeps_the_old_rule(dataset, tmp_path):
    result = Trainer(tmp_path, verbose=False).fit(run_config("late_fusion", "train.select_on=complete"), dataset, seed=0)
    selection = saved_selection(result)
    assert selection["masks_sha256"] is None and "valid_missing" not in selection
    saved = json.loads((result.path / "metrics.json").read_text())
    assert selection["score"] == pytest.approx(-saved["valid"]["mae"])


def test_selection_options_are_checked_and_old_configs_still_read():
    with pytest.raises(ConfigError, match="train.select_on must be one of mixed, complete, missing"):
        run_config("late_fusion", "train.select_on=test")
    with pytest.raises(ConfigError, match="train.select_protocol"):
        run_config("late_fusion", "train.select_protocol=blur:0.3")
    old = RunConfig("late_fusion").to_dict()
    for key in ("select_on", "select_protocol", "equal_budget"):
        del old["train"][key]
    old["train"]["valid_protocol"] = "frame:0.2"
    train = RunConfig.from_dict(old).train
    assert (train.select_on, train.select_protocol, train.equal_budget) == ("missing", "frame:0.2", False)


# --------------------------------------------------------------------------- budget


def steps_per_epoch(dataset, tmp_path, *overrides) -> int:
    """Optimizer steps of a one-epoch run (counted where every step ends: after_step)."""
    run = run_config("late_fusion", "train.epochs=1", *overrides)
    cls = method_class("late_fusion")
    steps = {"n": 0}
    original = cls.after_step

    def counted(self):
        steps["n"] += 1
        return original(self)

    cls.after_step = counted
    try:
        Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    finally:
        cls.after_step = original
    return steps["n"]


def test_equal_budget_gives_full_data_steps_at_low_labeled_ratio(dataset, tmp_path):
    full = steps_per_epoch(dataset, tmp_path / "full")
    assert full == math.ceil(len(dataset["train"]) / BATCH)
    assert steps_per_epoch(dataset, tmp_path / "r01", "data.labeled_ratio=0.1") == full
    unequal = steps_per_epoch(dataset, tmp_path / "r01u", "data.labeled_ratio=0.1", "train.equal_budget=false")
    assert unequal == math.ceil(round(0.1 * len(dataset["train"])) / BATCH) < full


def test_epoch_order_draws_every_row_then_tops_up_with_replacement(dataset):
    first = epoch_order(10, 96, torch.Generator().manual_seed(3))
    again = epoch_order(10, 96, torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and len(first) == 96
    counts = torch.bincount(first, minlength=10)
    assert (counts >= 1).all() and counts.sum() == 96 and counts.max() > counts.min()
    plain = epoch_order(10, 10, torch.Generator().manual_seed(3))
    assert torch.equal(plain, torch.randperm(10, generator=torch.Generator().manual_seed(3)))  # r = 1: unchanged
    with pytest.raises(ValueError, match="rows=5 < 10"):
        epoch_order(10, 5, torch.Generator())
    tensors = SplitTensors(dataset["train"].subset(torch.arange(10).numpy()), dataset.spec)
    sizes = [b.size for b in tensors.batches(BATCH, torch.Generator().manual_seed(0), rows=40)]
    assert sizes == [16, 16, 8]


def test_tables_state_selection_and_budget():
    run = run_config("late_fusion", "data.labeled_ratio=0.1")
    assert run.train.selection_rule() == "mean of complete validation and validation under modality:0.3"
    assert run.budget().startswith("equal")
    assert run_config("late_fusion").budget() == "full data"
