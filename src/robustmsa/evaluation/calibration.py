"""Representation or calibration? A regression model whose MAE trails another's may rank the
samples just as well and only predict on the wrong scale (shrunk toward the mean, shifted). An
affine map label ~ a * pred + b, fitted on the validation split only, answers it: if applying
that map closes the test gap, the gap was scale (and offset) only; if not, the representation
itself is worse.

`calibration_fit` is the pure statistic; `calibration_report` runs a trained method on the
validation and test splits of a dataset and compares raw with affinely calibrated metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from robustmsa.data.schema import Dataset
from robustmsa.evaluation.evaluate import predict_tensors, split_tensors
from robustmsa.evaluation.metrics import compute_metrics
from robustmsa.methods.base import Method
from robustmsa.missing import Protocol


@dataclass(frozen=True)
class AffineFit:
    """label ~ slope * pred + intercept (least squares). `std_ratio` = std(pred) / std(label):
    below 1 the predictions are shrunk; `slope` > 1 says the same from the other side."""

    slope: float
    intercept: float
    std_ratio: float
    corr: float

    def apply(self, pred: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(pred, dtype=np.float64) + self.intercept


def calibration_fit(pred: np.ndarray, labels: np.ndarray) -> AffineFit:
    """Least-squares affine map from predictions to labels, with the spread ratio and Pearson r.

    >>> fit = calibration_fit(np.array([0.0, 0.5, 1.0]), np.array([-1.0, 0.0, 1.0]))
    >>> round(fit.slope, 6), round(fit.intercept, 6), round(fit.std_ratio, 6)
    (2.0, -1.0, 0.5)
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if pred.shape != labels.shape or pred.size < 2:
        raise ValueError(f"calibration_fit: need >= 2 paired values, got pred {pred.shape} and labels {labels.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(labels).all()):
        raise ValueError("calibration_fit: predictions or labels are not finite")
    pred_std, label_std = pred.std(), labels.std()
    if label_std == 0:
        raise ValueError("calibration_fit: labels are constant; a spread ratio is undefined")
    if pred_std == 0:  # a constant predictor: the best affine map is the label mean
        return AffineFit(0.0, float(labels.mean()), 0.0, 0.0)
    cov = float(((pred - pred.mean()) * (labels - labels.mean())).mean())
    slope = cov / float(pred_std**2)
    return AffineFit(float(slope), float(labels.mean() - slope * pred.mean()), float(pred_std / label_std),
                     cov / float(pred_std * label_std))


def calibration_report(method: Method, dataset: Dataset, seed: int = 0, protocol: str = "none",
                       batch_size: int = 256) -> dict[str, float]:
    """Fit the affine map on the validation split (under `protocol`, mask seed `seed`), then
    report the validation fit and the test metrics raw and calibrated with that same map.
    Keys: `valid_std_ratio`, `valid_slope`, `valid_intercept`, `valid_corr`, then `<split>_<m>`
    and `<split>_<m>_calibrated` for both splits and every metric m of the dataset's family
    (calibrated on valid is the fit's in-sample bound; on test it is a fair out-of-sample check)."""
    family = dataset.spec.label.metric_family
    if family == "classification":
        raise ValueError(f"calibration_report: {dataset.spec.name} has class labels; an affine map needs a score")
    parsed = Protocol.parse(protocol)
    pred = {split: predict_tensors(method, split_tensors(dataset, split, parsed, seed, method.input_stats), batch_size)
            for split in ("valid", "test")}
    fit = calibration_fit(pred["valid"], dataset["valid"].labels)
    report = {f"valid_{k}": float(v) for k, v in asdict(fit).items()}
    for split in ("valid", "test"):
        labels = dataset[split].labels
        calibrated = fit.apply(pred[split]).astype(np.float32)
        report.update({f"{split}_{k}": v for k, v in compute_metrics(family, pred[split], labels).items()})
        report.update({f"{split}_{k}_calibrated": v for k, v in compute_metrics(family, calibrated, labels).items()})
    return report
