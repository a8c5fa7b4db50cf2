"""Missing-modality and low-quality protocols (PROTOCOLS.md section 2) and label scarcity.

Every protocol is a pure function of (data shapes, parameters, seed): it draws from a local
`np.random.default_rng(seed)` and never from a global RNG, so the same seed gives every method
the same masks. A protocol only produces a `MissingPattern`; `SplitTensors` applies it.

Protocol strings (CLI and reports):

    none                      complete data
    modality:R                fraction R of all (sample, modality) entries missing, >= 1 kept
    subset:l,a                the same kept set for every sample
    frame:P                   each valid frame / token dropped with probability P
    disrupt:MODE:fixed:MOD    DRF: every sample disrupted on modality MOD
    disrupt:MODE:random:R     DRF: round(R*N) samples disrupted, modality drawn at random
                              (MODE: C = corrupt silently, D = discard, CD = half and half)
    textnoise:KIND:R          real low-quality text, on the raw transcripts before encoding
                              (KIND: drop, mask, typo, asr; R = fraction of words changed)
    textnoise:mix:F           round(F*N) samples degraded, kind and rate drawn per sample
                              (features/textnoise.py applies it; it is not a mask)

The protocols act on the dataset's shapes. A modality already absent in the source data
(length 0) stays absent whatever the protocol says; `disrupt` never discards the last
source-available modality of a sample (see `make_pattern`).
"""

from __future__ import annotations

import warnings

from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import torch

from robustmsa.data.batch import Batch, MissingPattern
from robustmsa.data.schema import MODALITY_ALIASES, DatasetSpec, Split

PROTOCOL_NAMES = ("none", "modality", "subset", "frame", "disrupt", "textnoise")
DISRUPT_MODES = ("C", "D", "CD")
TRAIN_DISRUPTIONS = ("none", "disrupt")  # training-time disruption a method may add (`training_augmentation`)
DISRUPT_KINDS = ("fixed", "random")
TEXTNOISE_KINDS = ("drop", "mask", "typo", "asr")
TEXTNOISE_MIX = "mix"
CORRUPT_FRACTION = (0.4, 0.8)  # DRF: 40-80% of a corrupted modality's frames / elements

# Preferred short name per full modality name, for table-style subset strings ({l}, {a,v}).
_SHORT_NAMES = {full: short for short, full in reversed(list(MODALITY_ALIASES.items()))}


# ----------------------------------------------------------------------------- Protocol


def _format_number(value: float) -> str:
    """Shortest text that reads back to the same float ('0.3', '1'), so str/parse round-trip."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _parse_number(protocol: str, what: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"protocol {protocol}: {what} {text!r} is not a number") from None
    if not np.isfinite(value):
        raise ValueError(f"protocol {protocol}: {what} {text!r} is not a finite number")
    return value


def _check_range(protocol: str, what: str, value: float, low: float, high: float, low_open: bool = False):
    inside = (low < value if low_open else low <= value) and value <= high
    if not inside:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"protocol {protocol}: {what} {_format_number(value)} outside {interval}")


def _split_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not text.strip() or any(not name for name in names):
        raise ValueError(f"protocol subset: empty modality name in {text!r}; expected e.g. subset:l,a")
    return names


def _parse_disrupt(text: str) -> str:
    """'cd:Random:0.50' -> 'CD:random:0.5': one canonical spelling per setting."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ValueError(f"protocol disrupt: expected MODE:fixed:MODALITY or MODE:random:R, got {text!r}")
    mode, kind, target = parts[0].strip().upper(), parts[1].strip().lower(), parts[2].strip()
    if mode not in DISRUPT_MODES:
        raise ValueError(f"protocol disrupt: mode {parts[0]!r} not one of {', '.join(DISRUPT_MODES)}")
    if kind not in DISRUPT_KINDS:
        raise ValueError(f"protocol disrupt: kind {parts[1]!r} not one of {', '.join(DISRUPT_KINDS)}")
    if kind == "random":
        rate = _parse_number("disrupt", "rate", target)
        _check_range("disrupt", "rate", rate, 0.0, 1.0, low_open=True)
        target = _format_number(rate)
    elif not target:
        raise ValueError("protocol disrupt: fixed needs a modality, e.g. disrupt:D:fixed:l")
    return f"{mode}:{kind}:{target}"


def _parse_textnoise(text: str) -> str:
    """'Typo:0.30' -> 'typo:0.3'; 'mix:0.5' -> 'mix:0.5' (a fraction of samples, not of words)."""
    kind, sep, rate = text.partition(":")
    kind = kind.strip().lower()
    if kind not in (*TEXTNOISE_KINDS, TEXTNOISE_MIX) or not sep:
        raise ValueError(f"protocol textnoise: expected KIND:RATE with KIND one of "
                         f"{', '.join((*TEXTNOISE_KINDS, TEXTNOISE_MIX))}, e.g. textnoise:typo:0.3, got {text!r}")
    value = _parse_number("textnoise", "rate", rate.strip())
    _check_range("textnoise", "rate", value, 0.0, 1.0)
    return f"{kind}:{_format_number(value)}"


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol and its parameter; `str(p)` is the CLI / report spelling.

    >>> p = Protocol.parse("modality:0.3")
    >>> (p.name, p.param, str(p))
    ('modality', 0.3, 'modality:0.3')
    """

    name: str
    param: float | str | None = None

    def __post_init__(self):
        # Direct construction is as strict as parse() and stores the same canonical parameter,
        # so equal settings compare equal and str() always reads back.
        if self.name not in PROTOCOL_NAMES:
            raise ValueError(f"unknown protocol {self.name!r}; expected one of {', '.join(PROTOCOL_NAMES)}")
        if (self.name == "none") != (self.param is None):
            example = "none" if self.name == "none" else f"{self.name}:{_EXAMPLES[self.name]}"
            raise ValueError(f"protocol {self.name}: wrong parameter {self.param!r}, e.g. {example}")
        param = self.param
        if self.name in ("modality", "frame"):
            param = _parse_number(self.name, "rate", str(self.param))
            _check_range(self.name, "rate", param, 0.0, 1.0)
        elif self.name == "subset":
            param = ",".join(_split_names(str(self.param)))
        elif self.name == "disrupt":
            param = _parse_disrupt(str(self.param))
        elif self.name == "textnoise":
            param = _parse_textnoise(str(self.param))
        object.__setattr__(self, "param", param)

    @classmethod
    def parse(cls, text: str) -> Protocol:
        """Read 'none', 'modality:0.3', 'subset:l,a', 'frame:0.2', 'disrupt:CD:random:0.5'."""
        name, sep, rest = text.strip().partition(":")
        name = name.strip().lower()
        if name not in PROTOCOL_NAMES:
            known = ", ".join(PROTOCOL_NAMES)
            raise ValueError(f"unknown protocol {name!r} in {text!r}; expected one of {known}")
        if name == "none":
            if rest.strip():
                raise ValueError(f"protocol none takes no parameter, got {text!r}")
            return cls("none")
        if not sep or not rest.strip():
            raise ValueError(f"protocol {name}: needs a parameter, e.g. {name}:{_EXAMPLES[name]}")
        if name in ("modality", "frame"):
            return cls(name, _parse_number(name, "rate", rest.strip()))
        if name == "subset":
            return cls(name, ",".join(_split_names(rest)))
        if name == "textnoise":
            return cls(name, _parse_textnoise(rest))
        return cls(name, _parse_disrupt(rest))

    def __str__(self) -> str:
        if self.param is None:
            return self.name
        if isinstance(self.param, str):
            return f"{self.name}:{self.param}"
        return f"{self.name}:{_format_number(float(self.param))}"


_EXAMPLES = {"modality": "0.3", "subset": "l,a", "frame": "0.2", "disrupt": "CD:random:0.5", "textnoise": "typo:0.3"}


def standard_subsets(modalities: tuple[str, ...] | list[str]) -> list[Protocol]:
    """The incomplete kept sets of FSRF-style tables: singletons, then pairs, ... (never the full set).

    >>> [str(p) for p in standard_subsets(("text", "audio", "vision"))]
    ['subset:l', 'subset:a', 'subset:v', 'subset:l,a', 'subset:l,v', 'subset:a,v']
    """
    names = [_SHORT_NAMES.get(m, m) for m in modalities]
    kept_sets = [c for size in range(1, len(names)) for c in combinations(names, size)]
    return [Protocol("subset", ",".join(kept)) for kept in kept_sets]


# ----------------------------------------------------------------------- pure mask makers


def realised_modality_rate(rate: float, m: int) -> float:
    """The missing rate `modality:<rate>` realises with m modalities: at most (M-1)/M, since every
    sample keeps one modality (0.7 with three modalities is realised as 0.667).

    >>> round(realised_modality_rate(0.7, 3), 3), realised_modality_rate(0.5, 3)
    (0.667, 0.5)
    """
    return min(rate, (m - 1) / m)


def modality_present(n: int, m: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """(n, m) bool with exactly round(rate*n*m) False entries and >= 1 True per row.

    Each sample owns m-1 removable slots; choosing the missing count among all n*(m-1) slots
    uniformly makes the total exact while no sample can lose its last modality (GCNet/CPM-Net).
    """
    high = realised_modality_rate(1.0, m)
    if not 0.0 <= rate < 1.0:
        shown = _format_number(rate)
        raise ValueError(f"protocol modality: rate {shown} outside [0, 1) for {m} modalities")
    if rate > high + 1e-9:
        # The field's tables use r = 0.7 for three modalities; like CPM-Net's mask generator,
        # a rate past (M-1)/M leaves every sample exactly one modality.
        warnings.warn(
            f"protocol modality: rate {_format_number(rate)} exceeds (M-1)/M for {m} modalities; "
            f"realised as {high:.3f} (every sample keeps exactly one modality)",
            stacklevel=2,
        )
        rate = high
    missing_total = min(int(round(rate * n * m)), n * (m - 1))
    slots = rng.choice(n * (m - 1), size=missing_total, replace=False) if m > 1 else np.zeros(0, int)
    missing_per_sample = np.bincount(slots // max(m - 1, 1), minlength=n)
    # Which modalities: a random ranking per sample; the lowest-ranked ones go missing.
    rank = np.argsort(np.argsort(rng.random((n, m)), axis=1), axis=1)
    return rank >= missing_per_sample[:, None]


def subset_present(n: int, modalities: tuple[str, ...], kept: list[str]) -> np.ndarray:
    """(n, M) bool: the modalities in `kept` (full names) for every sample."""
    row = np.array([m in kept for m in modalities], dtype=bool)
    return np.repeat(row[None, :], n, axis=0)


def valid_frames(lengths: np.ndarray, max_len: int) -> np.ndarray:
    """(N, L) bool: True on the first lengths[i] positions (the non-padding frames)."""
    return np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]


def frame_keep(lengths: np.ndarray, max_len: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """(N, L) bool: each valid frame dropped (False) with probability p; padding stays True."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"protocol frame: rate {_format_number(p)} outside [0, 1]")
    dropped = valid_frames(lengths, max_len) & (rng.random((len(lengths), max_len)) < p)
    return ~dropped


def corrupt_count(fraction: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """How many of `sizes` positions a DRF corruption of `fraction` hits.

    round(fraction*size), but kept within [40%, 80%] of the size where an integer count fits there
    (short sequences would otherwise round out of DRF's range) and >= 1 for any non-empty size.
    """
    low_frac, high_frac = CORRUPT_FRACTION
    count = np.rint(fraction * sizes)
    low, high = np.ceil(low_frac * sizes - 1e-9), np.floor(high_frac * sizes + 1e-9)
    fits = low <= high
    count = np.where(fits, np.clip(count, low, high), count)
    return np.where(sizes > 0, np.maximum(count, 1), 0).astype(np.int64)


def corrupt_positions(sizes: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """(K, width) bool: for row k, a U(0.4, 0.8) fraction of its first sizes[k] positions is True."""
    fraction = rng.uniform(*CORRUPT_FRACTION, size=len(sizes))
    count = corrupt_count(fraction, np.asarray(sizes))
    keys = rng.random((len(sizes), width))
    keys[~valid_frames(sizes, width)] = np.inf  # padding is never picked
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    return rank < count[:, None]


def split_half(k: int, rng: np.random.Generator) -> np.ndarray:
    """(k,) bool, exactly floor(k/2) or ceil(k/2) True (a seeded coin decides the odd one)."""
    n_true = k // 2 + (k % 2) * int(rng.integers(0, 2))
    return rng.permutation(k) < n_true


# ------------------------------------------------------------------------- make_pattern


def _resolve(spec: DatasetSpec, protocol: str, name: str) -> str:
    try:
        return spec.resolve_modality(name)
    except KeyError as exc:
        raise ValueError(f"protocol {protocol}: {exc.args[0]}") from None


def _available(split: Split, spec: DatasetSpec) -> np.ndarray:
    """(N, M) bool: the modality has at least one frame in the source data."""
    return np.stack([np.asarray(split.lengths[m]) > 0 for m in spec.modality_names], axis=1)


def _disrupt_targets(kind: str, target: str, split: Split, spec: DatasetSpec, rng: np.random.Generator):
    """Rows to disrupt and the modality column of each."""
    n = len(split)
    if kind == "fixed":
        column = spec.modality_names.index(_resolve(spec, "disrupt", target))
        return np.arange(n), np.full(n, column)
    rows = np.sort(rng.choice(n, size=int(round(float(target) * n)), replace=False))
    # Uniform over the modalities the sample actually has, so a disruption is never a no-op.
    scores = rng.random((len(rows), len(spec.modalities)))
    scores[~_available(split, spec)[rows]] = -1.0
    return rows, scores.argmax(axis=1)


def disrupt_choice(
    split: Split, spec: DatasetSpec, param: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DRF's seeded choice: the disrupted rows, the modality column of each, and whether each is
    discarded (else corrupted). Shared by the feature-level pattern below and the raw-level
    disruption of images and texts (robustmsa.features.rawdisrupt), so both hit the same entries.

    A discard that would remove the sample's last source-available modality becomes a
    corruption instead. On complete data with 2+ modalities this never happens for `fixed`
    (each sample loses one of >= 2) nor for `random` (one modality per sample).
    """
    mode, kind, target = param.split(":")
    rows, columns = _disrupt_targets(kind, target, split, spec, rng)
    if mode == "CD":
        discard = split_half(len(rows), rng)
    else:
        discard = np.full(len(rows), mode == "D")
    available = _available(split, spec)
    only_one_left = available[rows].sum(axis=1) <= 1
    discard &= ~only_one_left
    return rows, columns, discard


def disrupt_pattern(split: Split, spec: DatasetSpec, param: str, rng: np.random.Generator) -> MissingPattern:
    """DRF: per disrupted sample one modality is discarded (told) or corrupted (not told)."""
    rows, columns, discard = disrupt_choice(split, spec, param, rng)
    present = np.ones((len(split), len(spec.modalities)), dtype=bool)
    present[rows[discard], columns[discard]] = False
    corrupt = {}
    for j, name in enumerate(spec.modality_names):
        hit = rows[~discard & (columns == j)]
        if len(hit) == 0:
            continue
        n, length, dim = split.features[name].shape
        if length == 1:  # one pooled vector: corrupt its elements
            sizes = np.where(np.asarray(split.lengths[name])[hit] > 0, dim, 0)
            mask = np.zeros((n, 1, dim), dtype=bool)
            mask[hit, 0, :] = corrupt_positions(sizes, dim, rng)
        else:
            mask = np.zeros((n, length, 1), dtype=bool)
            mask[hit, :, 0] = corrupt_positions(np.asarray(split.lengths[name])[hit], length, rng)
        corrupt[name] = mask
    return MissingPattern(present, {}, corrupt)


def make_pattern(split: Split, spec: DatasetSpec, protocol: Protocol, seed: int) -> MissingPattern:
    """The masks `protocol` gives this split with this seed (same inputs, same masks).

    >>> pattern = make_pattern(split, spec, Protocol.parse("modality:0.3"), seed=0)  # doctest: +SKIP
    >>> SplitTensors(split, spec, pattern).batch(slice(0, 32))  # doctest: +SKIP
    """
    rng = np.random.default_rng(seed)
    n, names = len(split), spec.modality_names
    if protocol.name == "none":
        return MissingPattern.complete(split, names)
    if protocol.name == "modality":
        return MissingPattern(modality_present(n, len(names), float(protocol.param), rng), {}, {})
    if protocol.name == "subset":
        kept = [_resolve(spec, "subset", name) for name in _split_names(str(protocol.param))]
        return MissingPattern(subset_present(n, names, kept), {}, {})
    if protocol.name == "frame":
        p = float(protocol.param)
        keep = {m: frame_keep(split.lengths[m], split.features[m].shape[1], p, rng) for m in names}
        if split.text_bert is not None:  # drawn last: the feature masks stay what they were without tokens
            mask = split.text_bert[:, 1]
            keep["text_bert"] = frame_keep(mask.sum(axis=1), mask.shape[1], p, rng) | (mask == 0)
        return MissingPattern(np.ones((n, len(names)), dtype=bool), keep, {})
    if protocol.name == "textnoise":
        raise ValueError(f"protocol {protocol} degrades the raw text, not a mask: evaluate through "
                         "evaluation.evaluate.split_tensors (features.textnoise.textnoise_split)")
    return disrupt_pattern(split, spec, str(protocol.param), rng)


# ------------------------------------------------------------------------ label scarcity


def label_strata(labels: np.ndarray, family: str) -> np.ndarray:
    """Integer stratum per sample: the class, MOSI's 7 rounded classes, or SIMS's 5 bins."""
    labels = np.asarray(labels)
    if family == "classification":
        return labels.astype(np.int64)
    if family == "mosi":
        return np.round(np.clip(labels, -3.0, 3.0)).astype(np.int64)
    if family == "sims":
        return np.digitize(labels, [-0.7, -0.1, 0.1, 0.7], right=True).astype(np.int64)
    raise ValueError(f"unknown label family {family!r}; expected classification, mosi or sims")


def _allocate(sizes: np.ndarray, ratio: float, total: int, rng: np.random.Generator) -> np.ndarray:
    """Largest remainder: floor(ratio*size) each, the leftover to the largest fractional parts.

    Quotas are ratio*size (not total*size/N), so each stratum ends within 1 of ratio*size.
    Ties are broken by a seeded random order, never by stratum index.
    """
    quota = ratio * sizes
    counts = np.floor(quota + 1e-9).astype(np.int64)
    remainder = np.where(counts < sizes, quota - counts, -np.inf)  # full strata take no more
    order = np.lexsort((rng.random(len(sizes)), -remainder))
    counts[order[: total - counts.sum()]] += 1
    return counts


def labeled_mask(labels: np.ndarray, ratio: float, seed: int, family: str) -> np.ndarray:
    """(N,) bool: exactly max(1, round(ratio*N)) labeled samples, stratified by label.

    >>> mask = labeled_mask(np.array([0, 0, 1, 1, 1, 1]), 0.5, seed=0, family="classification")
    >>> int(mask.sum()), int(mask[:2].sum())
    (3, 1)
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"labeled_ratio {ratio!r} outside (0, 1]")
    strata = label_strata(labels, family)
    n = len(strata)
    rng = np.random.default_rng(seed)
    values, inverse = np.unique(strata, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(values))
    counts = _allocate(sizes, ratio, min(n, max(1, int(round(ratio * n)))), rng)
    mask = np.zeros(n, dtype=bool)
    for stratum, count in enumerate(counts):
        members = np.flatnonzero(inverse == stratum)
        mask[rng.choice(members, size=count, replace=False)] = True
    return mask


# ------------------------------------------------------- training-time augmentation (torch)


def _uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=like.device)


def random_modality_dropout(
    present: torch.Tensor, generator: torch.Generator | None = None, complete_fraction: float = 0.5
) -> torch.Tensor:
    """LNLN-style training augmentation: a new (B, M) bool mask, always a subset of `present`.

    round(complete_fraction*B) random samples stay complete; each other sample draws r ~ U(0, 1)
    and drops each present modality with probability r, but keeps one (at random) if all would
    go, because a sample with nothing left teaches the model nothing.
    """
    complete = _complete_rows(present, complete_fraction, generator)
    rate = _uniform((present.shape[0], 1), present, generator)
    kept = present & ~(_uniform(tuple(present.shape), present, generator) < rate)
    kept |= complete[:, None] & present
    emptied = ~kept.any(dim=1) & present.any(dim=1)
    return kept | (_one_present_modality(present, generator) & emptied[:, None])


def _one_present_modality(present: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(B, M) bool: one present modality per row, drawn uniformly (rows with none get an arbitrary one)."""
    scores = _uniform(tuple(present.shape), present, generator).masked_fill(~present, -1.0)
    return torch.zeros_like(present).scatter_(1, scores.argmax(dim=1, keepdim=True), True)


def _complete_rows(present: torch.Tensor, fraction: float, generator: torch.Generator | None) -> torch.Tensor:
    """(B,) bool: exactly round(fraction * B) random rows that an augmentation leaves whole."""
    batch = present.shape[0]
    return torch.randperm(batch, generator=generator, device=present.device) < round(fraction * batch)


def random_frame_dropout(
    frame_mask: torch.Tensor, p_max: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per sample p ~ U(0, p_max); each valid frame dropped with probability p (subset of frame_mask).

    A sample may lose all its frames (as under `frame:1.0` at evaluation); methods handle that.
    """
    rate = _uniform((frame_mask.shape[0],) + (1,) * (frame_mask.dim() - 1), frame_mask, generator) * p_max
    return frame_mask & ~(_uniform(tuple(frame_mask.shape), frame_mask, generator) < rate)


def training_missing_view(
    batch: Batch, complete_fraction: float, frame_drop_max: float, generator: torch.Generator | None = None
) -> Batch:
    """The one training-time missing augmentation every method shares (so tables compare methods,
    not augmentations): `random_modality_dropout` (inter-modality) and, on the samples it did not
    keep whole, `random_frame_dropout` of the surviving frames (intra-modality).

    FSRF's DAS missing view is this with complete_fraction = 0 (its full view covers complete data);
    the supervised baselines use complete_fraction = 0.5, i.e. half clean, half augmented per batch,
    the same mix FSRF's averaged two-view task loss sees.
    """
    complete = _complete_rows(batch.present, complete_fraction, generator)
    dropped = random_modality_dropout(batch.present, generator, complete_fraction=0.0)
    present = torch.where(complete[:, None], batch.present, dropped) & batch.present
    if frame_drop_max <= 0:
        return batch.with_present(present)
    frame_mask = {}
    for j, m in enumerate(batch.modalities):
        surviving = batch.frame_mask[m] & present[:, j, None]
        keep = random_frame_dropout(surviving, frame_drop_max, generator)
        frame_mask[m] = torch.where(complete.view(-1, *([1] * (keep.dim() - 1))), surviving, keep)
    return batch.with_present(present, frame_mask)  # one pass over the features, not two


@dataclass
class Disruption:
    """A training batch after `random_disruption`, with what was done to it (B, M) bool each:
    `discarded` = removed and masked (the method is told), `corrupted` = partly zeroed, not told."""

    batch: Batch
    discarded: torch.Tensor
    corrupted: torch.Tensor

    @classmethod
    def none(cls, batch: Batch) -> Disruption:
        """The batch as it is: nothing discarded or corrupted."""
        untouched = torch.zeros_like(batch.present)
        return cls(batch, untouched, untouched)


def _random_rows(hit: torch.Tensor, count: torch.Tensor | int, generator: torch.Generator | None) -> torch.Tensor:
    """(B,) bool: `count` rows drawn uniformly among the True rows of `hit`."""
    keys = _uniform(tuple(hit.shape), hit, generator).masked_fill(~hit, 2.0)
    rank = keys.argsort().argsort()
    return hit & (rank < count)


def corrupt_positions_torch(valid: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Torch twin of `corrupt_positions`: (K, W) bool, for each row a U(0.4, 0.8) fraction of its
    valid positions (the same `corrupt_count` rounding) is True; invalid positions never are."""
    sizes = valid.sum(dim=1)
    fraction = CORRUPT_FRACTION[0] + (CORRUPT_FRACTION[1] - CORRUPT_FRACTION[0]) * _uniform((valid.shape[0],), valid, generator)
    count = corrupt_count(fraction.cpu().double().numpy(), sizes.cpu().numpy())
    keys = _uniform(tuple(valid.shape), valid, generator).masked_fill(~valid, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    return valid & (rank < torch.as_tensor(count, device=valid.device)[:, None])


def random_disruption(
    batch: Batch, rate: float, mode: str = "CD", generator: torch.Generator | None = None
) -> Disruption:
    """DRF's training-time disruption, the in-batch twin of `disrupt:MODE:random:RATE`: round(rate*B)
    samples each lose one present modality (drawn uniformly), discarded (D), corrupted (C: a
    U(0.4, 0.8) fraction of its valid frames, or of the elements of a single-vector feature,
    zeroed without telling the method) or half and half (CD). As in `disrupt_pattern`, a discard
    that would remove a sample's last present modality becomes a corruption.
    """
    if mode not in DISRUPT_MODES:
        raise ValueError(f"disruption mode {mode!r} not one of {', '.join(DISRUPT_MODES)}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"disruption rate {_format_number(rate)} outside [0, 1]")
    present = batch.present
    has_any = present.any(dim=1)
    hit = _random_rows(has_any, round(rate * int(has_any.sum())), generator)
    target = _one_present_modality(present, generator) & hit[:, None]
    if mode == "CD":
        hits = int(hit.sum())
        coin = int(_uniform((1,), present, generator)[0] < 0.5)
        discard_row = _random_rows(hit, hits // 2 + (hits % 2) * coin, generator)
    else:
        discard_row = hit if mode == "D" else torch.zeros_like(hit)
    discard_row = discard_row & (present.sum(dim=1) > 1)
    discarded = target & discard_row[:, None]
    corrupted = target & ~discard_row[:, None]
    view = batch.with_present(present & ~discarded)
    features = dict(view.features)
    for j, m in enumerate(view.modalities):
        rows = corrupted[:, j]
        if not bool(rows.any()):
            continue
        x = features[m]
        if x.shape[1] == 1:  # a single feature vector: corrupt its elements
            valid = rows[:, None].expand(-1, x.shape[2])
            mask = corrupt_positions_torch(valid, generator)[:, None, :]
        else:
            valid = view.frame_mask[m] & rows[:, None]
            mask = corrupt_positions_torch(valid, generator)[:, :, None]
        features[m] = x * ~mask
    return Disruption(replace(view, features=features), discarded, corrupted)


def training_augmentation(
    batch: Batch,
    missing: bool,
    frame_drop_max: float,
    disruption: str,
    disrupt_rate: float,
    disrupt_mode: str,
    generator: torch.Generator | None = None,
) -> Disruption:
    """The one training-time augmentation path every supervised method shares, as two named
    options, so a table can train any method with any augmentation and compare methods, not
    augmentations: `missing` = `training_missing_view` (half the batch whole), then `disruption`
    = "disrupt" adds DRF's `random_disruption` (a fraction `disrupt_rate` of samples lose one
    modality, corrupted silently or discarded) on top. Returns what was corrupted / discarded.
    """
    if disruption not in TRAIN_DISRUPTIONS:
        raise ValueError(f"train_disruption {disruption!r} not one of {', '.join(TRAIN_DISRUPTIONS)}")
    view = training_missing_view(batch, 0.5, frame_drop_max, generator) if missing else batch
    if disruption == "disrupt":
        return random_disruption(view, disrupt_rate, disrupt_mode, generator)
    return Disruption.none(view)
