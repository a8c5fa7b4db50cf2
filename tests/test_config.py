"""Configuration layering: defaults < key=value; every bad option is a one-line error."""

from __future__ import annotations

import dataclasses

import pytest

from robustmsa.config import ConfigError, RunConfig, apply_overrides
from robustmsa.methods.base import method_class


def apply(*overrides, method="late_fusion"):
    return apply_overrides(RunConfig(method), list(overrides), method_class(method).config_class)


def test_sections_and_bare_keys_are_typed():
    run = apply("train.epochs=7", "method.d=32", "labeled_ratio=0.5", "lr=0.01", "train_missing=false")
    assert run.train.epochs == 7 and run.train.lr == 0.01
    assert run.method_options == {"d": 32, "train_missing": False}
    assert run.data.labeled_ratio == 0.5


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", r"unknown option 'train.epoch'; train options: .*epochs"),
        ("nosuch=3", r"unknown option 'nosuch'; known: "),
        ("model.d=3", r"unknown option 'model.d': sections are train, data, method"),
        ("train.epochs=three", r"option train.epochs='three': expected int"),
        ("train_missing=maybe", r"option train_missing='maybe': expected bool"),
        ("labeled_ratio=1.5", r"data.labeled_ratio must be in \(0, 1\], got 1.5"),
        ("labeled_ratio=0", r"data.labeled_ratio must be in \(0, 1\], got 0.0"),
        ("train.epochs=0", r"train.epochs must be >= 1, got 0"),
        ("epochs", r"override 'epochs': expected key=value"),
        ("train.lr_schedule=cosine", r"train.lr_schedule must be one of constant, linear, got 'cosine'"),
        ("train.warmup=1", r"train.warmup must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        apply(override)
    assert "\n" not in str(info.value)


def test_hash_ignores_nothing_that_matters():
    a, b = apply("train.epochs=7"), apply("train.epochs=7")
    assert a.hash("x") == b.hash("x")
    assert a.hash("x") != apply("train.epochs=8").hash("x")
    assert a.hash("x") != a.hash("y")  # other data, other run folder
    assert RunConfig.from_dict(a.to_dict()).to_dict() == a.to_dict()


@pytest.mark.parametrize("option", ["method.d=0", "method.d=-4", "method.heads=0", "method.segments=0"])
def test_non_positive_sizes_are_one_line_errors(option):
    with pytest.raises(ConfigError, match=rf"^{option.split('=')[0]} must be >= 1, got -?\d+$"):
        apply(option, method="sslmm")


def test_a_size_may_declare_its_own_floor():
    assert apply("method.rampup_steps=0", method="sslmm").method_options["rampup_steps"] == 0
    with pytest.raises(ConfigError, match="method.rampup_steps must be >= 0"):
        apply("method.rampup_steps=-1", method="sslmm")


def test_a_late_option_at_its_default_keeps_the_runs_made_before_it():
    """lr_schedule / warmup came after runs were cached: at their defaults the run folder and the
    bench job key are unchanged; set, they are a new run. (Values recorded when method defaults
    entered the hash, the change before them that renamed every run.)"""
    from robustmsa.bench import Job

    assert RunConfig("late_fusion").hash("x") == "cde4f738624b"
    assert Job("late_fusion", "synthetic:mosi", "", (), 0, ("none",)).key == "a009bdfe119cb992"
    linear = apply("train.lr_schedule=linear")
    assert linear.hash("x") != "cde4f738624b" and apply("train.warmup=0.2").hash("x") != "cde4f738624b"
    assert RunConfig.from_dict(linear.to_dict()).train.lr_schedule == "linear"


def test_a_changed_method_default_is_a_new_run_and_naming_the_default_is_the_same_run(monkeypatch):
    """Run folders and bench job keys hash the method's resolved options: a default changed in a
    new version retrains instead of silently reusing runs made under the old one."""
    from robustmsa.bench import Job

    fsrf = method_class("fsrf")
    default = fsrf.config_class().das_align
    other = "cosine" if default != "cosine" else "symmetric"
    run, key = RunConfig("fsrf").hash("x"), Job("fsrf", "synthetic:mosi", "", (), 0, ("none",)).key
    assert RunConfig("fsrf", {"das_align": default}).hash("x") == run
    assert RunConfig("fsrf", {"das_align": other}).hash("x") != run
    changed = dataclasses.make_dataclass("Changed", [("das_align", str, dataclasses.field(default=other))],
                                         bases=(fsrf.config_class,))
    monkeypatch.setattr(fsrf, "config_class", changed)
    assert RunConfig("fsrf").hash("x") != run
    assert Job("fsrf", "synthetic:mosi", "", (), 0, ("none",)).key != key
