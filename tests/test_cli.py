"""The `robustmsa` command as a user meets it: outputs, files, and one-line errors (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from robustmsa.cli import main


@pytest.fixture(scope="module")
def small_mosi(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "mosi.pkl"
    assert main(["data", "synth", "--like", "mosi", "--out", str(path), "--n", "90", "--seed", "1"]) == 0
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_methods_lists_every_baseline(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0
    for name in ("late_fusion", "mean_impute", "mult_lite", "misa"):
        assert name in out


def test_data_info(small_mosi, capsys):
    code, out, _ = run(capsys, "data", "info", small_mosi)
    assert code == 0
    assert "train" in out and "valid" in out and "test" in out
    assert "768" in out and "audio" in out and "vision" in out


def test_train_then_eval_writes_table_and_csv(small_mosi, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, _ = run(capsys, "train", "--method", "late_fusion", "--data", small_mosi, "--out", runs,
                       "--seeds", "0,1", "--quiet", "train.epochs=2", "method.d=16")
    assert code == 0 and out.count("late_fusion seed") == 2
    code, out, _ = run(capsys, "train", "--method", "late_fusion", "--data", small_mosi, "--out", runs,
                       "--seeds", "0,1", "--quiet", "train.epochs=2", "method.d=16")
    assert out.count("already trained") == 2  # same config, same folder: nothing retrained
    (run_folder,) = runs.iterdir()
    csv = tmp_path / "res.csv"
    code, out, _ = run(capsys, "eval", run_folder, "--protocol", "modality", "--values", "0,0.3", "--csv", csv)
    assert code == 0
    assert "acc2_non0 on test, protocol modality, seeds [0, 1]" in out
    assert "| late_fusion |" in out and "AUILC" in out
    rows = pd.read_csv(csv, dtype={"param": str})
    assert set(rows["seed"]) == {0, 1} and set(rows["param"]) == {"0", "0.3"}
    code, out, _ = run(capsys, "eval", run_folder, "--protocol", "subset", "--values", "l;a,v", "--csv", csv)
    assert code == 0 and "| method | l | a,v |" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--method", "nope", "--data", "{data}"], "unknown method 'nope'; available:"),
        (["train", "--method", "misa", "--data", "{data}", "train.epoch=3"], "unknown option 'train.epoch'"),
        (["train", "--method", "misa", "--data", "{data}", "method.d=big"], "option method.d='big': expected int"),
        (["train", "--method", "misa", "--data", "{data}", "labeled_ratio=2"], "labeled_ratio must be in (0, 1]"),
        (["train", "--method", "misa", "--data", "/no/such/file.pkl"], "/no/such/file.pkl"),
        (["data", "info", "/no/such/file.pkl"], "/no/such/file.pkl"),
        (["eval", "/no/such/run"], "/no/such/run: no checkpoint"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(argv, message, small_mosi, capsys):
    code, _, err = run(capsys, *[a.replace("{data}", str(small_mosi)) for a in argv])
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("robustmsa: error:") and message in lines[0]


def test_protocol_out_of_range_is_a_one_line_error(small_mosi, tmp_path, capsys):
    runs = tmp_path / "runs"
    run(capsys, "train", "--method", "mean_impute", "--data", small_mosi, "--out", runs, "--quiet", "train.epochs=1")
    (run_folder,) = runs.iterdir()
    for protocol, values, message in [("modality", "1.5", "outside"), ("frame", "-0.1", "outside"),
                                      ("subset", "x", "unknown modality 'x'"), ("nosuch", "1", "unknown protocol")]:
        code, _, err = run(capsys, "eval", run_folder, "--protocol", protocol, "--values", values)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_demo_runs_end_to_end_on_a_small_set(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", "--out", tmp_path, "--n", "90", "--seeds", "0", "--epochs", "1", "--workers", "1")
    assert code == 0
    assert "| late_fusion |" in out and "| mean_impute |" in out and "0.7" in out
    assert (tmp_path / "results.csv").exists() and (tmp_path / "report.md").exists()
    assert list((tmp_path / "plots").glob("*.png"))


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "robustmsa.cli", "methods"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "misa" in result.stdout


def test_every_option_has_help():
    import argparse

    from robustmsa.cli import _parser

    def silent(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from silent(sub, f"{path} {name}")
            elif action.help is None:
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(silent(_parser(), "robustmsa")) == []


def test_method_summaries_are_whole_sentences(capsys):
    from robustmsa.cli import first_sentence

    _, out, _ = run(capsys, "methods")
    summaries = [line.split(None, 1)[1] for line in out.splitlines() if not line.startswith(" ")]
    assert len(summaries) >= 4 and all(s.endswith(".") and s.count("(") == s.count(")") for s in summaries)
    assert first_sentence("A model (Smith et al. 2020) that\n  spans lines. Details follow.") == \
        "A model (Smith et al. 2020) that spans lines."
