"""Is a trained model collapsed? A model that predicts (nearly) one value for every sample can
still post a plausible MAE or binary accuracy, and a best epoch that is the very first of its
phase means validation never improved once training had started: both are flagged, never fixed
silently (the trainer warns and writes the reason into metrics.json).

>>> collapse_reason(REGRESSION_MOSI, np.zeros(20), np.linspace(-3, 3, 20), 4, 10, True)  # doctest: +SKIP
'near-constant validation predictions (std 0 vs label std 1.82)'
"""

from __future__ import annotations

import numpy as np

from robustmsa.data.schema import LabelSpec

RELATIVE_STD = 0.05  # regression: std(pred) below this fraction of std(label) is "near-constant"


def collapse_reason(label: LabelSpec, pred: np.ndarray, labels: np.ndarray, best_epoch: int,
                    phase_epochs: int, phase_selects: bool, alone: dict[str, np.ndarray] | None = None) -> str:
    """'' for a healthy model, else why it looks collapsed (joined with '; ').

    pred: validation predictions of the selected weights ((N,) scores or (N, C) logits);
    best_epoch: the selected epoch within its phase; phase_epochs: epochs that phase ran;
    alone: regression only, modality -> predictions from that modality alone (on the samples that
    have it): a modality the model ignores (raw-unit features) gives a constant there, while the
    other modalities keep the complete-data predictions healthy. (A weak modality alone may well
    predict one class on a healthy classifier, so classes are checked on complete data only.)"""
    reasons = []
    if len(labels) >= 2:
        if label.is_regression:
            label_std = float(np.std(labels))
            for what, values in {"validation predictions": pred,
                                 **{f"predictions from {m} alone": p for m, p in (alone or {}).items()}}.items():
                spread = float(np.std(values)) if len(values) >= 2 else label_std
                if label_std > 0 and spread < RELATIVE_STD * label_std:
                    reasons.append(f"near-constant {what} (std {spread:.3g} vs label std {label_std:.3g})")
        elif len(np.unique(labels)) > 1 and len(np.unique(np.argmax(pred, axis=-1))) == 1:
            reasons.append("one class predicted for every validation sample")
    if phase_selects and best_epoch == 1 and phase_epochs > 1:
        reasons.append(f"best validation epoch is the first of {phase_epochs} (no improvement after it)")
    return "; ".join(reasons)
