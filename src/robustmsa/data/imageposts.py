"""Raw image-text posts as users download them (MVSA-Single, MVSA-Multiple, TumEmo): PROTOCOLS.md 1.

`robustmsa.data.imagetext` reads our featurized folders; this module reads the raw datasets that
those folders are made from, so `robustmsa features text|image` can encode them. Layouts, tried
in this order (or forced with `layout=`):

    splits         train / valid (or dev) / test as .json arrays or .jsonl lines of
                   {"id", "text", "label" | "emotion_label"}, the files later work ships (CLMLF and
                   the methods after it); images <id>.jpg in dataset_image/, data/, images/ or the
                   folder itself. Integer labels are class indices, named by labels.json or `classes`.
    mvsa-single    labelResultAll.txt: header "ID<TAB>text,image", then "<id><TAB><text>,<image>";
                   data/<id>.txt and data/<id>.jpg per post.
    mvsa-multiple  the same file with three "<text>,<image>" columns, one per annotator.
    tumemo         all_data_id_and_label.txt: a header, then "<id> <emotion>" per post (7 emotions);
                   data/<id>.txt and data/<id>.jpg.

Label merge (MVSA; the rule of Xu & Mao 2017 that later MVSA work follows):
    MVSA-Multiple first takes, per modality, the label that a strict majority of the annotators
    gave (2 of 3); a post where the annotators of either modality all disagree is dropped.
    Then text and image labels: equal -> that label; one neutral -> the other (the non-neutral);
    positive against negative -> the post is dropped. `Posts.dropped` counts every drop by reason.

Without split files the posts get a seeded 8:1:1 train / valid / test split. Post texts are
UTF-8; a file that is not valid UTF-8 is read as Latin-1 (MVSA mixes encodings), never skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustmsa.data.io import parse_json
from robustmsa.data.schema import SPLITS, DataError

MVSA_CLASSES = ("negative", "neutral", "positive")
TUMEMO_CLASSES = ("Angry", "Bored", "Calm", "Fear", "Happy", "Love", "Sad")
LAYOUTS = ("auto", "splits", "mvsa-single", "mvsa-multiple", "tumemo")
MVSA_LABEL_FILE = "labelResultAll.txt"
TUMEMO_LABEL_FILE = "all_data_id_and_label.txt"
SPLIT_STEMS = {"train": ("train",), "valid": ("valid", "dev", "val"), "test": ("test",)}
IMAGE_DIRS = ("dataset_image", "data", "images", "image", ".")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
LABEL_KEYS = ("label", "emotion_label")
SPLIT_FRACTIONS = (0.8, 0.1)  # train, valid; test takes the rest


@dataclass(frozen=True)
class Post:
    """One post: `where` names the file (and line) it came from, for error messages."""

    id: str
    text: str
    image: Path
    label: str
    where: str


@dataclass
class Posts:
    """A raw dataset: posts per split, class names, and what the reader dropped and why."""

    name: str
    layout: str
    classes: tuple[str, ...]
    splits: dict[str, list[Post]]
    dropped: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # label and split files read

    def __len__(self) -> int:
        return sum(len(posts) for posts in self.splits.values())

    def summary(self) -> str:
        """One line for the CLI: layout, split sizes, classes, drops."""
        sizes = ", ".join(f"{split} {len(posts)}" for split, posts in self.splits.items())
        line = f"{self.name}: layout {self.layout}, {sizes}; classes {', '.join(self.classes)}"
        if self.dropped:
            line += "; dropped " + ", ".join(f"{count} ({reason})" for reason, count in self.dropped.items())
        return line


# ----------------------------------------------------------------------------- entry point


def read_posts(
    folder: str | os.PathLike,
    layout: str = "auto",
    classes: list[str] | tuple[str, ...] | None = None,
    split_seed: int = 0,
    image_dir: str | os.PathLike | None = None,
    skip_bad: bool = False,
) -> Posts:
    """Read a raw image-text folder; every problem is a one-line DataError naming file and field.

    `skip_bad` drops (and counts) posts with a missing or unreadable image or an empty text
    instead of stopping at the first; it opens every image once to check it.

    >>> posts = read_posts("MVSA_Single/")  # doctest: +SKIP
    >>> posts.summary()  # doctest: +SKIP
    'MVSA_Single: layout mvsa-single, train 3611, valid 451, test 452; classes negative, neutral, positive; ...'
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected a raw image-text dataset folder)")
    if layout not in LAYOUTS:
        raise DataError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    layout = _detect_layout(folder) if layout == "auto" else layout
    if classes is None and (folder / "labels.json").is_file():
        classes = _read_class_names(folder / "labels.json")
    images = _image_folder(folder, image_dir)
    dropped: Counter[str] = Counter()
    if layout == "splits":
        split_files = {split: _split_file(folder, split) for split in SPLITS}
        raw = {split: _split_records(path, images) for split, path in split_files.items()}
        _check_unique([r for records in raw.values() for r in records])
        known = _class_names(layout, classes, raw["train"])
        splits = {split: _validated(records, known, skip_bad, dropped) for split, records in raw.items()}
        files = list(split_files.values())
    else:
        label_file = folder / (TUMEMO_LABEL_FILE if layout == "tumemo" else MVSA_LABEL_FILE)
        if not label_file.is_file():
            raise DataError(f"{label_file}: not found (layout {layout} needs it)")
        reader = _tumemo_records if layout == "tumemo" else _mvsa_records
        records = reader(label_file, images, dropped)
        _check_unique(records)
        known = _class_names(layout, classes, records)
        # Bad posts go before the split, so the 8:1:1 split is over the posts that are used.
        splits = _seeded_split(_validated(records, known, skip_bad, dropped), split_seed, label_file)
        files = [label_file]
    for split, posts in splits.items():
        if not posts:
            raise DataError(f"{folder}: split {split!r} has no posts left (dropped: {dict(dropped)})")
    return Posts(folder.name, layout, tuple(known), splits, dict(dropped), files)


def looks_raw(folder: str | os.PathLike) -> bool:
    """True for a folder this module reads and `read_imagetext` does not (no features/)."""
    folder = Path(folder)
    if (folder / "features").is_dir():
        return False
    return (folder / MVSA_LABEL_FILE).is_file() or (folder / TUMEMO_LABEL_FILE).is_file() or any(
        (folder / name).is_dir() for name in IMAGE_DIRS[:-1]
    )


def _detect_layout(folder: Path) -> str:
    if all(_find_split_file(folder, split) for split in SPLITS):
        return "splits"
    if (folder / MVSA_LABEL_FILE).is_file():
        return "mvsa-multiple" if _annotator_columns(folder / MVSA_LABEL_FILE) > 1 else "mvsa-single"
    if (folder / TUMEMO_LABEL_FILE).is_file():
        return "tumemo"
    raise DataError(
        f"{folder}: not a raw image-text folder (expected train/valid/test .json split files, "
        f"{MVSA_LABEL_FILE} (MVSA) or {TUMEMO_LABEL_FILE} (TumEmo))"
    )


# --------------------------------------------------------------------------- label files


@dataclass(frozen=True)
class _Record:
    """A post before validation: its text may still be a file to read."""

    id: str
    label: str
    where: str
    text: str | None  # None: read <images>/<id>.txt
    images: Path


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a label file; blank lines and an "ID ..." header skipped."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
            fields = [x.strip() for x in fields]
            if not any(fields):
                continue
            if number == 1 and "id" in fields[0].lower():
                continue
            rows.append((number, fields))
    return rows


def _annotator_columns(path: Path) -> int:
    rows = _data_lines(path)
    return max(sum(1 for cell in fields[1:] if cell) for _, fields in rows) if rows else 1


def _mvsa_records(path: Path, images: Path, dropped: Counter) -> list[_Record]:
    records = []
    for number, fields in _data_lines(path):
        where = f"{path}:{number}"
        votes = [_text_image_pair(cell, where) for cell in fields[1:] if cell]
        if not votes:
            raise DataError(f"{where}: field 'text,image': missing (expected e.g. 'positive,neutral')")
        label = merge_votes(votes, dropped)
        if label is not None:
            records.append(_Record(fields[0], label, where, None, images))
    return records


def _text_image_pair(cell: str, where: str) -> tuple[str, str]:
    parts = [p.strip() for p in cell.split(",")]
    if len(parts) != 2:
        raise DataError(f"{where}: field 'text,image': expected two labels like 'positive,neutral', got {cell!r}")
    for part in parts:
        if part not in MVSA_CLASSES:
            raise DataError(f"{where}: field 'text,image': unknown label {part!r} (expected one of {', '.join(MVSA_CLASSES)})")
    return parts[0], parts[1]


def majority(labels: list[str]) -> str | None:
    """The label more than half of the annotators gave, else None.

    >>> majority(["positive", "neutral", "positive"]), majority(["positive", "neutral", "negative"])
    ('positive', None)
    """
    label, count = Counter(labels).most_common(1)[0]
    return label if 2 * count > len(labels) else None


def merge_text_image(text: str, image: str) -> str | None:
    """MVSA's post label from its text and image labels; None when they are opposite.

    >>> merge_text_image("neutral", "negative"), merge_text_image("positive", "negative")
    ('negative', None)
    """
    if text == image or image == "neutral":
        return text
    if text == "neutral":
        return image
    return None


def merge_votes(votes: list[tuple[str, str]], dropped: Counter) -> str | None:
    """One post's (text, image) votes -> its label, counting why a post is dropped."""
    text, image = majority([v[0] for v in votes]), majority([v[1] for v in votes])
    if text is None or image is None:
        dropped["annotators without a majority"] += 1
        return None
    label = merge_text_image(text, image)
    if label is None:
        dropped["text and image labels opposite"] += 1
    return label


def _tumemo_records(path: Path, images: Path, dropped: Counter) -> list[_Record]:
    records = []
    for number, fields in _data_lines(path):
        where = f"{path}:{number}"
        if len(fields) < 2:
            raise DataError(f"{where}: field 'label': missing (expected '<id> <emotion>')")
        records.append(_Record(fields[0], fields[1], where, None, images))
    return records


# --------------------------------------------------------------------------- split files


def _find_split_file(folder: Path, split: str) -> Path | None:
    for stem in SPLIT_STEMS[split]:
        for suffix in (".json", ".jsonl"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def _split_file(folder: Path, split: str) -> Path:
    path = _find_split_file(folder, split)
    if path is None:
        names = ", ".join(f"{stem}.json(l)" for stem in SPLIT_STEMS[split])
        raise DataError(f"{folder}: no file for split {split!r} (looked for {names})")
    return path


def _split_records(path: Path, images: Path) -> list[_Record]:
    """{id, text, label | emotion_label} items of a .json array or .jsonl file."""
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        items = [(parse_json(line, f"{path}:{i}"), f"{path}:{i}") for i, line in enumerate(lines, 1) if line.strip()]
    else:
        array = parse_json(path.read_text(encoding="utf-8"), str(path))
        if not isinstance(array, list):
            raise DataError(f"{path}: expected a JSON array of objects, got {type(array).__name__}")
        items = [(item, f"{path} item {i}") for i, item in enumerate(array)]
    records = []
    for item, where in items:
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
        if "id" not in item:
            raise DataError(f"{where}: field 'id': missing")
        key = next((k for k in LABEL_KEYS if k in item), None)
        if key is None:
            raise DataError(f"{where}: field 'label': missing (expected 'label' or 'emotion_label')")
        text = item.get("text")
        if text is not None and not isinstance(text, str):
            raise DataError(f"{where}: field 'text': expected a string, got {type(text).__name__}")
        records.append(_Record(str(item["id"]), str(item[key]), where, text, images))
    return records



def _read_class_names(path: Path) -> list[str]:
    names = parse_json(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(names, list) or not names or len({str(n) for n in names}) != len(names):
        raise DataError(f"{path}: expected a non-empty JSON list of distinct class names")
    return [str(n) for n in names]


# --------------------------------------------------------------------- splits and classes


def natural_key(post_id: str) -> tuple:
    """Numeric ids in number order ('2' before '10'), other ids after them in text order."""
    return (0, int(post_id), "") if post_id.isdigit() else (1, 0, post_id)


def _seeded_split(records: list[Post], seed: int, source: Path) -> dict[str, list[Post]]:
    """8:1:1 train / valid / test from a seeded permutation; ids in natural order inside a split."""
    n = len(records)
    if n < 3:
        raise DataError(f"{source}: {n} usable posts; an 8:1:1 split needs at least 3")
    order = np.random.default_rng(seed).permutation(n)
    n_train = min(n - 2, max(1, round(SPLIT_FRACTIONS[0] * n)))
    n_valid = min(n - n_train - 1, max(1, round(SPLIT_FRACTIONS[1] * n)))
    bounds = {"train": order[:n_train], "valid": order[n_train:n_train + n_valid], "test": order[n_train + n_valid:]}
    return {split: sorted((records[i] for i in rows), key=lambda r: natural_key(r.id)) for split, rows in bounds.items()}


def _check_unique(records: list[_Record]) -> None:
    seen: dict[str, str] = {}
    for record in records:
        if record.id in seen:
            raise DataError(f"{record.where}: field 'id': {record.id!r} repeats {seen[record.id]} (expected unique ids)")
        seen[record.id] = record.where


def _class_names(layout: str, classes, train: list[_Record]) -> list[str]:
    """Explicit classes win; MVSA / TumEmo have fixed ones; split files: the labels of train."""
    if classes is not None:
        return [str(c) for c in classes]
    if layout.startswith("mvsa"):
        return list(MVSA_CLASSES)
    if layout == "tumemo":
        return list(TUMEMO_CLASSES)
    seen = {r.label for r in train}
    if seen <= set(MVSA_CLASSES):
        return list(MVSA_CLASSES)
    if seen <= set(TUMEMO_CLASSES):
        return list(TUMEMO_CLASSES)
    if all(label.lstrip("-").isdigit() for label in seen):
        return sorted(seen, key=int)
    return sorted(seen)


def _label_name(record: _Record, classes: list[str]) -> str:
    """The class name of a record's label; an integer label indexes the class list."""
    if record.label in classes:
        return record.label
    if record.label.isdigit() and int(record.label) < len(classes) and not any(c.isdigit() for c in classes):
        return classes[int(record.label)]
    raise DataError(f"{record.where}: field 'label': unknown label {record.label!r} (expected one of {', '.join(classes)})")


# ------------------------------------------------------------------------- files per post


def _image_folder(folder: Path, image_dir) -> Path:
    if image_dir is not None:
        path = Path(image_dir) if Path(image_dir).is_absolute() else folder / image_dir
        if not path.is_dir():
            raise DataError(f"{path}: no such image folder")
        return path
    for name in IMAGE_DIRS:
        if (folder / name).is_dir() and name != ".":
            return folder / name
    return folder


def image_path(images: Path, post_id: str) -> Path | None:
    """<images>/<id>.jpg (or another image suffix), None when there is none."""
    for suffix in IMAGE_SUFFIXES:
        path = images / f"{post_id}{suffix}"
        if path.is_file():
            return path
    return None


def read_text_file(path: Path) -> str:
    """A post's text: UTF-8, else Latin-1 (every byte decodes, nothing is dropped)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _validated(records: list[_Record], classes: list[str], skip_bad: bool, dropped: Counter) -> list[Post]:
    posts = []
    for record in records:
        _check_inside(record)  # a path escape is an error even with skip_bad
        label = _label_name(record, classes)  # an unknown label is an error even with skip_bad
        try:
            posts.append(_post(record, label, check_image=skip_bad))
        except DataError as error:
            if not skip_bad:
                raise
            dropped[_reason(str(error))] += 1
    return posts


def _check_inside(record: _Record) -> None:
    """Ids become file names (<id>.jpg, <id>.txt): one like '../../outside/secret' or '/etc/x' would
    read a file outside the dataset folder (and copy its text into the features)."""
    folder = os.path.normpath(record.images)
    target = os.path.normpath(os.path.join(folder, record.id))
    if not record.id or os.path.commonpath([folder, target]) != folder or target == folder:
        raise DataError(f"{record.where}: field 'id': {record.id!r} points outside {record.images} "
                        "(expected a post id that names files inside the image folder)")


def _post(record: _Record, label: str, check_image: bool) -> Post:
    image = image_path(record.images, record.id)
    if image is None:
        raise DataError(f"{record.where}: field 'image': no file {record.id}.jpg (or .png, ...) in {record.images}")
    if record.text is None:
        text_file = record.images / f"{record.id}.txt"
        if not text_file.is_file():
            raise DataError(f"{record.where}: field 'text': no file {text_file}")
        text, text_where = read_text_file(text_file), str(text_file)
    else:
        text, text_where = record.text, record.where
    text = " ".join(text.split())
    if not text:
        raise DataError(f"{text_where}: field 'text': empty (expected the post's text)")
    if check_image:
        load_image(image)
    return Post(record.id, text, image, label, record.where)


def _reason(message: str) -> str:
    if "field 'image'" in message:
        return "image missing"
    if "unreadable image" in message:
        return "image unreadable"
    return "text missing or empty"


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3), EXIF rotation applied; a one-line DataError if unreadable."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
            return np.array(rgb, dtype=np.uint8)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        detail = " ".join(str(exc).split())[:160]
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {detail}); "
                        "expected a JPEG, PNG, GIF, BMP or WebP file") from None
