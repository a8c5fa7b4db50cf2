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
    assert "acc2_non0 (higher is better) on test, protocol modality, seeds [0, 1]" in out
    assert "| late_fusion |" in out and "AUILC" in out
    rows = pd.read_csv(csv, dtype={"param": str})
    assert set(rows["seed"]) == {0, 1} and set(rows["param"]) == {"0", "0.3"}
    code, out, _ = run(capsys, "eval", run_folder, "--protocol", "subset", "--values", "l;a,v", "--csv", csv)
    assert code == 0 and "| method | {text} | {audio,vision} |" in out


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


# --------------------------------------------------------------------------- one-line errors, not tracebacks


@pytest.fixture(scope="module")
def trained(small_mosi, tmp_path_factory):
    """A one-epoch late_fusion seed folder on small_mosi, trained once (copy it before damaging it)."""
    runs = tmp_path_factory.mktemp("trained")
    assert main(["train", "--method", "late_fusion", "--data", str(small_mosi), "--out", str(runs), "--quiet",
                 "train.epochs=1", "method.d=16"]) == 0
    (seed,) = runs.glob("*/seed0")
    return seed


def one_line_error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("robustmsa: error:"), err
    return lines[0]


def damaged_copy(trained, tmp_path, damage) -> str:
    import shutil

    seed = shutil.copytree(trained, tmp_path / "run" / "seed0")
    damage(seed)
    return str(seed)


def test_truncated_weights_are_one_line_in_eval_and_predict(trained, tmp_path, capsys):
    def truncate(seed):
        weights = seed / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:200])

    seed = damaged_copy(trained, tmp_path, truncate)
    for argv in (["eval", seed, "--protocol", "none"], ["predict", seed, "--text", "good"]):
        assert "model.safetensors: not a readable safetensors file" in one_line_error(capsys, *argv)


def test_config_that_does_not_match_the_weights_is_one_line(trained, tmp_path, capsys):
    import json

    def wider(seed):
        config = json.loads((seed / "config.json").read_text())
        config["method_config"]["d"] = 32
        (seed / "config.json").write_text(json.dumps(config))

    seed = damaged_copy(trained, tmp_path, wider)
    assert "weights do not match config.json" in one_line_error(capsys, "eval", seed, "--protocol", "none")


def test_malformed_config_names_the_file(trained, tmp_path, capsys):
    seed = damaged_copy(trained, tmp_path, lambda s: (s / "config.json").write_text('{"run": '))
    message = one_line_error(capsys, "eval", seed, "--protocol", "none")
    assert f"{seed}/config.json: not valid JSON" in message


def test_output_paths_that_cannot_be_written_are_refused_before_any_work(trained, small_mosi, tmp_path, capsys):
    a_file = tmp_path / "file.pkl"
    a_file.write_text("x")
    assert "is a folder; expected a file name" in one_line_error(capsys, "eval", trained, "--protocol", "none",
                                                                 "--csv", tmp_path)
    assert "is a file; expected a folder" in one_line_error(capsys, "train", "--method", "late_fusion",
                                                            "--data", small_mosi, "--out", a_file)
    assert f"{a_file} is a file, not a folder" in one_line_error(capsys, "data", "synth", "--like", "mosi",
                                                                  "--out", a_file / "x.pkl")


def test_accelerator_without_the_device_is_one_line(small_mosi, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present here")
    message = one_line_error(capsys, "train", "--method", "late_fusion", "--data", small_mosi, "--out", tmp_path,
                             "--accelerator", "cuda")
    assert "--accelerator cuda: no CUDA GPU" in message and not list(tmp_path.iterdir())


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import robustmsa.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "methods", interrupted)
    code, _, err = run(capsys, "methods")
    assert code == 130 and err.strip() == "robustmsa: interrupted"


def test_misspelled_protocol_and_metric_are_named_before_evaluating(trained, monkeypatch, capsys):
    import robustmsa.evaluation.evaluate as evaluate

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the arguments should have been refused first")

    monkeypatch.setattr(evaluate, "sweep", no_evaluation)
    message = one_line_error(capsys, "eval", trained, "--protocol", "modalty")
    assert "unknown protocol 'modalty'; expected one of none, modality, subset, frame, disrupt" in message
    message = one_line_error(capsys, "eval", trained, "--metrics", "acc2_non0,acc9")
    assert "unknown metric 'acc9'" in message and "acc2_non0" in message


def test_checkpoint_data_path_is_absolute_and_a_moved_file_asks_for_data(small_mosi, tmp_path, monkeypatch, capsys):
    import shutil

    (tmp_path / "work").mkdir()
    shutil.copy(small_mosi, tmp_path / "work" / "data.pkl")
    monkeypatch.chdir(tmp_path / "work")
    assert main(["train", "--method", "mean_impute", "--data", "data.pkl", "--out", "runs", "--quiet", "train.epochs=1"]) == 0
    (seed,) = (tmp_path / "work" / "runs").glob("*/seed0")
    monkeypatch.chdir(tmp_path)  # another folder: the recorded path still finds the data
    assert main(["eval", str(seed), "--protocol", "none", "--csv", str(tmp_path / "r.csv")]) == 0
    capsys.readouterr()
    (tmp_path / "work" / "data.pkl").rename(tmp_path / "moved.pkl")
    message = one_line_error(capsys, "eval", seed, "--protocol", "none")
    assert "data.pkl is not found from here; pass --data PATH" in message
