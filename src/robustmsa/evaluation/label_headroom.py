"""Are labels the bottleneck? Linear probes at the trainer's labeled subsets, with and without the
unlabeled rows.

A semi-supervised method can only add what the labeled rows leave out of a representation. Before
reading a label-scarce table (`sslmm-table`), this measures how much that is, per dataset and
labeled ratio, on the very labeled rows the trainer draws for a seed (`missing.labeled_mask`):

    labeled       ridge / logistic regression on the labeled rows' pooled features, the penalty
                  chosen on valid as `data probe` does
    pca           the same probe on each modality's top-k principal components, fitted on ALL
                  training rows: the unlabeled rows shape the representation (k from PCA_SIZES,
                  chosen on valid with the penalty)
    propagation   label propagation on a k-nearest-neighbour graph over every row (train, valid,
                  test: transductive), clamped to the labels on labeled rows and pulled toward the
                  `labeled` probe's predictions elsewhere: the cluster assumption that
                  consistency training relies on
    all labels    the probe on every training label: what perfect use of the unlabeled rows would
                  reach with these features (linearly)

`all labels` minus `labeled` bounds the room on these features; `pca` and `propagation` against
`labeled` show whether two classical uses of unlabeled rows find any of it. Every metric is
reported on valid (what a choice may be made on) and on test.

>>> table = label_headroom(load_dataset("data/mosi_real.pkl"), ratios=(0.05, 0.1))   # doctest: +SKIP
>>> print(format_headroom(table, "mosi"))                                            # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustmsa.data.schema import Dataset
from robustmsa.evaluation.metrics import compute_metrics
from robustmsa.evaluation.probe import fit_linear, pooled, primary_score, principal_components, standardize
from robustmsa.missing import labeled_mask

ARMS = ("labeled", "pca", "propagation", "all labels")
PCA_SIZES = (8, 32, 128)  # components per modality (capped at its dimension)
NEIGHBOURS = 10  # graph degree of label propagation
ANCHOR = 0.5  # weight of the probe's own prediction in each propagation step (0: pure graph smoothing)
STEPS = 30  # propagation iterations (the fixed point is reached to ~1e-9 well before)
SHOWN = {"mosi": ["acc2_non0", "mae"], "sims": ["acc2", "mae"], "classification": ["acc", "f1"]}


def propagate(features: np.ndarray, prior: np.ndarray, clamped: np.ndarray, values: np.ndarray,
              neighbours: int = NEIGHBOURS, anchor: float = ANCHOR, steps: int = STEPS) -> np.ndarray:
    """f <- anchor * prior + (1 - anchor) * P f on a symmetric kNN graph (cosine of the rows of
    `features`, Gaussian weights), with f fixed to `values` on the `clamped` rows. prior: (N,) or
    (N, C). The graph is sparse, so MOSEI-sized splits (23k rows) fit in memory.

    >>> x = np.array([[0.0, 1], [0.1, 1], [1, 0], [1, 0.1]])
    >>> f = propagate(x, np.zeros(4), np.array([True, False, True, False]), np.array([1.0, -1.0]), neighbours=1)
    >>> bool(f[1] > 0 > f[3])
    True
    """
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    n = len(features)
    k = min(neighbours, n - 1)
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    distance, index = NearestNeighbors(n_neighbors=k + 1).fit(unit).kneighbors(unit)
    distance, index = distance[:, 1:], index[:, 1:]  # each row's nearest neighbour is itself
    scale = max(float(np.median(distance)), 1e-12)
    weights = np.exp(-((distance / scale) ** 2) / 2)
    graph = sparse.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k), index.ravel())), shape=(n, n))
    graph = graph.maximum(graph.T)
    degree = np.asarray(graph.sum(axis=1)).ravel()
    transition = sparse.diags(1.0 / np.maximum(degree, 1e-12)) @ graph
    f = np.array(prior, dtype=np.float64)
    f[clamped] = values
    for _ in range(steps):
        f = anchor * prior + (1 - anchor) * (transition @ f)
        f[clamped] = values
    return f


def _targets(family: str, labels: np.ndarray, classes: int) -> np.ndarray:
    """What a clamped row holds: the label, or its one-hot vector for classification."""
    return np.eye(classes)[labels.astype(np.int64)] if family == "classification" else labels.astype(np.float64)


def _metrics(family: str, pred: np.ndarray, labels: np.ndarray, split: str) -> dict[str, float]:
    return {f"{split} {k}": v for k, v in compute_metrics(family, pred, labels).items()}


def label_headroom(dataset: Dataset, ratios: tuple[float, ...] = (0.05, 0.1),
                   seeds: tuple[int, ...] = (0, 1, 2)) -> pd.DataFrame:
    """One row per (ratio, seed, arm) with valid and test metrics; see the module docstring."""
    family = dataset.spec.label.metric_family
    names = list(dataset.spec.modality_names)
    train, valid, test = (dataset[s] for s in ("train", "valid", "test"))
    x = [np.concatenate([pooled(split, m) for m in names], axis=1) for split in (train, valid, test)]
    reduced = {k: [np.concatenate(parts, axis=1) for parts in zip(
        *(principal_components(*(pooled(s, m) for s in (train, valid, test)), k=k) for m in names))] for k in PCA_SIZES}
    graph_features = np.concatenate(standardize(*x))  # unsupervised statistics of all training rows
    rows_of = np.cumsum([0, len(train), len(valid), len(test)])
    classes = int(max(s.labels.max() for s in (train, valid, test))) + 1 if family == "classification" else 0
    every = np.ones(len(train), dtype=bool)
    rows = []
    for ratio in ratios:
        for seed in seeds:
            labeled = labeled_mask(train.labels, ratio, seed, family)
            preds = {
                "labeled": _probe(family, x, train.labels, valid.labels, labeled, seed),
                "pca": _best_on_valid(family, [_probe(family, r, train.labels, valid.labels, labeled, seed)
                                               for r in reduced.values()], valid.labels, rows_of),
                "all labels": _probe(family, x, train.labels, valid.labels, every, seed),
            }
            if preds["labeled"].ndim == 2 and preds["labeled"].shape[1] != classes:
                raise ValueError(f"{dataset.source}: labels at labeled_ratio {ratio} (seed {seed}) miss a class; "
                                 f"expected all {classes} classes among the labeled rows")
            clamped = np.zeros(rows_of[-1], dtype=bool)
            clamped[: len(train)] = labeled
            preds["propagation"] = propagate(graph_features, preds["labeled"], clamped,
                                             _targets(family, train.labels[labeled], classes))
            for arm in ARMS:
                pred = preds[arm]
                count = len(train) if arm == "all labels" else int(labeled.sum())
                rows.append({"ratio": ratio, "seed": seed, "arm": arm, "labeled": count,
                             **_metrics(family, pred[rows_of[1]:rows_of[2]], valid.labels, "valid"),
                             **_metrics(family, pred[rows_of[2]:], test.labels, "test")})
    return pd.DataFrame(rows)


def _probe(family: str, x: list[np.ndarray], train_labels: np.ndarray, valid_labels: np.ndarray,
           labeled: np.ndarray, seed: int) -> np.ndarray:
    """The linear probe fitted on the labeled training rows (penalty chosen on valid), predicting
    every row of train, valid and test in that order."""
    everything = np.concatenate(x)
    return fit_linear(family, x[0][labeled], train_labels[labeled], x[1], valid_labels, everything, seed).test_pred


def _best_on_valid(family: str, preds: list[np.ndarray], valid_labels: np.ndarray, rows_of: np.ndarray) -> np.ndarray:
    """The candidate (rows of train, valid, test) with the best valid primary metric."""
    return max(preds, key=lambda p: primary_score(family, p[rows_of[1]:rows_of[2]], valid_labels))


def format_headroom(table: pd.DataFrame, family: str) -> str:
    """Markdown: per ratio and arm, mean ± std (over seeds) of valid and test metrics."""
    from robustmsa.evaluation.report import mean_std, to_markdown

    shown = [f"{split} {m}" for split in ("valid", "test") for m in SHOWN[family]]
    grouped = table.groupby(["ratio", "arm"], sort=False)
    frame = grouped[shown].agg(lambda v: mean_std(np.asarray(v, dtype=np.float64)))
    frame.insert(0, "labeled rows", grouped["labeled"].first())  # the same count for every seed
    frame.insert(1, "seeds", grouped["seed"].nunique())
    return to_markdown(frame.reset_index().set_index("ratio"))


__all__ = ["ARMS", "format_headroom", "label_headroom", "propagate"]
