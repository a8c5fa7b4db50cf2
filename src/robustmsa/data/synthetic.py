"""Synthetic datasets in the real file formats, with structure planted so robustness is measurable.

The real feature files are large and not always at hand; tests, examples and smoke runs need data
with the same shapes, the same file layout and, above all, the properties that make missing
modalities matter. The generative story, per sample i and modality m:

    u_i ~ N(0, 1)             shared sentiment, seen (noisily) by every modality: a missing
                              modality is partly recoverable from the others
    s_mi ~ N(0, 1)            modality-specific sentiment, seen only by m but part of the label:
                              complete data beats every subset
    c_i = (u_i + beta * sum_m s_mi) / norm        latent score, unit variance
    label                     five simulated annotators rate round(g(c_i) + noise) on the
                              dataset's scale and the label is their mean (MOSI: a 0.2 grid in
                              [-3, 3], roughly bimodal, a few exact zeros; SIMS: a 0.2 grid in
                              [-1, 1]); MVSA: classes by thresholds on c (30 / 10 / 60 %)
    h_mi = [a_m (u_i + sigma_m e_mi), b_m s_mi, nuisance_mi (video part + sample part)]
    frame l < len_mi:  offset_m + scale_m * (wave_i(l) * P_m h_mi + tau_m * noise_mil); 0 beyond

sigma_m is small for text and large for audio / vision (text >> audio ~ vision, as on real
MOSI), and masked mean pooling over frames recovers P_m h_mi, so even a ridge regression on
pooled features shows the ordering. All randomness comes from `np.random.default_rng(seed)`:
one child stream fixes the "world" (projections, offsets), another draws the samples, so a small
`n` and the full size share the same world, and the same seed gives identical bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robustmsa.data import synthetic_v2 as v2
from robustmsa.data.imagetext import write_imagetext
from robustmsa.data.mmsa import parse_mmsa, write_mmsa
from robustmsa.data.schema import SPLITS, Dataset, DatasetSpec, LabelSpec, ModalitySpec, Split
from robustmsa.data.synthetic_v2 import Knobs

MVSA_CLASSES = ("negative", "neutral", "positive")
ANNOTATORS = 5
SPECIFIC_WEIGHT = 0.4  # beta: how much each modality-specific factor moves the label
_CHUNK_ROWS = 256  # samples per step when filling frames, to bound temporaries
VERSIONS = (1, 2)
DEFAULT_VERSION = 2


@dataclass(frozen=True)
class Like:
    """Shapes of a real dataset: split sizes, (modality, max_len, dim), label family, file layout."""

    sizes: tuple[int, int, int]
    modalities: tuple[tuple[str, int, int], ...]
    label: str  # "mosi" | "sims" | "mvsa"

    @property
    def layout(self) -> str:
        return "imagetext" if self.label == "mvsa" else "mmsa"


LIKES = {
    "mosi": Like((1284, 229, 686), (("text", 50, 768), ("audio", 375, 5), ("vision", 500, 20)), "mosi"),
    "mosei": Like((16326, 1871, 4659), (("text", 50, 768), ("audio", 375, 74), ("vision", 500, 35)), "mosi"),
    "sims": Like((1368, 456, 457), (("text", 39, 768), ("audio", 400, 33), ("vision", 55, 709)), "sims"),
    "mvsa": Like((3609, 451, 451), (("text", 1, 384), ("image", 1, 512)), "mvsa"),
}


@dataclass(frozen=True)
class Signal:
    """How modality m shows the latents. shared_noise = sigma_m (noise on u as m sees it), the
    main knob of how informative m is; frame_noise = tau_m, mostly averaged away by pooling."""

    shared: float  # a_m
    shared_noise: float  # sigma_m
    specific: float  # b_m
    nuisance: float  # weight of the nuisance factors
    frame_noise: float  # tau_m
    nuisance_dims: int = 8


SIGNALS = {
    "text": Signal(shared=1.0, shared_noise=0.45, specific=1.0, nuisance=1.0, frame_noise=1.0),
    "audio": Signal(shared=1.0, shared_noise=1.9, specific=1.0, nuisance=1.0, frame_noise=1.0),
    "vision": Signal(shared=1.0, shared_noise=1.9, specific=1.0, nuisance=1.0, frame_noise=1.0),
    "image": Signal(shared=1.0, shared_noise=1.2, specific=1.0, nuisance=1.0, frame_noise=0.3),
}


def synthesize(
    like: str, n: int | None = None, seed: int = 0, version: int = DEFAULT_VERSION, knobs: Knobs | None = None
) -> Dataset:
    """A synthetic Dataset shaped like a real one; `n` = total samples (None = the real sizes).
    `version` 2 (default) localizes cues, varies quality and adds a cross-modal term (`knobs`);
    version 1 is the earlier generator, unchanged.

    >>> ds = synthesize("mosi", n=60, seed=0)
    >>> [len(ds[s]) for s in ("train", "valid", "test")], ds.spec.modality("audio").dim
    ([35, 6, 19], 5)
    """
    spec = _like(like)
    world = _generate_version(spec, n, seed, version, knobs)
    source = synthetic_source(like, n, seed, version, knobs)
    if spec.layout == "mmsa":
        dataset = parse_mmsa(_mmsa_dict(world), source=source, name=f"synthetic_{like}")
    else:
        dataset = _imagetext_dataset(world, name=f"synthetic_{like}", source=source)
    dataset.source_hash = hashlib.sha256(source.encode()).hexdigest()
    return dataset


def synthetic_source(like: str, n: int | None, seed: int, version: int, knobs: Knobs | None) -> str:
    """The name `load_dataset` reads back. Version 1 keeps its old name (same data, same caches);
    version 2 adds `:v=2` and every knob that differs from its default."""
    source = f"synthetic:{like}:n={n if n is not None else 'full'}:seed={seed}"
    if version == 1:
        return source
    changed = (knobs or Knobs()).changed()
    return source + ":v=2" + "".join(f":{k}={v:g}" for k, v in changed.items())


def write_synthetic(
    like: str,
    out: str | os.PathLike,
    n: int | None = None,
    seed: int = 0,
    version: int = DEFAULT_VERSION,
    knobs: Knobs | None = None,
) -> Path:
    """Write a synthetic dataset in the real format: an MMSA pickle (mosi, mosei, sims) or an
    image-text folder (mvsa). `out` may be an existing folder, then a default name is used.
    Version 2 records its knobs in the metadata (pickle key `metadata`, folder `metadata.json`).

    >>> write_synthetic("mosi", "/tmp/synthetic_mosi.pkl", n=100)  # doctest: +SKIP
    PosixPath('/tmp/synthetic_mosi.pkl')
    """
    spec = _like(like)
    out = Path(out)
    world = _generate_version(spec, n, seed, version, knobs)
    if spec.layout == "mmsa":
        path = out / f"synthetic_{like}.pkl" if out.is_dir() else out
        return write_mmsa(_mmsa_dict(world), path)
    splits, features = _imagetext_parts(world)
    return write_imagetext(out, splits, features, MVSA_CLASSES, metadata=world.metadata or None)


def _generate_version(like: Like, n: int | None, seed: int, version: int, knobs: Knobs | None) -> _World:
    if version not in VERSIONS:
        raise ValueError(f"unknown synthetic data version {version!r}; choose one of {', '.join(map(str, VERSIONS))}")
    if version == 1:
        if knobs is not None and knobs.changed():
            raise ValueError(f"synthetic version 1 has no knobs (got {', '.join(knobs.changed())}); use --version 2")
        return _generate(like, n, seed)
    return _generate_v2(like, n, seed, knobs or Knobs())


def _like(like: str) -> Like:
    if like not in LIKES:
        raise ValueError(f"unknown synthetic dataset {like!r}; choose one of {', '.join(LIKES)}")
    return LIKES[like]


def split_sizes(sizes: tuple[int, int, int], n: int | None) -> tuple[int, int, int]:
    """Real split sizes, or `n` samples divided in the real proportions."""
    if n is None:
        return sizes
    if n < 30:
        raise ValueError(f"n must be at least 30 (got {n}) so that every split has a few samples")
    total = sum(sizes)
    valid, test = (max(3, round(n * s / total)) for s in sizes[1:])
    return n - valid - test, valid, test


# --------------------------------------------------------------------------- generation


@dataclass
class _World:
    """Everything drawn for one synthetic dataset, before it is laid out in a file format."""

    like: Like
    split_of: np.ndarray  # (N,) index into SPLITS
    ids: list[str]
    score: np.ndarray  # latent c, (N,)
    labels: np.ndarray  # float32 regression labels or int64 classes
    unimodal_labels: dict[str, np.ndarray]
    features: dict[str, np.ndarray]  # (N, L, D) float32, zero padded
    lengths: dict[str, np.ndarray]
    text_tokens: np.ndarray | None  # (N, 3, Lt) BERT-style ids / mask / segments
    raw_text: list[str]
    metadata: dict = field(default_factory=dict)  # version 2: how it was made (knobs)
    events: dict[str, np.ndarray] = field(default_factory=dict)  # version 2: (N, L) cue frames, not written


def _generate(like: Like, n: int | None, seed: int) -> _World:
    world_rng, sample_rng = np.random.default_rng(seed).spawn(2)
    sizes = split_sizes(like.sizes, n)
    total = sum(sizes)
    split_of = np.repeat(np.arange(3), sizes)
    names = [m for m, _, _ in like.modalities]

    shared = sample_rng.standard_normal(total)
    specific = {m: sample_rng.standard_normal(total) for m in names}
    score = (shared + SPECIFIC_WEIGHT * sum(specific.values())) / np.sqrt(1 + len(names) * SPECIFIC_WEIGHT**2)
    video = _videos(sample_rng, split_of)
    duration = np.clip(sample_rng.lognormal(np.log(0.28), 0.5, total), 0.02, 1.0)

    features, lengths, seen_shared = {}, {}, {}
    for m, max_len, dim in like.modalities:
        lengths[m] = _lengths(sample_rng, duration, max_len, minimum=3 if m == "text" else 4)
        # fewer nuisance factors than feature dims, so informativeness is set by Signal, not by dim
        nuisance_dims = min(SIGNALS[m].nuisance_dims, dim - 3)
        latent, seen_shared[m] = _latent(sample_rng, SIGNALS[m], nuisance_dims, shared, specific[m], video)
        projection, offset, scale = _world_of(world_rng, m, 2 + nuisance_dims, dim)
        pattern = (latent @ projection).astype(np.float32)
        features[m] = _frames(sample_rng, pattern, lengths[m], max_len, SIGNALS[m].frame_noise, offset, scale)

    labels, unimodal = _labels(sample_rng, like.label, score, seen_shared, specific)
    ids = _ids(sample_rng, like, video, split_of)
    text_tokens = _text_tokens(sample_rng, lengths["text"], like.modalities[0][1]) if like.layout == "mmsa" else None
    word_counts = lengths["text"] - 2 if like.layout == "mmsa" else sample_rng.integers(5, 20, total)
    raw_text = _sentences(sample_rng, score, word_counts)
    return _World(like, split_of, ids, score, labels, unimodal, features, lengths, text_tokens, raw_text)


def _generate_v2(like: Like, n: int | None, seed: int, knobs: Knobs) -> _World:
    """v1's world with localized cues, per-sample quality and a cross-modal label term
    (see `synthetic_v2`). Same two streams as v1: the world (projections) and the samples."""
    world_rng, sample_rng = np.random.default_rng(seed).spawn(2)
    sizes = split_sizes(like.sizes, n)
    total = sum(sizes)
    split_of = np.repeat(np.arange(3), sizes)
    names = [m for m, _, _ in like.modalities]

    shared = sample_rng.standard_normal(total)
    specific = {m: sample_rng.standard_normal(total) for m in names}
    score = v2.label_score(shared, specific, SPECIFIC_WEIGHT, knobs)
    video = _videos(sample_rng, split_of)
    duration = np.clip(sample_rng.lognormal(np.log(0.28), 0.5, total), 0.02, 1.0)
    centres = sample_rng.random((total, knobs.events))  # relative event times, shared by modalities

    gains = v2.quality(sample_rng, total, names, knobs)
    features, lengths, seen_shared, low_quality, events = {}, {}, {}, {}, {}
    for m, max_len, dim in like.modalities:
        lengths[m] = _lengths(sample_rng, duration, max_len, minimum=3 if m == "text" else 4)
        nuisance_dims = min(SIGNALS[m].nuisance_dims, dim - 3)
        latent, seen_shared[m] = _latent(sample_rng, SIGNALS[m], nuisance_dims, shared, specific[m], video)
        projection, offset, scale = _world_of(world_rng, m, 2 + nuisance_dims, dim)
        signal_gain, noise_gain = gains[m]
        low_quality[m] = int((signal_gain < 1).sum())
        signal = ((latent[:, :2] @ projection[:2]) * signal_gain[:, None]).astype(np.float32)
        nuisance = (latent[:, 2:] @ projection[2:]).astype(np.float32)
        noise = SIGNALS[m].frame_noise * noise_gain
        events[m] = v2.event_mask(lengths[m], max_len, centres, knobs)
        features[m] = v2.event_frames(sample_rng, signal, nuisance, lengths[m], events[m], noise, offset, scale,
                                      _CHUNK_ROWS)

    labels, unimodal = _labels(sample_rng, like.label, score, seen_shared, specific)
    ids = _ids(sample_rng, like, video, split_of)
    text_tokens = _text_tokens(sample_rng, lengths["text"], like.modalities[0][1]) if like.layout == "mmsa" else None
    word_counts = lengths["text"] - 2 if like.layout == "mmsa" else sample_rng.integers(5, 20, total)
    raw_text = _sentences(sample_rng, score, word_counts)
    metadata = {"synthetic": {"version": 2, "seed": seed, "knobs": asdict(knobs),
                              "interaction_pair": list(v2.interaction_pair(names)),
                              "low_quality_samples": low_quality}}
    return _World(like, split_of, ids, score, labels, unimodal, features, lengths, text_tokens, raw_text, metadata, events)


def _videos(rng: np.random.Generator, split_of: np.ndarray) -> np.ndarray:
    """Video index per sample: consecutive clips of 5-30 per video, never crossing a split
    (the real folds are speaker-disjoint)."""
    video = np.empty(len(split_of), dtype=np.int64)
    next_video, start = 0, 0
    for split in range(3):
        end = start + int((split_of == split).sum())
        while start < end:
            size = int(rng.integers(5, 31))
            video[start : start + size] = next_video
            next_video, start = next_video + 1, min(start + size, end)
    return video


def _lengths(rng: np.random.Generator, duration: np.ndarray, max_len: int, minimum: int) -> np.ndarray:
    """Valid frames: a shared clip duration (long clips are long in every modality) with jitter."""
    if max_len == 1:
        return np.ones(len(duration), dtype=np.int64)
    jitter = rng.lognormal(0.0, 0.15, len(duration))
    return np.clip(np.rint(duration * jitter * max_len), min(minimum, max_len), max_len).astype(np.int64)


def _latent(
    rng: np.random.Generator,
    signal: Signal,
    nuisance_dims: int,
    shared: np.ndarray,
    specific: np.ndarray,
    video: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """h_m (N, 2 + k) and the shared factor as this modality sees it (for SIMS unimodal labels)."""
    n, k = len(shared), nuisance_dims
    seen_shared = shared + signal.shared_noise * rng.standard_normal(n)
    per_video = rng.standard_normal((int(video.max()) + 1, k))
    nuisance = (per_video[video] + rng.standard_normal((n, k))) / np.sqrt(2)
    latent = np.column_stack([signal.shared * seen_shared, signal.specific * specific, signal.nuisance * nuisance])
    return latent, seen_shared


def _world_of(rng: np.random.Generator, modality: str, latent_dims: int, dim: int):
    """Fixed per-modality projection (latent -> feature dims), offset and per-dim scale.

    Every modality gets a common offset (real features are not centred: BERT features are
    anisotropic); audio / vision also get uneven per-dimension scales (acoustic and facial
    descriptors come in mixed units), so a model has to normalize, as on real data."""
    projection = rng.standard_normal((latent_dims, dim)) / np.sqrt(latent_dims)
    offset = rng.normal(0.0, 0.5, dim)
    scale = np.ones(dim) if modality == "text" else rng.lognormal(0.0, 0.5, dim)
    return projection, offset.astype(np.float32), scale.astype(np.float32)


def _frames(
    rng: np.random.Generator,
    pattern: np.ndarray,
    lengths: np.ndarray,
    max_len: int,
    frame_noise: float,
    offset: np.ndarray,
    scale: np.ndarray,
) -> np.ndarray:
    """(N, L, D) float32 frames: the per-sample pattern under a slow wave, plus noise, zero padded.

    Only valid frames are drawn (most of a padded array is padding), in row chunks, so time and
    memory go with the real number of frames."""
    n, dim = pattern.shape
    t = np.arange(max_len) / max_len
    freq, phase = rng.uniform(0.5, 3.0, n), rng.uniform(0, 2 * np.pi, n)
    out = np.zeros((n, max_len, dim), dtype=np.float32)
    for a in range(0, n, _CHUNK_ROWS):
        b = min(a + _CHUNK_ROWS, n)
        valid = np.arange(max_len)[None, :] < lengths[a:b, None]
        row = np.repeat(np.arange(b - a), lengths[a:b])  # the sample of each valid frame, in order
        wave = 1 + 0.5 * np.sin(2 * np.pi * freq[a + row] * t[np.nonzero(valid)[1]] + phase[a + row])
        values = rng.standard_normal((len(row), dim), dtype=np.float32)
        values *= frame_noise
        values += wave.astype(np.float32)[:, None] * pattern[a + row]
        values *= scale
        values += offset
        out[a:b][valid] = values
    return out


def _annotated(
    rng: np.random.Generator, score: np.ndarray, scale: float, bound: int, noise: float, shift: float = 0.0
) -> np.ndarray:
    """Mean of integer ratings in [-bound, bound] by simulated annotators; g(c) = scale*sign*|c|^0.7
    pushes mass away from 0, giving the bimodal shape of the real MOSI labels."""
    centre = scale * np.sign(score) * np.abs(score) ** 0.7 + shift
    ratings = np.clip(np.rint(centre[:, None] + noise * rng.standard_normal((len(score), ANNOTATORS))), -bound, bound)
    return ratings.mean(axis=1).astype(np.float32)


def _labels(
    rng: np.random.Generator,
    family: str,
    score: np.ndarray,
    seen_shared: dict[str, np.ndarray],
    specific: dict[str, np.ndarray],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if family == "mosi":
        return _annotated(rng, score, scale=1.8, bound=3, noise=0.7), {}
    if family == "sims":
        labels = _annotated(rng, score, scale=1.0, bound=1, noise=0.6, shift=-0.15)
        unimodal = {}
        for m, seen in seen_shared.items():
            # what an annotator perceives from modality m alone: its noisy view of u, and s_m
            view = (seen + specific[m]) / np.sqrt(seen.var() + 1.0)
            unimodal[m] = _annotated(rng, view, scale=1.0, bound=1, noise=0.6, shift=-0.15)
        return labels, unimodal
    # MVSA-Single: about 30 % negative, 10 % neutral, 60 % positive; z-scores of those quantiles
    return np.digitize(score, [-0.5244, -0.2533]).astype(np.int64), {}


def _ids(rng: np.random.Generator, like: Like, video: np.ndarray, split_of: np.ndarray) -> list[str]:
    """MMSA ids "{video}$_${clip}" with YouTube-like video names; MVSA ids are shuffled integers."""
    if like.layout == "imagetext":
        return [str(i) for i in rng.permutation(len(video)) + 1]
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    names: dict[str, None] = {}  # insertion-ordered set: a repeated draw is simply drawn again
    while len(names) <= video.max():
        names["".join(rng.choice(alphabet, 11))] = None
    video_names = list(names)
    first_row = np.r_[0, np.flatnonzero(np.diff(video)) + 1]  # videos are consecutive runs
    clip = np.arange(len(video)) - first_row[video] + 1
    return [f"{video_names[v]}$_${c}" for v, c in zip(video, clip)]


def _text_tokens(rng: np.random.Generator, lengths: np.ndarray, max_len: int) -> np.ndarray:
    """BERT-style (N, 3, L): token ids ([CLS] ... [SEP], 0 = padding), attention mask, segments."""
    n = len(lengths)
    valid = np.arange(max_len)[None, :] < lengths[:, None]
    ids = rng.integers(1000, 30522, (n, max_len)) * valid
    ids[:, 0] = 101
    ids[np.arange(n), lengths - 1] = 102
    return np.stack([ids, valid.astype(np.int64), np.zeros_like(ids)], axis=1)


_OPENERS = ("i think", "honestly", "well", "you know", "overall", "so", "to be fair", "and then", "i mean")
_NOUNS = ("movie", "story", "acting", "ending", "plot", "music", "cast", "film", "script", "dialogue")
_FILLERS = (
    "um",
    "you know",
    "i guess",
    "to be honest",
    "for me",
    "at the end of the day",
    "and stuff",
    "if that makes sense",
    "like the whole time",
    "which surprised me",
)
_SENTIMENT_WORDS = (
    ("terrible", "awful", "horrible", "a total waste", "painful"),
    ("bad", "boring", "disappointing", "weak", "pretty dull"),
    ("okay", "average", "fine i guess", "not bad not great", "alright"),
    ("good", "nice", "enjoyable", "fun", "pretty solid"),
    ("amazing", "brilliant", "fantastic", "wonderful", "just perfect"),
)


def _sentences(rng: np.random.Generator, score: np.ndarray, word_counts: np.ndarray) -> list[str]:
    """Templated transcripts whose sentiment word follows the latent score (five bins)."""
    bins = np.digitize(score, [-1.0, -0.3, 0.3, 1.0])
    openers = rng.integers(0, len(_OPENERS), len(score))
    nouns = rng.integers(0, len(_NOUNS), len(score))
    words = rng.integers(0, len(_SENTIMENT_WORDS[0]), len(score))
    sentences = []
    for i in range(len(score)):
        core = f"{_OPENERS[openers[i]]} the {_NOUNS[nouns[i]]} was {_SENTIMENT_WORDS[bins[i]][words[i]]}"
        words_left = int(word_counts[i]) - len(core.split())
        while words_left > 0:
            filler = _FILLERS[rng.integers(0, len(_FILLERS))]
            core, words_left = f"{core} {filler}", words_left - len(filler.split())
        sentences.append(core)
    return sentences


# --------------------------------------------------------------------------- layouts


def _rows(world: _World, split_index: int) -> slice:
    """Samples are generated split after split, so a split is a slice: views, not copies."""
    rows = np.flatnonzero(world.split_of == split_index)
    return slice(int(rows[0]), int(rows[-1]) + 1)


def _mmsa_dict(world: _World) -> dict:
    """The unaligned MMSA layout, exactly as the real pickles hold it."""
    raw = {}
    for index, split in enumerate(SPLITS):
        rows = _rows(world, index)
        table: dict = {
            "id": world.ids[rows],
            "raw_text": world.raw_text[rows],
            "text_bert": world.text_tokens[rows],
        }
        for m, x in world.features.items():
            table[m] = x[rows]
            if m != "text":
                table[f"{m}_lengths"] = [int(v) for v in world.lengths[m][rows]]
        table["regression_labels"] = world.labels[rows]
        for m, key in (("text", "T"), ("audio", "A"), ("vision", "V")):
            if m in world.unimodal_labels:
                table[f"regression_labels_{key}"] = world.unimodal_labels[m][rows]
        raw[split] = table
    if world.metadata:
        raw["metadata"] = world.metadata
    return raw


def _imagetext_parts(world: _World) -> tuple[dict[str, list[dict]], dict[str, tuple[list[str], np.ndarray]]]:
    splits = {}
    for index, split in enumerate(SPLITS):
        rows = _rows(world, index)
        splits[split] = [
            {"id": id_, "text": text, "label": MVSA_CLASSES[label]}
            for id_, text, label in zip(world.ids[rows], world.raw_text[rows], world.labels[rows])
        ]
    # single-vector features, as sentence / image encoders give them: (N, D)
    features = {m: (world.ids, x[:, 0, :]) for m, x in world.features.items()}
    return splits, features


def _imagetext_dataset(world: _World, name: str, source: str) -> Dataset:
    splits = {}
    for index, split in enumerate(SPLITS):
        rows = _rows(world, index)
        splits[split] = Split(
            name=split,
            ids=world.ids[rows],
            features={m: x[rows] for m, x in world.features.items()},
            lengths={m: v[rows] for m, v in world.lengths.items()},
            labels=world.labels[rows],
            raw_text=world.raw_text[rows],
        )
    modalities = tuple(ModalitySpec(m, dim, max_len) for m, max_len, dim in world.like.modalities)
    spec = DatasetSpec(name, modalities, LabelSpec("classification", classes=MVSA_CLASSES))
    return Dataset(spec, splits, source=source, metadata=world.metadata)
