"""Synthetic data, version 2: cues localized in time, per-sample modality quality, a cross-modal
nonlinear label term. The default of `data synth` and of "synthetic:<like>" sources.

Version 1 (`synthetic.py`) plants one latent in every frame and lets it enter the label linearly,
so masked mean pooling plus a linear head is close to optimal and nothing is left for recovery,
quality weighting or temporal modelling to win. Version 2 keeps v1's world (shared factor u,
modality-specific factors s_m, nuisance, offsets, uneven scales, lengths, ids, labels' shape) and
changes three things, each behind a knob recorded in the file's metadata:

    events, event_width   each sample has `events` cue windows, each `event_width` of its valid
                          frames long, at the same relative times in every modality (a smile
                          while saying "great"). Sentiment (u, s_m) is only in those frames; every
                          other frame holds the nuisance pattern and frame noise only. Event
                          frames are amplified so that the signal energy per sample equals v1's.
    low_quality,          for a seeded fraction of the samples one modality (drawn uniformly) is
    attenuation,          of low quality: half of them pure noise (no sentiment, frame noise
    noise_gain            times `noise_gain`), half attenuated (sentiment times `attenuation`).
    interaction           the label score gets `interaction * s_a * s_b`, the product of the
                          specific factors of the first and the last modality (text x vision,
                          text x image): no single modality and no linear read-out of pooled
                          features sees it, and a missing modality takes it away.

Single-vector modalities (MVSA) have no time axis: events do not apply, the rest does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

MIN_EVENT_FRAMES = 1


@dataclass(frozen=True)
class Knobs:
    """Version-2 knobs; the defaults make pooled-linear clearly sub-optimal (see README)."""

    events: int = 2  # cue windows per sample
    event_width: float = 0.08  # each window, as a fraction of the sample's valid frames
    low_quality: float = 0.3  # fraction of samples with one modality of low quality
    attenuation: float = 0.2  # sentiment kept in an attenuated entry
    noise_gain: float = 3.0  # frame-noise factor of a pure-noise entry
    interaction: float = 1.0  # weight of the cross-modal product term in the label score

    def __post_init__(self):
        checks = {
            "events": (1, 16),
            "event_width": (0.0, 1.0),
            "low_quality": (0.0, 1.0),
            "attenuation": (0.0, 1.0),
            "noise_gain": (0.0, 100.0),
            "interaction": (0.0, 100.0),
        }
        for name, (low, high) in checks.items():
            value = getattr(self, name)
            if not low <= value <= high or (name == "event_width" and value == 0):
                raise ValueError(f"synthetic v2 knob {name}={value}: expected a value in [{low}, {high}]"
                                 + (" above 0" if name == "event_width" else ""))

    @classmethod
    def from_strings(cls, items: dict[str, str]) -> Knobs:
        """Knobs from `name -> text` (CLI `--knob value` / `name=value`); unknown names are errors."""
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for name, text in items.items():
            if name not in types:
                raise ValueError(f"unknown synthetic v2 knob {name!r}; choose from {', '.join(types)}")
            try:
                values[name] = int(text) if types[name] in (int, "int") else float(text)
            except ValueError:
                raise ValueError(f"synthetic v2 knob {name}={text!r}: expected a number") from None
        return cls(**values)

    def changed(self) -> dict[str, float]:
        """The knobs that differ from the defaults (they name a synthetic source)."""
        default = Knobs()
        return {k: v for k, v in asdict(self).items() if v != getattr(default, k)}


def interaction_pair(names: list[str]) -> tuple[str, str]:
    """The two modalities whose specific factors multiply: the strongest (text) and the last."""
    return names[0], names[-1]


def label_score(shared: np.ndarray, specific: dict[str, np.ndarray], weight: float, knobs: Knobs) -> np.ndarray:
    """c = (u + beta sum_m s_m + gamma s_a s_b) / norm: unit variance (the factors are independent)."""
    a, b = interaction_pair(list(specific))
    linear = shared + weight * sum(specific.values())
    norm = np.sqrt(1 + len(specific) * weight**2 + knobs.interaction**2)
    return (linear + knobs.interaction * specific[a] * specific[b]) / norm


def quality(rng: np.random.Generator, n: int, names: list[str], knobs: Knobs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality, per sample (signal gain, noise gain). A `low_quality` fraction of the samples
    has one modality, drawn uniformly, of low quality: half of them pure noise (gain 0, noise
    times `noise_gain`), half attenuated (gain `attenuation`). Everything else is 1 / 1."""
    low = rng.random(n) < knobs.low_quality
    which = rng.integers(0, len(names), n)
    noisy = rng.random(n) < 0.5
    gains = {}
    for j, m in enumerate(names):
        hit = low & (which == j)
        signal = np.where(hit & noisy, 0.0, np.where(hit, knobs.attenuation, 1.0))
        noise = np.where(hit & noisy, knobs.noise_gain, 1.0)
        gains[m] = (signal.astype(np.float32), noise.astype(np.float32))
    return gains


def event_starts(centres: np.ndarray, lengths: np.ndarray, width: np.ndarray) -> np.ndarray:
    """(N, K) first frame of each window: relative centres mapped onto this modality's frames."""
    room = np.maximum(lengths - width, 0)
    return np.rint(centres * room[:, None]).astype(np.int64)


def event_width_frames(lengths: np.ndarray, knobs: Knobs) -> np.ndarray:
    """Frames per window: `event_width` of the valid frames, at least one."""
    return np.maximum(np.rint(knobs.event_width * lengths), MIN_EVENT_FRAMES).astype(np.int64)


def event_mask(lengths: np.ndarray, max_len: int, centres: np.ndarray, knobs: Knobs) -> np.ndarray:
    """(N, L) bool: the frames of each sample that carry sentiment (all of them when L = 1)."""
    if max_len == 1:
        return lengths[:, None] > 0
    width = event_width_frames(lengths, knobs)
    starts = event_starts(centres, lengths, width)
    frames = np.arange(max_len)
    inside = (frames[None, :, None] >= starts[:, None, :]) & (frames[None, :, None] < (starts + width[:, None])[:, None, :])
    return inside.any(axis=2) & (frames[None, :] < lengths[:, None])


def event_frames(
    rng: np.random.Generator,
    signal: np.ndarray,
    nuisance: np.ndarray,
    lengths: np.ndarray,
    cue: np.ndarray,
    noise: np.ndarray,
    offset: np.ndarray,
    scale: np.ndarray,
    chunk_rows: int,
) -> np.ndarray:
    """(N, L, D) float32 frames: nuisance under a slow wave in every valid frame, the sentiment
    pattern only where `cue` (N, L) is True (amplified so its energy per sample matches v1's), frame
    noise times the sample's noise gain (`noise`, (N,)); zero padded. Row chunks, valid frames only."""
    n, dim = signal.shape
    max_len = cue.shape[1]
    t = np.arange(max_len) / max_len
    freq, phase = rng.uniform(0.5, 3.0, n), rng.uniform(0, 2 * np.pi, n)
    share = cue.sum(axis=1) / np.maximum(lengths, 1)
    gain = (1.0 / np.sqrt(np.maximum(share, 1e-6))).astype(np.float32)
    out = np.zeros((n, max_len, dim), dtype=np.float32)
    for a in range(0, n, chunk_rows):
        b = min(a + chunk_rows, n)
        valid = np.arange(max_len)[None, :] < lengths[a:b, None]
        row = np.repeat(np.arange(b - a), lengths[a:b])
        frame = np.nonzero(valid)[1]
        wave = 1 + 0.5 * np.sin(2 * np.pi * freq[a + row] * t[frame] + phase[a + row])
        in_cue = cue[a + row, frame]
        values = rng.standard_normal((len(row), dim), dtype=np.float32)
        values *= noise[a + row, None]
        values += wave.astype(np.float32)[:, None] * nuisance[a + row]
        values += (in_cue * gain[a + row]).astype(np.float32)[:, None] * signal[a + row]
        values *= scale
        values += offset
        out[a:b][valid] = values
    return out
