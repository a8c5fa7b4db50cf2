"""Small raw image-text datasets written into tmp folders, one per layout the reader supports."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"negative": (40, 60, 160), "neutral": (128, 128, 128), "positive": (230, 150, 40)}
WORDS = {"negative": "awful sad day", "neutral": "a photo of a street", "positive": "lovely happy day"}


def save_image(path: Path, colour, size=(24, 16), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else colour[0]).save(path)
    return path


def mvsa_single(folder: Path, labels: list[tuple[str, str]], texts: list[str] | None = None) -> Path:
    """Posts 1..n: data/<id>.jpg coloured by the image label, data/<id>.txt, labelResultAll.txt."""
    lines = ["ID\ttext,image"]
    for i, (text_label, image_label) in enumerate(labels, 1):
        save_image(folder / "data" / f"{i}.jpg", COLOURS[image_label], size=(16 + i, 12 + 2 * i))
        text = texts[i - 1] if texts else f"post {i} {WORDS[text_label]}"
        (folder / "data" / f"{i}.txt").write_text(text + "\n", encoding="utf-8")
        lines.append(f"{i}\t{text_label},{image_label}")
    (folder / "labelResultAll.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def mvsa_multiple(folder: Path, votes: list[list[tuple[str, str]]]) -> Path:
    """Like mvsa_single, with one "text,image" column per annotator."""
    mvsa_single(folder, [v[0] for v in votes])
    lines = ["ID\ttext,image\ttext,image\ttext,image"]
    lines += [f"{i}\t" + "\t".join(f"{t},{im}" for t, im in post) for i, post in enumerate(votes, 1)]
    (folder / "labelResultAll.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def tumemo(folder: Path, labels: list[str]) -> Path:
    lines = ["ID Label"]
    for i, label in enumerate(labels):
        save_image(folder / "data" / f"{i}.jpg", (20 * i % 256, 90, 30))
        (folder / "data" / f"{i}.txt").write_text(f"feeling {label.lower()} today", encoding="utf-8")
        lines.append(f"{i} {label}")
    (folder / "all_data_id_and_label.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def json_splits(folder: Path, splits: dict[str, list[dict]], image_dir: str = "dataset_image", suffix: str = ".json") -> Path:
    """CLMLF-style split files {id, text, emotion_label}; images <image_dir>/<id>.jpg."""
    for split, items in splits.items():
        for item in items:
            save_image(folder / image_dir / f"{item['id']}.jpg", (int(item["id"]) * 9 % 256, 40, 200))
        if suffix == ".jsonl":
            text = "".join(json.dumps(item) + "\n" for item in items)
        else:
            text = json.dumps(items, indent=1)
        (folder / f"{split}{suffix}").write_text(text, encoding="utf-8")
    return folder


def balanced_labels(n: int) -> list[tuple[str, str]]:
    """n agreeing (text, image) label pairs cycling through the three classes."""
    classes = ["negative", "neutral", "positive"]
    return [(classes[i % 3], classes[i % 3]) for i in range(n)]


class FakeTextEncoder:
    """A deterministic stand-in for features.text.TextEncoder: sentiment words + a text hash."""

    name = "fake-text"
    fingerprint = "f" * 64
    dim = 8
    mask_token = "[MASK]"

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.seen: list[str] = []

    def encode(self, texts, batch_size=64, progress=True) -> np.ndarray:
        if self.fail:
            raise AssertionError("encoder called although every input is cached")
        self.seen.extend(texts)
        rows = []
        for text in texts:
            words = text.split()
            noise = np.frombuffer(hashlib.sha256(text.encode()).digest()[:16], np.uint8)[:5] / 255.0
            rows.append([words.count("happy"), words.count("sad"), words.count("[MASK]"), *noise])
        return np.asarray(rows, np.float32).reshape(len(texts), self.dim)
