"""The baselines every table carries (METHODS.md): late_fusion, mean_impute, mult_lite, misa.

Training-time augmentation is the shared `TrainingAugmentation` options (methods/base.py):
`train_missing` is `robustmsa.missing.training_missing_view`, the one FSRF's missing view uses
too (half of each batch whole, the other half with random whole-modality dropout plus per-sample
frame dropout up to `frame_drop_max`), and `train_disruption=disrupt` adds DRF's training-time
disruption, so that robust methods and baselines are compared under the same augmentation.
`mean_impute` is the complete-data floor and never augments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustmsa.data.batch import Batch, SplitTensors
from robustmsa.methods.base import Method, Output, TrainingAugmentation, register_method
from robustmsa.nn.distribution import cmd, diff_loss, pairwise_over_present
from robustmsa.nn.encoders import ModalityEncoders, masked_mean, mlp, safe_padding_mask
from robustmsa.nn.fusion import present_mean, stack_tokens


class AugmentedMethod(Method):
    """A supervised method whose training batches get the shared missing augmentation."""

    def augment(self, batch: Batch) -> Batch:
        return self.training_view(batch).batch

    def loss(self, batch: Batch, phase: str) -> dict[str, Tensor]:
        out = self(self.augment(batch))
        task = self.task_loss(out.pred, batch)
        return {"loss": task, "task": task}

    def head_output(self, head_out: Tensor) -> Tensor:
        return head_out.squeeze(-1) if self.num_outputs == 1 else head_out


@dataclass
class LateFusionConfig(TrainingAugmentation):
    d: int = 64
    encoder: str = "pool"
    dropout: float = 0.1


@register_method("late_fusion")
class LateFusion(AugmentedMethod):
    """Per-modality encoder, mean of the present modalities' embeddings, one head."""

    config_class = LateFusionConfig

    def __init__(self, spec, cfg: LateFusionConfig):
        super().__init__(spec, cfg)
        self.encoders = ModalityEncoders(spec, cfg.d, cfg.encoder, cfg.dropout, max_frames=64,
                                         text_branch=self.make_text_branch(cfg.d))
        self.head = mlp(cfg.d, cfg.d, self.num_outputs, cfg.dropout)

    def forward(self, batch: Batch) -> Output:
        _, _, pooled = self.encoders(batch)
        fused = present_mean(pooled, self.present_dict(batch))
        return Output(self.head_output(self.head(fused)))


@dataclass
class MeanImputeConfig:
    d: int = 64
    dropout: float = 0.1


@register_method("mean_impute")
class MeanImpute(Method):
    """Complete-data model on pooled features; a missing modality is replaced by its
    training-set mean feature vector. The floor every robust method must clear."""

    config_class = MeanImputeConfig

    def __init__(self, spec, cfg: MeanImputeConfig):
        super().__init__(spec, cfg)
        self.project = nn.ModuleDict(
            {m.name: nn.Sequential(nn.LayerNorm(m.dim), nn.Linear(m.dim, cfg.d), nn.GELU()) for m in spec.modalities}
        )
        for m in spec.modalities:
            self.register_buffer(f"mean_{m.name}", torch.zeros(m.dim))
        self.head = mlp(cfg.d * len(spec.modalities), cfg.d, self.num_outputs, cfg.dropout)

    def prepare(self, train: SplitTensors) -> None:
        for j, m in enumerate(self.modalities):
            pooled = masked_mean(train.features[m], train.frame_mask[m])
            present = train.present[:, j]
            if bool(present.any()):
                getattr(self, f"mean_{m}").copy_(pooled[present].mean(0))

    def forward(self, batch: Batch) -> Output:
        parts = []
        for m in self.modalities:
            pooled = masked_mean(batch.features[m], batch.frame_mask[m])
            imputed = torch.where(batch.is_present(m).unsqueeze(-1), pooled, getattr(self, f"mean_{m}"))
            parts.append(self.project[m](imputed))
        out = self.head(torch.cat(parts, dim=-1))
        return Output(out.squeeze(-1) if self.num_outputs == 1 else out)


@dataclass
class MulTLiteConfig(TrainingAugmentation):
    d: int = 32
    heads: int = 4
    dropout: float = 0.1
    max_frames: int = 32


class CrossModalBlock(nn.Module):
    """Target frames attend to the other modalities' frames plus a learned null token (so a
    target with no present source is well defined), then self-attend (MulT's crossmodal unit)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.null = nn.Parameter(torch.zeros(1, 1, d))
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.self_block = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout, batch_first=True, norm_first=True)

    def forward(self, target: Tensor, target_mask: Tensor, sources: Tensor, source_mask: Tensor) -> Tensor:
        b = target.shape[0]
        sources = torch.cat([self.null.expand(b, 1, -1), sources], dim=1)
        source_mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=target.device), source_mask], dim=1)
        kv = self.norm_kv(sources)
        attended, _ = self.cross(self.norm_q(target), kv, kv, key_padding_mask=~source_mask, need_weights=False)
        h = (target + attended) * target_mask.unsqueeze(-1)
        h = self.self_block(h, src_key_padding_mask=safe_padding_mask(target_mask))
        return h * target_mask.unsqueeze(-1)


@register_method("mult_lite")
class MulTLite(AugmentedMethod):
    """MulT-style cross-modal transformer, one crossmodal block per target modality, with masks."""

    config_class = MulTLiteConfig

    def __init__(self, spec, cfg: MulTLiteConfig):
        super().__init__(spec, cfg)
        self.encoders = ModalityEncoders(spec, cfg.d, "conv", cfg.dropout, max_frames=cfg.max_frames,
                                         text_branch=self.make_text_branch(cfg.d))
        self.blocks = nn.ModuleDict({m: CrossModalBlock(cfg.d, cfg.heads, cfg.dropout) for m in self.modalities})
        m_count = len(self.modalities)
        self.head = mlp(cfg.d * m_count + m_count, cfg.d, self.num_outputs, cfg.dropout)

    def forward(self, batch: Batch) -> Output:
        states, masks, _ = self.encoders(batch)
        pooled = []
        for target in self.modalities:
            others = [m for m in self.modalities if m != target]
            sources = torch.cat([states[m] for m in others], dim=1)
            source_mask = torch.cat([masks[m] for m in others], dim=1)
            h = self.blocks[target](states[target], masks[target], sources, source_mask)
            pooled.append(masked_mean(h, masks[target]))
        features = torch.cat(pooled + [batch.present.to(pooled[0].dtype)], dim=-1)
        return Output(self.head_output(self.head(features)))


@dataclass
class MISAConfig(TrainingAugmentation):
    d: int = 64
    encoder: str = "pool"
    dropout: float = 0.1
    w_diff: float = 0.3
    w_sim: float = 1.0
    w_recon: float = 1.0


@register_method("misa")
class MISA(AugmentedMethod):
    """Modality-invariant (shared encoder) and -specific (per modality) subspaces, with CMD
    similarity, soft-orthogonality difference and reconstruction losses (Hazarika et al. 2020);
    fusion by a transformer layer over the present modalities' 2M vectors."""

    config_class = MISAConfig

    def __init__(self, spec, cfg: MISAConfig):
        super().__init__(spec, cfg)
        d = cfg.d
        self.encoders = ModalityEncoders(spec, d, cfg.encoder, cfg.dropout, max_frames=64,
                                         text_branch=self.make_text_branch(d))
        self.shared = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in self.modalities})
        self.decoder = nn.ModuleDict({m: nn.Linear(d, d) for m in self.modalities})
        self.fusion = nn.TransformerEncoderLayer(d, 2, 2 * d, cfg.dropout, batch_first=True, norm_first=True)
        self.head = mlp(2 * d, d, self.num_outputs, cfg.dropout)

    def factorize(self, batch: Batch) -> dict[str, dict[str, Tensor]]:
        _, _, pooled = self.encoders(batch)
        shared = {m: self.shared(z) for m, z in pooled.items()}
        private = {m: self.private[m](z) for m, z in pooled.items()}
        return {"utterance": pooled, "shared": shared, "private": private}

    def fuse(self, parts: dict[str, dict[str, Tensor]], present: dict[str, Tensor]) -> Tensor:
        shared_tokens, mask = stack_tokens(parts["shared"], present)
        private_tokens, _ = stack_tokens(parts["private"], present)
        tokens = torch.cat([shared_tokens, private_tokens], dim=1)
        token_mask = torch.cat([mask, mask], dim=1)
        h = self.fusion(tokens, src_key_padding_mask=safe_padding_mask(token_mask))
        h = h * token_mask.unsqueeze(-1).to(h.dtype)
        m = len(parts["shared"])
        shared_mean = masked_mean(h[:, :m], mask)
        private_mean = masked_mean(h[:, m:], mask)
        return self.head_output(self.head(torch.cat([shared_mean, private_mean], dim=-1)))

    def forward(self, batch: Batch) -> Output:
        return Output(self.fuse(self.factorize(batch), self.present_dict(batch)))

    def loss(self, batch: Batch, phase: str) -> dict[str, Tensor]:
        batch = self.augment(batch)
        present = self.present_dict(batch)
        parts = self.factorize(batch)
        task = self.task_loss(self.fuse(parts, present), batch)
        similarity = pairwise_over_present(parts["shared"], present, cmd)
        difference = self._difference(parts, present)
        recon = self._reconstruction(parts, present)
        total = task + self.cfg.w_sim * similarity + self.cfg.w_diff * difference + self.cfg.w_recon * recon
        return {"loss": total, "task": task, "sim": similarity, "diff": difference, "recon": recon}

    def _difference(self, parts, present) -> Tensor:
        terms = [pairwise_over_present(parts["private"], present, diff_loss)]
        for m in self.modalities:
            keep = present[m]
            if int(keep.sum()) >= 2:
                terms.append(diff_loss(parts["shared"][m][keep], parts["private"][m][keep]))
        return torch.stack(terms).sum()

    def _reconstruction(self, parts, present) -> Tensor:
        terms = []
        for m in self.modalities:
            keep = present[m]
            if bool(keep.any()):
                rebuilt = self.decoder[m](parts["shared"][m] + parts["private"][m])
                terms.append(torch.nn.functional.mse_loss(rebuilt[keep], parts["utterance"][m][keep]))
        return torch.stack(terms).mean()
