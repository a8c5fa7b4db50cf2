"""How well DRF's quality score tells a clean modality from a corrupted one, on synthetic data.

    PYTHONPATH=src python benchmarks/drf_quality_auroc.py [--data synthetic:mvsa:n=600:seed=0]
        [--epochs 8] [--seeds 0] [--threads 1] [key=value ...]

Trains DRF (the trainer, model selection on the validation split) and prints, per modality,
the AUROC of q_m on the test split: the clean samples (positive) against the same samples with
that modality corrupted by `disrupt:C:fixed:<m>` (40-80 % of its frames / elements zeroed, the
method not told). 0.5 = the score is blind to corruption, 1.0 = it separates them perfectly.
Also prints the accuracy under no disruption and under `disrupt:CD:random:1`.

A benchmark, not a test: it asserts nothing. `tests/test_drf.py` checks a threshold.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic:mvsa:n=600:seed=0")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. method.d=64 method.tau=2")
    args = parser.parse_args()

    import torch

    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.data import load_dataset
    from robustmsa.evaluation.evaluate import evaluate
    from robustmsa.evaluation.quality import quality_auroc
    from robustmsa.methods.base import method_class
    from robustmsa.training.checkpoint import load_checkpoint
    from robustmsa.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    data = load_dataset(args.data)
    overrides = [f"train.epochs={args.epochs}", *args.overrides]
    run = apply_overrides(RunConfig("drf"), overrides, method_class("drf").config_class)
    metric = "acc" if data.spec.label.metric_family == "classification" else "acc2_non0"
    names = data.spec.modality_names
    print(f"data {args.data} (test split: {len(data['test'])} samples), overrides: {' '.join(overrides)}")
    print("| seed | " + " | ".join(f"AUROC {m}" for m in names) + f" | {metric} none | {metric} CD:random:1 | train s |")
    print("|---" * (len(names) + 4) + "|")
    with tempfile.TemporaryDirectory() as out:
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.perf_counter()
            result = Trainer(out, verbose=False).fit(run, data, seed)
            seconds = time.perf_counter() - start
            method = load_checkpoint(result.path).method
            auroc = quality_auroc(method, data, "test", seed)
            clean = evaluate(method, data, "test", "none", seed)[metric]
            disrupted = evaluate(method, data, "test", "disrupt:CD:random:1", seed)[metric]
            cells = [f"{auroc[m]:.4f}" for m in names] + [f"{clean:.2f}", f"{disrupted:.2f}", f"{seconds:.1f}"]
            print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
