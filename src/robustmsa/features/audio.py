"""Audio front-end: WAV files -> frame-level acoustic features (the CH-SIMS recipe).

Per frame at 22050 Hz (hop 512): 20 MFCCs, 12 chroma (constant-Q) and the zero-crossing rate,
stacked into (frames, 33) — the 33-d audio of CH-SIMS, so a model trained on such features can
be fed new recordings. Where the optional `opensmile` package is installed, the 88 eGeMAPS
functionals per file are computed as well (one vector per recording).

librosa and opensmile are imported inside the functions: the core package runs without them.

>>> wav_features("clip.wav").shape  # doctest: +SKIP
(44, 33)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from robustmsa.data.schema import DataError

SAMPLE_RATE = 22050
HOP_LENGTH = 512
N_MFCC = 20
N_CHROMA = 12
FRONT_END = "librosa-sims33"  # the name datasets and checkpoints record for this recipe
FEATURE_DIM = N_MFCC + N_CHROMA + 1
EGEMAPS_DIM = 88
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def _librosa():
    try:
        import librosa
    except ImportError:
        raise ModuleNotFoundError("audio features need the package librosa (pip install librosa)") from None
    return librosa


def load_wav(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 signal resampled to `sample_rate`; an unreadable or empty file is a DataError."""
    librosa = _librosa()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such audio file")
    try:
        with warnings.catch_warnings():  # its fallback notices precede our own one-line error
            warnings.simplefilter("ignore")
            signal, _ = librosa.load(path, sr=sample_rate, mono=True)
    except Exception as error:  # soundfile / audioread raise many types for a bad file
        raise DataError(f"{path}: not a readable audio file ({type(error).__name__})") from None
    if signal.size == 0:
        raise DataError(f"{path}: the audio is empty (expected at least one sample)")
    return signal.astype(np.float32)


def librosa_features(signal: np.ndarray, sample_rate: int = SAMPLE_RATE, hop_length: int = HOP_LENGTH) -> np.ndarray:
    """(frames, 33): MFCC (20) | chroma CQT (12) | zero-crossing rate (1), frames = 1 + len // hop."""
    librosa = _librosa()
    signal = np.asarray(signal, dtype=np.float32)
    mfcc = librosa.feature.mfcc(y=signal, sr=sample_rate, n_mfcc=N_MFCC, hop_length=hop_length)
    with warnings.catch_warnings():
        # The CQT's low octaves run on a decimated signal; librosa notes "n_fft too large" there.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large")
        chroma = librosa.feature.chroma_cqt(y=signal, sr=sample_rate, n_chroma=N_CHROMA, hop_length=hop_length)
    zcr = librosa.feature.zero_crossing_rate(signal, hop_length=hop_length)
    frames = min(mfcc.shape[1], chroma.shape[1], zcr.shape[1])  # equal for one hop; guard anyway
    stacked = np.concatenate([mfcc[:, :frames], chroma[:, :frames], zcr[:, :frames]], axis=0).T
    return np.ascontiguousarray(stacked, dtype=np.float32)


def wav_features(path: str | os.PathLike) -> np.ndarray:
    """The CH-SIMS recipe on one file: (frames, 33)."""
    return librosa_features(load_wav(path))


def egemaps_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("opensmile") is not None


def egemaps_functionals(path: str | os.PathLike) -> np.ndarray:
    """The 88 eGeMAPS v02 functionals of one file (needs the optional package opensmile)."""
    try:
        import opensmile
    except ImportError:
        raise ModuleNotFoundError("eGeMAPS features need the package opensmile (pip install opensmile)") from None
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    return smile.process_file(str(path)).to_numpy(dtype=np.float32).reshape(-1)


def audio_files(wav_dir: str | os.PathLike) -> list[Path]:
    """Audio files directly in `wav_dir`, sorted by name (their stems become the ids)."""
    folder = Path(wav_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected a folder of .wav files)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{folder}: no audio file (expected {', '.join(AUDIO_SUFFIXES)})")
    return files


def extract_audio_dir(wav_dir: str | os.PathLike, out: str | os.PathLike, max_frames: int | None = None,
                      egemaps: bool | None = None, progress: bool = True) -> Path:
    """Features of every audio file in a folder -> one .npz, written atomically.

    Keys: `ids` (file stems), `features` float32 (N, L, 33) zero-padded (L = the longest file, or
    `max_frames`, truncating), `lengths` int64 (N,), `front_end`, `sample_rate`, `hop_length`;
    plus `egemaps` float32 (N, 88) when `egemaps` is True, or None and opensmile is installed.
    """
    from tqdm.auto import tqdm

    from robustmsa.data.io import atomic_write

    files = audio_files(wav_dir)
    if egemaps is None:
        egemaps = egemaps_available()
    sequences = [wav_features(f) for f in tqdm(files, desc="audio", unit="file", disable=not progress)]
    if max_frames is not None:
        sequences = [s[:max_frames] for s in sequences]
    length = max_frames or max(len(s) for s in sequences)
    features = np.zeros((len(files), length, FEATURE_DIM), np.float32)
    for i, s in enumerate(sequences):
        features[i, : len(s)] = s
    arrays = {
        "ids": np.array([f.stem for f in files]), "features": features,
        "lengths": np.array([len(s) for s in sequences], np.int64),
        "front_end": np.array(FRONT_END), "sample_rate": np.array(SAMPLE_RATE), "hop_length": np.array(HOP_LENGTH),
    }
    if egemaps:
        arrays["egemaps"] = np.stack([egemaps_functionals(f) for f in files]).astype(np.float32)
    with atomic_write(out) as f:
        np.savez(f, **arrays)
    return Path(out)
