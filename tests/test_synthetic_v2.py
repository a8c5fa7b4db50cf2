"""Synthetic data version 2: each knob changes what it claims; v1 is byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from robustmsa.data import DataError, load_dataset, read_mmsa, synthesize, write_synthetic
from robustmsa.data.io import file_sha256
from robustmsa.data.synthetic import LIKES, _generate_version
from robustmsa.data.synthetic_v2 import Knobs

# sha256 of files written before version 2 existed (n=40, seed=1): v1 must never drift
V1_MOSI_SHA256 = "29dc1e27249ffe9ac1c02b1976551a3444466e04ee7d36559688b21e122030c0"
V1_MVSA_TEXT_SHA256 = "6b5cb3341961a86f70841b31c314c59e1d5fdc5ae46fa580cd46bcfa595561c4"


def world(like: str = "mosi", n: int = 400, seed: int = 0, **knobs):
    return _generate_version(LIKES[like], n, seed, 2, Knobs(**knobs))


def train_test(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(rows)
    return order[: rows * 2 // 3], order[rows * 2 // 3 :]


def ridge_r2(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> float:
    """Held-out R^2 of a closed-form ridge on standardized x (a third of the rows held out)."""
    train, test = train_test(len(y))
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-8
    z = (x - mean) / std
    gram = z[train].T @ z[train] + alpha * np.eye(z.shape[1])
    weights = np.linalg.solve(gram, z[train].T @ (y[train] - y[train].mean()))
    residual = y[test] - (z[test] @ weights + y[train].mean())
    return float(1 - residual.var() / y[test].var())


def masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (x * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)[:, None]


# --------------------------------------------------------------------------- versions and bytes


def test_version_1_is_byte_for_byte_unchanged(tmp_path):
    assert file_sha256(write_synthetic("mosi", tmp_path / "m.pkl", n=40, seed=1, version=1)) == V1_MOSI_SHA256
    folder = write_synthetic("mvsa", tmp_path / "mvsa", n=40, seed=1, version=1)
    assert hashlib.sha256((folder / "features" / "text.npz").read_bytes()).hexdigest() == V1_MVSA_TEXT_SHA256
    assert not (folder / "metadata.json").exists()


def test_version_2_is_the_default_same_seed_same_bytes(tmp_path):
    first = write_synthetic("mosi", tmp_path / "a.pkl", n=40, seed=1)
    second = write_synthetic("mosi", tmp_path / "b.pkl", n=40, seed=1, version=2)
    assert file_sha256(first) == file_sha256(second) != V1_MOSI_SHA256
    assert file_sha256(write_synthetic("mosi", tmp_path / "c.pkl", n=40, seed=2)) != file_sha256(first)


@pytest.mark.parametrize("like", ["mosi", "mvsa"])
def test_knobs_are_recorded_in_the_file_and_name_the_source(tmp_path, like):
    knobs = Knobs(events=3, low_quality=0.5)
    target = tmp_path / (like if like == "mvsa" else f"{like}.pkl")
    read = load_dataset(write_synthetic(like, target, n=40, seed=1, knobs=knobs))
    recorded = read.metadata["synthetic"]
    assert recorded["version"] == 2 and recorded["knobs"]["events"] == 3 and recorded["knobs"]["low_quality"] == 0.5
    made = synthesize(like, n=40, seed=1, knobs=knobs)
    assert made.source == f"synthetic:{like}:n=40:seed=1:v=2:events=3:low_quality=0.5"
    again = load_dataset(made.source)
    np.testing.assert_array_equal(again["train"].features["text"], made["train"].features["text"])
    assert synthesize(like, n=40, seed=1, version=1).source == f"synthetic:{like}:n=40:seed=1"


def test_bad_versions_and_knobs_are_one_line_errors():
    with pytest.raises(ValueError, match="version 3"):
        synthesize("mosi", n=40, version=3)
    with pytest.raises(ValueError, match="version 1 has no knobs"):
        synthesize("mosi", n=40, version=1, knobs=Knobs(events=3))
    with pytest.raises(ValueError, match="low_quality=1.5"):
        Knobs(low_quality=1.5)
    with pytest.raises(DataError, match="synthetic:mosi:n=40:v=2:loudness=2: unknown synthetic v2 knob 'loudness'"):
        load_dataset("synthetic:mosi:n=40:v=2:loudness=2")


# --------------------------------------------------------------------------- each knob does what it claims


def frame_noise_energy(w, modality: str) -> np.ndarray:
    """Per sample: mean squared frame-to-frame difference, per dimension scaled by its median
    (differences cancel the offset and the slow nuisance, so what is left is mostly frame noise)."""
    x, lengths = w.features[modality], w.lengths[modality]
    diff = np.diff(x, axis=1) ** 2
    valid = np.arange(x.shape[1] - 1)[None, :] < (lengths - 1)[:, None]
    energy = masked_mean(diff, valid)
    return (energy / np.median(energy, axis=0)).mean(axis=1)


def test_low_quality_fraction_changes_per_sample_noise_energy():
    clean = frame_noise_energy(world(low_quality=0.0, noise_gain=3.0), "audio")
    mixed = frame_noise_energy(world(low_quality=0.6, noise_gain=3.0), "audio")
    assert (clean > 4).mean() == 0
    # a sample's audio is pure noise with probability 0.6 (low) * 1/3 (audio drawn) * 1/2 (noise)
    assert 0.05 < (mixed > 4).mean() < 0.16
    recorded = world(low_quality=0.6).metadata["synthetic"]["low_quality_samples"]
    assert 0.6 * 400 * 0.8 < sum(recorded.values()) < 0.6 * 400 * 1.2


def test_frames_outside_the_events_carry_no_label_signal():
    w = world("mosi", n=900, low_quality=0.0, interaction=0.0)
    valid = np.arange(w.features["audio"].shape[1])[None, :] < w.lengths["audio"][:, None]
    inside, outside = w.events["audio"], valid & ~w.events["audio"]
    assert inside.any(axis=1).all() and (inside.sum(axis=1) < 0.3 * w.lengths["audio"]).all()
    x = w.features["audio"].astype(np.float64)
    assert ridge_r2(masked_mean(x, inside), w.score) > 0.15
    assert abs(ridge_r2(masked_mean(x, outside), w.score)) < 0.03


def test_event_width_sets_the_share_of_cue_frames():
    narrow, wide = world(event_width=0.05, events=2), world(event_width=0.25, events=2)
    share = lambda w: (w.events["vision"].sum(axis=1) / w.lengths["vision"]).mean()  # noqa: E731
    assert share(narrow) < 0.11 < 0.3 < share(wide) <= 0.5


def components(x: np.ndarray, k: int) -> np.ndarray:
    """The top-k principal components of pooled features: the latent is low-rank, the rest noise."""
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    _, vectors = np.linalg.eigh(z.T @ z)
    return z @ vectors[:, -k:]


def pooled_linear_gap(interaction: float) -> float:
    """Held-out R^2 of the latent score: ridge on pooled text+vision components plus their
    pairwise products, minus ridge on the components alone."""
    w = world("mosi", n=1500, seed=3, low_quality=0.0, interaction=interaction)
    # 64 feature dims span each modality's rank-10 latent (a Gaussian projection of it)
    parts = [components(w.features[m][:, :, :64].sum(axis=1) / w.lengths[m][:, None], 10) for m in ("text", "vision")]
    linear = np.hstack(parts)
    products = (parts[0][:, :, None] * parts[1][:, None, :]).reshape(len(linear), -1)
    return ridge_r2(np.hstack([linear, products]), w.score) - ridge_r2(linear, w.score)


def test_interaction_weight_decides_whether_pooled_linear_is_optimal():
    assert pooled_linear_gap(0.0) < 0.02
    assert pooled_linear_gap(1.5) > 0.2


def test_single_vector_modalities_keep_quality_and_interaction():
    w = world("mvsa", n=300, low_quality=0.5)
    assert w.events["image"].all() and w.metadata["synthetic"]["interaction_pair"] == ["text", "image"]
    assert json.dumps(w.metadata)  # JSON-able, as metadata.json needs
