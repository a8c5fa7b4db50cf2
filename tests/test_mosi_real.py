"""`data build mosi-real`: layout, join by id, metadata, cache, errors; the real release (slow)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_MOSI, write_mosi_source
from robustmsa.cli import main
from robustmsa.data import DataError, load_dataset
from robustmsa.data.mosi_real import SPEAKER_SPLIT_FILE, _build_key, build_mosi_real


def test_built_dataset_layout_join_and_metadata(tiny_real, text_encoder):
    source, path = tiny_real
    dataset = load_dataset(path)
    assert dataset.spec.modality_names == ("text", "audio")
    assert (dataset.spec.modality("text").dim, dataset.spec.modality("text").max_len) == (384, 1)
    assert (dataset.spec.modality("audio").dim, dataset.spec.modality("audio").max_len) == (73, 1)
    assert {k: len(v) for k, v in dataset.splits.items()} == {"train": 48, "valid": 12, "test": 12}
    train = dataset["train"]
    assert train.ids[0] == "vidtrain0$_$1" and train.raw_text[0].isupper()

    # Audio rows follow segment ids (the .npz lists them in another order) and are standardized
    # with training statistics, as the metadata records.
    archive = np.load(source / "audio_opensmile73.npz")
    raw = dict(zip(archive["ids"], archive["features"]))["vidtrain0_1"]
    info = dataset.metadata["features"]["audio"]
    expected = (raw - np.array(info["standardize"]["mean"])) / np.array(info["standardize"]["std"])
    np.testing.assert_allclose(train.features["audio"][0, 0], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(train.features["audio"][:, 0].mean(0), 0, atol=1e-4)

    # Text vectors are the encoder's, of the lower-cased transcript.
    text_info = dataset.metadata["features"]["text"]
    assert text_info["encoder"]["fingerprint"] == text_encoder.fingerprint
    assert (text_info["level"], text_info["lowercase"]) == ("sentence", True)
    np.testing.assert_allclose(train.features["text"][:2, 0],
                               text_encoder.encode([t.lower() for t in train.raw_text[:2]], progress=False), atol=1e-5)


def test_rebuild_is_cached_and_any_input_change_rebuilds(tiny_real, text_encoder, tmp_path: Path):
    source, path = tiny_real
    start = time.perf_counter()
    result = build_mosi_real(source, path, progress=False)  # by path: fingerprint checked, model not loaded
    assert result.cached and time.perf_counter() - start < 5
    key = _build_key(source, text_encoder.fingerprint, "sentence", 50)
    assert key != _build_key(source, text_encoder.fingerprint, "token", 50)
    assert key != _build_key(source, "another-encoder", "sentence", 50)
    changed = shutil.copytree(source, tmp_path / "changed")
    csv = changed / "segments.csv"
    csv.write_text(csv.read_text().replace(",train\n", ",valid\n", 1))
    assert _build_key(changed, text_encoder.fingerprint, "sentence", 50) != key


def test_token_level_build(tmp_path: Path, text_encoder):
    source = write_mosi_source(tmp_path / "src", sizes=(4, 2, 2))
    result = build_mosi_real(source, tmp_path / "tok.pkl", text_encoder, text_level="token", max_tokens=12, progress=False)
    dataset = load_dataset(result.path)
    text = dataset.spec.modality("text")
    assert (text.dim, text.max_len) == (384, 12)
    tokens = [len(text_encoder.tokenizer.tokenize(t.lower())) for t in dataset["train"].raw_text]
    assert dataset["train"].lengths["text"].tolist() == tokens
    assert dataset.metadata["features"]["text"]["level"] == "token"


def _mutate_csv(old: str, new: str, count: int = 1):
    def mutate(source: Path) -> None:
        csv = source / "segments.csv"
        text = csv.read_text()
        assert old in text
        csv.write_text(text.replace(old, new, count))
    return mutate


def _mutate_audio(change):
    def mutate(source: Path) -> None:
        archive = dict(np.load(source / "audio_opensmile73.npz"))
        change(archive)
        np.savez(source / "audio_opensmile73.npz", **archive)
    return mutate


def _set_nan(archive):
    archive["features"][3, 5] = np.nan


BAD_SOURCES = {
    "no segments": (lambda s: (s / "segments.csv").unlink(), r"segments.csv: no such file"),
    "no audio": (lambda s: (s / "audio_opensmile73.npz").unlink(), r"audio_opensmile73.npz: no such file"),
    "missing column": (_mutate_csv("segment_id,video_id,clip_id,text,label,split", "segment_id,video_id,clip_id,text,score,split"),
                       r"segments.csv: missing column 'label'"),
    "label not a number": (_mutate_csv(",train\n", "x,train\n"), r"segments.csv: line 2 field 'label': expected a number in \[-3, 3\]"),
    "unknown split": (_mutate_csv(",test\n", ",dev\n"), r"field 'split': expected one of train, valid, test, got 'dev'"),
    "duplicate id": (_mutate_csv("vidtrain0_2,", "vidtrain0_1,"), r"line 3 field 'segment_id': 'vidtrain0_1' appears twice"),
    "audio row missing": (_mutate_audio(lambda a: a.update(ids=np.where(a["ids"] == "vidtest0_1", "zzz", a["ids"]))),
                          r"1 segment\(s\) of segments.csv have no row in this file \(first: 'vidtest0_1'\)"),
    "audio wrong shape": (_mutate_audio(lambda a: a.update(features=a["features"][:-1])), r"key 'features': expected shape \(72, D\)"),
    "audio NaN": (_mutate_audio(_set_nan), r"key 'features': expected finite numbers"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_source_is_a_one_line_error(case, tmp_path: Path):
    mutate, message = BAD_SOURCES[case]
    source = write_mosi_source(tmp_path / "src")
    mutate(source)
    with pytest.raises(DataError, match=message) as error:
        build_mosi_real(source, tmp_path / "out.pkl", progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out.pkl").exists()


def test_label_out_of_range_and_missing_folder(tmp_path: Path, capsys):
    source = write_mosi_source(tmp_path / "src")
    csv = source / "segments.csv"
    lines = csv.read_text().splitlines()
    lines[4] = ",".join(lines[4].split(",")[:4] + ["3.5", "train"])
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 5 field 'label': expected a number in \[-3, 3\], got '3.5'"):
        build_mosi_real(source, tmp_path / "out.pkl", progress=False)
    code = main(["data", "build", "mosi-real", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.pkl")])
    assert code == 2
    assert "nowhere: no such folder (expected the CMU-MOSI release" in capsys.readouterr().err


@pytest.mark.slow
def test_real_cmu_mosi_build_and_text_ridge(tmp_path: Path):
    """The real release: standard folds, and a linear probe on the text vectors near the README's
    reference (80.0 acc2_non0 with alpha chosen by CV)."""
    if not (SHARED_MOSI / "segments.csv").is_file():
        pytest.skip(f"real CMU-MOSI release not found at {SHARED_MOSI} (../shared/data/mosi beside the repo)")
    from conftest import HAVE_TEXT_ENCODER, NO_TEXT_ENCODER

    if not HAVE_TEXT_ENCODER:
        pytest.skip(NO_TEXT_ENCODER)
    from sklearn.linear_model import RidgeCV

    from robustmsa.evaluation.metrics import mosi_metrics

    result = build_mosi_real(SHARED_MOSI, tmp_path / "mosi_real.pkl", progress=False)
    assert result.sizes == {"train": 1284, "valid": 229, "test": 686}
    dataset = load_dataset(result.path)
    assert {k: len(v) for k, v in dataset.splits.items()} == {"train": 1284, "valid": 229, "test": 686}
    train, test = dataset["train"], dataset["test"]
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(train.features["text"][:, 0], train.labels)
    metrics = mosi_metrics(ridge.predict(test.features["text"][:, 0]), test.labels)
    assert metrics["acc2_non0"] >= 78.0, metrics
    assert build_mosi_real(SHARED_MOSI, tmp_path / "mosi_real.pkl", progress=False).cached


def test_bench_preset_needs_the_built_files_and_tables_each_kept_set(tmp_path: Path, monkeypatch, tiny_real,
                                                                    text_encoder):
    from robustmsa.bench import make_grid
    from robustmsa.methods.base import list_methods

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"dataset data/mosi_real.pkl not found; build it first: "
                                         r"robustmsa data build mosi-real .*\(or pass --data PATH\)"):
        make_grid("mosi-real")
    (tmp_path / "data").mkdir()
    shutil.copy(tiny_real[1], tmp_path / "data" / "mosi_real.pkl")
    with pytest.raises(ValueError, match=r"dataset data/mosi_real_si_tav.pkl not found; build it first: .*"
                                         r"--modalities text,audio,video --split speaker-independent"):
        make_grid("mosi-real")
    build_mosi_real(tiny_real[0], tmp_path / "data" / "mosi_real_si_tav.pkl", text_encoder, progress=False,
                    modalities="text,audio,video", split="speaker-independent", cache_dir=None)
    grid = make_grid("mosi-real")
    assert grid.methods == list_methods() and grid.seeds == [0, 1, 2]
    curve = ["none", "modality:0", "modality:0.1", "modality:0.2", "modality:0.3", "modality:0.4", "modality:0.5"]
    protocols = {job.data: list(job.protocols) for job in grid.jobs()}
    assert protocols["data/mosi_real.pkl"][:9] == [*curve, "subset:l", "subset:a"]
    assert protocols["data/mosi_real_si_tav.pkl"][:13] == [*curve, "subset:l", "subset:a", "subset:v", "subset:l,a",
                                                           "subset:l,v", "subset:a,v"]
    assert grid.metrics == {"mosi": ["acc2_non0", "f1_non0", "mae", "corr"]}


def test_trimodal_speaker_independent_build(tmp_path: Path, text_encoder):
    source = write_mosi_source(tmp_path / "src")
    result = build_mosi_real(source, tmp_path / "tav.pkl", text_encoder, modalities="text,audio,video",
                             split="speaker-independent", progress=False, cache_dir=tmp_path / "cache")
    dataset = load_dataset(result.path)
    assert dataset.spec.modality_names == ("text", "audio", "vision")
    assert (dataset.spec.modality("vision").dim, dataset.spec.modality("vision").max_len) == (100, 1)
    # Splits follow split_speaker_independent.csv: no video in two splits.
    videos = {name: {i.split("$_$")[0] for i in split.ids} for name, split in dataset.splits.items()}
    assert not (videos["train"] & videos["test"]) and not (videos["train"] & videos["valid"])
    expected = dict(line.split(",") for line in (source / "split_speaker_independent.csv").read_text().split()[1:])
    assert sum(len(s) for s in dataset.splits.values()) == len(expected)
    assert all(expected[i.replace("$_$", "_")] == name for name, s in dataset.splits.items() for i in s.ids)
    # Video joined by id and standardized with training statistics; constant columns stay finite.
    archive = np.load(source / "video_3dcnn100.npz")
    raw = dict(zip(archive["ids"], archive["features"]))[dataset["test"].ids[0].replace("$_$", "_")]
    info = dataset.metadata["features"]["vision"]
    expected_row = (raw - np.array(info["standardize"]["mean"])) / np.array(info["standardize"]["std"])
    np.testing.assert_allclose(dataset["test"].features["vision"][0, 0], expected_row, rtol=1e-4, atol=1e-4)
    assert np.isfinite(dataset["train"].features["vision"]).all()
    build = dataset.metadata["build"]
    assert (build["split"], build["modalities"], build["text_encoder"]) == (
        "speaker-independent", ["text", "audio", "vision"], "all-MiniLM-L6-v2")
    # The text vectors came through the content cache: the standard build reuses them all.
    standard = build_mosi_real(source, tmp_path / "ta.pkl", text_encoder, progress=False, cache_dir=tmp_path / "cache")
    assert _build_key(source, text_encoder.fingerprint, "sentence", 50, ("text", "audio", "vision"),
                      "speaker-independent") != _build_key(source, text_encoder.fingerprint, "sentence", 50)
    assert load_dataset(standard.path).spec.modality_names == ("text", "audio")


def test_video_with_standard_folds_is_refused(tmp_path: Path, capsys):
    """The leak guard: the video vectors saw most standard-test segments' labels."""
    source = write_mosi_source(tmp_path / "src")
    with pytest.raises(ValueError, match="video needs --split speaker-independent"):
        build_mosi_real(source, tmp_path / "o.pkl", modalities="text,video", progress=False)
    code = main(["data", "build", "mosi-real", "--source", str(source), "--out", str(tmp_path / "o.pkl"),
                 "--modalities", "audio,video"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "leak test labels" in err
    code = main(["data", "build", "mosi-real", "--source", str(source), "--out", str(tmp_path / "o.pkl"),
                 "--modalities", "text,smell"])
    assert code == 2 and "subset of text, audio, video" in capsys.readouterr().err
    assert not (tmp_path / "o.pkl").exists()


def test_audio_video_without_text_loads_no_encoder(tmp_path: Path, monkeypatch):
    import robustmsa.features.text as text_module

    source = write_mosi_source(tmp_path / "src")
    monkeypatch.setattr(text_module, "load_text_encoder", lambda *a, **k: pytest.fail("encoder loaded"))
    result = build_mosi_real(source, tmp_path / "av.pkl", modalities="audio,video", split="speaker-independent",
                             progress=False)
    dataset = load_dataset(result.path)
    assert dataset.spec.modality_names == ("audio", "vision") and dataset["train"].raw_text


def test_bad_speaker_split_file_is_a_one_line_error(tmp_path: Path):
    source = write_mosi_source(tmp_path / "src")
    csv = source / "split_speaker_independent.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:-1]) + "\n")  # the last segment has no split
    with pytest.raises(DataError, match=r"split_speaker_independent.csv: field 'segment_id': 1 segment\(s\) of "
                                        r"segments.csv have no split"):
        build_mosi_real(source, tmp_path / "o.pkl", modalities="audio", split="speaker-independent", progress=False)


@pytest.mark.slow
def test_real_speaker_independent_trimodal_build_and_probe(tmp_path: Path):
    """The real release, speaker-independent, text + audio + video: sizes, disjoint videos, and the
    probe levels of the data README (text far above audio and video)."""
    if not (SHARED_MOSI / SPEAKER_SPLIT_FILE).is_file():
        pytest.skip(f"real CMU-MOSI release with {SPEAKER_SPLIT_FILE} not found at {SHARED_MOSI}")
    from conftest import HAVE_TEXT_ENCODER, NO_TEXT_ENCODER

    if not HAVE_TEXT_ENCODER:
        pytest.skip(NO_TEXT_ENCODER)
    from robustmsa.evaluation.probe import probe_dataset

    result = build_mosi_real(SHARED_MOSI, tmp_path / "si.pkl", modalities="text,audio,video",
                             split="speaker-independent", progress=False)
    assert result.sizes == {"train": 1252, "valid": 195, "test": 752}
    dataset = load_dataset(result.path)
    videos = {name: {i.split("$_$")[0] for i in split.ids} for name, split in dataset.splits.items()}
    assert sum(len(v) for v in videos.values()) == len(set().union(*videos.values())) == 93
    table = probe_dataset(dataset).set_index("features")
    assert table.loc["text", "acc2_non0"] > 75 and table.loc["vision", "acc2_non0"] < 60, table
    assert table.loc["audio", "corr"] < 0.3
