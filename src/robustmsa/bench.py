"""`robustmsa bench`: methods x datasets x training variants x seeds, each trained once and then
evaluated under every protocol value; cached, resumable, parallel.

Two caches make a rerun free: the trainer skips a seed whose run folder (named by the resolved
config hash) is complete, and a job whose evaluation rows are already in `jobs/<key>.csv` is
not run at all. A killed worker loses only its own job; the same command resumes it (the
trainer continues from its last epoch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from robustmsa.data.io import atomic_write_text, file_sha256
from robustmsa.missing import standard_subsets

MODALITY_RATES = ["0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
FRAME_RATES = [f"{p / 10:g}" for p in range(11)]


@dataclass(frozen=True)
class Job:
    """One (method, dataset, training variant, seed): train once, evaluate every protocol."""

    method: str
    data: str
    variant: str  # a label for the training variant ("" = the preset's default)
    overrides: tuple[str, ...]
    seed: int
    protocols: tuple[str, ...]
    split: str = "test"
    data_hash: str = ""  # the data's content hash (see `data_hash`); "" = computed from `data` when needed

    @property
    def key(self) -> str:
        """Names the stored rows. The data enters by content, not path: data re-synthesized to the
        same path is new data, and a copy of the same file elsewhere is the same job."""
        content = self.data_hash or data_hash(self.data)
        payload = json.dumps([self.method, content, sorted(self.overrides), self.seed, list(self.protocols), self.split,
                              _defaults(), _method_defaults(self.method)], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.method} {self.data} {self.variant or 'default'} seed {self.seed}"


def _method_defaults(method: str) -> dict:
    """The method's option defaults: a cached row made under other method defaults is not reused."""
    from robustmsa.methods.base import resolved_options

    return resolved_options(method, {})


def _defaults() -> list:
    """What a job inherits without naming it: the training / data defaults (selection rule, budget)
    and the default synthetic version. A cached row made under other defaults is not reused."""
    from dataclasses import asdict

    from robustmsa.config import DataConfig, TrainConfig
    from robustmsa.data.synthetic import DEFAULT_VERSION

    return [TrainConfig().to_dict(), asdict(DataConfig()), DEFAULT_VERSION]


@dataclass
class Grid:
    """What a preset (or the user) asks for; `jobs()` expands it."""

    name: str
    methods: list[str]
    datasets: list[str]
    protocols: list[str]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    overrides: list[str] = field(default_factory=list)  # for every run
    # label -> overrides for every method, or {method: overrides} for a variant of some methods only
    variants: dict[str, list[str] | dict[str, list[str]]] = field(default_factory=lambda: {"": []})
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, list[str]] = field(default_factory=dict)  # metric family -> metrics to report
    skipped_methods: list[str] = field(default_factory=list)
    variant_rows: bool = False  # an ablation: one table whose rows are the variants
    dataset_protocols: dict[str, list[str]] = field(default_factory=dict)  # per dataset, in place of `protocols`

    def jobs(self) -> list[Job]:
        return [
            Job(method, data, label, tuple(self.overrides + _variant_overrides(extra, method)
                                           + self.method_overrides.get(method, [])), seed,
                tuple(self.dataset_protocols.get(data, self.protocols)), data_hash=data_hash(data))
            for data in self.datasets
            for label, extra in self.variants.items()
            for method in self.methods
            if isinstance(extra, list) or method in extra
            for seed in self.seeds
        ]


def _variant_overrides(extra: list[str] | dict[str, list[str]], method: str) -> list[str]:
    return list(extra) if isinstance(extra, list) else list(extra[method])


# --------------------------------------------------------------------------- presets

def _subset_protocols(modalities: tuple[str, ...] = ("text", "audio", "vision")) -> list[str]:
    """The six incomplete kept sets of FSRF-style tables, then complete data."""
    return [str(p) for p in standard_subsets(modalities)] + ["none"]


def _kept_set_protocols(data: str) -> list[str]:
    """The FSRF subset columns of `data`'s own modalities: a text + audio set gets {text}, {audio}
    and complete data, not columns naming a vision it does not have."""
    return _subset_protocols(_modalities_of(data))


def _disrupt_protocols(modalities: list[str]) -> list[str]:
    fixed = [f"disrupt:{mode}:fixed:{m}" for m in modalities for mode in ("C", "D", "CD")]
    random = [f"disrupt:CD:random:{r}" for r in ("0.2", "0.4", "0.6", "0.8", "1")]
    return ["none", *fixed, *random]


MOSI_REAL_BUILDS = {  # default dataset path -> the command that builds it
    "data/mosi_real.pkl": "robustmsa data build mosi-real --source ../shared/data/mosi --out data/mosi_real.pkl",
    "data/mosi_real_si_tav.pkl": "robustmsa data build mosi-real --source ../shared/data/mosi "
                                 "--out data/mosi_real_si_tav.pkl --modalities text,audio,video --split speaker-independent",
}


def _mosi_real_protocols(data: str) -> list[str]:
    """Complete, the modality curve to 0.5, every incomplete kept set of this dataset, and (for a
    dataset built from raw text) real low-quality text: each textnoise kind at 0.2..0.8, the mix."""
    from robustmsa.features.textnoise import curve_protocols, text_info

    try:
        text_info(_load(data))
        textnoise = curve_protocols()
    except ValueError:  # features without transcripts (e.g. --data of another kind): no textnoise columns
        textnoise = []
    return ["none", *[f"modality:{r}" for r in MODALITY_RATES[:6]],
            *_subset_protocols(_modalities_of(data))[:-1], *textnoise]


def _mosi_real_finetune_protocols(data: str) -> list[str]:
    """The `mosi-real` columns without textnoise: textnoise re-encodes degraded transcripts into
    text vectors, which a fine-tuned branch never reads (it reads the word pieces), so those
    columns would show the fine-tuned rows as immune to noise they were never given."""
    return ["none", *[f"modality:{r}" for r in MODALITY_RATES[:6]], *_subset_protocols(_modalities_of(data))[:-1]]


MOSI_REAL_BERT = "data/mosi_real_bert.pkl"
# The fine-tuning recipe of the `mosi-real-finetune` rows (issue 15): the packaged MiniLM trained
# end to end at its own rate, warmed up then decayed linearly to zero, smaller batches. Selection
# and the training-time missing augmentation stay the defaults, as in the frozen rows. Eight epochs
# is the recipe behind the best fine-tuned late_fusion measured (83.79 acc2_non0, issue 15); the
# whole grid (24 runs) took 3,752 s on two cores with `--workers 2`. One epoch under-trains:
# measured at one epoch it left late_fusion 4 points and fsrf 30 points below their frozen rows.
FINETUNE_EPOCHS = 8
FINETUNE_METHODS = ["late_fusion", "fsrf", "drf", "sslmm"]
FINETUNE_OVERRIDES = ["method.text_encoder=finetune", "method.text_lr=5e-5", "train.batch_size=32",
                      f"train.epochs={FINETUNE_EPOCHS}", "train.lr_schedule=linear"]


def _finetune_variant(methods: list[str]) -> dict[str, list[str]]:
    """Per method: the recipe, and for SSLMM its pre-training cut to the same epochs."""
    return {m: FINETUNE_OVERRIDES + ([f"method.pretrain_epochs={FINETUNE_EPOCHS}"] if m == "sslmm" else [])
            for m in methods}

DEMO_METHODS = ["late_fusion", "mean_impute", "fsrf", "drf", "sslmm"]
DEMO_N, DEMO_EPOCHS = 733, 10  # samples (MOSI has 2199) and epochs of the quick demo


def _drf_protocols(data: str) -> list[str]:
    """DRF's disrupt columns; on a dataset built from raw text also real low-quality text, each
    textnoise kind at word rate 0.8, then the random mix (DRF's low-quality modality; the
    `mosi-real` preset has the whole textnoise curve)."""
    from robustmsa.features.textnoise import MIX_FRACTION, text_info
    from robustmsa.missing import TEXTNOISE_KINDS

    columns = _disrupt_protocols(list(_modalities_of(data)))
    try:
        text_info(_load(data))
    except ValueError:  # no raw text to degrade
        return columns
    return columns + [f"textnoise:{k}:0.8" for k in TEXTNOISE_KINDS] + [f"textnoise:mix:{MIX_FRACTION}"]


PRESETS = {
    "robustness-curves": dict(
        methods=None, datasets=["synthetic:mosi"],
        protocols=[f"modality:{r}" for r in MODALITY_RATES] + [f"frame:{p}" for p in FRAME_RATES],
        metrics={"mosi": ["acc2_non0", "f1_non0", "mae"], "sims": ["acc2", "f1", "mae"], "classification": ["acc", "f1"]},
    ),
    "fsrf-table": dict(
        methods=["late_fusion", "mean_impute", "misa", "mult_lite", "fsrf"], datasets=["synthetic:mosi"],
        protocols=None, protocols_for=_kept_set_protocols, metrics={"mosi": ["f1_non0", "acc2_non0", "mae"]},
    ),
    "fsrf-ablation": dict(
        methods=["fsrf"], datasets=["synthetic:mosi"], protocols=None, protocols_for=_kept_set_protocols,
        variants={"full": [], **{f"w/o {name}": [f"method.use_{switch}=false"] for name, switch in (
            ("noise branch", "noise"), ("similarity", "sim"), ("difference", "diff"), ("reconstruction", "recon"),
            ("recovery", "recovery"), ("DAS-KL", "das_kl"), ("DAS return (missing -> full)", "das_return"),
            ("DAS-alignment", "das_align"))}},
        variant_rows=True, metrics={"mosi": ["f1_non0", "acc2_non0", "mae"]},
    ),
    "drf-table": dict(
        methods=["late_fusion", "mean_impute", "misa", "drf", "fsrf"], datasets=["synthetic:mvsa"],
        protocols=None, protocols_for=_drf_protocols,  # per dataset: its modalities, raw text or not
        metrics={"classification": ["acc", "f1"], "mosi": ["acc2_non0", "f1_non0"]},
    ),
    # DRF without each component, then the fairness grid {late_fusion, drf} x {shared missing
    # augmentation, DRF's disruption}: a method's default cell is its drf-table run (cached).
    "drf-ablation": dict(
        methods=["drf", "late_fusion"], datasets=["synthetic:mvsa"],
        protocols=None, protocols_for=_drf_protocols,  # the drf-table columns
        variants={"full": {"drf": []},
                  "w/o quality weighting": {"drf": ["method.use_quality=false"]},
                  "gate: raw log(1 + D), not standardized": {"drf": ["method.gate_standardize=false"]},
                  "gate: recovered slots scored by distance, no offset": {"drf": ["method.gate_recovered_offset=false"]},
                  "gate: at the network's learning rate": {"drf": ["method.gate_lr_scale=1"]},
                  "w/o recovery": {"drf": ["method.use_recovery=false"]},
                  "recovery: sample loss only": {"drf": ["method.recovery_dist_loss=false"]},
                  "recovery: distribution loss only": {"drf": ["method.recovery_sample_loss=false"]},
                  "trained with the missing augmentation": {
                      "late_fusion": [], "drf": ["method.train_missing=true", "method.train_disruption=none"]},
                  "trained with DRF's disruption": {
                      "late_fusion": ["method.train_missing=false", "method.train_disruption=disrupt"], "drf": []}},
        variant_rows=True, metrics={"classification": ["acc", "f1"], "mosi": ["acc2_non0", "f1_non0"]},
    ),
    "sslmm-table": dict(
        # label-scarce: real MOSI (both builds) and synthetic v2; baselines get the equal budget
        methods=["late_fusion", "mean_impute", "misa", "fsrf", "drf", "sslmm"],
        datasets=[*MOSI_REAL_BUILDS, "synthetic:mosi", "synthetic:sims"],
        protocols=[f"modality:{r}" for r in ("0", "0.3", "0.5", "0.7")],
        variants={f"labeled_ratio={r}": [f"data.labeled_ratio={r}"] for r in ("0.05", "0.1", "0.3", "0.5", "1.0")},
        metrics={"mosi": ["acc2_has0", "acc2_non0"], "sims": ["acc2"]}, build=MOSI_REAL_BUILDS,
    ),
    "sslmm-ablation": dict(  # one component removed per variant, at labeled ratio 0.5 and rate 0.5
        methods=["sslmm"], datasets=["synthetic:mosi", "synthetic:sims"],
        protocols=["modality:0.5"], overrides=["data.labeled_ratio=0.5"],
        variants={"full": [], "w/o pre-training": ["method.use_pretrain=false"],
                  "w/o unlabeled consistency": ["method.use_consistency=false"],
                  "w/o reconstruction": ["method.use_recon=false"],
                  "intra-modal messages only": ["method.message_passing=intra"],
                  "inter-modal messages only": ["method.message_passing=inter"]},
        variant_rows=True, metrics={"mosi": ["acc2_has0", "acc2_non0", "f1_non0", "mae"], "sims": ["acc2", "f1", "mae"]},
    ),
    "sslmm-ratio-ablation": dict(  # does pre-training / unlabeled consistency help at each labeled ratio?
        methods=["sslmm"], datasets=["synthetic:mosi"], protocols=["modality:0", "modality:0.5"],
        variants={f"{ratio} {label}": [f"data.labeled_ratio={ratio}", *switch]
                  for ratio in ("0.05", "0.1", "0.3", "0.5", "1.0")
                  for label, switch in (("full", []), ("w/o pre-training", ["method.use_pretrain=false"]),
                                        ("w/o unlabeled consistency", ["method.use_consistency=false"]))
                  if not (ratio == "1.0" and switch == ["method.use_consistency=false"])},  # 1.0: nothing unlabeled
        variant_rows=True, metrics={"mosi": ["acc2_non0", "mae"], "sims": ["acc2", "mae"]},
    ),
    # Real CMU-MOSI, built by the user from the raw release (see `build`): the standard folds with
    # text + audio, and the speaker-independent split with text + audio + video (video leaks on
    # the standard folds). Each dataset gets the subset table of its own kept sets.
    "mosi-real": dict(
        methods=None, datasets=list(MOSI_REAL_BUILDS), protocols=None, protocols_for=_mosi_real_protocols,
        metrics={"mosi": ["acc2_non0", "f1_non0", "mae", "corr"]}, build=MOSI_REAL_BUILDS,
    ),
    # The same standard-fold rows with the text branch fine-tuned end to end (issue 15), one table
    # whose rows are "method [frozen vectors]" and "method [fine-tuned text]", both on the build
    # that carries the word pieces (its text vectors are those of data/mosi_real.pkl).
    "mosi-real-finetune": dict(
        methods=FINETUNE_METHODS, datasets=[MOSI_REAL_BERT], protocols=None,
        protocols_for=_mosi_real_finetune_protocols,
        variants={"frozen vectors": [], "fine-tuned text": _finetune_variant(FINETUNE_METHODS)}, variant_rows=True,
        metrics={"mosi": ["acc2_non0", "f1_non0", "mae", "corr"]},
        build={MOSI_REAL_BERT: "robustmsa data build mosi-real --source ../shared/data/mosi "
                               f"--out {MOSI_REAL_BERT} --text-bert"},
    ),
    # `robustmsa demo`: the story in two minutes on two cores, on a third of MOSI's size and fewer
    # epochs; `demo-full` is the same grid at full size (the issue-16 note compares the two tables).
    "demo": dict(
        methods=DEMO_METHODS, datasets=[f"synthetic:mosi:n={DEMO_N}"],
        protocols=[f"modality:{r}" for r in MODALITY_RATES], overrides=[f"train.epochs={DEMO_EPOCHS}"],
        metrics={"mosi": ["acc2_non0", "f1_non0", "mae"]},
    ),
    "demo-full": dict(
        methods=DEMO_METHODS, datasets=["synthetic:mosi"],
        protocols=[f"modality:{r}" for r in MODALITY_RATES], overrides=["train.epochs=15"],
        metrics={"mosi": ["acc2_non0", "f1_non0", "mae"]},
    ),
}


def make_grid(preset: str, data: list[str] | None = None, methods: list[str] | None = None,
              seeds: list[int] | None = None, overrides: list[str] | None = None,
              variants: list[str] | None = None) -> Grid:
    """A preset, with the user's datasets / methods / seeds / overrides in place of its own, and
    `variants` (labels) a subset of its training variants, e.g. two of its labeled ratios.
    Methods the registry does not have (yet) are listed in `skipped_methods`, not run."""
    from robustmsa.methods.base import list_methods

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    available = list_methods()
    wanted = methods or spec["methods"] or available
    unknown = [m for m in (methods or []) if m not in available]
    if unknown:
        raise KeyError(f"unknown method {unknown[0]!r}; available: {', '.join(available)}")
    datasets = data or spec["datasets"]
    missing = [d for d in datasets if spec.get("build") and not d.startswith("synthetic:") and not Path(d).exists()]
    if missing:
        command = spec["build"].get(missing[0], " / ".join(spec["build"].values()))
        raise ValueError(f"bench {preset}: dataset {missing[0]} not found; build it first: {command}"
                         + ("" if data else " (or pass --data PATH)"))
    per_dataset = {d: spec["protocols_for"](d) for d in datasets} if spec.get("protocols_for") else {}
    protocols = spec["protocols"] or per_dataset.get(datasets[0]) or _disrupt_protocols(list(_modalities_of(datasets[0])))
    return Grid(
        name=preset, methods=[m for m in wanted if m in available], datasets=datasets, protocols=protocols,
        seeds=seeds or [0, 1, 2], overrides=list(spec.get("overrides", [])) + list(overrides or []),
        variants=_chosen_variants(preset, dict(spec.get("variants", {"": []})), variants), metrics=spec["metrics"],
        variant_rows=spec.get("variant_rows", False), dataset_protocols=per_dataset,
        skipped_methods=[m for m in wanted if m not in available],
    )


def _chosen_variants(preset: str, every: dict, labels: list[str] | None) -> dict:
    """The preset's variants named in `labels` (all when None), in the preset's order."""
    unknown = [label for label in labels or [] if label not in every]
    if unknown:
        raise ValueError(f"bench {preset}: unknown variant {unknown[0]!r}; the preset's: {', '.join(map(repr, every))}")
    return {label: extra for label, extra in every.items() if labels is None or label in labels}


def _load(data: str):
    """The dataset, loaded once per version of its files in this process."""
    return _load_version(data, _version(data))


@lru_cache(maxsize=4)
def _load_version(data: str, version: tuple):
    from robustmsa.data import load_dataset

    return load_dataset(data)


def _version(data: str) -> tuple:
    """What changes when a file (or a folder's files) is rewritten in place: size and mtime."""
    path = Path(data)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


def data_hash(data: str) -> str:
    """The content hash a dataset's results are keyed by: the file's sha256, a folder's dataset
    hash (as its reader computes it), or for a `synthetic:` spec the spec itself (it fixes the data)."""
    path = Path(data)
    if path.is_file():
        return _file_hash(str(path.resolve()), _version(data))
    if path.is_dir():
        return _load(data).source_hash
    return hashlib.sha256(data.encode()).hexdigest()


@lru_cache(maxsize=16)
def _file_hash(path: str, version: tuple) -> str:
    """Hashed once per file version in a process (a grid asks once per job)."""
    return file_sha256(path)


def _modalities_of(data: str) -> tuple[str, ...]:
    return _load(data).spec.modality_names


# --------------------------------------------------------------------------- one job

def run_job(job: Job, out: str, threads: int = 0) -> list[dict]:
    """Train (or find) the checkpoint, evaluate every protocol, store the rows atomically."""
    import torch

    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.evaluation.evaluate import sweep
    from robustmsa.methods.base import method_class
    from robustmsa.missing import Protocol
    from robustmsa.training.checkpoint import load_checkpoint
    from robustmsa.training.trainer import Trainer

    if threads:
        torch.set_num_threads(threads)
    dataset = _load(job.data)
    run = apply_overrides(RunConfig(job.method), list(job.overrides), method_class(job.method).config_class)
    result = Trainer(Path(out) / "runs", verbose=False).fit(run, dataset, job.seed)
    checkpoint = load_checkpoint(result.path)
    rows = sweep([checkpoint], dataset, [Protocol.parse(p) for p in job.protocols], job.split)
    extra = {
        "dataset": job.data, "variant": job.variant, "data_sha256": dataset.source_hash,
        "config_hash": run.hash(dataset.source_hash), "trained": not result.skipped,
        "train_seconds": round(result.seconds, 2), "job": job.key,
        "collapsed": result.collapse_reason,  # '' = healthy (training/collapse.py)
        "selection": run.train.selection_rule(), "budget": run.budget(),
        # Float reductions depend on the thread count: transformer methods trained with 1 and 2
        # threads differ (same seed). Recorded so a table says which it used.
        "torch_threads": torch.get_num_threads(),
    }
    rows = [{**row, **extra} for row in rows]
    atomic_write_text(job_file(out, job), pd.DataFrame(rows).to_csv(index=False))
    return rows


def job_file(out: str | Path, job: Job) -> Path:
    return Path(out) / "jobs" / f"{job.key}.csv"


def _pin_threads(threads: int) -> None:
    """Worker initializer: two workers on two cores must not each start two threads."""
    import torch

    from robustmsa.console import install_warning_printer

    install_warning_printer()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # tqdm's default lock is a multiprocessing semaphore; a worker stopped by Ctrl-C could not
    # release it, and the parent's exit would warn of a leaked semaphore. Workers print no bars.
    tqdm.set_lock(threading.RLock())


# --------------------------------------------------------------------------- the grid

# Rough training cost of one default run relative to late_fusion (one-epoch profiles on full-size
# synthetic MOSI, issue 16; sslmm includes its pre-training epochs). Used only to start the
# longest runs first (two workers then finish together instead of one running the last slow
# run alone) and to weight the progress bar, so its ETA is in time rather than in runs.
RELATIVE_COST = {"mean_impute": 0.5, "late_fusion": 1.0, "misa": 3.0, "mult_lite": 8.0, "fsrf": 9.0,
                 "drf": 20.0, "sslmm": 25.0}


def job_cost(job: Job) -> float:
    return RELATIVE_COST.get(job.method, 10.0)


@dataclass
class BenchResult:
    rows: pd.DataFrame
    ran: int  # jobs executed this time
    cached: int  # jobs whose results were already stored
    failed: list[str]  # descriptions of jobs that did not finish
    seconds: float


def run_grid(grid: Grid, out: str | Path, workers: int = 1, backend: str = "local", progress: bool = True,
             threads: int = 1) -> BenchResult:
    """Run every job not already stored; collect all rows into `<out>/results.csv`.

    Every run uses `threads` torch threads whatever `workers` is: float reductions depend on the
    thread count, so pinning it is what makes a table independent of how it was scheduled."""
    out = Path(out)
    start = time.perf_counter()
    jobs = grid.jobs()
    # one run per key: two variants may name the same run (an ablation's "full" and a grid cell)
    unique = list({j.key: j for j in jobs}.values())
    pending = sorted((j for j in unique if not job_file(out, j).exists()), key=job_cost, reverse=True)
    done = len(unique) - len(pending)
    bar = CostBar(unique, pending, f"bench {grid.name}", disable=None if progress else True)
    if backend == "ray":
        failed = _run_ray(pending, str(out), threads, bar)
    elif workers <= 1:
        failed = _run_serial(pending, str(out), threads, bar)
    else:
        failed = _run_pool(pending, str(out), workers, threads, bar)
    bar.close()
    rows = collect(out, jobs)
    if len(rows):
        atomic_write_text(out / "results.csv", rows.to_csv(index=False))
    return BenchResult(rows, len(pending) - len(failed), done, failed, time.perf_counter() - start)


class CostBar:
    """A progress bar over runs whose length is their estimated cost: percent done, elapsed time and
    an ETA that a slow run does not skew, with `done/total runs` beside it."""

    def __init__(self, jobs: list[Job], pending: list[Job], desc: str, disable: bool | None):
        self.total_runs, self.runs = len(jobs), len(jobs) - len(pending)
        done = sum(job_cost(j) for j in jobs) - sum(job_cost(j) for j in pending)
        self.bar = tqdm(total=round(sum(job_cost(j) for j in jobs), 1), initial=round(done, 1), desc=desc,
                        disable=disable, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} [{elapsed}<{remaining}]")
        self._show("")

    def _show(self, what: str) -> None:
        self.bar.set_postfix_str(f"{self.runs}/{self.total_runs} runs" + (f", {what}" if what else ""))

    def set_postfix_str(self, what: str) -> None:
        self._show(what)

    def done(self, job: Job) -> None:
        self.runs += 1
        self._show("")
        self.bar.update(job_cost(job))

    def close(self) -> None:
        self.bar.close()


def _run_serial(pending: list[Job], out: str, threads: int, bar) -> list[str]:
    failed = []
    for job in pending:
        bar.set_postfix_str(job.describe())
        try:
            run_job(job, out, threads)
        except Exception as error:  # one broken run must not lose the others' results
            failed.append(f"{job.describe()}: {error}".splitlines()[0])
        bar.done(job)
    return failed


def _run_pool(pending: list[Job], out: str, workers: int, threads: int, bar) -> list[str]:
    failed: list[str] = []
    context = get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_pin_threads, initargs=(threads,)) as pool:
        with _sigint_ignored():  # workers start (on submit) ignoring Ctrl-C: this process stops them
            futures = {pool.submit(run_job, job, out, threads): job for job in pending}
        try:
            for future in as_completed(futures):
                job = futures[future]
                try:
                    future.result()
                except BrokenProcessPool:
                    failed.append(f"{job.describe()}: a worker died")
                except Exception as error:
                    failed.append(f"{job.describe()}: {error}".splitlines()[0])
                bar.done(job)
        except KeyboardInterrupt:  # stop now, not after the running jobs: a rerun resumes them
            workers = list(pool._processes.values())  # noqa: SLF001 (no public way to stop workers)
            for process in workers:
                process.terminate()
            for process in workers:
                process.join()
            pool.shutdown(wait=True, cancel_futures=True)  # the workers are gone: returns at once
            raise
    return failed


@contextlib.contextmanager
def _sigint_ignored():
    """Ctrl-C goes to the whole process group; spawned workers inherit SIGINT ignored, so only
    the parent sees it (no worker tracebacks) and terminates them."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_ray(pending: list[Job], out: str, threads: int, bar) -> list[str]:
    try:
        import ray
    except ImportError:
        raise ValueError("backend ray needs the optional extra: pip install 'robustmsa[ray]'") from None
    ray.init(ignore_reinit_error=True)
    remote = ray.remote(num_cpus=threads)(run_job)
    refs = {remote.remote(job, out, threads): job for job in pending}
    failed = []
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        job = refs.pop(done[0])
        try:
            ray.get(done[0])
        except Exception as error:  # a lost node or worker: report, resume later
            failed.append(f"{job.describe()}: {error}".splitlines()[0])
        bar.done(job)
    return failed


def collect(out: str | Path, jobs: list[Job]) -> pd.DataFrame:
    """All stored rows of these jobs (not of other grids that share the folder). A cached job may
    have been run by another grid under another variant label (an ablation's "full" is the
    comparison table's default run), so the label is this grid's."""
    from robustmsa.evaluation.report import read_results

    frames = [read_results(job_file(out, j)).assign(variant=j.variant, dataset=j.data)
              for j in jobs if job_file(out, j).exists()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
