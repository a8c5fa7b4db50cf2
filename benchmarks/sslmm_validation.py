"""SSLMM option candidates compared on the VALIDATION split only (the selection score), never test.

    PYTHONPATH=src python benchmarks/sslmm_validation.py --data data/mosi_real.pkl --ratio 0.1 \
        --seeds 0,1 --candidate "old:method.ema_decay=0.99" --candidate "new:method.ema_epochs=1" [key=value ...]

Each candidate is `label:key=value,key=value` (an empty list after the colon: the defaults). Every
candidate x seed is trained by the project's trainer (early stopping, served student / teacher on
validation); the table prints, per candidate, the mean ± std over seeds of the selection score (the
run's `train.select_on` rule, higher is better), of acc2 / acc on complete validation, the
selected epoch and what was served. Runs are cached under --out by config hash, so a candidate
shared by two invocations trains once. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--ratio", type=float, default=0.1, help="data.labeled_ratio")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/sslmm-validation")
    parser.add_argument("--candidate", action="append", required=True, help="label:key=value,key=value")
    parser.add_argument("overrides", nargs="*", help="key=value for every candidate")
    args = parser.parse_args()

    import torch

    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.data import load_dataset
    from robustmsa.methods.base import method_class
    from robustmsa.training.checkpoint import read_json
    from robustmsa.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    data = load_dataset(args.data)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"data {args.data}, labeled_ratio {args.ratio}, seeds {args.seeds}, common: {' '.join(args.overrides)}")
    print("| candidate | selection score | valid acc2_non0 / acc2 / acc | epoch | served |")
    print("|---|---|---|---|---|")
    for label, options in map(_parse_candidate, args.candidate):
        overrides = [f"data.labeled_ratio={args.ratio}", *args.overrides, *options]  # threads: as the bench sets them
        run = apply_overrides(RunConfig("sslmm"), overrides, method_class("sslmm").config_class)
        scores, accs, epochs, served = [], [], [], []
        for seed in seeds:
            saved = read_json(Trainer(args.out, verbose=False).fit(run, data, seed).path / "metrics.json")
            scores.append(saved["selection"]["score"])
            accs.append(next(saved["valid"][m] for m in ("acc2_non0", "acc2", "acc") if m in saved["valid"]))
            epochs.append(str(saved["epoch"]))
            served.append(saved["selection"].get("served", "-")[0])
        print(f"| {label} | {_mean_std(scores, 4)} | {_mean_std(accs, 2)} | {','.join(epochs)} | {''.join(served)} |",
              flush=True)


def _parse_candidate(text: str) -> tuple[str, list[str]]:
    label, _, options = text.partition(":")
    return label, [o for o in options.split(",") if o]


def _mean_std(values: list[float], digits: int) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


if __name__ == "__main__":
    main()
