"""Raw image-text posts -> our featurized image-text folder (data/imagetext.py), one modality a call.

`robustmsa features text --data RAW --out FEAT` then `robustmsa features image --data RAW --out FEAT`
give FEAT/{train,valid,test}.jsonl, labels.json, features/text.npz and features/image.npz, which
`load_dataset(FEAT)` reads and every method trains on. Each call also writes
features/<modality>.json (encoder, fingerprint, protocol, counts) so the folder says how it was made.

With `disrupt` the valid and test posts (by default) are disrupted before encoding
(robustmsa.features.rawdisrupt) and masks/<modality>_<split>.npz records what was done: per post
the modality the protocol hit, corrupt / discard flags, the masked fraction, and the masked grid
cells (image) or words (text). Train a method on the clean folder and evaluate it on the
disrupted one with protocol `none`: the raw-level counterpart of `--protocol disrupt`.

Vectors are cached by content (features/cache.py): a second run, or a run with another protocol,
encodes only the inputs it has not seen.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustmsa.data.imageposts import Post, Posts, load_image, read_posts
from robustmsa.data.imagetext import write_imagetext
from robustmsa.data.io import atomic_write, atomic_write_text, file_sha256
from robustmsa.data.schema import DataError
from robustmsa.features.cache import FeatureCache, content_key, default_cache_dir
from robustmsa.features.rawdisrupt import (
    RAW_MODALITIES,
    RawDisruption,
    blank_image,
    blank_text,
    corrupt_image,
    corrupt_text,
    image_cells,
    parse_disrupt,
    plan_disruption,
    post_rng,
)

DEFAULT_DISRUPT_SPLITS = ("valid", "test")  # evaluation protocols touch valid / test only


@dataclass
class FeaturizeResult:
    out: Path
    modality: str
    encoder: str
    posts: int
    computed: int  # distinct inputs encoded now
    cached: int  # posts whose vector came from the cache
    disrupted: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> corrupt / discard counts
    seconds: float = 0.0

    def summary(self) -> str:
        line = (f"{self.modality}: {self.posts} posts, {self.computed} encoded, {self.cached} from cache "
                f"({self.encoder}, {self.seconds:.1f}s) -> {self.out}")
        for split, counts in self.disrupted.items():
            line += f"; {split}: {counts['corrupt']} corrupted, {counts['discard']} discarded"
        return line


@dataclass
class _Job:
    """One post's input to encode: the (disrupted) text, or an image file plus what to do to it."""

    post: Post
    action: str  # clean | corrupt | discard
    key: str = ""
    text: str | None = None
    cells: np.ndarray | None = None  # image: masked grid cells
    words: np.ndarray | None = None  # text: masked words


def featurize_posts(
    posts: Posts,
    modality: str,
    out: str | os.PathLike,
    encoder,
    disrupt: str | None = None,
    seed: int = 0,
    disrupt_splits: tuple[str, ...] = DEFAULT_DISRUPT_SPLITS,
    cache_dir: str | os.PathLike | None = "default",
    batch_size: int = 32,
    progress: bool = True,
) -> FeaturizeResult:
    """Encode one modality of `posts` into the featurized folder `out` (see the module docstring).

    `encoder`: for text, an object like robustmsa.features.text.TextEncoder (encode(texts,
    batch_size, progress), mask_token, fingerprint, name, dim); for images, an ImageEncoder.
    `cache_dir` "default" = features.cache.default_cache_dir(), None = no cache.

    >>> featurize_posts(read_posts("MVSA_Single"), "image", "feats", load_image_encoder())  # doctest: +SKIP
    """
    if modality not in RAW_MODALITIES:
        raise ValueError(f"modality {modality!r}: expected one of {', '.join(RAW_MODALITIES)}")
    unknown = [split for split in disrupt_splits if split not in posts.splits]
    if unknown:
        raise ValueError(f"--disrupt-splits: unknown split {unknown[0]!r}; expected some of {', '.join(posts.splits)}")
    start = time.perf_counter()
    out = Path(out)
    _check_same_posts(out, posts)
    protocol = parse_disrupt(disrupt) if disrupt else None
    plans = {split: plan_disruption([p.id for p in split_posts], protocol, seed, modality)
             for split, split_posts in posts.splits.items() if protocol is not None and split in disrupt_splits}
    jobs = {split: _jobs(split_posts, modality, plans.get(split), seed, encoder) for split, split_posts in posts.splits.items()}
    flat = [job for split_jobs in jobs.values() for job in split_jobs]
    cache = FeatureCache(default_cache_dir() if cache_dir == "default" else cache_dir, encoder.fingerprint)
    vectors, computed, cached = _encode(flat, modality, encoder, cache, batch_size, progress)

    ids = [job.post.id for job in flat]
    lengths = np.array([0 if job.action == "discard" else 1 for job in flat], np.int64)
    records = {split: [{"id": p.id, "text": p.text, "label": p.label} for p in split_posts]
               for split, split_posts in posts.splits.items()}
    write_imagetext(out, records, {modality: (ids, vectors, lengths)}, posts.classes)
    disrupted = {split: {"corrupt": int(plan.corrupt.sum()), "discard": int(plan.discard.sum())} for split, plan in plans.items()}
    for split, plan in plans.items():
        _write_masks(out / "masks" / f"{modality}_{split}.npz", plan, jobs[split], modality, protocol, seed)
    result = FeaturizeResult(out, modality, encoder.name, len(flat), computed, cached, disrupted,
                             time.perf_counter() - start)
    _write_provenance(out, modality, encoder, posts, protocol, seed, disrupt_splits if protocol else (), result)
    return result


def featurize_folder(data: str | os.PathLike, out: str | os.PathLike, modality: str, encoder_spec: str | None = None,
                     layout: str = "auto", classes: list[str] | None = None, split_seed: int = 0,
                     skip_bad: bool = False, **options) -> tuple[Posts, FeaturizeResult]:
    """read_posts + the modality's encoder + featurize_posts: what `robustmsa features` runs."""
    posts = read_posts(data, layout=layout, classes=classes, split_seed=split_seed, skip_bad=skip_bad)
    if modality == "text":
        from robustmsa.features.text import load_text_encoder

        encoder = load_text_encoder(encoder_spec)
    else:
        from robustmsa.features.image import load_image_encoder

        encoder = load_image_encoder(encoder_spec)
    return posts, featurize_posts(posts, modality, out, encoder, **options)


# ---------------------------------------------------------------------------------- jobs


def _jobs(posts: list[Post], modality: str, plan: RawDisruption | None, seed: int, encoder) -> list[_Job]:
    jobs = []
    for row, post in enumerate(posts):
        action = "clean"
        if plan is not None and plan.corrupt[row]:
            action = "corrupt"
        elif plan is not None and plan.discard[row]:
            action = "discard"
        job = _Job(post, action)
        if modality == "text":
            _text_job(job, seed, encoder.mask_token)
        else:
            _image_job(job, seed)
        jobs.append(job)
    return jobs


def _text_job(job: _Job, seed: int, mask_token: str) -> None:
    if job.action == "corrupt":
        job.text, job.words = corrupt_text(job.post.text, post_rng(seed, "text", job.post.id), mask_token)
    elif job.action == "discard":
        job.text = blank_text(job.post.text)
    else:
        job.text = job.post.text
    job.key = content_key("text", job.text)


def _image_job(job: _Job, seed: int) -> None:
    if job.action == "corrupt":
        job.cells = image_cells(post_rng(seed, "image", job.post.id))
    cells = b"" if job.cells is None else np.packbits(job.cells).tobytes()
    job.key = content_key("image", file_sha256(job.post.image), job.action, cells)


def _image_input(job: _Job) -> np.ndarray:
    image = load_image(job.post.image)
    if job.action == "corrupt":
        return corrupt_image(image, job.cells)
    if job.action == "discard":
        return blank_image(image)
    return image


# -------------------------------------------------------------------------------- encode


def _encode(jobs: list[_Job], modality: str, encoder, cache: FeatureCache, batch_size: int,
            progress: bool) -> tuple[np.ndarray, int, int]:
    """Vectors for all jobs: cached ones loaded, each distinct missing input encoded once."""
    from tqdm.auto import tqdm

    vectors = np.zeros((len(jobs), encoder.dim), np.float32)
    todo: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        hit = cache.get(job.key)
        if hit is not None and hit.shape == (encoder.dim,):
            vectors[i] = hit
        else:
            todo.setdefault(job.key, []).append(i)
    keys = list(todo)
    with tqdm(total=len(keys), desc=f"{modality} features", unit="post", disable=not progress) as bar:
        for start in range(0, len(keys), batch_size):
            chunk = keys[start:start + batch_size]
            first = [jobs[todo[key][0]] for key in chunk]
            if modality == "text":
                encoded = encoder.encode([job.text for job in first], batch_size=batch_size, progress=False)
            else:
                encoded = encoder.encode([_image_input(job) for job in first])
            _check_encoded(np.asarray(encoded), first, encoder)
            for key, vector in zip(chunk, encoded):
                vectors[todo[key]] = vector
                cache.put(key, vector)
            bar.update(len(chunk))
    cached = len(jobs) - sum(len(rows) for rows in todo.values())
    return vectors, len(keys), cached


def _check_encoded(encoded: np.ndarray, jobs: list[_Job], encoder) -> None:
    if encoded.shape != (len(jobs), encoder.dim):
        raise ValueError(f"encoder {encoder.name}: returned shape {encoded.shape}, expected {(len(jobs), encoder.dim)}")
    bad = ~np.isfinite(encoded).all(axis=1)
    if bad.any():
        post = jobs[int(np.flatnonzero(bad)[0])].post
        raise ValueError(f"encoder {encoder.name}: non-finite features for post {post.id!r} ({post.where})")


# -------------------------------------------------------------------------------- files


def _check_same_posts(out: Path, posts: Posts) -> None:
    """A folder already holding other posts would mix two datasets' features: refuse it."""
    for split, split_posts in posts.splits.items():
        path = out / f"{split}.jsonl"
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as f:
            ids = [json.loads(line)["id"] for line in f if line.strip()]
        if ids != [p.id for p in split_posts]:
            raise DataError(f"{path}: holds other posts than {posts.name} gives for split {split!r} "
                            "(expected the same ids in the same order; write to a new --out folder)")


def _write_masks(path: Path, plan: RawDisruption, jobs: list[_Job], modality: str, protocol, seed: int) -> None:
    arrays = {"ids": np.asarray(plan.ids, dtype=str), "hit": plan.hit, "corrupt": plan.corrupt,
              "discard": plan.discard, "protocol": np.asarray(str(protocol)), "seed": np.asarray(seed)}
    fraction = np.zeros(len(jobs), np.float32)
    if modality == "image":
        from robustmsa.features.rawdisrupt import PATCH_GRID

        cells = np.zeros((len(jobs), PATCH_GRID, PATCH_GRID), bool)
        for row, job in enumerate(jobs):
            if job.cells is not None:
                cells[row], fraction[row] = job.cells, job.cells.mean()
        arrays["cells"] = cells
    else:
        width = max([len(job.words) for job in jobs if job.words is not None], default=0)
        words = np.zeros((len(jobs), width), bool)
        for row, job in enumerate(jobs):
            if job.words is not None and len(job.words):
                words[row, :len(job.words)], fraction[row] = job.words, job.words.mean()
        arrays["words"] = words
    arrays["fraction"] = fraction
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _write_provenance(out: Path, modality: str, encoder, posts: Posts, protocol, seed: int,
                      disrupt_splits: tuple[str, ...], result: FeaturizeResult) -> None:
    info = {
        "modality": modality, "encoder": encoder.name, "fingerprint": encoder.fingerprint, "dim": int(encoder.dim),
        "source": posts.name, "layout": posts.layout, "source_files": [p.name for p in posts.files],
        "dropped": posts.dropped, "disrupt": str(protocol) if protocol else None, "seed": seed,
        "disrupt_splits": list(disrupt_splits), "disrupted": result.disrupted,
        "posts": result.posts, "encoded": result.computed, "from_cache": result.cached,
    }
    atomic_write_text(out / "features" / f"{modality}.json", json.dumps(info, indent=2) + "\n")
