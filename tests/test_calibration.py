"""The calibration check: an affine fit on validation that tells a scale gap from a ranking gap."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_tiny_dataset
from robustmsa.evaluation.calibration import calibration_fit, calibration_report
from robustmsa.methods.base import Method, Output


def test_fit_recovers_a_known_shrinkage_and_offset():
    labels = np.random.default_rng(0).normal(size=200) * 1.5
    pred = 0.7 * labels - 0.2  # shrunk and shifted, perfectly ranked
    fit = calibration_fit(pred, labels)
    assert fit.std_ratio == pytest.approx(0.7)
    assert fit.slope == pytest.approx(1 / 0.7)
    assert fit.intercept == pytest.approx(0.2 / 0.7)
    assert fit.corr == pytest.approx(1.0)
    assert np.allclose(fit.apply(pred), labels)


def test_fit_of_a_constant_predictor_is_the_label_mean_and_bad_input_is_an_error():
    labels = np.array([-1.0, 0.0, 2.0])
    fit = calibration_fit(np.zeros(3), labels)
    assert (fit.slope, fit.std_ratio) == (0.0, 0.0) and fit.intercept == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="paired"):
        calibration_fit(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="not finite"):
        calibration_fit(np.array([0.0, np.nan]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="constant"):
        calibration_fit(np.array([0.0, 1.0]), np.ones(2))


class ShrunkOracle(Method):
    """Predicts 0.5 * label (read from the batch): right ranking, wrong scale."""

    def forward(self, batch):
        return Output(0.5 * batch.labels)


def test_report_fits_on_validation_and_calibration_closes_a_scale_only_gap():
    dataset = make_tiny_dataset(n=60)
    report = calibration_report(ShrunkOracle(dataset.spec, None), dataset, seed=0)
    assert report["valid_std_ratio"] == pytest.approx(0.5, abs=1e-6)
    assert report["valid_slope"] == pytest.approx(2.0, abs=1e-5)
    assert report["test_mae"] > 0.3
    assert report["test_mae_calibrated"] == pytest.approx(0.0, abs=1e-5)  # the gap was scale only
    assert report["test_corr"] == pytest.approx(report["test_corr_calibrated"], abs=1e-6)


def test_report_refuses_class_labels():
    dataset = make_tiny_dataset(n=30, classification=True)
    with pytest.raises(ValueError, match="class labels"):
        calibration_report(ShrunkOracle(dataset.spec, None), dataset)


def test_report_sees_the_inputs_the_method_was_trained_on(tmp_path, one_torch_thread):
    """A method trained on standardized features is evaluated on standardized features: the
    report's raw test metrics are `evaluate`'s (they were not, when it skipped `input_stats`)."""
    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.evaluation.evaluate import evaluate
    from robustmsa.methods.base import method_class
    from robustmsa.training.checkpoint import load_checkpoint
    from robustmsa.training.trainer import Trainer

    dataset = make_tiny_dataset(n=60, seed=4)
    for split in dataset.splits.values():  # a real unit far from standardized, so skipping stats shows
        split.features["audio"] = split.features["audio"] * 50.0 + 20.0
    run = apply_overrides(RunConfig("late_fusion"), ["train.epochs=2"], method_class("late_fusion").config_class)
    method = load_checkpoint(Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0).path).method
    assert method.input_stats is not None
    report = calibration_report(method, dataset, seed=0)
    assert report["test_mae"] == pytest.approx(evaluate(method, dataset, "test")["mae"], abs=1e-6)
