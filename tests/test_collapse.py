"""A collapsed model (near-constant predictions, or no improvement after the first epoch) is
flagged: a one-line warning, `collapsed` + `collapse_reason` in metrics.json, a line in the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import make_tiny_dataset
from robustmsa.config import RunConfig, apply_overrides
from robustmsa.data.schema import REGRESSION_MOSI, LabelSpec
from robustmsa.evaluation.report import collapsed_runs
from robustmsa.methods.base import method_class
from robustmsa.training.collapse import collapse_reason
from robustmsa.training.trainer import Trainer

CLASSES = LabelSpec("classification", classes=("negative", "neutral", "positive"))
LABELS = np.linspace(-3, 3, 20)


def test_near_constant_regression_predictions_are_flagged():
    assert "near-constant" in collapse_reason(REGRESSION_MOSI, 0.4 + 0.01 * LABELS, LABELS, 3, 8, True)
    assert collapse_reason(REGRESSION_MOSI, 0.5 * LABELS, LABELS, 3, 8, True) == ""


def test_one_predicted_class_is_flagged():
    labels = np.arange(12) % 3
    one_class = np.tile([0.1, 2.0, 0.3], (12, 1))
    assert "one class" in collapse_reason(CLASSES, one_class, labels, 2, 5, True)
    assert collapse_reason(CLASSES, np.eye(3)[labels], labels, 2, 5, True) == ""


def test_a_best_epoch_that_is_the_first_of_a_selecting_phase_is_flagged():
    assert "first of 8" in collapse_reason(REGRESSION_MOSI, LABELS, LABELS, 1, 8, True)
    assert collapse_reason(REGRESSION_MOSI, LABELS, LABELS, 1, 1, True) == ""  # a one-epoch phase
    assert collapse_reason(REGRESSION_MOSI, LABELS, LABELS, 1, 8, False) == ""  # keeps the last epoch


def test_a_collapsed_run_warns_and_says_so_in_metrics_json(tmp_path):
    dataset = make_tiny_dataset(n=48, seed=2)
    for split in dataset.splits.values():  # inputs that say nothing: every sample looks the same
        for modality in split.features:
            split.features[modality][:] = 1.0
    run = apply_overrides(RunConfig("late_fusion"), ["train.epochs=3", "method.d=8", "train.batch_size=16"],
                          method_class("late_fusion").config_class)
    with pytest.warns(UserWarning, match="looks collapsed: near-constant validation predictions"):
        result = Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    saved = json.loads((result.path / "metrics.json").read_text())
    assert saved["collapsed"] is True and "near-constant" in saved["collapse_reason"]
    assert result.collapse_reason == saved["collapse_reason"]
    again = Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    assert again.skipped and again.collapse_reason == saved["collapse_reason"]


def test_the_report_lists_collapsed_runs_per_run():
    rows = pd.DataFrame({"method": ["a", "a", "b", "b"], "variant": ["", "", "", ""], "seed": [0, 0, 0, 1],
                         "metric": ["mae", "corr", "mae", "mae"],
                         "collapsed": ["", "", "", "near-constant validation predictions (std 0 vs label std 1.2)"]})
    line = collapsed_runs(rows)
    assert "b seed 1 (near-constant" in line and "a seed" not in line and "b seed 0" not in line
    assert collapsed_runs(rows.assign(collapsed="")) == "Collapsed runs: none"
    assert collapsed_runs(rows.drop(columns="collapsed")) == "Collapsed runs: not recorded"


def test_a_modality_the_model_ignores_is_flagged_from_its_predictions_alone():
    healthy = {"text": 0.6 * LABELS, "audio": 0.2 * LABELS}
    assert collapse_reason(REGRESSION_MOSI, LABELS, LABELS, 3, 8, True, healthy) == ""
    ignored = {**healthy, "audio": 0.1 + 0.001 * LABELS}  # raw-unit audio: the same score for everyone
    reason = collapse_reason(REGRESSION_MOSI, LABELS, LABELS, 3, 8, True, ignored)
    assert reason.startswith("near-constant predictions from audio alone (std ") and "text" not in reason
