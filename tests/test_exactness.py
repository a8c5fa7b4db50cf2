"""Speed work must not change numbers: every method trained on a tiny set (long audio / vision
sequences, so window-averaging runs) gives bit-for-bit the validation metrics and test
predictions recorded before the speed changes (issue 16), in tests/exactness_reference.json.

A change that alters a method's or the trainer's behaviour on purpose re-records the reference,
and says so in its commit:  PYTHONPATH=src python tests/test_exactness.py --record
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_dataset
from robustmsa.config import RunConfig, apply_overrides
from robustmsa.evaluation.evaluate import predict_tensors, split_tensors
from robustmsa.methods.base import list_methods, method_class
from robustmsa.missing import Protocol
from robustmsa.training.checkpoint import load_checkpoint
from robustmsa.training.trainer import Trainer

REFERENCE = Path(__file__).with_name("exactness_reference.json")
# long enough that every method window-averages audio and vision (factors 2-7)
MODALITIES = (("text", 12, 8), ("audio", 90, 4), ("vision", 120, 6))
OVERRIDES = ["train.epochs=2", "train.batch_size=16", "train.patience=5"]


def train_and_predict(method: str, tmp_path: Path) -> dict:
    """Validation metrics of the selected weights and test predictions under a missing protocol."""
    dataset = make_tiny_dataset(n=48, modalities=MODALITIES, seed=3)
    run = apply_overrides(RunConfig(method), OVERRIDES, method_class(method).config_class)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float reduction order depends on the thread count
    try:
        result = Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
        method = load_checkpoint(result.path).method
        test = split_tensors(dataset, "test", Protocol.parse("modality:0.5"), seed=0, stats=method.input_stats)
        pred = predict_tensors(method, test, batch_size=7)
    finally:
        torch.set_num_threads(threads)
    return {"valid": result.valid_metrics, "test_pred": [float(v) for v in np.ravel(pred)]}


@pytest.mark.parametrize("method", sorted(json.loads(REFERENCE.read_text())) if REFERENCE.exists() else [])
def test_numbers_identical_to_the_recorded_reference(method, tmp_path):
    if method not in list_methods():
        pytest.skip(f"{method} is not registered on this branch")
    expected = json.loads(REFERENCE.read_text())[method]
    got = train_and_predict(method, tmp_path)
    assert got["test_pred"] == expected["test_pred"]
    assert got["valid"] == expected["valid"]


if __name__ == "__main__" and "--record" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        reference = {m: train_and_predict(m, Path(tmp) / m) for m in list_methods()}
    REFERENCE.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    print(f"recorded {', '.join(reference)} into {REFERENCE}")
