"""One trainer for every method: phases, AdamW, clipping, early stopping on the validation split,
atomic safetensors checkpoints (one folder per seed), resume, JSONL log, a progress bar.

It knows nothing about any method: method quirks live in `loss()`, `phases()`, `after_step()`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from robustmsa import __version__
from robustmsa.config import RunConfig
from robustmsa.data.batch import SplitTensors
from robustmsa.data.schema import Dataset
from robustmsa.data.standardize import FeatureStats, fit_feature_stats
from robustmsa.evaluation.evaluate import predict_tensors, split_tensors
from robustmsa.evaluation.metrics import METRICS_VERSION
from robustmsa.methods.base import Method, Phase, create_method
from robustmsa.missing import Protocol, labeled_mask
from robustmsa.training.checkpoint import (
    load_weights,
    optimizer_from_flat,
    optimizer_to_flat,
    read_json,
    save_weights,
    write_json,
)
from robustmsa.training.collapse import collapse_reason
from robustmsa.training.lock import claim_folder
from robustmsa.training.schedule import lr_factor, set_lr
from robustmsa.training.selection import Selection
from robustmsa.training.streams import PairedStreams


@dataclass
class FitResult:
    path: Path
    valid_metrics: dict[str, float]
    epochs_run: int
    seconds: float
    resumed: bool = False
    skipped: bool = False  # the seed had already finished: nothing was trained
    collapse_reason: str = ""  # non-empty: the selected model looks collapsed (see training/collapse.py)


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
        """Train (or resume, or find finished) one seed. The seed folder is claimed with a lock:
        a second process on the same folder waits, then finds the seed finished."""
        folder = run_dir(self.out, run, dataset.source_hash) / f"seed{seed}"
        if not folder.exists():  # a config the method rejects must leave no folder behind
            create_method(run.method, dataset.spec, **run.method_options)
        elif self._read_progress(folder).completed:  # finished: nothing to claim (the folder may be read-only)
            return self._fit(run, dataset, seed, folder)
        with claim_folder(folder, lambda holder: tqdm.write(f"{folder}: claimed by {holder}; waiting for it",
                                                            file=sys.stderr)):
            return self._fit(run, dataset, seed, folder)

    def _fit(self, run: RunConfig, dataset: Dataset, seed: int, folder: Path) -> FitResult:
        start = time.perf_counter()
        progress = self._read_progress(folder)
        if progress.completed:
            saved = read_json(folder / "metrics.json")
            return FitResult(folder, saved["valid"], 0, 0.0, skipped=True, collapse_reason=saved.get("collapse_reason", ""))
        if run.train.num_threads:
            torch.set_num_threads(run.train.num_threads)

        torch.manual_seed(seed)  # model init and dropout draw from this seed only
        method = create_method(run.method, dataset.spec, **run.method_options)
        stats = method.input_stats = input_stats(run, dataset)
        self._write_config(folder, run, method, dataset, seed)
        fabric = self._fabric()
        labeled = labeled_mask(
            dataset["train"].labels, run.data.labeled_ratio, seed, dataset.spec.label.metric_family
        ) if run.data.labeled_ratio < 1.0 else np.ones(len(dataset["train"]), dtype=bool)
        train_all = SplitTensors(dataset["train"], dataset.spec, labeled=labeled, stats=stats)
        train_labeled = train_all if labeled.all() else SplitTensors(
            dataset["train"].subset(np.flatnonzero(labeled)), dataset.spec, stats=stats
        )
        valid = Selection.build(dataset, run.train, seed, stats)
        method.prepare(train_labeled)
        model = fabric.setup_module(method)
        if hasattr(model, "mark_forward_method"):
            model.mark_forward_method("loss")

        resumed = progress.phase_index > 0 or progress.epoch > 0
        epochs_run = 0
        phases = method.phases()
        if resumed:
            self._resume(folder, method, progress, phases)
        while progress.phase_index < len(phases):
            phase = phases[progress.phase_index]
            data = phase_data(phase, train_all, train_labeled)
            rows = epoch_rows(run, len(data), len(train_all))
            epochs_run += self._run_phase(fabric, model, method, phase, run, data, rows, valid, folder, seed, progress)
            progress = dataclasses.replace(progress, phase_index=progress.phase_index + 1, epoch=0, best_score=None, bad_epochs=0)
            self._write_progress(folder, progress, method)
        reason = self._check_collapse(folder, method, valid, run, dataset, seed)
        progress.completed = True
        write_json(folder / "state.json", dataclasses.asdict(progress))
        (folder / "last.safetensors").unlink(missing_ok=True)
        metrics = read_json(folder / "metrics.json")["valid"]
        return FitResult(folder, metrics, epochs_run, time.perf_counter() - start, resumed=resumed,
                         collapse_reason=reason)

    def _fabric(self):
        """Lightning Fabric for accelerators and several devices; one CPU process needs none of it
        (importing Lightning alone costs seconds per process, more than a small model's epoch)."""
        if str(self.accelerator) == "cpu" and str(self.devices) == "1":
            return SingleCPU()
        from lightning_fabric import Fabric  # imported here: it is slow to import

        return Fabric(accelerator=self.accelerator, devices=self.devices, precision="32-true")

    # --- one phase ----------------------------------------------------------------------
    def _run_phase(self, fabric, model, method: Method, phase: Phase, run: RunConfig, data: SplitTensors, rows: int,
                   valid: Selection, folder: Path, seed: int, progress: _Progress) -> int:
        cfg = run.train
        lr = phase.lr or cfg.lr
        epochs = phase.epochs or cfg.epochs
        # parameter groups from the method (e.g. a pretrained text encoder at its own learning rate)
        optimizer = torch.optim.AdamW(method.param_groups(lr), lr=lr, weight_decay=cfg.weight_decay)
        if progress.epoch > 0:  # resumed within this phase: its optimizer moments travel too
            self._restore_optimizer(folder, optimizer)
        optimizer = fabric.setup_optimizers(optimizer)
        steps = epoch_steps(data, rows, cfg.batch_size)
        method.begin_phase(phase, steps)
        ran = 0
        for epoch in range(progress.epoch, epochs):
            if phase.select and progress.bad_epochs >= cfg.patience:  # (also when resumed right there)
                break
            schedule = (cfg.lr_schedule, epoch * steps, epochs * steps, cfg.warmup)
            terms = self._train_epoch(fabric, model, method, optimizer, data, rows, cfg, seed, progress.phase_index, epoch,
                                      phase.name, schedule)
            record = {"phase": phase.name, "epoch": epoch + 1, "lr": lr, "train": terms,
                      "lr_end": [group["lr"] for group in optimizer.param_groups]}  # per group, after the schedule
            ran += 1
            if phase.select:
                score, selected = self._score_served(method, valid, cfg, fabric.device)
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
        if phase.select:  # continue from the best weights, never the last ones
            method.load_state_dict(load_weights(folder / "model.safetensors"))
        return ran

    def _train_epoch(self, fabric, model, method, optimizer, data, rows, cfg, seed, phase_index, epoch,
                     phase_name, schedule: tuple[str, int, int, float]) -> dict[str, float]:
        """One pass; `schedule` = (kind, steps before this epoch, steps in the phase, warmup)."""
        kind, first_step, total_steps, warmup = schedule
        model.train()
        shuffle = torch.Generator().manual_seed(hash_seed(seed, phase_index, epoch))
        sums: dict[str, float] = {}
        steps = 0
        bar = tqdm(
            data.batches(cfg.batch_size, generator=shuffle, rows=rows),
            total=epoch_steps(data, rows, cfg.batch_size),
            desc=f"{method.name} {phase_name} {epoch + 1}",
            leave=False,
            disable=None if self.verbose else True,
        )
        for batch in bar:
            losses = _step_loss(model, batch, phase_name, fabric.device)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{method.name}: loss became {loss.item()} in phase {phase_name} epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            set_lr(optimizer, lr_factor(kind, first_step + steps, total_steps, warmup))
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

    @staticmethod
    def _score_served(method: Method, valid: Selection, cfg, device) -> tuple[float, dict]:
        """Validation score of the method, or of the best of its serving options (a mean
        teacher or its student), which it then serves; the choice is saved with the weights and
        named in the selection record."""
        options = method.serving_options()
        if not options:
            return valid.score(method, cfg.eval_batch_size, device)
        scored = []
        for option in options:
            method.serve(option)
            scored.append((*valid.score(method, cfg.eval_batch_size, device), option))
        score, selected, option = max(scored, key=lambda s: s[0])  # first option wins a tie
        method.serve(option)
        selected["selection"]["served"] = option
        selected["selection"]["served_scores"] = {o: s for s, _, o in scored}
        return score, selected

    # --- files --------------------------------------------------------------------------
    def _write_config(self, folder: Path, run: RunConfig, method: Method, dataset: Dataset, seed: int) -> None:
        write_json(folder / "config.json", {
            "run": run.to_dict(),
            "method_config": dataclasses.asdict(method.cfg),
            "spec": dataset.spec.to_dict(),
            # metadata: how the features were made (e.g. the text encoder), for `robustmsa predict`
            # absolute: `eval` finds the data from any folder (the hash says if it is still the same)
            "data": {"source": _absolute(dataset.source), "sha256": dataset.source_hash, "metadata": dataset.metadata},
            "seed": seed,
            # per-feature training statistics the inputs are standardized with (None: raw inputs)
            "standardize": None if method.input_stats is None else method.input_stats.to_dict(),
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

    # --- resume -------------------------------------------------------------------------
    def _resume(self, folder: Path, method: Method, progress: _Progress, phases: list[Phase]) -> None:
        """Back to the saved state: the weights (within a phase, or those a finished phase handed
        on: pre-trained, best-selected) and the RNG. The optimizer follows in `_run_phase`: its
        moments within a phase, fresh at a phase boundary."""
        tensors = load_weights(folder / "last.safetensors")
        method.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        torch.set_rng_state(tensors["rng.torch"])
        if self.verbose:
            where = (f"phase {phases[progress.phase_index].name} ({progress.phase_index + 1}/{len(phases)}), "
                     f"epoch {progress.epoch + 1}") if progress.phase_index < len(phases) else "the end of training"
            tqdm.write(f"{folder}: resumed at {where}")

    def _restore_optimizer(self, folder: Path, optimizer: torch.optim.Optimizer) -> None:
        meta = read_json(folder / "state.json").get("optimizer")
        if meta:
            optimizer.load_state_dict(optimizer_from_flat(load_weights(folder / "last.safetensors"), meta))

    # --- collapse ------------------------------------------------------------------------
    def _check_collapse(self, folder: Path, method: Method, selection: Selection, run: RunConfig,
                        dataset: Dataset, seed: int) -> str:
        """Flag a selected model that looks collapsed: a one-line warning, and `collapsed` +
        `collapse_reason` in metrics.json (the bench report lists them). Judged on the complete
        validation copy where the run selects on one."""
        saved = read_json(folder / "metrics.json")
        valid = selection.splits.get("complete") or next(iter(selection.splits.values()))
        device = next(method.parameters()).device
        pred = predict_tensors(method, valid, run.train.eval_batch_size, device)
        alone = _predictions_alone(method, dataset, seed, run.train.eval_batch_size, device)
        reason = collapse_reason(method.spec.label, pred, valid.labels.numpy(), saved["epoch"],
                                 _epochs_logged(folder, saved["phase"]), _is_selecting(method, saved["phase"]), alone)
        write_json(folder / "metrics.json", {**saved, "collapsed": bool(reason), "collapse_reason": reason})
        if reason:
            warnings.warn(f"{folder}: the selected model looks collapsed: {reason}", stacklevel=2)
        return reason

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


def input_stats(run: RunConfig, dataset: Dataset) -> FeatureStats | None:
    """The training split's feature statistics, or None where the run opts out (data.standardize)."""
    return fit_feature_stats(dataset["train"]) if run.data.standardize else None


def _predictions_alone(method: Method, dataset: Dataset, seed: int, batch_size: int, device) -> dict[str, np.ndarray]:
    """Regression: modality -> validation predictions with only that modality, on the samples that have it."""
    names = dataset.spec.modality_names
    if not dataset.spec.label.is_regression or len(names) < 2:
        return {}
    alone = {}
    for j, modality in enumerate(names):
        tensors = split_tensors(dataset, "valid", Protocol("subset", modality), seed, method.input_stats)
        alone[modality] = predict_tensors(method, tensors, batch_size, device)[tensors.present[:, j].numpy()]
    return alone


def _epochs_logged(folder: Path, phase: str) -> int:
    """Epochs of `phase` in log.jsonl (an epoch retrained after a kill counts once)."""
    lines = (folder / "log.jsonl").read_text().splitlines() if (folder / "log.jsonl").exists() else []
    return len({r["epoch"] for r in map(json.loads, lines) if r.get("phase") == phase})


def _is_selecting(method: Method, phase: str) -> bool:
    return any(p.name == phase and p.select for p in method.phases())


def _absolute(source: str) -> str:
    """A data path made absolute; a `synthetic:` spec (no such path) as it is."""
    return str(Path(source).resolve()) if source and Path(source).exists() else source


def phase_data(phase: Phase, train_all: SplitTensors, train_labeled: SplitTensors) -> SplitTensors | PairedStreams:
    """What a phase trains on: paired labeled / unlabeled streams, every row, or the labeled rows."""
    if phase.unlabeled_k > 0:
        return PairedStreams(train_labeled, train_all, phase.unlabeled_k)
    return train_all if phase.uses_unlabeled else train_labeled


def _step_loss(model, batch, phase_name: str, device) -> dict:
    """The loss of one step: a batch, or a (labeled, unlabeled) pair of a paired phase."""
    if isinstance(batch, tuple):
        labeled, unlabeled = batch
        return model.loss(labeled.to(device), phase_name, unlabeled=unlabeled.to(device))
    return model.loss(batch.to(device), phase_name)


def epoch_steps(data: SplitTensors | PairedStreams, rows: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of `data` drawing `rows` rows."""
    return data.steps(batch_size) if isinstance(data, PairedStreams) else math.ceil(rows / batch_size)


def epoch_rows(run: RunConfig, rows: int, full_rows: int) -> int:
    """Rows drawn per epoch: a phase on the labeled rows alone is topped up (with replacement) to
    a full-data epoch under `train.equal_budget`; otherwise each row once."""
    return full_rows if run.train.equal_budget else rows


class SingleCPU:
    """The part of Fabric's interface the trainer uses, for one CPU process in full precision:
    the same calls Fabric makes there (backward, clip_grad_norm_ over the optimizer's
    parameters), without its wrappers."""

    device = torch.device("cpu")

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def setup_optimizers(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        return optimizer

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_gradients(self, module, optimizer, max_norm: float, error_if_nonfinite: bool = True) -> torch.Tensor:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return torch.nn.utils.clip_grad_norm_(params, max_norm, error_if_nonfinite=error_if_nonfinite)


def hash_seed(*parts: int) -> int:
    """Combine integers into one 63-bit seed, stable across runs and platforms."""
    value = 1469598103934665603
    for part in parts:
        value = ((value ^ (part + 0x9E3779B97F4A7C15)) * 1099511628211) % (1 << 63)
    return value
