"""Evaluate methods under a protocol: predictions -> metrics -> tidy rows.

Evaluation never shuffles and does not depend on the batch size. Masks come from the protocol
seed, so every method sees exactly the same missing entries.
"""

from __future__ import annotations

import numpy as np
import torch

from robustmsa.data.batch import MissingPattern, SplitTensors
from robustmsa.data.schema import Dataset
from robustmsa.evaluation.metrics import compute_metrics
from robustmsa.methods.base import Method
from robustmsa.missing import Protocol, make_pattern


@torch.no_grad()
def predict_tensors(method: Method, tensors: SplitTensors, batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """Predictions for a whole split, in order: (N,) scores or (N, C) logits."""
    was_training = method.training
    method.eval()
    outputs = [method(batch.to(device)).pred.float().cpu() for batch in tensors.batches(batch_size)]
    method.train(was_training)
    return torch.cat(outputs).numpy()


def split_tensors(dataset: Dataset, split: str, protocol: Protocol, seed: int) -> SplitTensors:
    """The split under the protocol: masks for the feature-level protocols; for `textnoise` the
    raw transcripts degraded and re-encoded (features/textnoise.py), with nothing masked."""
    if protocol.name == "textnoise":
        from robustmsa.features.textnoise import textnoise_split

        data = textnoise_split(dataset, split, protocol, seed)
        return SplitTensors(data, dataset.spec, MissingPattern.complete(data, dataset.spec.modality_names))
    data = dataset[split]
    return SplitTensors(data, dataset.spec, make_pattern(data, dataset.spec, protocol, seed))


def evaluate(
    method: Method,
    dataset: Dataset,
    split: str = "test",
    protocol: Protocol | str = "none",
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Metrics of `method` on one split under one protocol setting."""
    protocol = Protocol.parse(protocol) if isinstance(protocol, str) else protocol
    tensors = split_tensors(dataset, split, protocol, seed)
    pred = predict_tensors(method, tensors, batch_size, device)
    return compute_metrics(dataset.spec.label.metric_family, pred, dataset[split].labels)


def protocol_grid(name: str, values: list[str]) -> list[Protocol]:
    """`modality` + ["0", "0.1"] -> [modality:0, modality:0.1]; `none` needs no values."""
    if name == "none":
        return [Protocol.parse("none")]
    if not values:
        raise ValueError(f"protocol {name}: give the values to sweep, e.g. --values 0,0.1,0.2")
    return [Protocol.parse(f"{name}:{v}") for v in values]


def sweep(checkpoints, dataset: Dataset, protocols: list[Protocol], split: str = "test",
          batch_size: int = 256, device: str | torch.device = "cpu") -> list[dict]:
    """Evaluate every checkpoint under every protocol setting. The mask seed is the checkpoint's
    training seed, so seed k of every method sees the same masks. Returns tidy rows."""
    rows = []
    labels = dataset[split].labels
    family = dataset.spec.label.metric_family
    for ckpt in checkpoints:
        ckpt.method.to(device)
        for protocol in protocols:
            tensors = split_tensors(dataset, split, protocol, ckpt.seed)
            pred = predict_tensors(ckpt.method, tensors, batch_size, device)
            for metric, value in compute_metrics(family, pred, labels).items():
                rows.append({
                    "method": ckpt.method_name, "seed": ckpt.seed, "protocol": protocol.name,
                    "param": str(protocol).partition(":")[2], "metric": metric, "value": value,
                    "checkpoint": str(ckpt.path), "split": split,
                })
    return rows
