"""`textnoise:KIND:RATE`: real low-quality text, made on the raw transcripts and re-encoded.

DRF's low-quality modality on real data: the words a viewer's ASR or keyboard gets wrong, not
zeroed feature entries. Applied to the raw text of a split (lower-cased first when the dataset's
text was), then encoded with the encoder the dataset's metadata records, through the same
content cache as `data build`, so a sweep re-encodes nothing twice and rate 0 encodes nothing.

    drop   the chosen words are deleted
    mask   the chosen words become the encoder's mask token ([MASK] / <mask>)
    typo   on words longer than 3 letters (as MultiBench): an adjacent-letter swap, a deletion
           or a QWERTY-neighbour substitution (one of the three, at random)
    asr    a homophone or near-spelling from a small built-in table (their -> there, to -> too,
           night -> nite, ...) on the words the table covers
    mix    textnoise:mix:F: round(F*N) samples of the split degraded, each with its own kind
           (uniform over the four) and word rate (uniform in MIX_RATES)

The rate is realised exactly: round(rate * n) words change, n being the words the kind can
change (all words for drop / mask; the long words for typo; the covered words for asr). Which
words is a per-(sample, seed) ranking (features.rawdisrupt.post_rng), shared by all kinds and
rates, so a higher rate changes a superset of the words of a lower one, and the same seed gives
the same words whatever else the split holds. A sample's degraded text stays present (length 1):
methods are not told, as for a corruption.

>>> noisy_text("the movie was really great", "mask", 0.4, 0, "s1", "[MASK]")
'[MASK] [MASK] was really great'
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from robustmsa.data.schema import Dataset, Split
from robustmsa.features.rawdisrupt import post_rng
from robustmsa.features.text import SentenceLayout
from robustmsa.missing import TEXTNOISE_KINDS, TEXTNOISE_MIX, Protocol

CURVE_RATES = ("0.2", "0.4", "0.6", "0.8")  # the bench curve (rate 0 is the complete column)
MIX_FRACTION = "0.5"
MIX_RATES = (0.1, 0.8)  # textnoise:mix: each degraded sample's word rate ~ U(0.1, 0.8)
TYPO_MIN_LETTERS = 4  # typo touches words longer than 3 letters (MultiBench)

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
KEYBOARD_NEIGHBOURS = {
    key: "".join(_ROWS[r2][c2] for r2 in range(max(r - 1, 0), min(r + 2, 3))
                 for c2 in range(max(c - 1, 0), min(c + 2, len(_ROWS[r2]))) if (r2, c2) != (r, c))
    for r, row in enumerate(_ROWS) for c, key in enumerate(row)
}

# Homophones and near-spellings an English ASR system or a hurried transcriber produces.
_ASR_PAIRS = (
    "their there", "there their", "they're their", "your you're", "you're your", "its it's", "it's its",
    "to too", "too to", "two to", "for four", "four for", "then than", "than then", "were where",
    "where were", "know no", "no know", "new knew", "knew new", "right write", "write right", "hear here",
    "here hear", "see sea", "by buy", "buy by", "one won", "won one", "would wood", "whole hole",
    "our hour", "be bee", "wait weight", "week weak", "weak week", "meet meat", "made maid", "peace piece",
    "i eye", "a uh", "and an", "an and", "of have", "have of", "is as", "as is", "it at", "at it",
    "in and", "the a", "this these", "these this", "that than", "what want", "want what", "was wuz",
    "really rilly", "good could", "could good", "great grate", "bad bed", "movie moovy", "film flim",
    "like lake", "just jest", "very vary", "night nite", "light lite", "though tho", "through thru",
    "because cause", "going gonna", "want wanna", "kind kinda", "sort sorta", "okay ok", "all awl",
    "not knot", "well wheel", "some sum", "son sun", "tail tale", "plain plane", "scene seen",
    "seen scene", "real reel", "way weigh", "role roll", "roll role", "pretty purdy", "funny fanny",
    "story storey", "acting axing", "think thing", "thing think", "said set",
)
ASR_TABLE = dict(pair.split() for pair in _ASR_PAIRS)
# Near-spelling rules for words the table lacks: (ending, replacement), first match wins.
ASR_ENDINGS = (("tion", "shun"), ("ight", "ite"), ("ough", "uff"), ("ing", "in"), ("ed", "d"), ("ly", "lee"),
               ("er", "a"), ("ck", "k"), ("ph", "f"), ("le", "el"))


def curve_protocols() -> list[str]:
    """Every kind at every curve rate, then the mix: what `bench` and `eval` sweep by default."""
    return [f"textnoise:{k}:{r}" for k in TEXTNOISE_KINDS for r in CURVE_RATES] + [f"textnoise:mix:{MIX_FRACTION}"]


# ------------------------------------------------------------------------- one text


def _eligible(words: list[str], kind: str) -> np.ndarray:
    """Positions the kind can change."""
    if kind in ("drop", "mask"):
        return np.arange(len(words))
    if kind == "typo":
        return np.array([i for i, w in enumerate(words) if len(w) >= TYPO_MIN_LETTERS], dtype=np.int64)
    return np.array([i for i, w in enumerate(words) if _asr(w) != w], dtype=np.int64)


def _asr(word: str) -> str:
    if word in ASR_TABLE:
        return ASR_TABLE[word]
    for ending, replacement in ASR_ENDINGS:
        if word.endswith(ending) and len(word) > len(ending) + 1:
            return word[: -len(ending)] + replacement
    return word


def _typo(word: str, rng: np.random.Generator) -> str:
    """Swap two adjacent letters, delete one, or hit a keyboard neighbour; never a no-op."""
    operation = int(rng.integers(3))
    if operation == 0:
        pairs = [i for i in range(len(word) - 1) if word[i] != word[i + 1]]
        if pairs:
            i = pairs[int(rng.integers(len(pairs)))]
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if operation == 2:
        letters = [i for i, ch in enumerate(word) if ch in KEYBOARD_NEIGHBOURS]
        if letters:
            i = letters[int(rng.integers(len(letters)))]
            neighbours = KEYBOARD_NEIGHBOURS[word[i]]
            return word[:i] + neighbours[int(rng.integers(len(neighbours)))] + word[i + 1:]
    i = int(rng.integers(len(word)))  # deletion (also the fallback: always changes the word)
    return word[:i] + word[i + 1:]


def chosen_words(words: list[str], kind: str, rate: float, seed: int, sample_id: str) -> np.ndarray:
    """Sorted positions of the round(rate * n_eligible) words to change: the first ones of a
    per-(seed, sample) ranking of all positions, so rates nest and kinds share their choices."""
    eligible = _eligible(words, kind)
    rank = post_rng(seed, "textnoise", sample_id).permutation(len(words))
    order = rank[np.isin(rank, eligible)]
    return np.sort(order[: int(round(rate * len(eligible)))])


def noisy_text(text: str, kind: str, rate: float, seed: int, sample_id: str, mask_token: str) -> str:
    """One sample's degraded text (whitespace-separated words; the result is single-spaced)."""
    if kind not in TEXTNOISE_KINDS:
        raise ValueError(f"textnoise kind {kind!r}: expected one of {', '.join(TEXTNOISE_KINDS)}")
    words = text.split()
    chosen = chosen_words(words, kind, rate, seed, sample_id)
    rng = post_rng(seed, f"textnoise:{kind}", sample_id)
    out = list(words)
    for i in chosen:
        if kind == "drop":
            out[i] = None
        elif kind == "mask":
            out[i] = mask_token
        elif kind == "typo":
            out[i] = _typo(words[i], rng)
        else:
            out[i] = _asr(words[i])
    return " ".join(w for w in out if w is not None)


# ------------------------------------------------------------------------- a split


def noisy_texts(texts: list[str], ids: list[str], param: str, seed: int, mask_token: str) -> list[str]:
    """The split's texts under `textnoise:<param>` (param as `Protocol("textnoise", ...).param`).

    The function a method calls to train with real text corruption: same (param, seed), same texts.
    """
    kind, _, rate = param.partition(":")
    rate = float(rate)
    if kind != TEXTNOISE_MIX:
        return [noisy_text(t, kind, rate, seed, i, mask_token) for t, i in zip(texts, ids)]
    n = len(texts)
    hit = np.zeros(n, bool)
    hit[post_rng(seed, "textnoise:mix", "\0".join(ids)).permutation(n)[: int(round(rate * n))]] = True
    out = []
    for text, sample_id, degraded in zip(texts, ids, hit):
        if not degraded:
            out.append(text)
            continue
        draw = post_rng(seed, "textnoise:mix", sample_id)
        kind = TEXTNOISE_KINDS[int(draw.integers(len(TEXTNOISE_KINDS)))]
        out.append(noisy_text(text, kind, float(draw.uniform(*MIX_RATES)), seed, sample_id, mask_token))
    return out


def text_info(dataset: Dataset) -> dict:
    """metadata.features.text of a dataset built from raw text; a one-line error otherwise."""
    info = dataset.metadata.get("features", {}).get("text", {})
    has_text = "text" in dataset.spec.modality_names and all(s.raw_text for s in dataset.splits.values())
    if info.get("kind") != "text-encoder" or not has_text or not any(dataset[s].raw_text[0] for s in dataset.splits):
        raise ValueError(f"protocol textnoise: {dataset.source or dataset.spec.name} records no raw text and text "
                         "encoder (it needs a dataset built from raw text, e.g. robustmsa data build mosi-real)")
    return info


_ENCODERS: dict[str, object] = {}  # fingerprint -> loaded encoder, for the sweeps of one process


def recorded_encoder(info: dict):
    """The encoder `info` (metadata.features.text) records, loaded once per process."""
    from robustmsa.features.text import load_recorded_encoder

    fingerprint = info["encoder"]["fingerprint"]
    if fingerprint not in _ENCODERS:
        _ENCODERS[fingerprint] = load_recorded_encoder(info["encoder"])
    return _ENCODERS[fingerprint]


class _RecordedEncoder(SentenceLayout):
    """The recorded encoder's name, width and fingerprint without loading it: loaded only when a
    text is not in the cache (a sweep over cached settings never loads the model)."""

    def __init__(self, info: dict):
        self.info = info
        recorded = info["encoder"]
        self.name, self.dim, self.fingerprint = recorded["name"], int(recorded["dim"]), recorded["fingerprint"]

    @property
    def mask_token(self) -> str:
        return self.info["encoder"].get("mask_token") or recorded_encoder(self.info).mask_token

    def encode(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return recorded_encoder(self.info).encode(texts, batch_size=batch_size, progress=progress)


def textnoise_split(dataset: Dataset, split: str, protocol: Protocol | str, seed: int,
                    cache_dir: str | os.PathLike | None = "default") -> Split:
    """A copy of `dataset[split]` whose text features encode the degraded transcripts."""
    from robustmsa.features.cache import FeatureCache, default_cache_dir

    protocol = Protocol.parse(protocol) if isinstance(protocol, str) else protocol
    if protocol.name != "textnoise":
        raise ValueError(f"textnoise_split: expected a textnoise protocol, got {protocol}")
    info = text_info(dataset)
    data = dataset[split]
    recorded = _RecordedEncoder(info)
    texts = [t.lower() for t in data.raw_text] if info.get("lowercase") else list(data.raw_text)
    texts = noisy_texts(texts, data.ids, str(protocol.param), seed,
                        recorded.mask_token if str(protocol.param).startswith(("mask", TEXTNOISE_MIX)) else "")
    spec = dataset.spec.modality("text")
    if info.get("level", "sentence") == "sentence":
        cache = FeatureCache(default_cache_dir() if cache_dir == "default" else cache_dir, recorded.fingerprint)
        features = recorded.encode_cached(texts, cache, progress=False)[:, None, :]
        lengths = np.ones(len(texts), np.int64)
    else:
        features, lengths = recorded_encoder(info).sequences(texts, "token", spec.max_len, progress=False)
    if features.shape[1:] != (spec.max_len, spec.dim):
        raise ValueError(f"protocol textnoise: the recorded encoder gives {features.shape[1:]} text features, "
                         f"the dataset holds {(spec.max_len, spec.dim)}")
    lengths = np.where(np.asarray(data.lengths["text"]) > 0, lengths, 0)  # absent text stays absent
    features = features * (lengths > 0)[:, None, None]
    return replace(data, features={**data.features, "text": features.astype(np.float32)},
                   lengths={**data.lengths, "text": lengths.astype(np.int64)})
