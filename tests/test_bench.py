"""`robustmsa bench`: the cache, resume after a killed run, the report builder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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
    assert list(table.columns) == ["l", "a", "Avg", "complete"]
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


def test_ratio_ablation_preset_shares_the_table_runs():
    grid = make_grid("sslmm-ratio-ablation")
    assert len(grid.variants) == 11 and "1.0 w/o unlabeled consistency" not in grid.variants
    table = make_grid("sslmm-table", data=["synthetic:mosi"])
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
