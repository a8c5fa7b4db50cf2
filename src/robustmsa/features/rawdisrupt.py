"""DRF's `disrupt` protocol (PROTOCOLS.md 2) on raw posts: mask pixels or words before encoding.

Which posts are hit, on which modality, and whether a hit is a corruption or a discard is
`missing.disrupt_choice` with the seed that `make_pattern` uses at feature level, so a folder
featurized with `--disrupt P --seed S` disrupts the same (post, modality) entries as protocol P
with seed S applied to the clean folder. Inside a corrupted post the masked patches or words
come from a generator seeded by (seed, modality, post id): they do not depend on the split's
other posts or on the encoding order.

    corrupt image   a U(0.4, 0.8) fraction of the cells of a 16 x 16 grid over the image is
                    set to black (patches, as occlusion looks, rather than salt noise)
    corrupt text    a U(0.4, 0.8) fraction of the whitespace-separated words becomes the text
                    encoder's mask token (e.g. [MASK])
    discard         a black image of the same size / the empty text is encoded, and the row is
                    written with length 0, so methods are told the modality is missing, as the
                    feature-level discard tells them
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from robustmsa.data.schema import DatasetSpec, LabelSpec, ModalitySpec, Split
from robustmsa.missing import PROTOCOL_NAMES, Protocol, corrupt_positions, disrupt_choice

RAW_MODALITIES = ("text", "image")  # the order read_imagetext gives a featurized folder
PATCH_GRID = 16


@dataclass
class RawDisruption:
    """What the protocol does to one split, seen from one modality.

    hit[i]: the modality the protocol disrupts in post i ("" = none); corrupt / discard: (N,)
    bool, this modality corrupted / discarded in post i.
    """

    ids: list[str]
    hit: np.ndarray
    corrupt: np.ndarray
    discard: np.ndarray


def parse_disrupt(text: str) -> Protocol:
    """'disrupt:CD:random:0.4' or 'CD:random:0.4' -> the disrupt Protocol (other protocols refused)."""
    text = text.strip()
    name = text.partition(":")[0].strip().lower()
    if name in PROTOCOL_NAMES and name != "disrupt":
        raise ValueError(f"--disrupt {text!r}: expected a disrupt protocol, e.g. disrupt:CD:random:0.4")
    return Protocol.parse(text if name == "disrupt" else f"disrupt:{text}")


def plan_disruption(ids: list[str], protocol: Protocol, seed: int, modality: str,
                    modalities: tuple[str, ...] = RAW_MODALITIES) -> RawDisruption:
    """The protocol's seeded choice for one split, as `make_pattern` draws it on the featurized split.

    >>> plan = plan_disruption(["1", "2", "3", "4"], parse_disrupt("D:fixed:image"), 0, "image")
    >>> plan.discard.tolist()
    [True, True, True, True]
    """
    n = len(ids)
    spec = DatasetSpec("raw", tuple(ModalitySpec(m, 1, 1) for m in modalities), LabelSpec("classification"))
    # Every raw post has every modality (the reader rejects empty texts and missing images).
    split = Split("raw", list(ids), {}, {m: np.ones(n, np.int64) for m in modalities}, np.zeros(n, np.int64))
    rows, columns, discard = disrupt_choice(split, spec, str(protocol.param), np.random.default_rng(seed))
    hit = np.full(n, "", dtype=object)
    hit[rows] = np.asarray(modalities, dtype=object)[columns]
    mine = columns == modalities.index(modality)
    corrupt, discarded = np.zeros(n, bool), np.zeros(n, bool)
    corrupt[rows[mine & ~discard]] = True
    discarded[rows[mine & discard]] = True
    return RawDisruption(list(ids), hit.astype(str), corrupt, discarded)


def post_rng(seed: int, modality: str, post_id: str) -> np.random.Generator:
    """A generator owned by one (seed, modality, post): stable whatever else is encoded."""
    digest = hashlib.sha256(f"{modality}\0{post_id}".encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


# ------------------------------------------------------------------------------- images


def image_cells(rng: np.random.Generator, grid: int = PATCH_GRID) -> np.ndarray:
    """(grid, grid) bool: a U(0.4, 0.8) fraction of the cells, True = masked."""
    return corrupt_positions(np.array([grid * grid]), grid * grid, rng)[0].reshape(grid, grid)


def cell_pixel_mask(height: int, width: int, cells: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels covered by the masked cells (cell edges rounded to pixels)."""
    grid_rows, grid_cols = cells.shape
    row_of = np.minimum(np.arange(height) * grid_rows // max(height, 1), grid_rows - 1)
    col_of = np.minimum(np.arange(width) * grid_cols // max(width, 1), grid_cols - 1)
    return cells[row_of[:, None], col_of[None, :]]


def corrupt_image(image: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """A copy of the uint8 (H, W, 3) image with the masked cells black."""
    out = image.copy()
    out[cell_pixel_mask(image.shape[0], image.shape[1], cells)] = 0
    return out


def blank_image(image: np.ndarray) -> np.ndarray:
    """A black image of the same size: what a discarded image is encoded as."""
    return np.zeros_like(image)


# -------------------------------------------------------------------------------- texts


def corrupt_text(text: str, rng: np.random.Generator, mask_token: str) -> tuple[str, np.ndarray]:
    """Replace a U(0.4, 0.8) fraction of the words by `mask_token`; returns (text, word mask).

    >>> corrupt_text("a b c d e", np.random.default_rng(0), "[MASK]")[0].count("[MASK]") in (2, 3, 4)
    True
    """
    words = text.split()
    if not words:
        return text, np.zeros(0, bool)
    mask = corrupt_positions(np.array([len(words)]), len(words), rng)[0]
    return " ".join(mask_token if masked else word for word, masked in zip(words, mask)), mask


def blank_text(text: str) -> str:
    """The empty text: what a discarded text is encoded as."""
    return ""
