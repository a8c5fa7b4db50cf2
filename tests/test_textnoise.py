"""`textnoise`: exact rates, seeded word choice, the four kinds, the mix, cache hits, eval wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robustmsa.cli import main
from robustmsa.data import load_dataset
from robustmsa.evaluation.evaluate import split_tensors
from robustmsa.features import textnoise
from robustmsa.features.textnoise import (
    ASR_TABLE,
    KEYBOARD_NEIGHBOURS,
    chosen_words,
    noisy_text,
    noisy_texts,
    textnoise_split,
)
from robustmsa.missing import Protocol, make_pattern

# Every word is long and in the ASR table, so each kind can change any of them.
TEXT = "their there where were know knew right write hear here night light movie film really great"


def _changed(original: str, noisy: str, kind: str) -> int:
    if kind == "drop":
        return len(original.split()) - len(noisy.split())
    return sum(a != b for a, b in zip(original.split(), noisy.split(), strict=True))


@pytest.mark.parametrize("kind", ["drop", "mask", "typo", "asr"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_rate_is_realised_exactly(kind, rate):
    n = len(TEXT.split())
    for seed in range(3):
        noisy = noisy_text(TEXT, kind, rate, seed, f"s{seed}", "[MASK]")
        assert _changed(TEXT, noisy, kind) == round(rate * n), (kind, rate, noisy)
    # Only eligible words count for typo (longer than 3 letters) and asr (covered by the table).
    mixed = "a big wonderful cat sat on the excellent mat"
    assert len(chosen_words(mixed.split(), "typo", 1.0, 0, "x")) == 2  # wonderful, excellent
    assert len(chosen_words(mixed.split(), "typo", 0.5, 0, "x")) == 1


def test_same_seed_same_words_rates_nest_and_kinds_share_positions():
    words = TEXT.split()
    a = chosen_words(words, "drop", 0.5, 7, "seg_1")
    np.testing.assert_array_equal(a, chosen_words(words, "drop", 0.5, 7, "seg_1"))
    assert noisy_text(TEXT, "typo", 0.5, 7, "seg_1", "[MASK]") == noisy_text(TEXT, "typo", 0.5, 7, "seg_1", "[MASK]")
    assert not np.array_equal(a, chosen_words(words, "drop", 0.5, 8, "seg_1"))  # another seed
    assert not np.array_equal(a, chosen_words(words, "drop", 0.5, 7, "seg_2"))  # another sample
    assert set(chosen_words(words, "drop", 0.25, 7, "seg_1")) <= set(a)  # a higher rate adds words
    np.testing.assert_array_equal(a, chosen_words(words, "mask", 0.5, 7, "seg_1"))
    # A sample's noise does not depend on the other samples of the split.
    alone = noisy_texts([TEXT], ["seg_1"], "typo:0.5", 7, "[MASK]")
    together = noisy_texts(["other words here", TEXT], ["seg_0", "seg_1"], "typo:0.5", 7, "[MASK]")
    assert alone[0] == together[1]


def test_each_kind_changes_words_the_way_it_says():
    words = TEXT.split()
    masked = noisy_text(TEXT, "mask", 0.5, 0, "s", "<mask>").split()
    assert {w for w, o in zip(masked, words) if w != o} == {"<mask>"}
    for original, heard in zip(words, noisy_text(TEXT, "asr", 1.0, 0, "s", "").split()):
        assert heard == ASR_TABLE[original]
    for original, typed in zip(words, noisy_text(TEXT, "typo", 1.0, 3, "s", "").split()):
        swapped = len(typed) == len(original) and sorted(typed) == sorted(original)
        deleted = len(typed) == len(original) - 1
        neighbour = len(typed) == len(original) and sum(
            a != b and b in KEYBOARD_NEIGHBOURS[a] for a, b in zip(original, typed)) == 1
        assert typed != original and (swapped or deleted or neighbour), (original, typed)
    dropped = noisy_text(TEXT, "drop", 0.5, 0, "s", "").split()
    assert [w for w in words if w in dropped] == dropped  # the kept words keep their order


def test_mix_degrades_an_exact_fraction_of_samples_with_per_sample_kinds():
    ids = [f"v{i}" for i in range(40)]
    out = noisy_texts([TEXT] * 40, ids, "mix:0.25", 0, "[MASK]")
    changed = [o != TEXT for o in out]
    assert sum(changed) == 10
    assert out == noisy_texts([TEXT] * 40, ids, "mix:0.25", 0, "[MASK]")
    assert out != noisy_texts([TEXT] * 40, ids, "mix:0.25", 1, "[MASK]")
    kinds = {("mask" if "[MASK]" in o else "drop" if len(o.split()) < 16 else "other") for o in out if o != TEXT}
    assert {"mask", "drop", "other"} <= kinds  # several kinds drawn
    assert noisy_texts([TEXT] * 4, ids[:4], "mix:0", 0, "[MASK]") == [TEXT] * 4


def test_protocol_parsing_and_errors():
    assert str(Protocol.parse("textnoise:Typo:0.30")) == "textnoise:typo:0.3"
    assert Protocol.parse("textnoise:mix:0.5") == Protocol("textnoise", "mix:0.5")
    for bad, message in (("textnoise:blur:0.2", "KIND one of drop, mask, typo, asr, mix"),
                         ("textnoise:drop:1.5", "rate 1.5 outside"), ("textnoise:drop", "expected KIND:RATE"),
                         ("textnoise", "needs a parameter")):
        with pytest.raises(ValueError, match=message):
            Protocol.parse(bad)


class Counting:
    """Wraps the real encoder and records what it is asked to encode."""

    def __init__(self, encoder):
        self.encoder, self.calls = encoder, []
        self.mask_token = encoder.mask_token

    def encode(self, texts, batch_size=64, progress=False):
        self.calls.append(list(texts))
        return self.encoder.encode(texts, batch_size=batch_size, progress=False)


def test_split_is_reencoded_with_the_recorded_encoder_through_the_cache(tiny_real, text_encoder, tmp_path: Path,
                                                                        monkeypatch):
    dataset = load_dataset(tiny_real[1])
    counting = Counting(text_encoder)
    monkeypatch.setitem(textnoise._ENCODERS, text_encoder.fingerprint, counting)
    test = dataset["test"]
    split = textnoise_split(dataset, "test", "textnoise:drop:0.5", seed=0, cache_dir=tmp_path)
    expected = noisy_texts([t.lower() for t in test.raw_text], test.ids, "drop:0.5", 0, "[MASK]")
    assert sum(len(c) for c in counting.calls) == len(set(expected))  # each distinct text once
    np.testing.assert_allclose(split.features["text"][:, 0], text_encoder.encode(expected, progress=False), atol=1e-5)
    np.testing.assert_array_equal(split.features["audio"], test.features["audio"])  # other modalities untouched
    assert split.lengths["text"].tolist() == [1] * len(test)
    counting.calls.clear()
    again = textnoise_split(dataset, "test", Protocol.parse("textnoise:drop:0.5"), seed=0, cache_dir=tmp_path)
    assert counting.calls == []  # a repeated setting encodes nothing
    np.testing.assert_array_equal(again.features["text"], split.features["text"])
    # Rate 0 gives back the built features.
    clean = textnoise_split(dataset, "test", "textnoise:typo:0", seed=0, cache_dir=tmp_path)
    np.testing.assert_allclose(clean.features["text"], test.features["text"], atol=1e-5)
    # Masks the encoder's own token; a different seed gives different features.
    other = textnoise_split(dataset, "test", "textnoise:drop:0.5", seed=1, cache_dir=tmp_path)
    assert not np.allclose(other.features["text"], split.features["text"])
    monkeypatch.setenv("ROBUSTMSA_CACHE", str(tmp_path))
    tensors = split_tensors(dataset, "test", Protocol.parse("textnoise:mask:0.5"), seed=0)
    assert bool(tensors.present.all())  # degraded, not missing: methods are not told
    masked = noisy_texts([t.lower() for t in test.raw_text], test.ids, "mask:0.5", 0, "[MASK]")
    np.testing.assert_allclose(tensors.features["text"][:, 0].numpy(), text_encoder.encode(masked, progress=False),
                               atol=1e-5)
    with pytest.raises(ValueError, match="degrades the raw text, not a mask"):
        make_pattern(test, dataset.spec, Protocol.parse("textnoise:mask:0.5"), 0)


def test_eval_cli_accepts_textnoise_and_refuses_data_without_raw_text(tiny_real_checkpoint, tiny_dataset,
                                                                      tmp_path: Path, capsys, monkeypatch):
    from robustmsa.data.mmsa import write_mmsa

    monkeypatch.setenv("ROBUSTMSA_CACHE", str(tmp_path / "cache"))
    code = main(["eval", str(tiny_real_checkpoint), "--protocol", "textnoise", "--values", "drop:0.5,mix:1",
                 "--csv", str(tmp_path / "r.csv")])
    out = capsys.readouterr().out
    assert code == 0 and "protocol textnoise" in out and "drop:0.5" in out and "mix:1" in out
    features_only = write_mmsa(tiny_dataset, tmp_path / "tiny.pkl")
    with pytest.raises(ValueError, match="records no raw text and text encoder"):
        split_tensors(load_dataset(features_only), "test", Protocol.parse("textnoise:drop:0.2"), 0)
