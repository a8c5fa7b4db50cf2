"""A content-addressed feature cache: re-running an encoding skips every input already done.

Key = sha256 of the input (an image file's bytes plus any disruption, a text's characters),
in a folder named by the encoder's fingerprint, so new weights or new settings never reuse old
vectors. One .npy per input, written atomically, so an interrupted run leaves only whole files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from robustmsa.data.io import atomic_write


def content_key(*parts: bytes | str) -> str:
    """sha256 over the parts, each length-prefixed so ('ab', 'c') and ('a', 'bc') differ.

    >>> content_key("a", "bc") != content_key("ab", "c")
    True
    """
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """$ROBUSTMSA_CACHE, else $XDG_CACHE_HOME/robustmsa/features, else ~/.cache/robustmsa/features.

    One shared place, so the clean and the disrupted featurization of a dataset reuse each
    other's vectors.
    """
    if os.environ.get("ROBUSTMSA_CACHE"):
        return Path(os.environ["ROBUSTMSA_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "robustmsa" / "features"


class FeatureCache:
    """<root>/<fingerprint[:16]>/<key[:2]>/<key>.npy; `None` root disables caching."""

    def __init__(self, root: str | os.PathLike | None, fingerprint: str):
        self.folder = None if root is None else Path(root) / fingerprint[:16]

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The stored vector, or None (also for a damaged file, which is then recomputed)."""
        if self.folder is None:
            return None
        path = self._path(key)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def put(self, key: str, value: np.ndarray) -> None:
        if self.folder is None:
            return
        with atomic_write(self._path(key)) as f:
            np.save(f, np.asarray(value, dtype=np.float32), allow_pickle=False)
