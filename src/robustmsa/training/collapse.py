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
                    phase_epochs: int, phase_selects: bool) -> str:
    """'' for a healthy model, else why it looks collapsed (joined with '; ').

    pred: validation predictions of the selected weights ((N,) scores or (N, C) logits);
    best_epoch: the selected epoch within its phase; phase_epochs: epochs that phase ran."""
    reasons = []
    if len(labels) >= 2:
        if label.is_regression:
            label_std, pred_std = float(np.std(labels)), float(np.std(pred))
            if label_std > 0 and pred_std < RELATIVE_STD * label_std:
                reasons.append(f"near-constant validation predictions (std {pred_std:.3g} vs label std {label_std:.3g})")
        elif len(np.unique(labels)) > 1 and len(np.unique(np.argmax(pred, axis=-1))) == 1:
            reasons.append("one class predicted for every validation sample")
    if phase_selects and best_epoch == 1 and phase_epochs > 1:
        reasons.append(f"best validation epoch is the first of {phase_epochs} (no improvement after it)")
    return "; ".join(reasons)
