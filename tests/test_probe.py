"""`data probe`: masked-mean pooling, ridge against a hand-computed solution, valid-only selection."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_MODALITIES, make_tiny_dataset
from robustmsa.cli import main
from robustmsa.evaluation.probe import RIDGE_ALPHAS, fit_linear, pooled, probe_dataset


def _hand_ridge(x_train, y_train, x_other, alpha):
    """Closed-form ridge with an unpenalized intercept, on train-standardized inputs."""
    mean, std = x_train.mean(0), x_train.std(0)
    std[std < 1e-12] = 1.0
    z, z_other = (x_train - mean) / std, (x_other - mean) / std
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y_train - y_train.mean()))
    return z_other @ w + y_train.mean()


def test_pooled_is_the_mean_over_valid_frames_only():
    split = make_tiny_dataset(n=8)["train"]
    x = split.features["audio"]
    x[0, split.lengths["audio"][0]:] = 99.0  # padding must not count
    got = pooled(split, "audio")
    for i in range(3):
        np.testing.assert_allclose(got[i], x[i, :split.lengths["audio"][i]].mean(0), rtol=1e-6)


def test_linear_probe_matches_a_hand_computed_ridge_chosen_on_valid():
    rng = np.random.default_rng(0)
    w = rng.normal(size=5)
    x = {s: rng.normal(size=(n, 5)) * [1, 10, 0.1, 1, 3] + 2 for s, n in (("train", 40), ("valid", 20), ("test", 20))}
    y = {s: np.clip(x[s] @ w * 0.3 + rng.normal(size=len(x[s])), -3, 3) for s in x}
    fitted = fit_linear("mosi", x["train"], y["train"], x["valid"], y["valid"], x["test"])
    valid_mae = [np.abs(_hand_ridge(x["train"], y["train"], x["valid"], a) - y["valid"]).mean() for a in RIDGE_ALPHAS]
    best = RIDGE_ALPHAS[int(np.argmin(valid_mae))]
    assert fitted.regularization == best  # chosen on valid, by MAE
    assert fitted.valid_score == pytest.approx(min(valid_mae), rel=1e-6)
    np.testing.assert_allclose(fitted.test_pred, _hand_ridge(x["train"], y["train"], x["test"], best), rtol=1e-6, atol=1e-8)


def test_probe_table_rows_learn_and_test_never_chooses():
    dataset = make_tiny_dataset(n=60, modalities=TINY_MODALITIES[:2])
    table = probe_dataset(dataset, ("linear", "mlp"))
    assert list(zip(table["probe"], table["features"])) == [
        (k, f) for k in ("linear", "mlp") for f in ("text", "audio", "all")]
    assert table.loc[table["features"] == "all", "dim"].tolist() == [8 + 4] * 2
    assert (table["acc2_non0"] > 70).all(), table  # every modality carries the planted signal
    # Scrambling the test labels changes the scores but not the choices made on valid.
    scrambled = make_tiny_dataset(n=60, modalities=TINY_MODALITIES[:2])
    scrambled["test"].labels = scrambled["test"].labels[::-1].copy()
    again = probe_dataset(scrambled, ("linear",))
    np.testing.assert_array_equal(again["reg"], table["reg"][:3])
    assert (again["acc2_non0"] < table["acc2_non0"][:3]).all()


def test_classification_probe_and_cli(tmp_path, capsys):
    from robustmsa.data.mmsa import write_mmsa

    table = probe_dataset(make_tiny_dataset(n=60, modalities=TINY_MODALITIES[:1], classification=True))
    assert {"acc", "f1"} <= set(table.columns) and (table["acc"] > 50).all()
    path = write_mmsa(make_tiny_dataset(n=30), tmp_path / "tiny.pkl")
    assert main(["data", "probe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "penalty chosen on valid mae" in out
    assert "| probe | features | dim | acc2_non0 | f1_non0 | mae | corr | reg | valid mae |" in out
    assert out.count("| linear |") == 4  # three modalities and all together
    assert main(["data", "probe", str(tmp_path / "nope.pkl")]) == 2


def test_mlp_pca_probe_sees_each_modalitys_leading_components():
    from robustmsa.evaluation.probe import principal_components

    rng = np.random.default_rng(0)
    latent = rng.normal(size=400)
    x = latent[:, None] * rng.normal(size=300)[None, :] + rng.normal(size=(400, 300))
    first, = principal_components(x, k=1)
    assert abs(np.corrcoef(first[:, 0], latent)[0, 1]) > 0.95  # the planted direction, out of 300 noisy dims
    dataset = make_tiny_dataset(n=60, modalities=TINY_MODALITIES[:2])
    table = probe_dataset(dataset, ("mlp_pca",))
    assert table["dim"].tolist() == [8, 4, 12]  # min(12, dim) per modality, then all of them
    assert (table["acc2_non0"] > 70).all(), table


def test_propagation_keeps_labeled_rows_and_spreads_labels_along_the_graph():
    from robustmsa.evaluation.label_headroom import propagate

    rng = np.random.default_rng(0)
    centers = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    cluster = np.repeat([0, 1], 30)
    x = centers[cluster] + rng.normal(scale=0.3, size=(60, 3))
    clamped = np.zeros(60, dtype=bool)
    clamped[[0, 30]] = True
    f = propagate(x, np.zeros(60), clamped, np.array([2.0, -2.0]), anchor=0.1)
    assert f[0] == 2.0 and f[30] == -2.0  # labeled rows hold their labels
    assert (f[1:30] > 0.3).all() and (f[31:] < -0.3).all()  # each cluster takes its one label
    # Classification: one-hot values on (N, C) priors, rows stay distributions.
    probs = propagate(x, np.full((60, 2), 0.5), clamped, np.eye(2))
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (probs[1:30, 0] > 0.5).all() and (probs[31:, 1] > 0.5).all()


def test_label_headroom_uses_the_trainers_labeled_rows_and_test_never_chooses():
    from robustmsa.evaluation.label_headroom import ARMS, label_headroom
    from robustmsa.missing import labeled_mask

    dataset = make_tiny_dataset(n=90, modalities=TINY_MODALITIES[:2])
    table = label_headroom(dataset, ratios=(0.2,), seeds=(0, 1))
    assert list(table["arm"]) == list(ARMS) * 2
    expected = int(labeled_mask(dataset["train"].labels, 0.2, 0, "mosi").sum())
    assert set(table.loc[table["arm"] != "all labels", "labeled"]) == {expected}
    assert set(table.loc[table["arm"] == "all labels", "labeled"]) == {90}
    assert (table["valid acc2_non0"] > 65).all(), table  # every arm learns the planted signal
    best = table.groupby("arm")["valid mae"].mean()
    assert best["all labels"] < best["labeled"]  # more labels, less error: the room the probe measures
    scrambled = make_tiny_dataset(n=90, modalities=TINY_MODALITIES[:2])
    scrambled["test"].labels = scrambled["test"].labels[::-1].copy()
    again = label_headroom(scrambled, ratios=(0.2,), seeds=(0, 1))
    np.testing.assert_allclose(again["valid mae"], table["valid mae"])  # choices do not see test


def test_label_headroom_cli_and_its_errors(tmp_path, capsys):
    from robustmsa.data.mmsa import write_mmsa

    path = write_mmsa(make_tiny_dataset(n=60), tmp_path / "tiny.pkl")
    assert main(["data", "probe", str(path), "--labeled-ratios", "0.25", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "| ratio | arm | labeled rows | seeds | valid acc2_non0 | valid mae | test acc2_non0 | test mae |" in out
    assert out.count("| 0.25 |") == 4
    assert main(["data", "probe", str(path), "--labeled-ratios", "1.5"]) == 2
    assert "labeled_ratio 1.5 outside (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "probe", str(path), "--labeled-ratios", "half"])
