"""Per-modality sequence encoders shared by every method.

Every encoder honours the frame mask: a frame that is padding, dropped, or belongs to a missing
modality contributes nothing, so a missing modality's raw values can never reach the output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch
from robustmsa.data.schema import DatasetSpec


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid frames. x: (B, L, D), mask: (B, L) bool -> (B, D); zeros where no frame is valid."""
    weights = mask.to(x.dtype).unsqueeze(-1)
    total = (x * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp_min(1.0)
    return total / count


def masked_downsample(x: Tensor, mask: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """Average non-overlapping windows of `factor` valid frames; long audio/vision sequences
    (375/500 frames) become short enough for attention on CPU. Returns (x', mask')."""
    if factor <= 1:
        return x, mask
    b, length, d = x.shape
    pad = (-length) % factor
    weights = mask.to(x.dtype).unsqueeze(-1)
    masked = x * weights
    if pad:  # after masking: one pass over the long sequence fewer than padding x first
        masked = torch.nn.functional.pad(masked, (0, 0, 0, pad))
        weights = torch.nn.functional.pad(weights, (0, 0, 0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)
    pooled = masked.view(b, -1, factor, d).sum(2) / weights.view(b, -1, factor, 1).sum(2).clamp_min(1.0)
    return pooled, mask.view(b, -1, factor).any(-1)


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal positions (Vaswani et al.); no parameters, so nothing to overfit."""

    def __init__(self, d: int, max_len: int = 4096):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
        table = torch.zeros(max_len, d)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div[: d // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.shape[1]]


def safe_padding_mask(mask: Tensor) -> Tensor:
    """Key-padding mask for nn.MultiheadAttention (True = ignore). A row with no valid frame
    would give NaN; we let it attend to position 0 (its output is masked away afterwards)."""
    empty = ~mask.any(dim=1)
    if empty.any():
        mask = mask.clone()
        mask[empty, 0] = True
    return ~mask


class SequenceEncoder(nn.Module):
    """(B, L, D_in) frames + mask -> per-frame states (B, L', d), their mask and a pooled vector (B, d).

    kind: "pool" (frame-wise MLP, cheapest), "conv" (Conv1D k=3), or "transformer"
    (Conv1D k=3 + positions + Transformer layers, FSRF/MulT style). `downsample` averages
    windows of frames first so long sequences stay cheap.
    """

    def __init__(
        self,
        in_dim: int,
        d: int,
        kind: str = "pool",
        layers: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
        downsample: int = 1,
    ):
        super().__init__()
        if kind not in ("pool", "conv", "transformer"):
            raise ValueError(f"encoder kind {kind!r}: expected pool, conv or transformer")
        self.kind = kind
        self.downsample = downsample
        self.norm_in = nn.LayerNorm(in_dim)
        if kind == "pool":
            self.frame = nn.Sequential(nn.Linear(in_dim, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d))
        else:
            self.frame = nn.Conv1d(in_dim, d, kernel_size=3, padding=1)
        if kind == "transformer":
            self.positions = PositionalEncoding(d)
            layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout, batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (states (B, L', d), mask (B, L'), pooled (B, d))."""
        if self.downsample > 1:  # masks as it averages: masking here first would be a second pass
            x, mask = masked_downsample(x, mask, self.downsample)
        if self.kind == "pool":
            return self._pool_valid_frames(x, mask)
        if self.downsample <= 1:
            x = x * mask.unsqueeze(-1)
        h = self.frame(self.norm_in(x).transpose(1, 2)).transpose(1, 2)
        h = h * mask.unsqueeze(-1)
        if self.kind == "transformer":
            h = self.transformer(self.positions(h), src_key_padding_mask=safe_padding_mask(mask))
        h = self.out_norm(h) * mask.unsqueeze(-1)
        return h, mask, masked_mean(h, mask)

    def _pool_valid_frames(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The frame-wise network on the valid frames only, scattered back into a zero (B, L, d).

        A frame-wise network computes nothing for padding that survives its masks, and about two
        thirds of MOSI's frames are padding, so packing the valid ones removes two thirds of the
        encoder's work. Each valid frame goes through the same per-row operations as before, so
        states, pooled vectors and predictions in eval mode are those of the padded computation;
        in training, dropout draws one mask per valid frame instead of one per frame."""
        b, length, _ = x.shape
        where = mask.reshape(-1).nonzero().squeeze(1)
        frames = x.reshape(b * length, -1).index_select(0, where)
        h = self.out_norm(self.frame(self.norm_in(frames)))
        states = h.new_zeros(b * length, h.shape[-1]).index_copy(0, where, h).view(b, length, -1)
        return states, mask, masked_mean(states, mask)


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1) -> nn.Sequential:
    """Two-layer head used for predictions and small mappings."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class ModalityEncoders(nn.Module):
    """One SequenceEncoder per modality of a dataset. `max_frames` sets each modality's
    downsampling factor so that no encoded sequence is longer than that. `text_branch` (e.g. a
    fine-tuned `TextTransformer`) replaces the text encoder: it reads `batch.text_bert` and the
    text presence instead of the text features. A branch built `with_features` joins them instead:
    the text states are the branch's (window-averaged) token states followed by the encoded text
    frames, and the pooled vector is the mean of the two parts' pooled vectors."""

    def __init__(
        self,
        spec: DatasetSpec,
        d: int,
        kind: str = "pool",
        dropout: float = 0.1,
        layers: int = 1,
        heads: int = 4,
        max_frames: int | None = None,
        text_branch: nn.Module | None = None,
    ):
        super().__init__()
        if text_branch is not None and "text" not in spec.modality_names:
            raise ValueError(f"a text branch needs a text modality; this dataset has {', '.join(spec.modality_names)}")
        self.text_branch = text_branch
        joined = text_branch is not None and getattr(text_branch, "with_features", False)
        self.encoders = nn.ModuleDict()
        self.frames: dict[str, int] = {}  # encoded length per modality (what methods may size by)
        for m in spec.modalities:
            factor = math.ceil(m.max_len / max_frames) if max_frames else 1
            self.frames[m.name] = math.ceil(m.max_len / factor)
            if text_branch is None or m.name != "text" or joined:
                self.encoders[m.name] = SequenceEncoder(m.dim, d, kind, layers, heads, dropout, factor)
        # the branch's token states are window-averaged to this many frames; joined, the encoded
        # text frames follow them
        self.branch_frames = self.frames.get("text", 0)
        if joined:
            self.frames["text"] *= 2

    def forward(self, batch: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
        """Returns per-modality (states, masks, pooled); a missing modality's pooled vector is 0."""
        states, masks, pooled = {}, {}, {}
        for name in batch.modalities:
            if name == "text" and self.text_branch is not None:
                encoded = self._text(batch, name)
                if name in self.encoders:
                    encoded = _join(encoded, self.encoders[name](batch.features[name], batch.frame_mask[name]))
            else:
                encoded = self.encoders[name](batch.features[name], batch.frame_mask[name])
            states[name], masks[name], pooled[name] = encoded
        return states, masks, pooled

    def _text(self, batch: Batch, name: str) -> tuple[Tensor, Tensor, Tensor]:
        """The text branch's token states, window-averaged and padded to the text modality's
        encoded length, so methods that size by frames (graph nodes) see the feature route's shapes."""
        if batch.text_bert is None:
            raise ValueError("method.text_encoder=finetune (or finetune+features) needs text_bert token ids in the data "
                             "(MMSA pickles carry them; `data build mosi-real --text-bert` writes them)")
        states, mask, pooled = self.text_branch(batch.text_bert, batch.is_present(name))
        target = self.branch_frames
        states, mask = masked_downsample(states, mask, math.ceil(states.shape[1] / target))
        pad = target - states.shape[1]
        states = torch.nn.functional.pad(states, (0, 0, 0, pad))
        return states, torch.nn.functional.pad(mask, (0, pad), value=False), pooled


def _join(branch: tuple[Tensor, Tensor, Tensor], frames: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """One text modality from two encodings: states and masks end to end in time; the pooled
    vector is the mean over the parts that kept anything (zero when neither did), so a sample
    whose text frames were all dropped is not pulled halfway to zero."""
    (s1, m1, p1), (s2, m2, p2) = branch, frames
    parts = m1.any(1, keepdim=True).to(p1.dtype) + m2.any(1, keepdim=True).to(p1.dtype)
    return torch.cat([s1, s2], 1), torch.cat([m1, m2], 1), (p1 + p2) / parts.clamp(min=1)
