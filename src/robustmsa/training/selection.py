"""What early stopping and the best checkpoint are chosen on: the validation split, complete and /
or under a seeded missing protocol (`train.select_on`, `train.select_protocol`).

Selecting on complete validation alone rewards a checkpoint that is best when nothing is missing,
which is not what a robustness table measures. The default ("mixed") averages the primary metric
on complete validation and on validation under `select_protocol`. The masks come from the missing
protocol engine with the run seed, so every method of one seed is selected on the same masks
(their digest is recorded in metrics.json to make that checkable).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from robustmsa.config import TrainConfig
from robustmsa.data.batch import SplitTensors
from robustmsa.data.schema import Dataset
from robustmsa.evaluation.evaluate import predict_tensors, split_tensors
from robustmsa.evaluation.metrics import PRIMARY_METRIC, compute_metrics
from robustmsa.missing import Protocol


@dataclass
class Selection:
    """The validation copies a run is selected on: "complete" and / or "missing"."""

    rule: str  # TrainConfig.select_on
    protocol: str  # TrainConfig.select_protocol
    splits: dict[str, SplitTensors]

    @classmethod
    def build(cls, dataset: Dataset, cfg: TrainConfig, seed: int) -> Selection:
        """Seeded by the run seed only, never by the method: same seed, same masks."""
        splits = {}
        if cfg.select_on in ("mixed", "complete"):
            splits["complete"] = split_tensors(dataset, "valid", Protocol.parse("none"), seed)
        if cfg.select_on in ("mixed", "missing"):
            splits["missing"] = split_tensors(dataset, "valid", Protocol.parse(cfg.select_protocol), seed)
        return cls(cfg.select_on, cfg.select_protocol, splits)

    def masks_sha256(self) -> str | None:
        """Digest of the missing copy's masks (present + frame masks), or None without one."""
        if "missing" not in self.splits:
            return None
        tensors = self.splits["missing"]
        digest = hashlib.sha256(tensors.present.numpy().tobytes())
        for m in tensors.modalities:
            digest.update(tensors.frame_mask[m].numpy().tobytes())
        return digest.hexdigest()

    def score(self, method, batch_size: int, device: torch.device | str) -> tuple[float, dict]:
        """(score, record): the score is higher-is-better (a minimized metric is negated) and is
        the mean over the copies; record["valid"] holds the complete copy's metrics when there is
        one (the metrics tables and `FitResult.valid_metrics` have always shown), the others by name."""
        family = method.spec.label.metric_family
        name, direction = PRIMARY_METRIC[family]
        metrics = {}
        for kind, tensors in self.splits.items():
            pred = predict_tensors(method, tensors, batch_size, device)
            metrics[kind] = compute_metrics(family, pred, tensors.labels.numpy())
        scores = [metrics[kind][name] if direction == "max" else -metrics[kind][name] for kind in metrics]
        first = "complete" if "complete" in metrics else "missing"
        record = {"valid": metrics[first], "selection": {
            "rule": self.rule, "protocol": self.protocol, "metric": name, "score": float(np.mean(scores)),
            **{f"valid_{kind}": values for kind, values in metrics.items() if kind != first},
        }}
        return float(np.mean(scores)), record
