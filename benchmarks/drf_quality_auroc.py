"""How well DRF's quality score tells a clean modality from a corrupted one.

    PYTHONPATH=src python benchmarks/drf_quality_auroc.py [--data synthetic:mvsa:n=600:seed=0]
        [--epochs 8] [--seeds 0] [--threads 1] [key=value ...]
    PYTHONPATH=src python benchmarks/drf_quality_auroc.py --data data/mosi_real.pkl \
        --checkpoints bench/drf-table/runs/drf-<hash>/seed0,...      # score trained seeds, train nothing

Trains DRF (the trainer, model selection on the validation split), or loads the given seed
folders, and prints, per modality, the AUROC of q_m on the test split: the clean samples
(positive) against the same samples with that modality corrupted by `disrupt:C:fixed:<m>` (40-80 %
of its frames / elements zeroed, the method not told); on a dataset built from raw text also
against real low-quality text (`textnoise:<kind>:0.8` and the mix), re-encoded. 0.5 = the score is
blind to corruption, 1.0 = it separates them perfectly. Also prints the accuracy under no
disruption and under `disrupt:CD:random:1`.

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
    parser.add_argument("--checkpoints", default="", help="comma-separated seed folders to score instead of training")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. method.d=64 method.tau=2")
    args = parser.parse_args()

    import torch

    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.data import load_dataset
    from robustmsa.evaluation.evaluate import evaluate
    from robustmsa.evaluation.quality import quality_auroc
    from robustmsa.features.textnoise import MIX_FRACTION
    from robustmsa.missing import TEXTNOISE_KINDS
    from robustmsa.methods.base import method_class
    from robustmsa.training.checkpoint import load_checkpoint
    from robustmsa.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    data = load_dataset(args.data)
    overrides = [f"train.epochs={args.epochs}", *args.overrides]
    run = apply_overrides(RunConfig("drf"), overrides, method_class("drf").config_class)
    metric = "acc" if data.spec.label.metric_family == "classification" else "acc2_non0"
    protocols = {m: f"disrupt:C:fixed:{m}" for m in data.spec.modality_names}
    if _has_raw_text(data):
        protocols.update({f"text {k}:0.8": f"textnoise:{k}:0.8" for k in TEXTNOISE_KINDS})
        protocols["text mix"] = f"textnoise:mix:{MIX_FRACTION}"
    source = f"checkpoints {args.checkpoints}" if args.checkpoints else f"overrides: {' '.join(overrides)}"
    print(f"data {args.data} (test split: {len(data['test'])} samples), {source}")
    print("| seed | " + " | ".join(f"AUROC {m}" for m in protocols) + f" | {metric} none | {metric} CD:random:1 | train s |")
    print("|---" * (len(protocols) + 4) + "|")
    with tempfile.TemporaryDirectory() as out:
        for seed, folder in _seeds(args):
            start = time.perf_counter()
            if folder is None:
                folder = Trainer(out, verbose=False).fit(run, data, seed).path
            seconds = time.perf_counter() - start
            method = load_checkpoint(folder).method
            auroc = quality_auroc(method, data, "test", seed, protocols=protocols)
            clean = evaluate(method, data, "test", "none", seed)[metric]
            disrupted = evaluate(method, data, "test", "disrupt:CD:random:1", seed)[metric]
            cells = [f"{auroc[m]:.4f}" for m in protocols] + [f"{clean:.2f}", f"{disrupted:.2f}", f"{seconds:.1f}"]
            print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)


def _seeds(args) -> list[tuple[int, str | None]]:
    """(seed, seed folder or None = train it): the folders' seeds come from their names (seed<k>)."""
    if not args.checkpoints:
        return [(int(s), None) for s in args.seeds.split(",")]
    folders = [f for f in args.checkpoints.split(",") if f]
    return [(int(os.path.basename(os.path.normpath(f)).removeprefix("seed")), f) for f in folders]


def _has_raw_text(data) -> bool:
    from robustmsa.features.textnoise import text_info

    try:
        text_info(data)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
