"""Metrics agree with scikit-learn / numpy and with MMSA's definitions (PROTOCOLS.md section 3)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

from robustmsa.evaluation import metrics, robustness
from robustmsa.evaluation.metrics import (
    METRICS_VERSION,
    PRIMARY_METRIC,
    classification_metrics,
    compute_metrics,
    mosi_metrics,
    sims_metrics,
)
from robustmsa.evaluation.robustness import auilc, mean_over_rates, summarize_curve


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _loop_bins(values: np.ndarray, boundaries: list[float]) -> np.ndarray:
    """Independent reference for SIMS binning: class i holds (boundaries[i], boundaries[i+1]]."""
    classes = np.full(len(values), -1)
    for index in range(len(boundaries) - 1):
        inside = (values > boundaries[index]) & (values <= boundaries[index + 1])
        classes[inside] = index
    return classes


# --- agreement with scikit-learn and numpy on random data -----------------------------------


def test_mosi_matches_sklearn_and_numpy(rng: np.random.Generator) -> None:
    label = np.round(rng.uniform(-3, 3, 500) * 3) / 3  # MOSI-like: averaged ratings, some 0
    label[:40] = 0.0
    pred = rng.normal(0, 1.5, 500)
    m = mosi_metrics(pred, label)

    assert m["acc2_has0"] == pytest.approx(100 * accuracy_score(label >= 0, pred >= 0))
    assert m["f1_has0"] == pytest.approx(100 * f1_score(label >= 0, pred >= 0, average="weighted"))
    keep = label != 0
    assert m["acc2_non0"] == pytest.approx(100 * accuracy_score(label[keep] > 0, pred[keep] > 0))
    assert m["f1_non0"] == pytest.approx(
        100 * f1_score(label[keep] > 0, pred[keep] > 0, average="weighted")
    )
    assert m["mae"] == pytest.approx(mean_absolute_error(label, pred))
    assert m["corr"] == pytest.approx(np.corrcoef(pred, label)[0, 1])
    for key, bound in (("acc5", 2), ("acc7", 3)):
        label_class = np.round(np.clip(label, -bound, bound))
        pred_class = np.round(np.clip(pred, -bound, bound))
        assert m[key] == pytest.approx(100 * accuracy_score(label_class, pred_class))


def test_sims_matches_sklearn_and_loop_reference(rng: np.random.Generator) -> None:
    label = np.round(rng.uniform(-1, 1, 500) * 5) / 5  # SIMS-like values on a 0.2 grid
    pred = rng.normal(0, 0.8, 500)  # some fall outside [-1, 1] and must be clipped
    m = sims_metrics(pred, label)

    pred_c, label_c = np.clip(pred, -1, 1), np.clip(label, -1, 1)
    edges2, edges3 = [-1.01, 0.0, 1.01], [-1.01, -0.1, 0.1, 1.01]
    edges5 = [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]
    pred2, label2 = _loop_bins(pred_c, edges2), _loop_bins(label_c, edges2)
    assert m["acc2"] == pytest.approx(100 * accuracy_score(label2, pred2))
    assert m["f1"] == pytest.approx(100 * f1_score(label2, pred2, average="weighted"))
    assert m["acc3"] == pytest.approx(
        100 * accuracy_score(_loop_bins(label_c, edges3), _loop_bins(pred_c, edges3))
    )
    assert m["acc5"] == pytest.approx(
        100 * accuracy_score(_loop_bins(label_c, edges5), _loop_bins(pred_c, edges5))
    )
    assert m["mae"] == pytest.approx(mean_absolute_error(label_c, pred_c))
    assert m["corr"] == pytest.approx(np.corrcoef(pred_c, label_c)[0, 1])


def test_classification_matches_sklearn(rng: np.random.Generator) -> None:
    label = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + np.eye(3)[label]
    m = classification_metrics(logits, label, num_classes=3)

    pred = logits.argmax(axis=1)
    assert m["acc"] == pytest.approx(100 * accuracy_score(label, pred))
    assert m["f1"] == pytest.approx(100 * f1_score(label, pred, average="weighted"))
    assert m["f1_macro"] == pytest.approx(100 * f1_score(label, pred, average="macro"))
    assert classification_metrics(pred, label) == m  # class ids give the same numbers


def test_torch_tensors_with_grad_and_column_shape_are_accepted() -> None:
    pred = torch.tensor([[0.5], [-1.0], [2.0]], requires_grad=True)
    label = torch.tensor([1.0, -1.0, 2.0])
    assert mosi_metrics(pred, label) == mosi_metrics([0.5, -1.0, 2.0], [1.0, -1.0, 2.0])


# --- hand-computed cases --------------------------------------------------------------------


def test_has0_and_non0_differ_when_labels_are_zero() -> None:
    # The two label-0 samples count for has0 (as positive) but are dropped for non0.
    m = mosi_metrics([0.5, -0.5, 1.0, -1.0], [0.0, 0.0, 2.0, -2.0])
    assert m["acc2_has0"] == pytest.approx(75.0)
    assert m["acc2_non0"] == pytest.approx(100.0)
    assert m["f1_non0"] == pytest.approx(100.0)


def test_prediction_of_exactly_zero_is_positive_for_has0_negative_for_non0() -> None:
    m = mosi_metrics([0.0, -1.0], [1.0, -1.0])
    assert m["acc2_has0"] == pytest.approx(100.0)
    assert m["acc2_non0"] == pytest.approx(50.0)


def test_all_zero_labels_give_nan_non0() -> None:
    m = mosi_metrics([0.3, -0.3], [0.0, 0.0])
    assert math.isnan(m["acc2_non0"]) and math.isnan(m["f1_non0"])
    assert m["acc2_has0"] == pytest.approx(50.0)


def test_acc5_and_acc7_clip_before_rounding() -> None:
    # 2.6 and 3.0 both clip to 2 for acc5; for acc7 2.6 rounds to 3 -> also correct.
    m = mosi_metrics([2.6], [3.0])
    assert (m["acc5"], m["acc7"]) == (100.0, 100.0)
    # 2.4 rounds to 2 for acc7 while the label stays 3; for acc5 both are 2.
    m = mosi_metrics([2.4], [3.0])
    assert (m["acc5"], m["acc7"]) == (100.0, 0.0)
    # Far out-of-range predictions clip to the end class.
    assert mosi_metrics([9.0], [-3.0])["acc7"] == 0.0
    assert mosi_metrics([-9.0], [-3.0])["acc7"] == 100.0


def test_rounding_is_half_to_even_like_numpy_and_mmsa() -> None:
    assert mosi_metrics([0.5], [0.0])["acc7"] == 100.0  # np.round(0.5) == 0
    assert mosi_metrics([1.5], [2.0])["acc7"] == 100.0  # np.round(1.5) == 2


def test_sims_acc2_boundary_zero_is_negative() -> None:
    assert sims_metrics([0.0], [-0.5])["acc2"] == 100.0
    assert sims_metrics([0.0], [0.2])["acc2"] == 0.0


def test_sims_acc3_bin_edges() -> None:
    assert sims_metrics([-0.1], [-0.5])["acc3"] == 100.0  # -0.1 is class 0 ([-1, -0.1])
    assert sims_metrics([-0.1], [0.0])["acc3"] == 0.0
    assert sims_metrics([0.1], [0.0])["acc3"] == 100.0  # 0.1 is class 1 ((-0.1, 0.1])
    assert sims_metrics([0.1], [0.15])["acc3"] == 0.0


def test_sims_acc5_bin_edges() -> None:
    assert sims_metrics([0.7], [0.5])["acc5"] == 100.0  # 0.7 closes (0.1, 0.7]
    assert sims_metrics([0.71], [0.5])["acc5"] == 0.0
    assert sims_metrics([-0.7], [-1.0])["acc5"] == 100.0  # -0.7 closes [-1, -0.7]
    assert sims_metrics([-0.69], [-1.0])["acc5"] == 0.0


def test_sims_clips_predictions_and_labels() -> None:
    m = sims_metrics([1.7, -3.0], [1.0, -1.0])
    assert m["mae"] == 0.0
    assert m["acc5"] == 100.0


def test_constant_input_gives_zero_corr_not_nan() -> None:
    assert mosi_metrics([1.0, 1.0, 1.0], [0.5, -1.0, 2.0])["corr"] == 0.0
    assert mosi_metrics([0.5, -1.0, 2.0], [1.0, 1.0, 1.0])["corr"] == 0.0
    assert sims_metrics([5.0, 3.0], [0.2, -0.4])["corr"] == 0.0  # constant after clipping


def test_classification_macro_and_weighted_differ_on_imbalance() -> None:
    m = classification_metrics([0, 0, 0, 0], [0, 0, 0, 1])
    assert m["acc"] == 75.0
    assert m["f1_macro"] < m["f1"]


# --- error paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["mosi", "sims", "classification"])
def test_length_mismatch_raises(family: str) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics(family, [0, 1, 1], [0, 1])


@pytest.mark.parametrize("family", ["mosi", "sims", "classification"])
def test_empty_input_raises(family: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(family, [], [])


@pytest.mark.parametrize("family", ["mosi", "sims", "classification"])
def test_nan_prediction_raises(family: str) -> None:
    with pytest.raises(ValueError, match="predictions contain NaN"):
        compute_metrics(family, [0.0, float("nan")], [0, 1])


def test_nan_scores_raise() -> None:
    with pytest.raises(ValueError, match="predictions contain NaN"):
        classification_metrics([[0.1, float("nan")], [0.3, 0.2]], [0, 1])


def test_classification_rejects_bad_shapes_and_ids() -> None:
    with pytest.raises(ValueError, match="num_classes=3"):
        classification_metrics(np.zeros((2, 2)), [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="integer class ids"):
        classification_metrics([0.4, 1.0], [0, 1])


def test_unknown_family_is_named() -> None:
    with pytest.raises(ValueError, match="'mosei_typo'"):
        compute_metrics("mosei_typo", [0.0], [0.0])


# --- dispatch, constants, docstring examples ------------------------------------------------


@pytest.mark.parametrize(
    "family, pred, label",
    [
        ("mosi", [1.0, -2.0, 0.5], [0.5, -1.5, 1.0]),
        ("sims", [0.4, -0.2, 0.9], [0.2, -0.6, 0.8]),
        ("classification", [0, 1, 1], [0, 1, 0]),
    ],
)
def test_primary_metric_is_reported_by_each_family(family: str, pred, label) -> None:
    name, direction = PRIMARY_METRIC[family]
    assert name in compute_metrics(family, pred, label)
    assert direction in {"max", "min"}


def test_primary_metric_choices_and_version() -> None:
    assert PRIMARY_METRIC == {
        "mosi": ("mae", "min"),
        "sims": ("mae", "min"),
        "classification": ("f1", "max"),
    }
    assert METRICS_VERSION == "mmsa-compatible-v1"


@pytest.mark.parametrize("module", [metrics, robustness])
def test_docstring_examples_run(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# --- robustness summaries -------------------------------------------------------------------


def test_auilc_known_curve() -> None:
    assert auilc([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)


def test_auilc_sorts_by_rate() -> None:
    assert auilc([1.0, 0.0, 0.5], [0.0, 1.0, 0.5]) == pytest.approx(0.5)
    assert auilc([0.7, 0.1, 0.3], [40.0, 80.0, 60.0]) == pytest.approx(
        auilc([0.1, 0.3, 0.7], [80.0, 60.0, 40.0])
    )


def test_auilc_of_constant_curve_is_the_constant() -> None:
    assert auilc([0.1, 0.3, 0.7], [42.0, 42.0, 42.0]) == pytest.approx(42.0)


def test_auilc_weights_uneven_rate_grid() -> None:
    # Segments: [0, 0.1] at height 1, [0.1, 1] averaging 0.5 -> 0.1 + 0.45 = 0.55.
    assert auilc([0.0, 0.1, 1.0], [1.0, 1.0, 0.0]) == pytest.approx(0.55)
    assert mean_over_rates([0.0, 0.1, 1.0], [1.0, 1.0, 0.0]) == pytest.approx(2 / 3)


def test_auilc_single_rate_returns_value() -> None:
    assert auilc([0.3], [71.5]) == 71.5


def test_robustness_error_paths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        auilc([0.0, 0.5], [1.0])
    with pytest.raises(ValueError, match="differ in length"):
        mean_over_rates([0.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least one rate"):
        auilc([], [])
    with pytest.raises(ValueError, match="rate range"):
        auilc([0.5, 0.5], [1.0, 2.0])


def test_mean_over_rates_and_summary() -> None:
    assert mean_over_rates([0.0, 0.5, 1.0], [80.0, 70.0, 60.0]) == pytest.approx(70.0)
    summary = summarize_curve([0.0, 0.5, 1.0], [1.0, 0.5, 0.0])
    assert summary == pytest.approx({"mean": 0.5, "auilc": 0.5})
