"""Speed benchmark of every registered method on full-size synthetic MOSI-shaped data.

    python benchmarks/speed.py [--methods a,b] [--full-run] [--threads N] [--n N] [--device cpu|cuda]
    python benchmarks/speed.py --methods late_fusion --text-finetune [--data mosi_real.pkl] [--train-steps 10]

`--text-finetune` builds each method with `text_encoder=finetune` (the packaged all-MiniLM-L6-v2, or
`--text-model PATH`) and times it on a pickle carrying `text_bert` (`--data`, e.g. the output of
`data build mosi-real --text-bert`, whose real sentence lengths matter: batches are trimmed to their
longest text); `--train-steps` times that many training batches instead of a whole epoch.

For each method it measures parameter count, training throughput (forward + loss + backward +
clipping + AdamW, as the trainer does), inference throughput at batch 1 and 256, the peak RSS of
the process and, with --full-run, the wall time of one default training run. It prints one
Markdown table and marks the methods that miss the targets below.

Each method runs in a fresh interpreter (this script re-invoked with a hidden --worker flag) so
that one method's allocations, thread pools and caches cannot change another's numbers, and so
that ru_maxrss is that method's own peak. The full training run gets its own fresh process too,
so its time does not depend on what the micro-benchmarks left behind.

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


def worker(args: argparse.Namespace) -> None:
    """Child-process entry: measure one thing for one method, print one tagged JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker == "micro":
        result = micro_benchmarks(args.methods, args.n, args.device, args)
    else:
        result = full_run(args.methods, args.n, args.device, args)
    result["threads"] = torch.get_num_threads()
    print(RESULT_TAG + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent side


def run_child(kind: str, name: str, args: argparse.Namespace) -> dict:
    """Run this script as a fresh worker process and return its parsed result (or the error)."""
    command = [sys.executable, __file__, "--worker", kind, "--methods", name, "--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.n:
        command += ["--n", str(args.n)]
    if args.text_finetune:
        command += ["--text-finetune", "--text-model", args.text_model, "--train-steps", str(args.train_steps)]
    if args.data:
        command += ["--data", args.data]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (done.stderr or done.stdout).strip().splitlines()
    return {"error": tail[-1] if tail else f"exit code {done.returncode}"}


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table_row(name: str, micro: dict, full: dict | None) -> str:
    """One Markdown row; a missed target is marked MISS next to the number."""
    if "error" in micro:
        return f"| {name} | error: {micro['error']} | | | | | | |"
    infer256 = fmt(micro["infer256"]) + (" **MISS**" if micro["infer256"] < TARGET_INFER_256 else "")
    if full is None:
        full_s, epochs = "-", "-"
    elif "error" in full:
        full_s, epochs = f"error: {full['error']}", "-"
    else:
        full_s = fmt(full["full_s"], 1) + (" **MISS**" if full["full_s"] >= TARGET_FULL_RUN_S else "")
        epochs = str(full["epochs"])
    cells = [name, f"{micro['params']:,}", fmt(micro["train"]), fmt(micro["infer1"]), infer256,
             fmt(micro["rss"]), full_s, epochs]
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
        "",
        "| method | params | train samples/s | infer samples/s @1 | infer samples/s @256 | peak RSS MiB | full run s | epochs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]


def main(args: argparse.Namespace) -> None:
    from robustmsa.methods.base import list_methods

    start = time.perf_counter()
    load_before = load_average()
    names = args.methods.split(",") if args.methods else list_methods()
    rows, notes, threads = [], [], "?"
    for name in names:
        print(f"... {name}", file=sys.stderr, flush=True)
        micro = run_child("micro", name, args)
        full = run_child("full", name, args) if args.full_run else None
        threads = micro.get("threads", threads)
        rows.append(table_row(name, micro, full))
        if "error" not in micro:
            note = f"{name}: RSS after data only {micro['data_rss']:,.0f} MiB"
            if full and "error" not in full:
                note += f"; full-run process peak RSS {full['full_rss']:,.0f} MiB"
            notes.append(note)
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
    parser.add_argument("--text-finetune", action="store_true",
                        help="methods take their text branch from a fine-tuned transformer (text_encoder=finetune)")
    parser.add_argument("--text-model", default="", help="its local folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--data", default="", help="a dataset file instead of synthetic data (with text_bert for --text-finetune)")
    parser.add_argument("--train-steps", type=int, default=0, help="time this many training batches (0: one epoch)")
    parser.add_argument("--worker", choices=("micro", "full"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        worker(arguments)
    else:
        main(arguments)
