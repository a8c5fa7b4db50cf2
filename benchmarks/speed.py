"""Speed benchmark of every registered method on full-size synthetic MOSI-shaped data, side by
side with MMSA.

    python benchmarks/speed.py [--methods a,b] [--full-run] [--threads N] [--n N] [--device cpu|cuda]
                               [--before-src DIR] [--peer mmsa [--peer-python PATH]]
    python benchmarks/speed.py --methods late_fusion --text-finetune [--data mosi_real.pkl] [--train-steps 10]

`--text-finetune` builds each method with `text_encoder=finetune` (the packaged all-MiniLM-L6-v2, or
`--text-model PATH`) and times it on a pickle carrying `text_bert` (`--data`, e.g. the output of
`data build mosi-real --text-bert`, whose real sentence lengths matter: batches are trimmed to their
longest text); `--train-steps` times that many training batches instead of a whole epoch.

For each method it measures parameter count, training throughput (forward + loss + backward +
clipping + AdamW, as the trainer does), inference throughput at batch 1 and 256, the peak RSS of
the process and, with --full-run, the wall time of one default training run. It prints one
Markdown table and marks the methods that miss the targets below.

`--before-src DIR` runs the same measurements on another copy of the package's `src` (e.g. the
commit before a speed change, `git archive <commit> src | tar -x -C DIR`) in the same run, one
row under each method, so before/after share the machine's load. MMSA rows: `--peer mmsa` runs
MMSA 2.2.1's own models (lf_dnn by default; `--peer-models lf_dnn,misa,mult`) on the same
synthetic data written as an MMSA pickle, with two run-time patches for CPU (no
`torch.cuda.set_device`, no `ReduceLROnPlateau(verbose=...)`); site-packages are never edited.
`--peer-python` is the interpreter that has MMSA (e.g. a venv made with
--system-site-packages). Without --peer, the MMSA row is the earlier measurement quoted in
issue 16 (marked as such, not run here).

Each measurement runs in a fresh interpreter (this script re-invoked with a hidden --worker flag)
so that one method's allocations, thread pools and caches cannot change another's numbers, and so
that ru_maxrss is that measurement's own peak.

This is a benchmark, not a test: it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Targets on 2 CPU cores (the project's reference machine).
TARGET_INFER_256 = 1000.0  # samples/s at batch 256
TARGET_FULL_RUN_S = 600.0  # seconds for one default training run

WARMUP_STEPS = 3  # training steps before timing (first steps pay for allocation and dispatch caches)
BATCH1_SAMPLES = 200  # samples timed at inference batch 1
BATCH1_WARMUP = 10
INFER_REPEATS = 3  # timed passes over the test split at batch 256; the median is reported
RESULT_TAG = "SPEED_RESULT "  # prefix of the worker's one JSON line on stdout


# --------------------------------------------------------------------------- small helpers


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, falling back to platform (non-Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: str) -> None:
    """CUDA kernels run asynchronously: wait for them before reading the clock."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def load_data(n: int | None, path: str = ""):
    """The synthetic MOSI-shaped dataset (1284/229/686 at full size), built in this process, or
    the dataset file `path`."""
    if path:
        from robustmsa.data import load_dataset

        return load_dataset(path)
    from robustmsa.data.synthetic import synthesize

    return synthesize("mosi", n=n, seed=0)


def method_options(args: argparse.Namespace) -> dict:
    """Method options of the run: the fine-tuned text branch with --text-finetune, else none."""
    if not getattr(args, "text_finetune", False):
        return {}
    return {"text_encoder": "finetune", "text_model": args.text_model}


# --------------------------------------------------------------------------- measurements


def train_throughput(method, train, device: str, max_steps: int = 0) -> float:
    """Samples/s of the training step over one shuffled epoch after a short warm-up.

    Mirrors Trainer._train_epoch minus Fabric, logging and the progress bar: batch slicing,
    method.loss (which includes training-time missing augmentation), backward, gradient clipping
    and an AdamW step (the method's parameter groups), with the default TrainConfig batch size,
    lr and weight decay. `max_steps` > 0: time that many batches instead of the whole epoch."""
    import torch

    from robustmsa.config import TrainConfig

    cfg = TrainConfig()
    method.train()
    optimizer = torch.optim.AdamW(method.param_groups(cfg.lr), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(batch) -> None:
        loss = method.loss(batch.to(device), "train")["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
        optimizer.step()
        method.after_step()

    generator = torch.Generator().manual_seed(0)
    for i, batch in enumerate(train.batches(cfg.batch_size, generator=generator)):
        if i >= WARMUP_STEPS:
            break
        step(batch)
    sync(device)
    samples = 0
    start = time.perf_counter()
    for i, batch in enumerate(train.batches(cfg.batch_size, generator=generator)):
        if max_steps and i >= max_steps:
            break
        step(batch)
        samples += batch.size
    sync(device)
    return samples / (time.perf_counter() - start)


def infer_batch1(method, test, device: str) -> float:
    """Samples/s answering one sample at a time (the latency-bound, interactive case)."""
    import torch

    method.eval()
    count = min(BATCH1_SAMPLES, len(test))
    with torch.no_grad():
        for i in range(min(BATCH1_WARMUP, count)):
            method(test.batch([i]).to(device))
        sync(device)
        start = time.perf_counter()
        for i in range(count):
            method(test.batch([i]).to(device))
        sync(device)
    return count / (time.perf_counter() - start)


def infer_batch256(method, test, device: str) -> float:
    """Samples/s of predict_tensors over the whole test split at batch 256 (the evaluation path
    every sweep uses); median of a few passes after one warm-up pass."""
    from robustmsa.evaluation.evaluate import predict_tensors

    predict_tensors(method, test, 256, device)
    times = []
    for _ in range(INFER_REPEATS):
        sync(device)
        start = time.perf_counter()
        predict_tensors(method, test, 256, device)
        sync(device)
        times.append(time.perf_counter() - start)
    return len(test) / statistics.median(times)


def micro_benchmarks(name: str, n: int | None, device: str, args: argparse.Namespace | None = None) -> dict:
    """Everything except the full run, for one method, in this (fresh) process."""
    import torch

    from robustmsa.data.batch import SplitTensors
    from robustmsa.methods.base import create_method

    dataset = load_data(n, getattr(args, "data", ""))
    train = SplitTensors(dataset["train"], dataset.spec)
    test = SplitTensors(dataset["test"], dataset.spec)
    data_rss = peak_rss_mib()
    torch.manual_seed(0)
    method = create_method(name, dataset.spec, **method_options(args))
    method.prepare(train)
    method.to(device)
    params = sum(p.numel() for p in method.parameters())
    return {
        "params": params,
        "train": train_throughput(method, train, device, getattr(args, "train_steps", 0)),
        "infer1": infer_batch1(method, test, device),
        "infer256": infer_batch256(method, test, device),
        "data_rss": data_rss,
        "rss": peak_rss_mib(),
    }


def full_run(name: str, n: int | None, device: str, args: argparse.Namespace | None = None) -> dict:
    """One default training run exactly as `robustmsa train` does it (default TrainConfig:
    30 epochs max, patience 6), into a throw-away folder."""
    from robustmsa.config import RunConfig
    from robustmsa.training.trainer import Trainer

    dataset = load_data(n, getattr(args, "data", ""))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = RunConfig(name, method_options(args))
        result = Trainer(tmp, accelerator=device, verbose=False).fit(run, dataset, seed=0)
        seconds = time.perf_counter() - start
    return {"full_s": seconds, "epochs": result.epochs_run, "full_rss": peak_rss_mib()}


# --------------------------------------------------------------------------- MMSA (the peer)

PEER_OF = {"lf_dnn": "late_fusion", "misa": "misa", "mult": "mult_lite"}  # MMSA model -> our method
# Without --peer: MMSA 2.2.1 lf_dnn's training throughput on the same MOSI-shaped data, as quoted
# in issue 16 (measured earlier on the project's 2-core machine). Shown as a reference, not run.
QUOTED_MMSA = {"lf_dnn": {"train": 770.0}}


def patch_mmsa_for_cpu() -> None:
    """MMSA 2.2.1 on a CPU-only torch: `torch.cuda.set_device` raises, and torch >= 2.2 dropped
    `ReduceLROnPlateau(verbose=...)`. Both patched here, at run time, in this process only."""
    import torch

    torch.cuda.set_device = lambda device: None
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau

    class Plateau(plateau):
        def __init__(self, *args, verbose=None, **kwargs):
            super().__init__(*args, **kwargs)

    torch.optim.lr_scheduler.ReduceLROnPlateau = Plateau


def mmsa_args(model: str, data_path: str, save_dir: str):
    """MMSA's own regression config for `model` on MOSI (unaligned), pointed at our pickle, on CPU."""
    import torch
    from MMSA.config import get_config_regression

    args = get_config_regression(model, "mosi")
    args.update({"featurePath": data_path, "device": torch.device("cpu"), "train_mode": "regression",
                 "custom_feature": None, "feature_T": None, "feature_A": None, "feature_V": None,
                 "model_save_path": Path(save_dir) / f"{model}-mosi.pth", "cur_seed": 1})
    return args


class _EpochDone(Exception):
    pass


def mmsa_micro(model: str, data_path: str) -> dict:
    """MMSA's own training loop (its trainer's do_train) for exactly one epoch, stopped when it
    reaches validation; inference of its model at batch 1 and 256 on the test features."""
    import torch
    from MMSA.data_loader import MMDataLoader
    from MMSA.models import AMIO
    from MMSA.trains import ATIO

    patch_mmsa_for_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        args = mmsa_args(model, data_path, tmp)
        loaders = MMDataLoader(args, num_workers=0)
        data_rss = peak_rss_mib()
        torch.manual_seed(0)
        net = AMIO(args)
        trainer = ATIO().getTrain(args)

        def stop(*_, **__):
            raise _EpochDone

        trainer.do_test = stop
        samples = len(loaders["train"].dataset)
        start = time.perf_counter()
        try:
            trainer.do_train(net, loaders)
        except _EpochDone:
            pass
        train = samples / (time.perf_counter() - start)
    test = loaders["test"].dataset
    rows = [test[i] for i in range(len(test))]
    inputs = [torch.stack([torch.as_tensor(r[m]) for r in rows]) for m in ("text", "audio", "vision")]

    def forward(lo: int, hi: int) -> None:
        net(*(x[lo:hi] for x in inputs))

    net.eval()
    with torch.no_grad():
        count = min(BATCH1_SAMPLES, len(rows))
        for i in range(BATCH1_WARMUP):
            forward(i, i + 1)
        start = time.perf_counter()
        for i in range(count):
            forward(i, i + 1)
        infer1 = count / (time.perf_counter() - start)
        times = []
        for _ in range(INFER_REPEATS + 1):
            start = time.perf_counter()
            for lo in range(0, len(rows), 256):
                forward(lo, lo + 256)
            times.append(time.perf_counter() - start)
        infer256 = len(rows) / statistics.median(times[1:])
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return {"params": params, "train": train, "infer1": infer1, "infer256": infer256, "data_rss": data_rss,
            "rss": peak_rss_mib()}


def mmsa_full(model: str, data_path: str) -> dict:
    """One MMSA_run (its default config and early stopping, one seed, no DataLoader workers)."""
    patch_mmsa_for_cpu()
    from MMSA import MMSA_run

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        MMSA_run(model, "mosi", config={"featurePath": data_path}, seeds=[1111], gpu_ids=[], num_workers=0,
                 verbose_level=0, model_save_dir=tmp, res_save_dir=tmp, log_dir=tmp)
        seconds = time.perf_counter() - start
    return {"full_s": seconds, "epochs": None, "full_rss": peak_rss_mib()}


# --------------------------------------------------------------------------- child side


def worker(args: argparse.Namespace) -> None:
    """Child-process entry: measure one thing for one method, print one tagged JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = {"micro": lambda: micro_benchmarks(args.methods, args.n, args.device, args),
             "full": lambda: full_run(args.methods, args.n, args.device, args),
             "mmsa-micro": lambda: mmsa_micro(args.methods, args.data_file),
             "mmsa-full": lambda: mmsa_full(args.methods, args.data_file)}
    result = kinds[args.worker]()
    result["threads"] = torch.get_num_threads()
    print(RESULT_TAG + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent side


def run_child(kind: str, name: str, args: argparse.Namespace, src: str | None = None,
              python: str | None = None) -> dict:
    """Run this script as a fresh worker process (with `src` first on the path, under `python`)
    and return its parsed result (or the error)."""
    command = [python or sys.executable, __file__, "--worker", kind, "--methods", name, "--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.n:
        command += ["--n", str(args.n)]
    if kind.startswith("mmsa"):
        command += ["--data-file", args.data_file]
    if args.text_finetune:
        command += ["--text-finetune", "--text-model", args.text_model, "--train-steps", str(args.train_steps)]
    if args.data:
        command += ["--data", args.data]
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (done.stderr or done.stdout).strip().splitlines()
    return {"error": tail[-1] if tail else f"exit code {done.returncode}"}


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table_row(name: str, micro: dict, full: dict | None, targets: bool = True, ratio: str = "") -> str:
    """One Markdown row; a missed target is marked MISS next to the number."""
    if "error" in micro:
        return f"| {name} | error: {micro['error']} | | | | | | | |"
    infer256 = micro.get("infer256")
    infer256_cell = fmt(infer256) + (" **MISS**" if targets and infer256 is not None and infer256 < TARGET_INFER_256 else "")
    if full is None:
        full_s, epochs = "-", "-"
    elif "error" in full:
        full_s, epochs = f"error: {full['error']}", "-"
    else:
        miss = targets and full["full_s"] >= TARGET_FULL_RUN_S
        full_s = fmt(full["full_s"], 1) + (" **MISS**" if miss else "")
        epochs = str(full["epochs"]) if full.get("epochs") is not None else "-"
    params = f"{micro['params']:,}" if micro.get("params") is not None else "-"
    cells = [name, params, fmt(micro.get("train")), ratio, fmt(micro.get("infer1")), infer256_cell,
             fmt(micro.get("rss")), full_s, epochs]
    return "| " + " | ".join(cells) + " |"


def load_average() -> str:
    """Other processes on a 2-core machine wreck the numbers (OpenMP threads spin against each
    other, 10-100x slowdowns were seen), so the load is printed next to every result."""
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def header(args: argparse.Namespace, threads: int | str, load_before: str) -> list[str]:
    import torch

    size = "full size 1284/229/686" if not args.n else f"n={args.n}"
    data = args.data or f"synthesize('mosi'), {size}"
    text = " | text: fine-tuned " + (args.text_model or "all-MiniLM-L6-v2") if args.text_finetune else ""
    steps = f" | train timed over {args.train_steps} batches" if args.train_steps else ""
    return [
        f"torch {torch.__version__} | threads {threads} | CPU {cpu_model()} ({os.cpu_count()} logical) "
        f"| device {args.device} | data {data}{text}{steps}",
        f"Load average (1/5/15 min) before {load_before}, after {load_average()}; "
        "the benchmark itself adds about its thread count; clearly more means another process competed.",
        f"Targets (2 cores): inference >= {TARGET_INFER_256:,.0f} samples/s at batch 256; "
        f"full default training run < {TARGET_FULL_RUN_S:.0f} s. **MISS** marks a missed target.",
        "`x` column: train samples/s over the row it is compared with (`before` rows: this row over "
        "the method's before; MMSA rows: our method over MMSA's model).",
        "",
        "| method | params | train samples/s | x | infer samples/s @1 | infer samples/s @256 | peak RSS MiB | full run s | epochs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]


def ratio(ours: dict, theirs: dict) -> str:
    if "error" in ours or "error" in theirs or not theirs.get("train"):
        return ""
    return f"{ours['train'] / theirs['train']:.2f}x"


def peer_rows(args: argparse.Namespace, ours: dict[str, dict]) -> list[str]:
    """MMSA's models measured here (--peer mmsa), or the quoted earlier figure."""
    rows = []
    for model in (args.peer_models.split(",") if args.peer == "mmsa" else list(QUOTED_MMSA)):
        mine = ours.get(PEER_OF.get(model, ""), {"error": "not measured"})
        if args.peer != "mmsa":
            quoted = QUOTED_MMSA[model]
            rows.append(table_row(f"MMSA {model} (issue 16's earlier figure, not run here)", quoted, None, False,
                                  ratio(mine, quoted)))
            continue
        print(f"... MMSA {model}", file=sys.stderr, flush=True)
        micro = run_child("mmsa-micro", model, args, python=args.peer_python)
        full = run_child("mmsa-full", model, args, python=args.peer_python) if args.full_run else None
        rows.append(table_row(f"MMSA {model} (vs {PEER_OF.get(model, '?')})", micro, full, False, ratio(mine, micro)))
    return rows


def main(args: argparse.Namespace) -> None:
    from robustmsa.methods.base import list_methods

    start = time.perf_counter()
    load_before = load_average()
    names = args.methods.split(",") if args.methods else list_methods()
    rows, notes, threads, ours = [], [], "?", {}
    for name in names:
        print(f"... {name}", file=sys.stderr, flush=True)
        micro = run_child("micro", name, args)
        full = run_child("full", name, args) if args.full_run else None
        ours[name] = micro
        threads = micro.get("threads", threads)
        rows.append(table_row(name, micro, full))
        if args.before_src:
            before = run_child("micro", name, args, src=args.before_src)
            before_full = run_child("full", name, args, src=args.before_src) if args.full_run else None
            rows[-1] = table_row(name, micro, full, ratio=ratio(micro, before))
            rows.append(table_row(f"{name} (before)", before, before_full, False))
        if "error" not in micro:
            note = f"{name}: RSS after data only {micro['data_rss']:,.0f} MiB"
            if full and "error" not in full:
                note += f"; full-run process peak RSS {full['full_rss']:,.0f} MiB"
            notes.append(note)
    with tempfile.TemporaryDirectory() as tmp:
        if args.peer == "mmsa":  # MMSA reads the MMSA pickle format: the same data, written once
            from robustmsa.data.synthetic import write_synthetic

            args.data_file = str(Path(tmp) / "mosi.pkl")
            write_synthetic("mosi", args.data_file, n=args.n, seed=0)
        rows += peer_rows(args, ours)
    print("\n".join(header(args, threads, load_before) + rows))
    print()
    print("Peak RSS is ru_maxrss of a fresh process per method: data synthesis + split tensors + model "
          "+ benchmarks. " + "; ".join(notes) + ".")
    print(f"Total wall time: {time.perf_counter() - start:.1f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="", help="comma-separated method names (default: all registered)")
    parser.add_argument("--full-run", action="store_true", help="also time one full default training run")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--n", type=int, default=None, help="total synthetic samples (default: real MOSI sizes)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--before-src", default=None, help="another copy of src/ to measure in the same run")
    parser.add_argument("--peer", choices=("mmsa",), default=None, help="also run MMSA's own models")
    parser.add_argument("--peer-models", default="lf_dnn", help="MMSA models (lf_dnn, misa, mult)")
    parser.add_argument("--peer-python", default=None, help="interpreter with MMSA installed (default: this one)")
    parser.add_argument("--data-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--text-finetune", action="store_true",
                        help="methods take their text branch from a fine-tuned transformer (text_encoder=finetune)")
    parser.add_argument("--text-model", default="", help="its local folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--data", default="", help="a dataset file instead of synthetic data (with text_bert for --text-finetune)")
    parser.add_argument("--train-steps", type=int, default=0, help="time this many training batches (0: one epoch)")
    parser.add_argument("--worker", choices=("micro", "full", "mmsa-micro", "mmsa-full"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        worker(arguments)
    else:
        main(arguments)
