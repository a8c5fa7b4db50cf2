"""Is a method's MAE gap scale or representation? Validation-split calibration, per run.

    PYTHONPATH=src python benchmarks/fsrf_calibration.py --data synthetic:sims [--seeds 0]
        [--threads 1] [--out runs/calibration] [RUN ...]

RUN is `method[:key=value,key=value]` (options as for `robustmsa train`, e.g.
`fsrf:method.w_das_m2f=0` or `late_fusion:train.epochs=10`); default: fsrf and the baselines of
`fsrf-table`. Each run is trained by the project's trainer (model selection on the validation
split), cached in --out by its config hash, so a second call with more RUNs only trains the new
ones. Printed per run and seed, all selection-relevant numbers on the validation split:

- std(pred)/std(label), the slope and intercept of label ~ a*pred + b, and Pearson r;
- validation MAE raw and after that affine map (the map's own fit, an in-sample bound);
- validation Avg of the primary binary F1 over the incomplete kept sets (subset protocol);
- test MAE and binary accuracy, raw and calibrated with the validation map (never fitted on test):
  when calibration closes a gap to another method, the gap was scale only.

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_RUNS = ["fsrf", "late_fusion", "mean_impute", "misa", "mult_lite"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic:mosi")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/calibration", help="run cache (config-hash folders)")
    parser.add_argument("runs", nargs="*", default=DEFAULT_RUNS, help="method[:key=value,...]")
    args = parser.parse_args()

    import numpy as np
    import torch

    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.data import load_dataset
    from robustmsa.evaluation.calibration import calibration_report
    from robustmsa.evaluation.evaluate import evaluate
    from robustmsa.methods.base import method_class
    from robustmsa.missing import standard_subsets
    from robustmsa.training.checkpoint import load_checkpoint
    from robustmsa.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    data = load_dataset(args.data)
    family = data.spec.label.metric_family
    binary, f1 = ("acc2", "f1") if family == "sims" else ("acc2_non0", "f1_non0")
    subsets = standard_subsets(data.spec.modality_names)
    print(f"data {args.data}: train/valid/test {len(data['train'])}/{len(data['valid'])}/{len(data['test'])}")
    print(f"| run | seed | std ratio | slope | intercept | corr | valid mae | valid mae cal | valid subset Avg {f1} "
          f"| test mae | test mae cal | test {binary} | test {binary} cal | train s |")
    print("|---" * 14 + "|")
    for spec in args.runs:
        method, _, options = spec.partition(":")
        overrides = [o for o in options.split(",") if o]
        run = apply_overrides(RunConfig(method), overrides, method_class(method).config_class)
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.perf_counter()
            result = Trainer(args.out, verbose=False).fit(run, data, seed)
            seconds = time.perf_counter() - start
            model = load_checkpoint(result.path).method
            r = calibration_report(model, data, seed)
            avg = float(np.mean([evaluate(model, data, "valid", p, seed)[f1] for p in subsets]))
            cells = [f"{r['valid_std_ratio']:.3f}", f"{r['valid_slope']:.3f}", f"{r['valid_intercept']:+.3f}",
                     f"{r['valid_corr']:.3f}", f"{r['valid_mae']:.4f}", f"{r['valid_mae_calibrated']:.4f}", f"{avg:.2f}",
                     f"{r['test_mae']:.4f}", f"{r['test_mae_calibrated']:.4f}", f"{r[f'test_{binary}']:.2f}",
                     f"{r[f'test_{binary}_calibrated']:.2f}", f"{seconds:.0f}"]
            print(f"| {spec} | {seed} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
