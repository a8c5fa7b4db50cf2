"""The raw image-text reader: every layout, the MVSA label merge, splits, and each error path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imagetext_helpers import balanced_labels, json_splits, mvsa_multiple, mvsa_single, save_image, tumemo
from robustmsa.data import load_dataset
from robustmsa.data.imageposts import (
    MVSA_CLASSES,
    TUMEMO_CLASSES,
    load_image,
    majority,
    merge_text_image,
    read_posts,
)
from robustmsa.data.schema import DataError


def all_posts(posts):
    return {p.id: p for split in posts.splits.values() for p in split}


def test_mvsa_single_round_trip_merge_rule_and_drops(tmp_path):
    labels = balanced_labels(12) + [("neutral", "negative"), ("positive", "neutral"), ("positive", "negative"), ("negative", "positive")]
    mvsa_single(tmp_path, labels)
    posts = read_posts(tmp_path)
    assert posts.layout == "mvsa-single" and posts.classes == MVSA_CLASSES
    by_id = all_posts(posts)
    assert len(posts) == 14 and set(by_id) == {str(i) for i in range(1, 15)}  # 15 and 16 are opposite
    assert posts.dropped == {"text and image labels opposite": 2}
    assert by_id["13"].label == "negative" and by_id["14"].label == "positive"  # the non-neutral one wins
    assert by_id["3"].label == "positive" and by_id["3"].text == "post 3 lovely happy day"
    assert by_id["3"].image == tmp_path / "data" / "3.jpg"
    assert [len(posts.splits[s]) for s in ("train", "valid", "test")] == [11, 1, 2]


def test_seeded_split_is_reproducible_and_disjoint(tmp_path):
    mvsa_single(tmp_path, balanced_labels(30))
    a, b, c = read_posts(tmp_path, split_seed=0), read_posts(tmp_path, split_seed=0), read_posts(tmp_path, split_seed=1)
    ids = {s: [p.id for p in a.splits[s]] for s in a.splits}
    assert ids == {s: [p.id for p in b.splits[s]] for s in b.splits}
    assert ids != {s: [p.id for p in c.splits[s]] for s in c.splits}
    assert sum(map(len, ids.values())) == len(set().union(*map(set, ids.values()))) == 30
    assert [len(v) for v in ids.values()] == [24, 3, 3]


def test_trailing_tabs_do_not_make_a_single_annotator_file_multiple(tmp_path):
    mvsa_single(tmp_path, balanced_labels(9))
    path = tmp_path / "labelResultAll.txt"
    path.write_text(path.read_text().replace("\n", "\t\n"))
    posts = read_posts(tmp_path)
    assert posts.layout == "mvsa-single" and len(posts) == 9 and not posts.dropped


def test_mvsa_multiple_majority_per_modality_then_merge(tmp_path):
    p, n, ng = "positive", "neutral", "negative"
    votes = [[(p, p), (p, n), (n, p)]] * 10 + [
        [(ng, n), (ng, ng), (n, n)],  # text negative (2 of 3), image neutral (2 of 3) -> negative
        [(p, p), (n, n), (ng, ng)],  # no majority in either modality -> dropped
        [(p, ng), (p, ng), (n, n)],  # text positive, image negative -> dropped
    ]
    mvsa_multiple(tmp_path, votes)
    posts = read_posts(tmp_path)
    assert posts.layout == "mvsa-multiple"
    by_id = all_posts(posts)
    assert by_id["1"].label == "positive" and by_id["11"].label == "negative"
    assert "12" not in by_id and "13" not in by_id
    assert posts.dropped == {"annotators without a majority": 1, "text and image labels opposite": 1}


def test_merge_rules():
    assert majority(["neutral", "positive", "positive"]) == "positive"
    assert majority(["neutral", "positive"]) is None
    assert [merge_text_image(t, i) for t, i in [("neutral", "neutral"), ("negative", "neutral"), ("negative", "positive")]] == [
        "neutral", "negative", None]


def test_tumemo_layout(tmp_path):
    tumemo(tmp_path, list(TUMEMO_CLASSES) * 2)
    posts = read_posts(tmp_path)
    assert posts.layout == "tumemo" and posts.classes == TUMEMO_CLASSES and len(posts) == 14
    assert all_posts(posts)["3"].label == "Fear" and all_posts(posts)["3"].text == "feeling fear today"


def test_json_split_files_with_integer_labels_named_by_classes(tmp_path):
    items = {split: [{"id": str(k), "text": f"tweet {k}", "emotion_label": k % 3} for k in range(start, start + 6)]
             for split, start in (("train", 0), ("dev", 100), ("test", 200))}
    json_splits(tmp_path, items)
    posts = read_posts(tmp_path, classes=["positive", "neutral", "negative"])
    assert posts.layout == "splits" and posts.classes == ("positive", "neutral", "negative")
    assert [len(posts.splits[s]) for s in ("train", "valid", "test")] == [6, 6, 6]
    assert all_posts(posts)["100"].label == "neutral" and all_posts(posts)["100"].text == "tweet 100"
    assert read_posts(tmp_path).classes == ("0", "1", "2")  # without names the indices are the classes


def test_jsonl_split_files_and_text_from_files(tmp_path):
    items = {split: [{"id": str(k), "label": "positive" if k % 2 else "negative"} for k in range(start, start + 4)]
             for split, start in (("train", 0), ("valid", 10), ("test", 20))}
    json_splits(tmp_path, items, image_dir="data", suffix=".jsonl")
    for split_items in items.values():
        for item in split_items:
            (tmp_path / "data" / f"{item['id']}.txt").write_bytes(f"caf\xe9 {item['id']}".encode("latin-1"))
    posts = read_posts(tmp_path)
    assert posts.classes == MVSA_CLASSES and all_posts(posts)["11"].text == "café 11"  # Latin-1 fallback


def test_grayscale_and_palette_images_load_as_rgb(tmp_path):
    gray = save_image(tmp_path / "g.png", (90, 0, 0), size=(7, 5), mode="L")
    image = load_image(gray)
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8 and (image == 90).all()


def test_synthetic_raw_mvsa_reads_back(tmp_path):
    from robustmsa.data.synthetic_posts import write_raw_mvsa

    write_raw_mvsa(tmp_path, n=40, seed=3)
    posts = read_posts(tmp_path)
    assert posts.layout == "mvsa-single" and 30 <= len(posts) <= 40
    assert len(posts) + sum(posts.dropped.values()) == 40
    assert load_image(posts.splits["train"][0].image).ndim == 3


def test_load_dataset_on_a_raw_folder_says_to_featurize_it(tmp_path):
    mvsa_single(tmp_path, balanced_labels(6))
    with pytest.raises(DataError, match="robustmsa features"):
        load_dataset(tmp_path)


# ------------------------------------------------------------------------------ errors


def one_line_error(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_image_names_label_file_field_and_expected(tmp_path):
    mvsa_single(tmp_path, balanced_labels(8))
    (tmp_path / "data" / "5.jpg").unlink()
    message = one_line_error(lambda: read_posts(tmp_path))
    assert "labelResultAll.txt:6" in message and "field 'image'" in message and "5.jpg" in message


def test_unreadable_image_names_the_file_and_expected_formats(tmp_path):
    mvsa_single(tmp_path, balanced_labels(8))
    (tmp_path / "data" / "4.jpg").write_bytes(b"not an image at all")
    message = one_line_error(lambda: load_image(tmp_path / "data" / "4.jpg"))
    assert "4.jpg: unreadable image" in message and "expected a JPEG, PNG" in message
    truncated = tmp_path / "data" / "2.jpg"
    truncated.write_bytes(truncated.read_bytes()[:40])
    assert "unreadable image" in one_line_error(lambda: load_image(truncated))


def test_empty_text_names_the_text_file(tmp_path):
    mvsa_single(tmp_path, balanced_labels(8))
    (tmp_path / "data" / "3.txt").write_text("  \n\t ")
    message = one_line_error(lambda: read_posts(tmp_path))
    assert "3.txt: field 'text': empty" in message and "expected" in message


@pytest.mark.parametrize("layout", ["mvsa", "splits"])
def test_unknown_label_names_file_line_field_and_classes(tmp_path, layout):
    if layout == "mvsa":
        mvsa_single(tmp_path, balanced_labels(8))
        path = tmp_path / "labelResultAll.txt"
        path.write_text(path.read_text().replace("3\tpositive,positive", "3\tpositive,happy"))
        expect = "labelResultAll.txt:4: field 'text,image': unknown label 'happy' (expected one of negative, neutral, positive)"
    else:
        items = {s: [{"id": f"{10 * j + k}", "text": "t", "label": "positive"} for k in range(3)]
                 for j, s in enumerate(("train", "dev", "test"))}
        items["test"][1]["label"] = "ecstatic"
        json_splits(tmp_path, items)
        expect = "test.json item 1: field 'label': unknown label 'ecstatic' (expected one of negative, neutral, positive)"
    assert expect in one_line_error(lambda: read_posts(tmp_path))


def test_other_malformed_inputs(tmp_path):
    assert "not a raw image-text folder" in one_line_error(lambda: read_posts(tmp_path))
    mvsa_single(tmp_path, balanced_labels(6))
    path = tmp_path / "labelResultAll.txt"
    path.write_text(path.read_text().replace("2\tneutral,neutral", "2\tneutral"))
    assert "labelResultAll.txt:3: field 'text,image': expected two labels" in one_line_error(lambda: read_posts(tmp_path))
    split_folder = tmp_path / "splits"
    items = {s: [{"id": "1" if s != "valid" else "2", "text": "t", "label": "neutral"}] for s in ("train", "valid", "test")}
    json_splits(split_folder, items)
    assert "field 'id': '1' repeats" in one_line_error(lambda: read_posts(split_folder))
    (split_folder / "valid.json").write_text(json.dumps([{"id": "2", "text": "t"}]))
    assert "valid.json item 0: field 'label': missing" in one_line_error(lambda: read_posts(split_folder))


def test_skip_bad_drops_and_counts_instead_of_stopping(tmp_path):
    mvsa_single(tmp_path, balanced_labels(12))
    (tmp_path / "data" / "2.jpg").unlink()
    (tmp_path / "data" / "3.jpg").write_bytes(b"junk")
    (tmp_path / "data" / "4.txt").write_text("")
    posts = read_posts(tmp_path, skip_bad=True)
    assert posts.dropped == {"image missing": 1, "image unreadable": 1, "text missing or empty": 1}
    assert len(posts) == 9 and not {"2", "3", "4"} & set(all_posts(posts))


def test_a_post_id_that_escapes_the_folder_is_an_error(tmp_path):
    dataset = mvsa_single(tmp_path / "dataset", balanced_labels(8))
    outside = tmp_path / "outside"
    save_image(outside / "secret.jpg", (1, 2, 3))
    (outside / "secret.txt").write_text("the secret text")
    path = dataset / "labelResultAll.txt"
    path.write_text(path.read_text().replace("\n3\t", "\n../../outside/secret\t"))
    for skip_bad in (False, True):
        message = one_line_error(lambda: read_posts(dataset, skip_bad=skip_bad))
        assert "labelResultAll.txt:4: field 'id': '../../outside/secret' points outside" in message
    items = {s: [{"id": f"{10 * j + k}", "text": "t", "label": "positive"} for k in range(3)]
             for j, s in enumerate(("train", "dev", "test"))}
    splits = json_splits(tmp_path / "splits", items, suffix=".jsonl")
    (splits / "dev.jsonl").write_text(json.dumps({"id": str(outside / "secret"), "text": "t", "label": "positive"}) + "\n")
    assert "dev.jsonl:1: field 'id'" in one_line_error(lambda: read_posts(splits))
