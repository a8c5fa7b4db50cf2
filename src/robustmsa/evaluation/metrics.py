"""Evaluation metrics, compatible with MMSA's definitions (PROTOCOLS.md section 3).

Pure functions on numpy arrays (torch tensors are accepted and converted), so that numbers
in our tables can be compared with the numbers published with MMSA. Accuracies and F1 are
in percent, as in the field's tables; ``mae`` and ``corr`` are raw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

METRICS_VERSION = "mmsa-compatible-v1"

# Metric used for model selection on the validation split, and whether larger is better.
PRIMARY_METRIC: dict[str, tuple[str, str]] = {
    "mosi": ("mae", "min"),
    "sims": ("mae", "min"),
    "classification": ("f1", "max"),
}

# SIMS class boundaries. Bins are left-open, right-closed, as in MMSA:
# acc3 classes are [-1, -0.1], (-0.1, 0.1], (0.1, 1].
SIMS_EDGES_ACC2 = (0.0,)
SIMS_EDGES_ACC3 = (-0.1, 0.1)
SIMS_EDGES_ACC5 = (-0.7, -0.1, 0.1, 0.7)


def _to_numpy(values: Any) -> np.ndarray:
    # Tensors that require grad (or live on a GPU, or are bfloat16) refuse np.asarray directly.
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.float()
    return np.asarray(values)


def _check_pair(pred: np.ndarray, label: np.ndarray) -> None:
    if len(pred) == 0 or len(label) == 0:
        raise ValueError("metrics need at least one sample, got an empty input")
    if len(pred) != len(label):
        raise ValueError(f"pred and label differ in length: {len(pred)} vs {len(label)}")
    if np.issubdtype(pred.dtype, np.floating) and np.isnan(pred).any():
        raise ValueError("predictions contain NaN")
    if np.issubdtype(label.dtype, np.floating) and np.isnan(label).any():
        raise ValueError("labels contain NaN")


def _regression_inputs(pred: Any, label: Any) -> tuple[np.ndarray, np.ndarray]:
    # MMSA flattens with view(-1), so (N, 1) model outputs are fine.
    pred_array = _to_numpy(pred).astype(np.float64).reshape(-1)
    label_array = _to_numpy(label).astype(np.float64).reshape(-1)
    _check_pair(pred_array, label_array)
    return pred_array, label_array


def _percent_accuracy(pred_class: np.ndarray, label_class: np.ndarray) -> float:
    return 100.0 * float(accuracy_score(label_class, pred_class))


def _percent_weighted_f1(pred_class: np.ndarray, label_class: np.ndarray) -> float:
    # zero_division=0 is what sklearn's default "warn" returns, without the warning.
    return 100.0 * float(f1_score(label_class, pred_class, average="weighted", zero_division=0))


def _rounded_accuracy(pred: np.ndarray, label: np.ndarray, bound: float) -> float:
    """Accuracy after clipping to [-bound, bound] and rounding (MMSA's ``__multiclass_acc``).

    np.round rounds halves to even (2.5 -> 2), exactly as MMSA does.
    """
    pred_class = np.round(np.clip(pred, -bound, bound))
    label_class = np.round(np.clip(label, -bound, bound))
    return 100.0 * float(np.mean(pred_class == label_class))


def pearson_corr(pred: Any, label: Any) -> float:
    """Pearson correlation, 0.0 when either side is constant (np.corrcoef would give NaN).

    A constant predictor carries no linear information, and a NaN would break averaging
    over seeds and rates.
    """
    pred_array, label_array = _regression_inputs(pred, label)
    if np.std(pred_array) == 0.0 or np.std(label_array) == 0.0:
        return 0.0
    return float(np.corrcoef(pred_array, label_array)[0, 1])


def mosi_metrics(pred: Any, label: Any) -> dict[str, float]:
    """Metrics for sentiment regression with labels in [-3, 3] (CMU-MOSI, CMU-MOSEI).

    ``*_has0`` split >= 0 vs < 0; ``*_non0`` drop samples whose label is exactly 0 and split
    > 0 vs < 0 (a prediction of exactly 0 then counts as negative, as in MMSA). If every label
    is 0, the ``*_non0`` entries are NaN because there is nothing to score.

    >>> from robustmsa.evaluation.metrics import mosi_metrics
    >>> m = mosi_metrics([2.4, -1.0, 0.4], [3.0, -1.2, 0.0])
    >>> round(m["acc5"], 2), round(m["acc7"], 2), round(m["mae"], 4)
    (100.0, 66.67, 0.4)
    """
    pred_array, label_array = _regression_inputs(pred, label)

    has0_pred, has0_label = pred_array >= 0, label_array >= 0
    non_zero = label_array != 0
    non0_pred, non0_label = pred_array[non_zero] > 0, label_array[non_zero] > 0
    if non_zero.any():
        acc2_non0 = _percent_accuracy(non0_pred, non0_label)
        f1_non0 = _percent_weighted_f1(non0_pred, non0_label)
    else:
        acc2_non0 = f1_non0 = float("nan")

    return {
        "acc2_has0": _percent_accuracy(has0_pred, has0_label),
        "f1_has0": _percent_weighted_f1(has0_pred, has0_label),
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "acc5": _rounded_accuracy(pred_array, label_array, 2.0),
        "acc7": _rounded_accuracy(pred_array, label_array, 3.0),
        "mae": float(np.mean(np.abs(pred_array - label_array))),
        "corr": pearson_corr(pred_array, label_array),
    }


def sims_bins(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Class index of each value for left-open, right-closed bins between ``edges``.

    With edges (-0.1, 0.1): -0.1 -> 0, 0.1 -> 1, 0.15 -> 2, matching MMSA's SIMS binning.
    """
    return np.digitize(values, np.asarray(edges), right=True)


def sims_metrics(pred: Any, label: Any) -> dict[str, float]:
    """Metrics for sentiment regression with labels in [-1, 1] (CH-SIMS, CH-SIMS v2).

    Predictions and labels are clipped to [-1, 1] first (MMSA does both), then binned:
    acc2 [-1, 0] vs (0, 1]; acc3 and acc5 use the boundaries in ``SIMS_EDGES_*``.

    >>> from robustmsa.evaluation.metrics import sims_metrics
    >>> m = sims_metrics([0.8, -0.1, 0.1], [0.6, -0.2, 0.05])
    >>> round(m["acc2"], 2), round(m["acc3"], 2), round(m["acc5"], 2)
    (100.0, 100.0, 66.67)
    """
    pred_array, label_array = _regression_inputs(pred, label)
    pred_array = np.clip(pred_array, -1.0, 1.0)
    label_array = np.clip(label_array, -1.0, 1.0)

    pred_acc2 = sims_bins(pred_array, SIMS_EDGES_ACC2)
    label_acc2 = sims_bins(label_array, SIMS_EDGES_ACC2)
    return {
        "acc2": _percent_accuracy(pred_acc2, label_acc2),
        "acc3": _percent_accuracy(
            sims_bins(pred_array, SIMS_EDGES_ACC3), sims_bins(label_array, SIMS_EDGES_ACC3)
        ),
        "acc5": _percent_accuracy(
            sims_bins(pred_array, SIMS_EDGES_ACC5), sims_bins(label_array, SIMS_EDGES_ACC5)
        ),
        "f1": _percent_weighted_f1(pred_acc2, label_acc2),
        "mae": float(np.mean(np.abs(pred_array - label_array))),
        "corr": pearson_corr(pred_array, label_array),
    }


def _class_predictions(scores_or_pred: np.ndarray, num_classes: int | None) -> np.ndarray:
    if scores_or_pred.ndim == 2:
        if num_classes is not None and scores_or_pred.shape[1] != num_classes:
            raise ValueError(
                f"scores have {scores_or_pred.shape[1]} columns, expected num_classes={num_classes}"
            )
        if np.issubdtype(scores_or_pred.dtype, np.floating) and np.isnan(scores_or_pred).any():
            raise ValueError("predictions contain NaN")
        return np.argmax(scores_or_pred, axis=1)
    if scores_or_pred.ndim != 1:
        raise ValueError(
            f"expected (N, C) scores or (N,) class ids, got shape {scores_or_pred.shape}"
        )
    if np.issubdtype(scores_or_pred.dtype, np.floating):
        if np.isnan(scores_or_pred).any():
            raise ValueError("predictions contain NaN")
        if not np.all(scores_or_pred == np.round(scores_or_pred)):
            raise ValueError("1-D predictions must be integer class ids; pass (N, C) scores")
    return scores_or_pred.astype(np.int64)


def classification_metrics(
    logits_or_pred: Any, label: Any, num_classes: int | None = None
) -> dict[str, float]:
    """Accuracy, weighted F1 and macro F1 (percent) for classification datasets (MVSA, TumEmo).

    Accepts (N, C) scores (argmax is taken) or (N,) class ids. ``num_classes`` only validates
    shapes and ids; F1 averages over the classes present, as scikit-learn does by default.

    >>> from robustmsa.evaluation.metrics import classification_metrics
    >>> m = classification_metrics([[2.0, 0.1], [0.3, 0.9], [1.0, 0.0]], [0, 1, 1])
    >>> round(m["acc"], 2), round(m["f1_macro"], 2)
    (66.67, 66.67)
    """
    pred_class = _class_predictions(_to_numpy(logits_or_pred), num_classes)
    label_class = _to_numpy(label).reshape(-1)
    _check_pair(pred_class, label_class)
    label_class = label_class.astype(np.int64)
    if num_classes is not None:
        for name, ids in (("predictions", pred_class), ("labels", label_class)):
            if ids.min() < 0 or ids.max() >= num_classes:
                raise ValueError(f"{name} hold class ids outside [0, {num_classes})")
    return {
        "acc": _percent_accuracy(pred_class, label_class),
        "f1": _percent_weighted_f1(pred_class, label_class),
        "f1_macro": 100.0
        * float(f1_score(label_class, pred_class, average="macro", zero_division=0)),
    }


def compute_metrics(family: str, pred: Any, label: Any) -> dict[str, float]:
    """Metrics of one dataset family: "mosi", "sims" or "classification".

    >>> from robustmsa.evaluation.metrics import compute_metrics
    >>> m = compute_metrics("mosi", [1.0, -2.0], [0.5, -1.5])
    >>> m["acc2_has0"], m["mae"]
    (100.0, 0.5)
    """
    if family == "mosi":
        return mosi_metrics(pred, label)
    if family == "sims":
        return sims_metrics(pred, label)
    if family == "classification":
        return classification_metrics(pred, label)
    raise ValueError(
        f"unknown metric family {family!r}; expected one of {sorted(PRIMARY_METRIC)}"
    )
