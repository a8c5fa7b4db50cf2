"""The missing-modality protocols and label scarcity (PROTOCOLS.md section 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustmsa.data.batch import SplitTensors
from robustmsa.data.schema import REGRESSION_MOSI, DatasetSpec, LabelSpec, ModalitySpec, Split
from robustmsa.missing import (
    PROTOCOL_NAMES,
    Protocol,
    corrupt_count,
    frame_keep,
    labeled_mask,
    label_strata,
    make_pattern,
    modality_present,
    random_frame_dropout,
    random_modality_dropout,
    standard_subsets,
    training_missing_view,
)

SHAPES = {"text": (8, 4), "audio": (12, 3), "vision": (6, 2)}
SPEC = DatasetSpec("tiny", tuple(ModalitySpec(m, d, L) for m, (L, d) in SHAPES.items()), REGRESSION_MOSI)
POOLED_SPEC = DatasetSpec(
    "pooled",
    (ModalitySpec("text", 16, 1), ModalitySpec("image", 20, 1)),
    LabelSpec("classification", classes=("a", "b")),
)


def make_split(spec: DatasetSpec, n: int, seed: int = 0, min_len: int = 2) -> Split:
    """Random features (never exactly zero) zero-padded after a random valid length."""
    rng = np.random.default_rng(seed)
    features, lengths = {}, {}
    for m in spec.modalities:
        lengths[m.name] = rng.integers(min(min_len, m.max_len), m.max_len + 1, size=n).astype(np.int64)
        x = rng.uniform(0.5, 1.5, size=(n, m.max_len, m.dim)).astype(np.float32)
        x[np.arange(m.max_len)[None, :] >= lengths[m.name][:, None]] = 0.0
        features[m.name] = x
    labels = rng.uniform(-3, 3, size=n).astype(np.float32)
    return Split("test", [str(i) for i in range(n)], features, lengths, labels)


SPLIT = make_split(SPEC, 400)


def valid(split: Split, m: str) -> np.ndarray:
    return np.arange(split.features[m].shape[1])[None, :] < split.lengths[m][:, None]


# ------------------------------------------------------------------------- Protocol


@pytest.mark.parametrize(
    "text",
    ["none", "modality:0.3", "modality:0", "subset:l", "subset:l,a", "subset:text,vision", "frame:0.2",
     "frame:1", "disrupt:C:fixed:l", "disrupt:D:fixed:audio", "disrupt:CD:random:0.5", "disrupt:D:random:1"],
)
def test_parse_round_trips(text):
    protocol = Protocol.parse(text)
    assert str(protocol) == text
    assert Protocol.parse(str(protocol)) == protocol


def test_parse_normalises_spelling():
    assert str(Protocol.parse(" Modality:0.30 ")) == "modality:0.3"
    assert str(Protocol.parse("disrupt:cd:Random:0.50")) == "disrupt:CD:random:0.5"
    assert Protocol.parse("modality:0.3") == Protocol("modality", 0.3)


@pytest.mark.parametrize(
    "text, says",
    [("modality:abc", "not a number"), ("nosuch:1", "unknown protocol"), ("frame:1.5", "outside"),
     ("modality", "needs a parameter"), ("none:1", "no parameter"), ("subset:", "needs a parameter"),
     ("subset:l,,a", "empty modality"), ("disrupt:X:fixed:l", "mode"), ("disrupt:C:sometimes:l", "kind"),
     ("disrupt:C:random:0", "outside"), ("disrupt:C:fixed", "expected MODE")],
)
def test_parse_rejects_garbage_in_one_line(text, says):
    with pytest.raises(ValueError) as info:
        Protocol.parse(text)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_direct_construction_is_validated():
    with pytest.raises(ValueError, match="unknown protocol"):
        Protocol("nosuch", 1.0)
    with pytest.raises(ValueError, match="outside"):
        Protocol("frame", -0.1)
    with pytest.raises(ValueError, match="wrong parameter"):
        Protocol("modality")
    assert Protocol("subset", " l, a") == Protocol.parse("subset:l,a")
    assert Protocol("frame", 1) == Protocol.parse("frame:1.0") and str(Protocol("frame", 1)) == "frame:1"


def test_standard_subsets_in_table_order():
    assert [str(p) for p in standard_subsets(("text", "audio", "vision"))] == [
        "subset:l", "subset:a", "subset:v", "subset:l,a", "subset:l,v", "subset:a,v"
    ]
    assert [str(p) for p in standard_subsets(("text", "image"))] == ["subset:l", "subset:i"]
    assert set(PROTOCOL_NAMES) == {"none", "modality", "subset", "frame", "disrupt", "textnoise"}


# ------------------------------------------------------------------------- modality


@pytest.mark.parametrize("rate", np.round(np.arange(0.0, 0.61, 0.1), 1))
def test_modality_rate_is_exact_and_every_sample_keeps_one(rate):
    present = modality_present(1000, 3, float(rate), np.random.default_rng(0))
    assert (~present).sum() == round(rate * 1000 * 3)
    assert present.any(axis=1).all()


def test_modality_maximum_rate_leaves_exactly_one_each():
    present = modality_present(50, 3, 2 / 3, np.random.default_rng(1))
    assert (present.sum(axis=1) == 1).all()


def test_modality_rate_outside_range_errors():
    with pytest.raises(ValueError, match=r"rate 1 outside \[0, 1\) for 3 modalities"):
        make_pattern(SPLIT, SPEC, Protocol.parse("modality:1"), seed=0)
    with pytest.raises(ValueError, match="outside"):
        modality_present(10, 2, 1.2, np.random.default_rng(0))


def test_modality_rate_past_the_cap_keeps_exactly_one_modality():
    with pytest.warns(UserWarning, match=r"rate 0.7 exceeds .* realised as 0.667"):
        present = modality_present(300, 3, 0.7, np.random.default_rng(0))
    assert (present.sum(axis=1) == 1).all()


def test_modality_drops_each_modality_about_equally():
    present = modality_present(3000, 3, 0.4, np.random.default_rng(2))
    per_modality = (~present).sum(axis=0) / 3000
    assert np.allclose(per_modality, 0.4, atol=0.04)


# --------------------------------------------------------------------------- subset


@pytest.mark.parametrize(
    "text, kept",
    [("subset:l", ["text"]), ("subset:a,v", ["audio", "vision"]), ("subset:text,audio", ["text", "audio"]),
     ("subset:t,vision", ["text", "vision"]), ("subset:l,a,v", ["text", "audio", "vision"])],
)
def test_subset_keeps_exactly_the_set(text, kept):
    pattern = make_pattern(SPLIT, SPEC, Protocol.parse(text), seed=0)
    expected = np.array([m in kept for m in SPEC.modality_names])
    assert (pattern.present == expected[None, :]).all()


def test_subset_unknown_modality_is_named():
    with pytest.raises(ValueError, match="'image'"):
        make_pattern(SPLIT, SPEC, Protocol.parse("subset:l,image"), seed=0)


# ---------------------------------------------------------------------------- frame


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7, 1.0])
def test_frame_drop_fraction_and_padding(p):
    pattern = make_pattern(SPLIT, SPEC, Protocol("frame", p), seed=3)
    assert pattern.present.all()
    for m in SPEC.modality_names:
        keep, is_valid = pattern.frame_keep[m], valid(SPLIT, m)
        assert keep[~is_valid].all()  # padding never touched
        dropped = (~keep[is_valid]).mean()
        assert abs(dropped - p) < 0.05


def test_frame_keep_pure_function():
    keep = frame_keep(np.array([0, 2, 5]), 5, 1.0, np.random.default_rng(0))
    assert keep.tolist() == [[True] * 5, [False, False, True, True, True], [False] * 5]


def test_frame_end_to_end_through_split_tensors():
    pattern = make_pattern(SPLIT, SPEC, Protocol.parse("frame:0.5"), seed=4)
    tensors = SplitTensors(SPLIT, SPEC, pattern)
    for m in SPEC.modality_names:
        expected_mask = valid(SPLIT, m) & pattern.frame_keep[m]
        assert (tensors.frame_mask[m].numpy() == expected_mask).all()
        features = tensors.features[m].numpy()
        assert (features[~expected_mask] == 0).all()
        assert (features[expected_mask] != 0).all()


# -------------------------------------------------------------------------- disrupt


def test_disrupt_fixed_discard_removes_that_modality_everywhere():
    pattern = make_pattern(SPLIT, SPEC, Protocol.parse("disrupt:D:fixed:a"), seed=0)
    assert not pattern.present[:, 1].any() and pattern.present[:, [0, 2]].all()
    assert pattern.corrupt == {}
    tensors = SplitTensors(SPLIT, SPEC, pattern)
    assert (tensors.features["audio"] == 0).all() and not tensors.frame_mask["audio"].any()


def corrupt_fraction(pattern, split, m) -> np.ndarray:
    hit = pattern.corrupt[m][:, :, 0]
    assert not hit[~valid(split, m)].any()  # padding never picked
    return hit.sum(axis=1) / split.lengths[m]


def test_disrupt_fixed_corrupt_is_silent_and_in_range():
    pattern = make_pattern(SPLIT, SPEC, Protocol.parse("disrupt:C:fixed:vision"), seed=0)
    assert pattern.present.all() and set(pattern.corrupt) == {"vision"}
    fraction = corrupt_fraction(pattern, SPLIT, "vision")
    assert ((fraction >= 0.4) & (fraction <= 0.8)).all()
    tensors = SplitTensors(SPLIT, SPEC, pattern)
    zeroed = (tensors.features["vision"].numpy() == 0).all(axis=2)
    assert (zeroed == (pattern.corrupt["vision"][:, :, 0] | ~valid(SPLIT, "vision"))).all()
    assert (tensors.frame_mask["vision"].numpy() == valid(SPLIT, "vision")).all()  # method not told


def test_disrupt_corrupts_elements_of_pooled_vectors():
    split = make_split(POOLED_SPEC, 200, seed=1)
    pattern = make_pattern(split, POOLED_SPEC, Protocol.parse("disrupt:C:fixed:i"), seed=0)
    assert pattern.corrupt["image"].shape == (200, 1, 20)
    fraction = pattern.corrupt["image"].mean(axis=(1, 2))
    assert ((fraction >= 0.4) & (fraction <= 0.8)).all()
    features = SplitTensors(split, POOLED_SPEC, pattern).features["image"].numpy()
    assert ((features == 0) == pattern.corrupt["image"]).all()


def test_corrupt_count_stays_in_drf_range():
    sizes = np.arange(1, 60)
    for fraction in (0.4, 0.41, 0.6, 0.79, 0.8):
        count = corrupt_count(np.full(len(sizes), fraction), sizes)
        assert (count >= 1).all()
        share = count[1:] / sizes[1:]  # a single frame can only be 100% corrupted
        assert ((share >= 0.4) & (share <= 0.8)).all()


def test_disrupt_cd_splits_half_and_half():
    for n in (400, 401):
        split = SPLIT if n == 400 else make_split(SPEC, n, seed=5)
        pattern = make_pattern(split, SPEC, Protocol.parse("disrupt:CD:fixed:l"), seed=0)
        discarded = int((~pattern.present[:, 0]).sum())
        corrupted = int(pattern.corrupt["text"].any(axis=(1, 2)).sum())
        assert discarded + corrupted == n and abs(discarded - corrupted) <= 1
        assert not (pattern.corrupt["text"].any(axis=(1, 2)) & ~pattern.present[:, 0]).any()


@pytest.mark.parametrize("rate", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("mode", ["C", "D", "CD"])
def test_disrupt_random_disrupts_exactly_round_rn(mode, rate):
    pattern = make_pattern(SPLIT, SPEC, Protocol.parse(f"disrupt:{mode}:random:{rate}"), seed=0)
    corrupted = np.zeros(len(SPLIT), dtype=int)
    for mask in pattern.corrupt.values():
        corrupted += mask.any(axis=(1, 2))
    discarded = (~pattern.present).sum(axis=1)
    assert (corrupted + discarded <= 1).all()  # one modality per disrupted sample
    assert (corrupted + discarded).sum() == round(rate * len(SPLIT))
    assert pattern.present.any(axis=1).all()
    if mode == "D":
        # modality drawn uniformly: each of the three is hit roughly a third of the time
        share = (~pattern.present).sum(axis=0) / discarded.sum()
        assert np.allclose(share, 1 / 3, atol=0.1)


def test_disrupt_never_discards_the_last_available_modality():
    split = make_split(SPEC, 50, seed=6)
    split.lengths["text"][:] = 0  # text absent in the source for everyone
    split.lengths["audio"][:25] = 0  # and audio too for half the samples
    pattern = make_pattern(split, SPEC, Protocol.parse("disrupt:D:fixed:v"), seed=0)
    available = np.stack([split.lengths[m] > 0 for m in SPEC.modality_names], axis=1)
    assert (pattern.present & available).any(axis=1).all()
    assert not pattern.present[25:, 2].any()


# ----------------------------------------------------------------------- seeding


@pytest.mark.parametrize("text", ["modality:0.4", "frame:0.3", "disrupt:CD:random:0.6"])
def test_same_seed_same_masks_different_seed_different(text):
    def arrays(seed):
        pattern = make_pattern(SPLIT, SPEC, Protocol.parse(text), seed)
        return [pattern.present] + [pattern.frame_keep[k] for k in sorted(pattern.frame_keep)] + [
            pattern.corrupt[k] for k in sorted(pattern.corrupt)
        ]

    first, again, other = arrays(7), arrays(7), arrays(8)
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    assert any(a.shape != b.shape or (a != b).any() for a, b in zip(first, other))


def test_protocols_leave_global_rng_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    make_pattern(SPLIT, SPEC, Protocol.parse("modality:0.3"), seed=0)
    labeled_mask(SPLIT.labels, 0.3, seed=0, family="mosi")
    assert np.random.random() == expected


# ------------------------------------------------------------------ label scarcity


@pytest.mark.parametrize("family, labels", [
    ("mosi", np.random.default_rng(0).uniform(-3, 3, 997)),
    ("sims", np.random.default_rng(1).uniform(-1, 1, 503)),
    ("classification", np.random.default_rng(2).integers(0, 4, 311)),
])
@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.33, 0.5, 1.0])
def test_labeled_mask_exact_and_stratified(family, labels, ratio):
    mask = labeled_mask(labels, ratio, seed=0, family=family)
    assert mask.dtype == bool and mask.sum() == round(ratio * len(labels))
    strata = label_strata(labels, family)
    for stratum in np.unique(strata):
        members = strata == stratum
        assert abs(mask[members].sum() - ratio * members.sum()) <= 1
    assert (labeled_mask(labels, ratio, seed=0, family=family) == mask).all()
    if ratio < 1:
        assert (labeled_mask(labels, ratio, seed=1, family=family) != mask).any()


def test_labeled_mask_edge_cases():
    assert labeled_mask(np.zeros(10), 0.01, seed=0, family="mosi").sum() == 1  # at least one
    assert len(np.unique(label_strata(np.linspace(-1, 1, 101), "sims"))) == 5
    assert len(np.unique(label_strata(np.linspace(-4, 4, 101), "mosi"))) == 7
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="outside"):
            labeled_mask(np.zeros(10), bad, seed=0, family="mosi")


# ------------------------------------------------------- training-time augmentation


def test_random_modality_dropout_keeps_one_and_never_re_adds():
    generator = torch.Generator().manual_seed(0)
    present = torch.rand(2000, 3, generator=generator) < 0.7
    present[0] = False  # a sample with nothing stays with nothing
    kept = random_modality_dropout(present, generator)
    assert kept.dtype == torch.bool and kept.shape == present.shape
    assert not (kept & ~present).any()
    has_any = present.any(dim=1)
    assert kept[has_any].any(dim=1).all() and not kept[0].any()
    unchanged = (kept == present).all(dim=1)
    assert unchanged.float().mean() >= 0.5  # the complete half, plus lucky draws
    assert kept.sum() < present.sum()


def test_random_modality_dropout_seeded_and_fraction():
    present = torch.ones(100, 3, dtype=torch.bool)
    a = random_modality_dropout(present, torch.Generator().manual_seed(1), complete_fraction=1.0)
    assert a.all()
    b = random_modality_dropout(present, torch.Generator().manual_seed(1), complete_fraction=0.0)
    c = random_modality_dropout(present, torch.Generator().manual_seed(1), complete_fraction=0.0)
    assert (b == c).all() and not b.all() and b.any(dim=1).all()


def test_random_frame_dropout_is_a_subset():
    generator = torch.Generator().manual_seed(0)
    frame_mask = torch.arange(20)[None, :] < torch.randint(0, 21, (500, 1), generator=generator)
    dropped = random_frame_dropout(frame_mask, 0.6, generator)
    assert not (dropped & ~frame_mask).any()
    fraction = 1 - dropped.sum().item() / frame_mask.sum().item()
    assert 0.2 < fraction < 0.4  # mean of U(0, 0.6)
    assert random_frame_dropout(frame_mask, 0.0, generator).equal(frame_mask)


def test_training_missing_view_half_whole_half_augmented():
    dataset = SplitTensors(SPLIT, SPEC, make_pattern(SPLIT, SPEC, Protocol.parse("none"), seed=0))
    batch = dataset.batch(torch.arange(len(SPLIT.ids)))
    generator = torch.Generator().manual_seed(3)
    view = training_missing_view(batch, complete_fraction=0.5, frame_drop_max=0.5, generator=generator)
    whole = torch.stack([(view.frame_mask[m] == batch.frame_mask[m]).all(dim=1) for m in SPEC.modality_names], 1)
    whole = whole.all(dim=1) & (view.present == batch.present).all(dim=1)
    assert whole.sum() >= round(0.5 * len(SPLIT.ids))  # the complete half is untouched
    assert not whole.all()
    assert view.present.any(dim=1).all() and not (view.present & ~batch.present).any()
    for m in SPEC.modality_names:
        assert not (view.frame_mask[m] & ~batch.frame_mask[m]).any()  # a subset, padding untouched
        assert (view.features[m][~view.frame_mask[m]] == 0).all()
    again = training_missing_view(batch, 0.5, 0.5, torch.Generator().manual_seed(3))
    assert all(again.frame_mask[m].equal(view.frame_mask[m]) for m in SPEC.modality_names)


def test_training_missing_view_without_complete_rows_augments_every_sample():
    dataset = SplitTensors(SPLIT, SPEC, make_pattern(SPLIT, SPEC, Protocol.parse("none"), seed=0))
    batch = dataset.batch(torch.arange(len(SPLIT.ids)))
    view = training_missing_view(batch, 0.0, 0.0, torch.Generator().manual_seed(0))
    assert all(view.frame_mask[m].equal(batch.frame_mask[m] & view.present[:, j, None])
               for j, m in enumerate(SPEC.modality_names))  # no frame dropout at 0
    assert (view.present.sum(dim=1) < batch.present.sum(dim=1)).float().mean() > 0.5
