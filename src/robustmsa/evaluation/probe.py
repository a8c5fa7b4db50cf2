"""How much each modality carries: probes on pooled features, regularization chosen on valid.

A method table says little until one knows what a simple model reaches on the same features:
if a ridge on pooled text already matches every method, the testbed cannot tell them apart.
`probe_dataset` fits, per modality and for all modalities concatenated, a probe on masked-mean
pooled features (standardized with training statistics):

    linear   ridge (regression) / L2 logistic regression (classification), the penalty picked
             from a fixed grid on the valid split's primary metric (MAE / weighted F1), refit
             on train only, scored on test
    mlp      one hidden layer (sklearn MLP), early-stopped on the valid split's primary metric,
             for "pooled-linear vs best attainable"
    mlp_pca  the same MLP on each modality's top PCA_COMPONENTS principal components (fit on
             train): with ~1.3k samples a 768-d text vector drowns the MLP in noise dimensions
             and it falls below the linear probe even where a nonlinear term is there to find

Everything is seeded and deterministic; the valid split chooses, the test split only reports.

>>> table = probe_dataset(load_dataset("data/mosi_real.pkl"))  # doctest: +SKIP
>>> print(format_probe(table, "mosi"))                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustmsa.data.schema import Dataset, Split
from robustmsa.evaluation.metrics import PRIMARY_METRIC, compute_metrics

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))
LOGISTIC_CS = tuple(float(c) for c in np.logspace(-4, 2, 13))
MLP_ALPHAS = (1e-4, 1e-2, 1.0)
MLP_HIDDEN = 128
MLP_MAX_EPOCHS = 200
MLP_PATIENCE = 15
SHOWN = {"mosi": ["acc2_non0", "f1_non0", "mae", "corr"], "sims": ["acc2", "f1", "mae", "corr"],
         "classification": ["acc", "f1"]}
ALL = "all"


@dataclass
class Fitted:
    """A probe fitted on train and chosen on valid: its test predictions and how it was chosen."""

    test_pred: np.ndarray
    regularization: float  # ridge alpha / logistic C / MLP L2 alpha
    valid_score: float


def pooled(split: Split, modality: str) -> np.ndarray:
    """(N, D) masked mean over each sample's valid frames (zeros where the modality is absent).

    >>> from robustmsa.data.schema import Split
    >>> s = Split("t", ["a"], {"x": np.array([[[1.0], [3.0], [0.0]]])}, {"x": np.array([2])}, np.zeros(1))
    >>> pooled(s, "x").tolist()
    [[2.0]]
    """
    x = np.asarray(split.features[modality], np.float64)
    lengths = np.asarray(split.lengths[modality])
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    total = (x * valid[..., None]).sum(axis=1)
    return total / np.maximum(lengths, 1)[:, None]


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """z-scores with training statistics; constant columns keep scale 1 (they stay constant)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return [(x - mean) / std for x in (train, *others)]


def primary_score(family: str, pred: np.ndarray, labels: np.ndarray) -> float:
    """The primary metric, signed so that larger is better."""
    name, direction = PRIMARY_METRIC[family]
    value = compute_metrics(family, pred, labels)[name]
    return value if direction == "max" else -value


def _linear(family: str, regularization: float, seed: int):
    from sklearn.linear_model import LogisticRegression, Ridge

    if family == "classification":
        return LogisticRegression(C=regularization, max_iter=2000, random_state=seed)
    return Ridge(alpha=regularization)


def _predict(model, family: str, x: np.ndarray) -> np.ndarray:
    return model.predict_proba(x) if family == "classification" else model.predict(x)


def fit_linear(family: str, x_train, y_train, x_valid, y_valid, x_test, seed: int = 0) -> Fitted:
    """Ridge / logistic regression on standardized inputs, the penalty chosen on valid."""
    x_train, x_valid, x_test = standardize(x_train, x_valid, x_test)
    grid = LOGISTIC_CS if family == "classification" else RIDGE_ALPHAS
    best = None
    for regularization in grid:
        model = _linear(family, regularization, seed).fit(x_train, y_train)
        score = primary_score(family, _predict(model, family, x_valid), y_valid)
        if best is None or score > best[0]:
            best = (score, regularization, model)
    score, regularization, model = best
    return Fitted(_predict(model, family, x_test), regularization, abs(score))


def fit_mlp(family: str, x_train, y_train, x_valid, y_valid, x_test, seed: int = 0) -> Fitted:
    """One hidden layer (Adam), the epoch and the L2 penalty chosen on valid (early stopping)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    x_train, x_valid, x_test = standardize(x_train, x_valid, x_test)
    classes = np.unique(y_train) if family == "classification" else None
    best = None
    for alpha in MLP_ALPHAS:
        cls = MLPClassifier if family == "classification" else MLPRegressor
        model = cls(hidden_layer_sizes=(MLP_HIDDEN,), alpha=alpha, random_state=seed, learning_rate_init=1e-3)
        stale = 0
        for _ in range(MLP_MAX_EPOCHS):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.partial_fit(x_train, y_train, *([classes] if classes is not None else []))
            score = primary_score(family, _predict(model, family, x_valid), y_valid)
            if best is None or score > best[0]:
                best, stale = (score, alpha, copy.deepcopy(model)), 0
            else:
                stale += 1
                if stale >= MLP_PATIENCE:
                    break
    score, alpha, model = best
    return Fitted(_predict(model, family, x_test), alpha, abs(score))


PROBES = {"linear": fit_linear, "mlp": fit_mlp, "mlp_pca": fit_mlp}
PCA_COMPONENTS = 12  # per modality, for the probes in REDUCED
REDUCED = {"mlp_pca"}


def principal_components(train: np.ndarray, *others: np.ndarray, k: int = PCA_COMPONENTS) -> list[np.ndarray]:
    """Standardized features projected on train's top-k principal directions (k <= dim).

    >>> a, b = principal_components(np.random.default_rng(0).normal(size=(50, 30)), np.ones((2, 30)), k=4)
    >>> a.shape, b.shape
    ((50, 4), (2, 4))
    """
    z = standardize(train, *others)
    _, vectors = np.linalg.eigh(z[0].T @ z[0])  # ascending eigenvalues
    top = vectors[:, ::-1][:, : min(k, train.shape[1])]
    return [x @ top for x in z]


def probe_dataset(dataset: Dataset, kinds: tuple[str, ...] = ("linear",), seed: int = 0) -> pd.DataFrame:
    """One row per (probe kind, features): each modality alone, then all of them concatenated.

    Columns: probe, features, dim, the test metrics of the label family, `reg` (the chosen
    penalty) and `valid` (the valid split's primary metric at that choice)."""
    unknown = [k for k in kinds if k not in PROBES]
    if unknown:
        raise ValueError(f"probe {unknown[0]!r}: expected one of {', '.join(PROBES)}")
    family = dataset.spec.label.metric_family
    names = list(dataset.spec.modality_names)
    sets = [[m] for m in names] + ([names] if len(names) > 1 else [])
    splits = {s: dataset[s] for s in ("train", "valid", "test")}
    pooled_of = {(s, m): pooled(split, m) for s, split in splits.items() for m in names}
    if REDUCED & set(kinds):
        for m in names:
            reduced = principal_components(*(pooled_of[(s, m)] for s in splits))
            pooled_of.update({(s, m, "pca"): x for s, x in zip(splits, reduced)})
    rows = []
    for kind in kinds:
        key = ("pca",) if kind in REDUCED else ()
        for chosen in sets:
            x = {s: np.concatenate([pooled_of[(s, m, *key)] for m in chosen], axis=1) for s in splits}
            fitted = PROBES[kind](family, x["train"], splits["train"].labels, x["valid"], splits["valid"].labels,
                                  x["test"], seed)
            metrics = compute_metrics(family, fitted.test_pred, splits["test"].labels)
            rows.append({"probe": kind, "features": ALL if len(chosen) > 1 else chosen[0], "dim": x["train"].shape[1],
                         **metrics, "reg": fitted.regularization, "valid": fitted.valid_score})
    return pd.DataFrame(rows)


def format_probe(table: pd.DataFrame, family: str) -> str:
    """A Markdown table of the probe rows with the family's usual metrics (test split)."""
    from robustmsa.evaluation.report import to_markdown

    shown = SHOWN[family]
    selection = PRIMARY_METRIC[family][0]
    frame = table[["probe", "features", "dim", *shown, "reg", "valid"]].copy()
    for column in shown:
        frame[column] = frame[column].map(lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}")
    frame["reg"] = frame["reg"].map(lambda v: f"{v:g}")
    frame["valid"] = frame["valid"].map(lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}")
    frame = frame.rename(columns={"valid": f"valid {selection}"}).set_index("probe")
    return to_markdown(frame)
