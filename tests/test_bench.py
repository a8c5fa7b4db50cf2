"""`robustmsa bench`: the cache, resume after a killed run, the report builder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustmsa.bench import Grid, job_file, make_grid, run_grid
from robustmsa.evaluation.report import bench_report, protocol_table, summary_table

DATA = "synthetic:mosi:n=60:seed=2"


def tiny_grid(**changes) -> Grid:
    base = dict(
        name="tiny", methods=["late_fusion", "mean_impute"], datasets=[DATA],
        protocols=["modality:0", "modality:0.3", "modality:0.6"], seeds=[0, 1],
        overrides=["train.epochs=1", "train.batch_size=16"],
        method_overrides={"late_fusion": ["method.d=16"], "mean_impute": ["method.d=16"]},
        metrics={"mosi": ["acc2_non0", "mae"]},
    )
    return Grid(**{**base, **changes})


def test_second_run_trains_and_evaluates_nothing(tmp_path, monkeypatch):
    grid = tiny_grid()
    first = run_grid(grid, tmp_path, progress=False)
    assert first.ran == 4 and first.cached == 0 and not first.failed
    assert len(first.rows) == 4 * 3 * 8  # jobs x protocol values x mosi metrics
    assert first.rows["trained"].all()
    assert (first.rows["torch_threads"] >= 1).all()
    for checkpoint, collapsed in zip(first.rows["checkpoint"], first.rows["collapsed"]):  # per run, as trained
        assert collapsed == json.loads((Path(checkpoint) / "metrics.json").read_text())["collapse_reason"]

    from robustmsa.training.trainer import Trainer

    def no_training(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(Trainer, "fit", no_training)
    second = run_grid(grid, tmp_path, progress=False)
    assert second.ran == 0 and second.cached == 4
    pd.testing.assert_frame_equal(first.rows, second.rows)
    assert (tmp_path / "results.csv").exists()


def test_a_cached_run_takes_the_label_of_the_grid_that_collects_it(tmp_path):
    run_grid(tiny_grid(seeds=[0], methods=["late_fusion"]), tmp_path, progress=False)
    ablation = tiny_grid(seeds=[0], methods=["late_fusion"], variants={"full": [], "w/o augmentation": ["method.train_missing=false"]})
    result = run_grid(ablation, tmp_path, progress=False)
    assert result.cached == 1 and result.ran == 1
    assert set(result.rows["variant"]) == {"full", "w/o augmentation"}


def test_new_seed_trains_only_the_new_runs(tmp_path):
    run_grid(tiny_grid(seeds=[0]), tmp_path, progress=False)
    grown = run_grid(tiny_grid(seeds=[0, 1]), tmp_path, progress=False)
    assert grown.ran == 2 and grown.cached == 2


def test_a_failing_run_is_reported_and_the_others_kept(tmp_path):
    grid = tiny_grid(overrides=["train.epochs=1", "method.no_such_option=1"], method_overrides={})
    result = run_grid(grid, tmp_path, progress=False)
    assert len(result.failed) == 4 and "no_such_option" in result.failed[0]



def test_data_rewritten_at_the_same_path_is_trained_again(tmp_path):
    from robustmsa.data import write_synthetic
    from robustmsa.data.io import file_sha256

    path = tmp_path / "data.pkl"
    grid = lambda: tiny_grid(datasets=[str(path)], methods=["late_fusion"], seeds=[0])  # noqa: E731
    write_synthetic("mosi", path, n=60, seed=1)
    first = run_grid(grid(), tmp_path / "bench", progress=False)
    write_synthetic("mosi", path, n=60, seed=2)  # same path, new content
    second = run_grid(grid(), tmp_path / "bench", progress=False)
    assert second.ran == 1 and second.cached == 0 and second.rows["trained"].all()
    assert set(second.rows["data_sha256"]) == {file_sha256(path)} != set(first.rows["data_sha256"])
    text, _ = bench_report(second.rows, grid(), tmp_path / "bench")
    assert f"sha256 `{file_sha256(path)}`" in text
    copy = tmp_path / "copy.pkl"  # the same content elsewhere is the same job
    copy.write_bytes(path.read_bytes())
    moved = run_grid(tiny_grid(datasets=[str(copy)], methods=["late_fusion"], seeds=[0]), tmp_path / "bench", progress=False)
    assert moved.cached == 1 and set(moved.rows["dataset"]) == {str(copy)}

@pytest.mark.parametrize("workers", [2])
def test_process_pool_gives_the_same_numbers_as_serial(tmp_path, workers):
    # mult_lite has transformer layers, whose float reductions depend on the thread count: the
    # same numbers here mean every run used the same pinned count however it was scheduled.
    grid = tiny_grid(seeds=[0], methods=["late_fusion", "mult_lite"],
                     method_overrides={"late_fusion": ["method.d=16"], "mult_lite": ["method.d=16"]})
    serial = run_grid(grid, tmp_path / "serial", progress=False).rows
    pooled = run_grid(grid, tmp_path / "pool", workers=workers, progress=False).rows
    key = ["method", "seed", "protocol", "param", "metric"]
    a, b = serial.sort_values(key).reset_index(drop=True), pooled.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["value"], b["value"], atol=1e-6)


def test_bench_resumes_after_the_process_is_killed(tmp_path):
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "robustmsa.cli", "bench", "--preset", "demo", "--data", "synthetic:mosi:n=150:seed=4",
               "--methods", "late_fusion,mean_impute", "--seeds", "0,1", "--out", str(out), "train.epochs=40", "train.patience=40"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "jobs").glob("*.csv")) and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len(list((out / "jobs").glob("*.csv")))
    assert finished_before >= 1
    grid = make_grid("demo", ["synthetic:mosi:n=150:seed=4"], ["late_fusion", "mean_impute"], [0, 1],
                     ["train.epochs=40", "train.patience=40"])
    result = run_grid(grid, out, progress=False)
    assert result.cached == finished_before and result.ran == 4 - finished_before and not result.failed
    assert all(job_file(out, job).exists() for job in grid.jobs())



@pytest.mark.slow  # two fresh interpreters plus a solo run: about a minute on 2 busy cores
def test_two_benches_on_one_folder_equal_a_solo_run(tmp_path):
    """Two real processes start the same grid on one folder at once: each seed is trained once
    (no interleaved log.jsonl), and the numbers are those of a solo run."""
    data, epochs = "synthetic:mosi:n=120:seed=5", 6
    command = [sys.executable, "-m", "robustmsa.cli", "bench", "--preset", "demo", "--data", data,
               "--methods", "late_fusion,mean_impute", "--seeds", "0", "--out", str(tmp_path / "shared"),
               f"train.epochs={epochs}", f"train.patience={epochs}", "method.d=16"]
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    logs = sorted((tmp_path / "shared" / "runs").glob("*/seed0/log.jsonl"))
    assert len(logs) == 2
    for log in logs:
        assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == list(range(1, epochs + 1))
    grid = make_grid("demo", [data], ["late_fusion", "mean_impute"], [0],
                     [f"train.epochs={epochs}", f"train.patience={epochs}", "method.d=16"])
    solo = run_grid(grid, tmp_path / "solo", progress=False).rows
    shared = pd.read_csv(tmp_path / "shared" / "results.csv")
    key = ["method", "seed", "protocol", "param", "metric"]
    a, b = solo.sort_values(key).reset_index(drop=True), shared.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["value"], b["value"], atol=1e-6)


@pytest.mark.slow
def test_ctrl_c_stops_a_parallel_bench_in_one_line(tmp_path):
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "robustmsa.cli", "bench", "--preset", "demo", "--data", "synthetic:mosi:n=150:seed=4",
               "--methods", "late_fusion,mean_impute", "--seeds", "0", "--workers", "2", "--out", str(out),
               "train.epochs=500", "train.patience=500"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("runs/*/seed0/log.jsonl"))) < 2 and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip() == "robustmsa: interrupted", err
    deadline = time.time() + 20  # the workers (and the semaphore tracker) are gone too
    with pytest.raises(ProcessLookupError):
        while time.time() < deadline:
            os.killpg(process.pid, 0)
            time.sleep(0.2)

def rows_for(curves: dict[str, list[list[float]]], rates: list[str], protocol: str = "modality") -> pd.DataFrame:
    """Tidy rows from per-method, per-seed curves of acc2_non0."""
    rows = []
    for method, seeds in curves.items():
        for seed, curve in enumerate(seeds):
            for rate, value in zip(rates, curve):
                rows.append(dict(method=method, seed=seed, protocol=protocol, param=rate, metric="acc2_non0",
                                 value=value, split="test", dataset="d.pkl", variant="", data_sha256="abc",
                                 config_hash=f"h-{method}"))
    return pd.DataFrame(rows)


def test_summary_table_mean_std_mean_over_rates_and_auilc():
    rows = rows_for({"a": [[80, 70, 60], [82, 72, 62]], "b": [[80, 80, 80], [80, 80, 80]]}, ["0", "0.5", "1"])
    table = summary_table(rows, "acc2_non0")
    assert list(table.columns) == ["0", "0.5", "1", "mean", "AUILC"]
    assert table.loc["a", "0"] == f"81.00 ± {np.std([80, 82], ddof=1):.2f}"
    assert table.loc["a", "AUILC"].startswith("71.00")  # linear curve: AUILC = mid value
    assert table.loc["b", "mean"] == "80.00 ± 0.00"


def test_subset_table_has_avg_and_complete_columns():
    rows = pd.concat([
        rows_for({"m": [[60, 40], [62, 42]]}, ["l", "a"], "subset"),
        rows_for({"m": [[90], [92]]}, [""], "none"),
    ])
    table = protocol_table(rows, "subset", "acc2_non0")
    assert list(table.columns) == ["{text}", "{audio}", "Avg", "complete"]  # the dataset's modality names
    assert table.loc["m", "Avg"].startswith("51.00") and table.loc["m", "complete"].startswith("91.00")


def test_report_has_tables_provenance_and_png_plots(tmp_path):
    rows = rows_for({"late_fusion": [[80, 70, 60], [82, 72, 62]], "mean_impute": [[81, 65, 50], [79, 63, 52]]},
                    ["0", "0.3", "0.6"])
    grid = tiny_grid()
    text, plots = bench_report(rows, grid, tmp_path, command="robustmsa bench --preset tiny")
    assert "sha256 `abc`" in text and "`h-late_fusion`" in text and "seeds: [0, 1]" in text
    assert "| late_fusion | 81.00 ± 1.41 |" in text and "AUILC" in text
    assert len(plots) == 1 and plots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plots/{plots[0].name}" in text


def test_presets_expand_and_skip_unregistered_methods():
    grid = make_grid("fsrf-table")
    assert "fsrf" in grid.skipped_methods or "fsrf" in grid.methods
    assert grid.protocols[:3] == ["subset:l", "subset:a", "subset:v"] and grid.protocols[-1] == "none"
    assert len(grid.jobs()) == len(grid.methods) * 3
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        make_grid("nope")
    with pytest.raises(KeyError, match="unknown method 'zzz'"):
        make_grid("robustness-curves", methods=["zzz"])


def test_fsrf_presets_take_the_subset_columns_of_the_datasets_own_modalities(tmp_path):
    from conftest import TINY_MODALITIES, make_tiny_dataset
    from robustmsa.data.mmsa import write_mmsa

    bimodal = write_mmsa(make_tiny_dataset(n=30, modalities=TINY_MODALITIES[:2]), tmp_path / "ta.pkl")
    for preset in ("fsrf-table", "fsrf-ablation"):
        grid = make_grid(preset, data=[str(bimodal)])
        assert grid.dataset_protocols[str(bimodal)] == ["subset:l", "subset:a", "none"]
        assert all("subset:v" not in job.protocols for job in grid.jobs())


def test_ablation_preset_is_one_table_whose_rows_are_the_variants(tmp_path):
    grid = make_grid("fsrf-ablation")
    assert list(grid.variants)[0] == "full" and len(grid.variants) == 9
    assert grid.variants["w/o DAS-KL"] == ["method.use_das_kl=false"]
    keys = {job.key for job in grid.jobs()}
    assert len(keys) == 9 * 3
    full_table = {job.key for job in make_grid("fsrf-table").jobs() if job.method == "fsrf"}
    assert full_table <= keys  # "full" is the comparison table's fsrf run: trained once for both
    rows = pd.concat([rows_for({"fsrf": [[80, 81], [82, 83]]}, ["0", "0.5"]).assign(variant=v)
                      for v in ("full", "w/o recovery")])
    text, _ = bench_report(rows, grid, tmp_path)
    assert text.count("### acc2_non0") == 1
    assert "| full | 81.00 ± 1.41 |" in text and "| w/o recovery | 81.00 ± 1.41 |" in text



def test_modality_columns_show_the_realised_rate():
    from robustmsa.evaluation.evaluate import realised
    from robustmsa.missing import Protocol

    assert [realised(Protocol.parse(f"modality:{r}"), 3) for r in ("0.5", "0.7")] == ["", "0.667"]
    assert realised(Protocol.parse("modality:0.6"), 2) == "0.5" and realised(Protocol.parse("frame:0.7"), 3) == ""
    rows = rows_for({"m": [[80, 70, 60], [82, 72, 62]]}, ["0", "0.5", "0.7"])
    rows["realised"] = rows["param"].map({"0": "", "0.5": "", "0.7": "0.667"})
    assert list(summary_table(rows, "acc2_non0").columns) == ["0", "0.5", "0.7 (0.667)", "mean", "AUILC"]


def test_report_states_direction_definitions_and_the_band(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    methods = ["late_fusion", "mean_impute", "mult_lite", "misa", "fsrf", "drf", "sslmm"]
    rows = rows_for({m: [[80 - i, 70 - i], [82 - i, 71 - i]] for i, m in enumerate(methods)}, ["0", "0.7"])
    rows = rows.assign(realised=rows["param"].map({"0": "", "0.7": "0.667"}))
    rows = pd.concat([rows, rows.assign(metric="mae", value=rows["value"] / 100)])
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    text, plots = bench_report(rows, tiny_grid(methods=methods), tmp_path)
    assert "### acc2_non0 (higher is better)" in text and "### mae (lower is better)" in text
    assert text.count("acc2_non0 / f1_non0: binary accuracy") == 1 and text.count("AUILC: area under") == 1
    assert "0.7\n(0.667)" in [t.get_text() for t in figures[0].axes[0].get_xticklabels()]
    assert len(plots) == 2 and len(figures) == 2
    axes = figures[0].axes[0]
    assert "band: ±1 std over seeds" in axes.get_title()
    styles = {line.get_label(): line.get_linestyle() for line in axes.get_lines()}
    assert styles["late_fusion (baseline)"] == styles["misa (baseline)"] == "--" and styles["fsrf"] == "-"


def test_id_like_columns_are_read_as_text(tmp_path):
    from robustmsa.evaluation.report import read_results, write_csv

    rows = rows_for({"m": [[80, 70]]}, ["0", "0.5"]).assign(config_hash="7721618e2741", data_sha256="1e5")
    back = read_results(write_csv(rows, tmp_path / "r.csv"))
    assert set(back["config_hash"]) == {"7721618e2741"} and set(back["data_sha256"]) == {"1e5"}
    assert back["value"].dtype == float and list(back["param"]) == ["0", "0.5"]

def test_ratio_ablation_preset_shares_the_table_runs(tmp_path, monkeypatch):
    grid = make_grid("sslmm-ratio-ablation")
    assert len(grid.variants) == 14 and "1.0 w/o unlabeled consistency" not in grid.variants
    assert "0.05 w/o pre-training" in grid.variants
    table = make_grid("sslmm-table", data=["synthetic:mosi"])
    assert [v.split("=")[1] for v in table.variants] == ["0.05", "0.1", "0.3", "0.5", "1.0"]
    chosen = make_grid("sslmm-table", data=["synthetic:mosi"], variants=["labeled_ratio=0.1", "labeled_ratio=0.05"])
    assert list(chosen.variants) == ["labeled_ratio=0.05", "labeled_ratio=0.1"]  # the preset's order
    assert {j.key for j in chosen.jobs()} < {j.key for j in table.jobs()}  # the same cached runs
    with pytest.raises(ValueError, match="unknown variant 'labeled_ratio=0.2'"):
        make_grid("sslmm-table", data=["synthetic:mosi"], variants=["labeled_ratio=0.2"])
    monkeypatch.chdir(tmp_path)  # no data/ here
    with pytest.raises(ValueError, match="build it first: robustmsa data build mosi-real"):
        make_grid("sslmm-table")  # its default datasets include real MOSI, which the user builds
    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.methods.base import method_class

    def resolved(job):
        return apply_overrides(RunConfig(job.method), list(job.overrides), method_class(job.method).config_class).hash("x")

    full = {resolved(j) for j in grid.jobs() if j.variant.endswith(" full")}
    assert full <= {resolved(j) for j in table.jobs() if j.method == "sslmm"}  # trained once for both


@pytest.mark.slow
def test_ray_backend_gives_the_same_numbers_as_serial(tmp_path):
    pytest.importorskip("ray", reason="the optional extra robustmsa[ray] is not installed")
    grid = tiny_grid(seeds=[0])
    serial = run_grid(grid, tmp_path / "serial", progress=False).rows
    on_ray = run_grid(grid, tmp_path / "ray", backend="ray", progress=False)
    assert on_ray.ran == 2 and not on_ray.failed
    key = ["method", "seed", "protocol", "param", "metric"]
    a, b = serial.sort_values(key).reset_index(drop=True), on_ray.rows.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["value"], b["value"], atol=1e-6)


def test_finetune_preset_puts_finetuned_rows_next_to_the_frozen_ones(tmp_path, tiny_bert, one_torch_thread):
    from robustmsa.config import RunConfig, apply_overrides
    from robustmsa.data.synthetic import write_synthetic
    from robustmsa.methods.base import method_class
    from robustmsa.training.checkpoint import load_weights

    data = str(write_synthetic("mosi", tmp_path / "mosi.pkl", n=60, seed=0))  # carries text_bert
    plain = make_grid("mosi-real-finetune", data=[data])
    assert plain.methods == ["late_fusion", "fsrf", "drf", "sslmm"] and len(plain.jobs()) == 4 * 2 * 3
    assert plain.protocols[:7] == ["none", *[f"modality:{r}" for r in ("0", "0.1", "0.2", "0.3", "0.4", "0.5")]]
    assert "subset:l,a" in plain.protocols and not any(p.startswith("textnoise") for p in plain.protocols)

    def resolved(job):
        return apply_overrides(RunConfig(job.method), list(job.overrides), method_class(job.method).config_class).hash("x")

    frozen = {resolved(j) for j in plain.jobs() if j.variant == "frozen vectors"}
    assert frozen == {resolved(j) for j in make_grid("mosi-real", data=[data], methods=plain.methods).jobs()}

    grid = make_grid("mosi-real-finetune", data=[data], methods=["late_fusion"], seeds=[0],
                     overrides=["method.d=16", f"method.text_model={tiny_bert}"])
    result = run_grid(grid, tmp_path / "out", progress=False)
    assert not result.failed
    text, _ = bench_report(result.rows, grid, tmp_path / "out")
    assert "| frozen vectors |" in text and "| fine-tuned text |" in text  # one method: rows are the variants
    tuned = result.rows[result.rows["variant"] == "fine-tuned text"]["checkpoint"].iloc[0]
    config = json.loads((Path(tuned) / "config.json").read_text())["run"]
    assert config["method_options"]["text_encoder"] == "finetune" and config["train"]["lr_schedule"] == "linear"
    assert any(".text_branch.model." in k for k in load_weights(Path(tuned) / "model.safetensors"))
