"""One trainer for every method: phases, AdamW, clipping, early stopping on the validation split,
atomic safetensors checkpoints (one folder per seed), resume, JSONL log, a progress bar.

It knows nothing about any method: method quirks live in `loss()`, `phases()`, `after_step()`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from robustmsa import __version__
from robustmsa.config import RunConfig
from robustmsa.data.batch import SplitTensors
from robustmsa.data.schema import Dataset
from robustmsa.evaluation.metrics import METRICS_VERSION
from robustmsa.methods.base import Method, Phase, create_method
from robustmsa.missing import labeled_mask
from robustmsa.training.checkpoint import (
    load_weights,
    optimizer_from_flat,
    optimizer_to_flat,
    read_json,
    save_weights,
    write_json,
)
from robustmsa.training.selection import Selection


@dataclass
class FitResult:
    path: Path
    valid_metrics: dict[str, float]
    epochs_run: int
    seconds: float
    resumed: bool = False
    skipped: bool = False  # the seed had already finished: nothing was trained


@dataclass
class _Progress:
    """Resume state within the phase sequence."""

    phase_index: int = 0
    epoch: int = 0  # epochs finished in the current phase
    best_score: float | None = None
    bad_epochs: int = 0
    completed: bool = False


def run_dir(root: str | Path, run: RunConfig, data_hash: str) -> Path:
    """runs/<method>-<config hash>: same config, same folder."""
    return Path(root) / f"{run.method}-{run.hash(data_hash)}"


class Trainer:
    """fit(run, dataset, seed) trains one seed into `<out>/seed<k>/` and returns its result."""

    def __init__(self, out: str | Path, accelerator: str = "cpu", devices: int | str = 1, verbose: bool = True):
        self.out = Path(out)
        self.accelerator = accelerator
        self.devices = devices
        self.verbose = verbose

    # --- public -------------------------------------------------------------------------
    def fit(self, run: RunConfig, dataset: Dataset, seed: int) -> FitResult:
        from lightning_fabric import Fabric  # imported here: it is slow to import

        start = time.perf_counter()
        folder = run_dir(self.out, run, dataset.source_hash) / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        progress = self._read_progress(folder)
        if progress.completed:
            return FitResult(folder, read_json(folder / "metrics.json")["valid"], 0, 0.0, skipped=True)
        if run.train.num_threads:
            torch.set_num_threads(run.train.num_threads)

        torch.manual_seed(seed)  # model init and dropout draw from this seed only
        method = create_method(run.method, dataset.spec, **run.method_options)
        self._write_config(folder, run, method, dataset, seed)
        fabric = Fabric(accelerator=self.accelerator, devices=self.devices, precision="32-true")
        labeled = labeled_mask(
            dataset["train"].labels, run.data.labeled_ratio, seed, dataset.spec.label.metric_family
        ) if run.data.labeled_ratio < 1.0 else np.ones(len(dataset["train"]), dtype=bool)
        train_all = SplitTensors(dataset["train"], dataset.spec, labeled=labeled)
        train_labeled = train_all if labeled.all() else SplitTensors(
            dataset["train"].subset(np.flatnonzero(labeled)), dataset.spec
        )
        valid = Selection.build(dataset, run.train, seed)
        method.prepare(train_labeled)
        model = fabric.setup_module(method)
        if hasattr(model, "mark_forward_method"):
            model.mark_forward_method("loss")

        resumed = progress.phase_index > 0 or progress.epoch > 0
        epochs_run = 0
        phases = method.phases()
        while progress.phase_index < len(phases):
            phase = phases[progress.phase_index]
            data = train_all if phase.uses_unlabeled else train_labeled
            rows = epoch_rows(run, len(data), len(train_all))
            epochs_run += self._run_phase(fabric, model, method, phase, run, data, rows, valid, folder, seed, progress)
            progress = dataclasses.replace(progress, phase_index=progress.phase_index + 1, epoch=0, best_score=None, bad_epochs=0)
            self._write_progress(folder, progress, method)
        progress.completed = True
        write_json(folder / "state.json", dataclasses.asdict(progress))
        (folder / "last.safetensors").unlink(missing_ok=True)
        metrics = read_json(folder / "metrics.json")["valid"]
        return FitResult(folder, metrics, epochs_run, time.perf_counter() - start, resumed=resumed)

    # --- one phase ----------------------------------------------------------------------
    def _run_phase(self, fabric, model, method: Method, phase: Phase, run: RunConfig, data: SplitTensors, rows: int,
                   valid: Selection, folder: Path, seed: int, progress: _Progress) -> int:
        cfg = run.train
        lr = phase.lr or cfg.lr
        epochs = phase.epochs or cfg.epochs
        optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=lr, weight_decay=cfg.weight_decay)
        if progress.epoch > 0:
            self._restore(folder, method, optimizer)
        optimizer = fabric.setup_optimizers(optimizer)
        ran = 0
        for epoch in range(progress.epoch, epochs):
            terms = self._train_epoch(fabric, model, method, optimizer, data, rows, cfg, seed, progress.phase_index, epoch,
                                      phase.name)
            record = {"phase": phase.name, "epoch": epoch + 1, "lr": lr, "train": terms}
            ran += 1
            if phase.select:
                score, selected = valid.score(method, cfg.eval_batch_size, fabric.device)
                selected["selection"]["masks_sha256"] = valid.masks_sha256()
                record.update(selected)
                if progress.best_score is None or score > progress.best_score + 1e-9:
                    progress.best_score, progress.bad_epochs = score, 0
                    self._save_best(folder, method, selected["valid"], phase.name, epoch + 1, selected["selection"])
                else:
                    progress.bad_epochs += 1
            else:
                self._save_best(folder, method, {}, phase.name, epoch + 1)
            progress.epoch = epoch + 1
            self._log(folder, record)
            self._write_progress(folder, progress, method, optimizer)
            if phase.select and progress.bad_epochs >= cfg.patience:
                break
        if phase.select:  # continue from the best weights, never the last ones
            method.load_state_dict(load_weights(folder / "model.safetensors"))
        return ran

    def _train_epoch(self, fabric, model, method, optimizer, data, rows, cfg, seed, phase_index, epoch,
                     phase_name) -> dict[str, float]:
        model.train()
        shuffle = torch.Generator().manual_seed(hash_seed(seed, phase_index, epoch))
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(
            data.batches(cfg.batch_size, generator=shuffle, rows=rows),
            total=math.ceil(rows / cfg.batch_size),
            desc=f"{method.name} {phase_name} {epoch + 1}",
            leave=False,
            disable=None if self.verbose else True,
        )
        for batch in bar:
            losses = model.loss(batch.to(fabric.device), phase_name)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{method.name}: loss became {loss.item()} in phase {phase_name} epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            if cfg.grad_clip > 0:
                fabric.clip_gradients(model, optimizer, max_norm=cfg.grad_clip, error_if_nonfinite=False)
            optimizer.step()
            method.after_step()
            steps += 1
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.set_postfix({k: f"{v / steps:.3f}" for k, v in sums.items()})
        return {k: v / max(steps, 1) for k, v in sums.items()}

    # --- files --------------------------------------------------------------------------
    def _write_config(self, folder: Path, run: RunConfig, method: Method, dataset: Dataset, seed: int) -> None:
        write_json(folder / "config.json", {
            "run": run.to_dict(),
            "method_config": dataclasses.asdict(method.cfg),
            "spec": dataset.spec.to_dict(),
            # metadata: how the features were made (e.g. the text encoder), for `robustmsa predict`
            "data": {"source": dataset.source, "sha256": dataset.source_hash, "metadata": dataset.metadata},
            "seed": seed,
            "config_hash": run.hash(dataset.source_hash),
            "metrics_version": METRICS_VERSION,
            "robustmsa_version": __version__,
        })

    def _save_best(self, folder: Path, method: Method, metrics: dict, phase: str, epoch: int,
                   selection: dict | None = None) -> None:
        save_weights(folder / "model.safetensors", method.state_dict())
        extra = {"selection": selection} if selection else {}
        write_json(folder / "metrics.json", {"valid": metrics, "phase": phase, "epoch": epoch, **extra})

    def _write_progress(self, folder: Path, progress: _Progress, method: Method, optimizer=None) -> None:
        tensors = {f"model.{k}": v for k, v in method.state_dict().items()}
        meta = None
        if optimizer is not None:
            optim_tensors, meta = optimizer_to_flat(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer)
            tensors.update(optim_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        save_weights(folder / "last.safetensors", tensors)
        write_json(folder / "state.json", {**dataclasses.asdict(progress), "optimizer": meta})

    def _restore(self, folder: Path, method: Method, optimizer: torch.optim.Optimizer) -> None:
        tensors = load_weights(folder / "last.safetensors")
        method.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        meta = read_json(folder / "state.json").get("optimizer")
        if meta:
            optimizer.load_state_dict(optimizer_from_flat(tensors, meta))
        torch.set_rng_state(tensors["rng.torch"])

    def _read_progress(self, folder: Path) -> _Progress:
        state_file = folder / "state.json"
        if not state_file.exists():
            return _Progress()
        state = read_json(state_file)
        if not state.get("completed") and not (folder / "last.safetensors").exists():
            return _Progress()
        fields = {f.name for f in dataclasses.fields(_Progress)}
        return _Progress(**{k: v for k, v in state.items() if k in fields})

    def _log(self, folder: Path, record: dict) -> None:
        with open(folder / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.verbose:
            valid = record.get("valid", {})
            shown = ", ".join(f"{k}={v:.3f}" for k, v in record["train"].items())
            shown_valid = [k for k in ("mae", "acc2_non0", "acc2", "acc", "f1") if k in valid]
            extra = f" | valid {', '.join(f'{k}={valid[k]:.3f}' for k in shown_valid)}" if valid else ""
            tqdm.write(f"[{record['phase']} {record['epoch']}] {shown}{extra}")


def epoch_rows(run: RunConfig, rows: int, full_rows: int) -> int:
    """Rows drawn per epoch: a phase on the labeled rows alone is topped up (with replacement) to
    a full-data epoch under `train.equal_budget`; otherwise each row once."""
    return full_rows if run.train.equal_budget else rows


def hash_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed, stable across runs and platforms."""
    value = 1469598103934665603
    for part in parts:
        value = ((value ^ (part + 0x9E3779B97F4A7C15)) * 1099511628211) % (1 << 63)
    return value
