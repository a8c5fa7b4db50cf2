"""Data readers, writers and the synthesizer: round trips, every refusal, and the planted structure."""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from robustmsa.data import (
    REGRESSION_MOSI,
    REGRESSION_SIMS,
    SPLITS,
    DataError,
    describe,
    load_dataset,
    read_imagetext,
    read_mmsa,
    synthesize,
    write_imagetext,
    write_mmsa,
    write_synthetic,
)
from robustmsa.data.io import atomic_write, atomic_write_bytes, file_sha256

# --------------------------------------------------------------------------- helpers


def tiny_mmsa(seed: int = 0, sizes=(8, 4, 4), dims=(("text", 6, 12), ("audio", 7, 5), ("vision", 9, 4))) -> dict:
    """A small hand-made MMSA dict (unaligned layout), so each error case is one edit away."""
    rng = np.random.default_rng(seed)
    raw = {}
    for split, n in zip(SPLITS, sizes):
        table = {"id": [f"vid{split}$_${i}" for i in range(n)], "raw_text": [f"clip {i}" for i in range(n)]}
        for m, max_len, dim in dims:
            lengths = rng.integers(2, max_len + 1, n)
            x = rng.standard_normal((n, max_len, dim)).astype(np.float32) + 3.0  # no accidental zeros
            x[np.arange(max_len)[None, :] >= lengths[:, None]] = 0.0
            table[m] = x
            if m != "text":
                table[f"{m}_lengths"] = [int(v) for v in lengths]
        table["regression_labels"] = rng.uniform(-3, 3, n).astype(np.float32)
        raw[split] = table
    return raw


def dump(raw: object, path: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump(raw, f)
    return path


def where(path: Path, split: str, key: str) -> str:
    """Regex prefix of a DataError message: file, split and key, in that order."""
    return f"{re.escape(path.name)}.*split '{split}' key '{key}'"


def pooled(split, modality: str) -> np.ndarray:
    x, lengths = split.features[modality], split.lengths[modality]
    return x.sum(axis=1) / np.maximum(lengths, 1)[:, None]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("like", ["mosi", "mosei", "sims", "mvsa"])
def test_write_then_read_gives_the_synthesized_dataset(tmp_path, like):
    target = tmp_path / (like if like == "mvsa" else f"{like}.pkl")
    path = write_synthetic(like, target, n=60, seed=3)
    read = load_dataset(path)
    made = synthesize(like, n=60, seed=3)

    assert read.spec.modalities == made.spec.modalities
    assert read.spec.label == made.spec.label
    for split in SPLITS:
        a, b = read[split], made[split]
        assert a.ids == b.ids and a.raw_text == b.raw_text
        np.testing.assert_array_equal(a.labels, b.labels)
        for m in read.spec.modality_names:
            np.testing.assert_array_equal(a.features[m], b.features[m])
            np.testing.assert_array_equal(a.lengths[m], b.lengths[m])
        assert a.extra_labels.keys() == b.extra_labels.keys()
    assert sum(len(read[s]) for s in SPLITS) == 60
    assert len(read.source_hash) == 64
    if path.is_file():
        assert read.source_hash == file_sha256(path)


def test_synthetic_shapes_and_label_families():
    mosi, sims, mvsa = synthesize("mosi", n=40), synthesize("sims", n=40), synthesize("mvsa", n=40)
    assert [(m.name, m.max_len, m.dim) for m in mosi.spec.modalities] == [
        ("text", 50, 768),
        ("audio", 375, 5),
        ("vision", 500, 20),
    ]
    assert [(m.name, m.max_len, m.dim) for m in sims.spec.modalities] == [
        ("text", 39, 768),
        ("audio", 400, 33),
        ("vision", 55, 709),
    ]
    assert mosi.spec.label == REGRESSION_MOSI and sims.spec.label == REGRESSION_SIMS
    assert mvsa.spec.label.classes == ("negative", "neutral", "positive")
    assert set(sims["train"].extra_labels) == {"text", "audio", "vision"}
    sims_labels = np.concatenate([sims[s].labels for s in SPLITS])
    assert np.abs(sims_labels).max() <= 1 and np.allclose(sims_labels * 5, np.rint(sims_labels * 5), atol=1e-4)
    for split in mosi.splits.values():  # zero padded beyond the stored lengths
        for m, x in split.features.items():
            beyond = np.arange(x.shape[1])[None, :] >= split.lengths[m][:, None]
            assert not x[beyond].any() and (split.lengths[m] > 0).all()


def test_mmsa_ids_text_bert_and_unaligned_keys(tmp_path):
    path = write_synthetic("sims", tmp_path, n=40)
    with open(path, "rb") as f:
        raw = pickle.load(f)
    train = raw["train"]
    assert {"id", "raw_text", "text", "text_bert", "audio", "vision", "audio_lengths", "vision_lengths"} <= set(train)
    assert {"regression_labels", "regression_labels_T", "regression_labels_A", "regression_labels_V"} <= set(train)
    assert all("$_$" in i for i in train["id"])
    assert train["text_bert"].shape == (len(train["id"]), 3, 39)
    np.testing.assert_array_equal(read_mmsa(path)["train"].lengths["text"], train["text_bert"][:, 1].sum(axis=1))


def test_determinism():
    a, b, c = synthesize("mosi", n=50, seed=7), synthesize("mosi", n=50, seed=7), synthesize("mosi", n=50, seed=8)
    for m in a.spec.modality_names:
        np.testing.assert_array_equal(a["train"].features[m], b["train"].features[m])
        assert not np.array_equal(a["train"].features[m], c["train"].features[m])
    np.testing.assert_array_equal(a["test"].labels, b["test"].labels)
    assert a["train"].ids == b["train"].ids and a["train"].ids != c["train"].ids


def test_same_seed_same_bytes(tmp_path):
    first = write_synthetic("mosi", tmp_path / "a.pkl", n=40, seed=1)
    second = write_synthetic("mosi", tmp_path / "b.pkl", n=40, seed=1)
    assert file_sha256(first) == file_sha256(second)


def test_write_mmsa_round_trips_a_dataset(tmp_path):
    made = synthesize("sims", n=40, seed=2)
    read = read_mmsa(write_mmsa(made, tmp_path / "copy.pkl"))
    for split in SPLITS:
        for m in made.spec.modality_names:
            np.testing.assert_array_equal(read[split].features[m], made[split].features[m])
            np.testing.assert_array_equal(read[split].lengths[m], made[split].lengths[m])
        np.testing.assert_array_equal(read[split].extra_labels["audio"], made[split].extra_labels["audio"])
    assert read.spec.name == "copy" and read.spec.label == REGRESSION_SIMS


# --------------------------------------------------------------------------- MMSA: what is read


def test_two_modality_pickle(tmp_path):
    raw = tiny_mmsa(dims=(("text", 6, 12), ("audio", 7, 5)))
    ds = read_mmsa(dump(raw, tmp_path / "ta.pkl"))
    assert ds.spec.modality_names == ("text", "audio")
    assert ds.spec.modality("audio").dim == 5 and ds.spec.modality("audio").max_len == 7


def test_lengths_from_text_bert_lengths_keys_and_last_frame(tmp_path):
    raw = tiny_mmsa()
    train = raw["train"]
    mask = np.zeros((8, 6), dtype=np.int64)
    mask[:, :3] = 1
    train["text_bert"] = np.stack([mask * 7, mask, np.zeros_like(mask)], axis=1)
    train["audio_lengths"] = [99] * 8  # longer than the array: clipped to max_len
    expected_vision = np.asarray(train["vision_lengths"])
    del train["vision_lengths"]  # then: up to the last non-zero frame
    ds = read_mmsa(dump(raw, tmp_path / "len.pkl"))
    np.testing.assert_array_equal(ds["train"].lengths["text"], np.full(8, 3))
    assert not ds["train"].features["text"][:, 3:].any()  # features past the mask are zeroed
    np.testing.assert_array_equal(ds["train"].lengths["audio"], np.full(8, 7))
    np.testing.assert_array_equal(ds["train"].lengths["vision"], expected_vision)


def test_label_spec_from_values(tmp_path):
    raw = tiny_mmsa()
    for table in raw.values():
        table["regression_labels"] = np.clip(table["regression_labels"], -1, 1)
        table["regression_labels_T"] = table["regression_labels"].copy()
    ds = read_mmsa(dump(raw, tmp_path / "sims_like.pkl"))
    assert ds.spec.label == REGRESSION_SIMS and "text" in ds["valid"].extra_labels
    assert read_mmsa(dump(tiny_mmsa(), tmp_path / "mosi_like.pkl")).spec.label == REGRESSION_MOSI


def test_infinite_audio_becomes_zero_with_one_warning(tmp_path):
    raw = tiny_mmsa()
    raw["train"]["audio"][0, 0, :3] = -np.inf
    raw["train"]["audio"][1, 1, 0] = np.inf
    raw["test"]["audio"][2, 0, :3] = -np.inf
    path = dump(raw, tmp_path / "inf.pkl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = read_mmsa(path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "inf.pkl" in message and "replaced 7 " in message
    assert ds["train"].features["audio"][0, 0, :3].tolist() == [0.0, 0.0, 0.0]
    assert np.isfinite(ds["test"].features["audio"]).all()


def test_clean_file_reads_without_warnings(tmp_path):
    path = dump(tiny_mmsa(), tmp_path / "clean.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_mmsa(path)


# --------------------------------------------------------------------------- MMSA: what is refused


def _missing(raw, split, key):
    del raw[split][key]


def _set(split, key, value_of):
    def edit(raw):
        raw[split][key] = value_of(raw[split][key])

    return edit


def _dim74(x):
    return np.zeros((x.shape[0], x.shape[1], 74), dtype=np.float32)


def _longer(x):
    return np.zeros((x.shape[0], x.shape[1] + 2, x.shape[2]), dtype=np.float32)


def _with_nan(x):
    x = x.copy()
    x[1, 0, 0] = np.nan
    return x


def _label_at(value):
    def edit(y):
        y = y.copy()
        y[2] = value
        return y

    return edit


def _add_flat_text_bert(raw):
    raw["valid"]["text_bert"] = np.ones((4, 6), dtype=np.int64)


REFUSED = [
    ("missing id", lambda raw: _missing(raw, "test", "id"), "test", "id", "missing"),
    ("missing labels", lambda raw: _missing(raw, "valid", "regression_labels"), "valid", "regression_labels", "missing"),
    ("modality only in train", lambda raw: _missing(raw, "test", "vision"), "test", "vision", r"missing \(present in train\)"),
    ("row mismatch", _set("valid", "audio", lambda x: x[:-1]), "valid", "audio", r"expected 4 rows \(as key 'id'\), got 3"),
    ("raw_text rows", _set("train", "raw_text", lambda t: t[:-2]), "train", "raw_text", "expected 8 rows"),
    ("length rows", _set("test", "vision_lengths", lambda v: v + [3]), "test", "vision_lengths", "expected 4 rows"),
    ("dim mismatch", _set("valid", "audio", _dim74), "valid", "audio", r"expected feature dim 5 \(as in train\), got 74"),
    ("max_len mismatch", _set("test", "vision", _longer), "test", "vision", r"expected max_len 9 \(as in train\), got 11"),
    ("NaN feature", _set("valid", "text", _with_nan), "valid", "text", "NaN"),
    ("NaN label", _set("train", "regression_labels", _label_at(np.nan)), "train", "regression_labels", "NaN"),
    ("label range", _set("test", "regression_labels", _label_at(4.5)), "test", "regression_labels", r"\[-3, 3\], got 4.5 at row 2"),
    ("2-D features", _set("train", "audio", lambda x: x[:, 0, :]), "train", "audio", r"expected a 3-D array"),
    ("text_bert shape", _add_flat_text_bert, "valid", "text_bert", r"expected shape \(4, 3, L\)"),
]


@pytest.mark.parametrize("case, edit, split, key, expectation", REFUSED, ids=[r[0] for r in REFUSED])
def test_mmsa_refusals_name_file_split_and_key(tmp_path, case, edit, split, key, expectation):
    raw = tiny_mmsa()
    edit(raw)
    path = dump(raw, tmp_path / "bad_file.pkl")
    with pytest.raises(DataError, match=f"{where(path, split, key)}: .*{expectation}") as caught:
        read_mmsa(path)
    assert "\n" not in str(caught.value)


def test_mmsa_refuses_files_that_are_not_mmsa(tmp_path):
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match=r"garbage\.pkl: not a readable pickle"):
        read_mmsa(garbage)
    with pytest.raises(DataError, match=r"list\.pkl: expected a dict of splits"):
        read_mmsa(dump([1, 2, 3], tmp_path / "list.pkl"))
    raw = tiny_mmsa()
    del raw["valid"]
    with pytest.raises(DataError, match=r"nosplit\.pkl: missing split 'valid' \(found: train, test\)"):
        read_mmsa(dump(raw, tmp_path / "nosplit.pkl"))
    raw = tiny_mmsa(dims=())
    with pytest.raises(DataError, match=r"nofeat\.pkl: split 'train': no feature key"):
        read_mmsa(dump(raw, tmp_path / "nofeat.pkl"))


# --------------------------------------------------------------------------- image-text


def tiny_imagetext(folder: Path, n_per_split=(6, 3, 3), sequence=False) -> Path:
    rng = np.random.default_rng(0)
    classes = ["negative", "neutral", "positive"]
    splits, all_ids = {}, []
    for split, n in zip(SPLITS, n_per_split):
        records = [{"id": f"{split}{i}", "text": f"t {i}", "label": classes[i % 3]} for i in range(n)]
        splits[split] = records
        all_ids += [r["id"] for r in records]
    shape = (len(all_ids), 4, 3) if sequence else (len(all_ids), 5)
    features = {
        "text": (all_ids, rng.standard_normal(shape) + 2),
        "image": (all_ids[::-1], rng.standard_normal((len(all_ids), 7))),  # rows in another order
    }
    return write_imagetext(folder, splits, features, classes)


def test_imagetext_reads_pairs_and_aligns_ids(tmp_path):
    folder = tiny_imagetext(tmp_path / "pairs")
    ds = read_imagetext(folder)
    assert ds.spec.modality_names == ("text", "image")
    assert ds.spec.modality("image").dim == 7 and ds.spec.modality("image").max_len == 1
    assert ds.spec.label.classes == ("negative", "neutral", "positive")
    np.testing.assert_array_equal(ds["train"].labels, [0, 1, 2, 0, 1, 2])
    with np.load(folder / "features" / "image.npz") as npz:  # rows stored in reverse order
        row = list(npz["ids"]).index("valid1")
        np.testing.assert_array_equal(ds["valid"].features["image"][1, 0], npz["features"][row].astype(np.float32))


def test_imagetext_accepts_dev_json_arrays_and_emotion_label(tmp_path):
    folder = tiny_imagetext(tmp_path / "alt")
    records = [json.loads(line) for line in (folder / "valid.jsonl").read_text().splitlines()]
    for r in records:
        r["emotion_label"] = r.pop("label")
    (folder / "dev.json").write_text(json.dumps(records))
    (folder / "valid.jsonl").unlink()
    (folder / "labels.json").unlink()  # then: sorted labels seen in train
    ds = read_imagetext(folder)
    assert ds["valid"].ids == ["valid0", "valid1", "valid2"]
    assert ds.spec.label.classes == ("negative", "neutral", "positive")


def test_imagetext_sequence_features_get_lengths(tmp_path):
    ds = read_imagetext(tiny_imagetext(tmp_path / "seq", sequence=True))
    assert ds.spec.modality("text").max_len == 4
    assert (ds["train"].lengths["text"] == 4).all() and (ds["train"].lengths["image"] == 1).all()


def test_imagetext_unknown_label_names_file_line_and_label(tmp_path):
    folder = tiny_imagetext(tmp_path / "unk")
    (folder / "labels.json").unlink()
    lines = (folder / "test.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"id": "test1", "text": "x", "label": "ecstatic"})
    (folder / "test.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:2: unknown label 'ecstatic'"):
        read_imagetext(folder)


def test_imagetext_ids_not_aligned(tmp_path):
    folder = tiny_imagetext(tmp_path / "gap")
    with np.load(folder / "features" / "image.npz") as npz:
        ids, values = list(npz["ids"]), npz["features"]
    keep = [i for i, id_ in enumerate(ids) if id_ != "valid2"]
    np.savez(folder / "features" / "image.npz", ids=np.array([ids[i] for i in keep]), features=values[keep])
    with pytest.raises(DataError, match=r"image\.npz: split 'valid': ids not aligned: id 'valid2' not found"):
        read_imagetext(folder)


def test_imagetext_other_refusals(tmp_path):
    folder = tiny_imagetext(tmp_path / "bad")
    (folder / "valid.jsonl").write_text('{"id": "v0", "text": "x"}\n')
    with pytest.raises(DataError, match=r"valid\.jsonl:1: missing key 'label'"):
        read_imagetext(folder)
    (folder / "valid.jsonl").unlink()
    with pytest.raises(DataError, match=r"no file for split 'valid'"):
        read_imagetext(folder)


# --------------------------------------------------------------------------- load_dataset, describe, io


def test_load_dataset_dispatch_and_missing_path(tmp_path):
    assert load_dataset(write_synthetic("mvsa", tmp_path / "mvsa", n=30)).spec.label.kind == "classification"
    assert load_dataset(write_synthetic("mosi", tmp_path / "m.pkl", n=30)).spec.name == "m"
    assert load_dataset("synthetic:sims:n=30:seed=1").spec.label == REGRESSION_SIMS
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere.pkl"))):
        load_dataset(tmp_path / "nowhere.pkl")


def test_describe_summarizes_sizes_modalities_and_labels():
    text = describe(synthesize("mosi", n=60))
    for needle in ("train 35", "valid 6", "test 19", "audio", "375", "regression in [-3, 3]", "exact zeros", "sha256"):
        assert needle in text
    assert "positive" in describe(synthesize("mvsa", n=30))


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# --------------------------------------------------------------------------- planted structure


def _ridge_acc2_non0(ds, modalities, alpha: float = 300.0) -> float:
    """acc2_non0 on test of a ridge regression on standardized, mean-pooled features (closed form:
    one small linear solve, so the check stays fast)."""
    train, test = ds["train"], ds["test"]
    x_train = np.hstack([pooled(train, m) for m in modalities]).astype(np.float64)
    x_test = np.hstack([pooled(test, m) for m in modalities]).astype(np.float64)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-8
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_mean = train.labels.mean()
    gram = x_train.T @ x_train + alpha * np.eye(x_train.shape[1])
    weights = np.linalg.solve(gram, x_train.T @ (train.labels - y_mean))
    prediction = x_test @ weights + y_mean
    nonzero = test.labels != 0
    return float(np.mean((prediction[nonzero] > 0) == (test.labels[nonzero] > 0)))


def test_planted_structure_text_strong_and_fusion_helps():
    ds = synthesize("mosi", n=1200, seed=0, version=1)  # v2's structure: tests/test_synthetic_v2.py
    text = _ridge_acc2_non0(ds, ["text"])
    audio = _ridge_acc2_non0(ds, ["audio"])
    everything = _ridge_acc2_non0(ds, ["text", "audio", "vision"])
    assert text > 0.70
    assert 0.55 < audio < text
    assert everything > text + 0.03
