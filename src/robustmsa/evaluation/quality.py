"""How well a method's per-modality quality scores tell clean from corrupted inputs.

Methods that estimate modality quality (DRF) expose it as `Output.extras["quality"]`, (B, M) in
modality order. A score is useful if a corrupted modality gets a lower value than the same
modality clean: we measure that as the AUROC of "clean" (positive) against the `disrupt:C:fixed:m`
protocol (every sample's modality m corrupted, without telling the method), per modality.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from robustmsa.data.schema import Dataset
from robustmsa.evaluation.evaluate import split_tensors
from robustmsa.methods.base import Method
from robustmsa.missing import Protocol


@torch.no_grad()
def _quality(method: Method, dataset: Dataset, split: str, protocol: str, seed: int, batch_size: int) -> torch.Tensor:
    tensors = split_tensors(dataset, split, Protocol.parse(protocol), seed, method.input_stats)
    parts = []
    for batch in tensors.batches(batch_size):
        extras = method(batch).extras
        if "quality" not in extras:
            raise ValueError(f"method {method.name!r} reports no per-modality quality (Output.extras['quality'])")
        parts.append(extras["quality"].float().cpu())
    return torch.cat(parts)


def quality_auroc(method: Method, dataset: Dataset, split: str = "test", seed: int = 0,
                  batch_size: int = 256, protocols: dict[str, str] | None = None) -> dict[str, float]:
    """Per modality: AUROC of the quality score, clean samples against the same samples with that
    modality corrupted (`disrupt:C:fixed:<m>`, mask seed `seed`). 0.5 = blind, 1 = perfect.
    `protocols`: other corruptions to score, {label: protocol} (e.g. {"text mix":
    "textnoise:mix:0.5"}); the modality is the one the label starts with.

    >>> quality_auroc(drf_method, load_dataset("synthetic:mvsa:n=600"))  # doctest: +SKIP
    {'text': 0.97, 'image': 1.0}
    """
    names = dataset.spec.modality_names
    protocols = protocols or {m: f"disrupt:C:fixed:{m}" for m in names}
    was_training = method.training
    method.eval()
    clean = _quality(method, dataset, split, "none", seed, batch_size)
    scores = {}
    for label, protocol in protocols.items():
        j = names.index(label.split()[0])
        corrupted = _quality(method, dataset, split, protocol, seed, batch_size)
        labels = np.r_[np.ones(len(clean)), np.zeros(len(corrupted))]
        scores[label] = float(roc_auc_score(labels, np.r_[clean[:, j].numpy(), corrupted[:, j].numpy()]))
    method.train(was_training)
    return scores
