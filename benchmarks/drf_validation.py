"""Validation evidence for DRF's defaults (issue 13): train a method with overrides and print, per
seed, the VALIDATION metric with no disruption and under each `disrupt` column of the drf presets,
their mean, and DRF's learned gate (alpha, beta, recovered offset gamma, clean statistics).

    PYTHONPATH=src python benchmarks/drf_validation.py data/mosi_real.pkl drf 0,1,2 /tmp/val [key=value ...]
    PYTHONPATH=src python benchmarks/drf_validation.py synthetic:mvsa late_fusion 0,1,2 /tmp/val \
        method.train_missing=false method.train_disruption=disrupt

Defaults are chosen on these numbers, never on test. A benchmark: it asserts nothing.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import numpy as np
    import torch

    from robustmsa.bench import _drf_protocols
    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.data import load_dataset
    from robustmsa.evaluation.evaluate import evaluate
    from robustmsa.methods.base import method_class
    from robustmsa.training.checkpoint import load_checkpoint
    from robustmsa.training.trainer import Trainer

    torch.set_num_threads(1)
    data_name, method, seeds, out, *overrides = sys.argv[1:]
    data = load_dataset(data_name)
    metric = "acc" if data.spec.label.metric_family == "classification" else "acc2_non0"
    columns = ["none"] + [p for p in _drf_protocols(data_name) if p.startswith("disrupt")]
    run = apply_overrides(RunConfig(method), overrides, method_class(method).config_class)
    means = []
    for seed in [int(s) for s in seeds.split(",")]:
        start = time.perf_counter()
        trained = load_checkpoint(Trainer(out, verbose=False).fit(run, data, seed).path).method
        values = {c: evaluate(trained, data, "valid", c, seed)[metric] for c in columns}
        means.append(np.mean([v for c, v in values.items() if c != "none"]))
        print(f"{method} {' '.join(overrides)} seed{seed} {time.perf_counter() - start:.0f}s valid none "
              f"{values['none']:.2f} disrupt-mean {means[-1]:.2f}{_gate(trained)}")
        print("   " + " ".join(f"{c.replace('disrupt:', '')}={v:.1f}" for c, v in values.items()), flush=True)
    spread = np.std(means, ddof=1) if len(means) > 1 else float("nan")
    print(f"== {method} {' '.join(overrides)} valid disrupt-mean {np.mean(means):.2f} ± {spread:.2f}", flush=True)


def _gate(method) -> str:
    gate = getattr(method, "gate", None)
    if gate is None:
        return ""
    show = lambda t: [round(v, 2) for v in t.detach().tolist()]  # noqa: E731
    offset = show(gate.offset) if hasattr(gate, "offset") else "-"
    return (f" alpha={show(gate.alpha)} beta={show(gate.bias)} gamma={offset} "
            f"c={show(gate.center)} s={[round(v, 3) for v in gate.spread.tolist()]}")


if __name__ == "__main__":
    main()
