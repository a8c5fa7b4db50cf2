"""DRF: Distribution-based feature Recovery and Fusion (arXiv 2511.18751, ACM MM 2024).

The design of METHODS.md, for modalities m with pooled encodings f_m (per-modality encoder to d):

    queues    per modality a FIFO of K clean training features (`nn.queue.FeatureQueue`), filled in
              `after_step` from the clean, present features of the step's batch; its mean and
              shrunk covariance approximate the modality's feature distribution.
    quality   q_m = exp(-D_m(f_m) / tau), D_m the Mahalanobis distance to the queue (option: 1 -
              mean top-k cosine similarity); fusion weights w = softmax over the available
              modalities of log q_m, exactly 0 for a modality a sample does not have.
    recovery  g_m maps the present modalities (any subset S, absent ones zeroed and flagged) to
              modality m. Trained on clean samples: sample loss MSE + (1 - cos) to the true f_m
              and distribution loss MMD (multi-bandwidth RBF; option CMD) between the batch of
              g_m outputs and the queue of m. At inference a missing modality is replaced by g_m
              of the present ones; a present modality always keeps its own feature.
    fusion    the head reads sum_m w_m f_m over the available slots; with equal weights (the
              `use_quality=False` ablation) this is late fusion's mean of the available features.
    training  each batch is disrupted as the `disrupt` protocol does (`missing.random_disruption`:
              a fraction of samples lose one modality, corrupted silently or discarded); the task
              loss is taken on the disrupted view, and the quality of each corrupted feature is
              ranked below that of the same sample's clean feature (margin loss).

Choices METHODS.md leaves open (each is stated here or is an option):
  * A recovered modality takes part in fusion like a present one: its slot holds g_m(S) and its
    weight comes from the recovered feature's own quality against the queue of m (the
    distribution loss pulls it there). So the weights are 0 exactly where a modality is neither
    present nor recovered; with `use_recovery=False` that is every missing modality.
  * D_m is divided by sqrt(d) (about 1 for a typical clean feature whatever d), so tau and the
    margin mean the same at every width. Until a queue holds `queue_min` features it gives D = 0
    (uniform weights) and the margin and distribution losses are 0.
  * Targets of the sample loss are detached (recovery follows the features, not the reverse);
    its inputs are not, so the source encoders learn to carry what m needs.
  * Recovery training drops a random subset of the other present modalities (always keeping
    one), so g_m sees every source set it meets at test time, not only "all the others".
  * The distribution loss compares with `dist_queue_samples` random queued features (the whole
    queue would cost K^2 kernel entries per step).
  * The queue is filled with features computed in training mode (dropout on), from the clean
    pass of the batch, never from a disrupted or missing input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.functional import cosine_similarity, mse_loss

from robustmsa.data.batch import Batch
from robustmsa.methods.base import Method, Output, TextBranchConfig, register_method
from robustmsa.missing import DISRUPT_MODES, random_disruption, random_modality_dropout
from robustmsa.nn.distribution import cmd, rbf_mmd
from robustmsa.nn.encoders import ModalityEncoders, mlp
from robustmsa.nn.quality import (
    QUALITY_MEASURES,
    Quality,
    modality_distance,
    quality_margin_loss,
    score_modalities,
)
from robustmsa.nn.queue import FeatureQueue


@dataclass
class DRFConfig(TextBranchConfig):
    d: int = 256  # METHODS.md's width; pooled ("pool") encoders keep it cheap on CPU
    encoder: str = "pool"  # pool | conv | transformer (nn.encoders.SequenceEncoder)
    max_frames: int = 64  # longer sequences are window-averaged down to this length
    dropout: float = 0.1
    # queues
    queue_size: int = 2048  # K
    queue_min: int = 16  # a queue scores nothing until it holds this many features
    shrinkage: float | None = None  # None: Ledoit-Wolf; else a fixed weight of the scaled identity
    # quality
    quality_measure: str = "mahalanobis"  # or "cosine" (mean top-k cosine similarity to the queue)
    top_k: int = 16
    tau: float = 1.0
    margin: float = 1.0  # in log-quality units
    w_quality: float = 1.0
    # recovery
    recovery_distance: str = "mmd"  # or "cmd"
    w_sample: float = 1.0
    w_dist: float = 1.0
    dist_queue_samples: int = 256
    # training-time disruption (PROTOCOLS.md `disrupt`, in-batch)
    disrupt_rate: float = 0.5
    disrupt_mode: str = "CD"
    # ablation switches
    use_quality: bool = True  # off: equal weights over the available modalities, no margin loss
    use_recovery: bool = True  # off: a missing modality is simply left out
    recovery_sample_loss: bool = True
    recovery_dist_loss: bool = True


@dataclass
class DRFPass:
    """One pass over a batch. features: the slots that enter fusion, keyed by modality (B, d): the
    modality's own encoding where present, g_m(present) where recovered, zeros otherwise."""

    present: Tensor  # (B, M) bool
    recovered: Tensor  # (B, M) bool
    encoded: dict[str, Tensor]  # f_m from the encoder (0 where missing)
    features: dict[str, Tensor]
    quality: Quality
    pred: Tensor


@register_method("drf")
class DRF(Method):
    """Per-modality feature queues; quality-weighted fusion against the queued distributions;
    recovery of missing modalities by inter-modal mappings supervised by samples and distributions."""

    config_class = DRFConfig

    def __init__(self, spec, cfg: DRFConfig):
        super().__init__(spec, cfg)
        self._check(cfg)
        d, names = cfg.d, self.modalities
        self.encoders = ModalityEncoders(spec, d, cfg.encoder, cfg.dropout, max_frames=cfg.max_frames,
                                         text_branch=self.make_text_branch(d))
        self.queues = nn.ModuleDict({m: FeatureQueue(d, cfg.queue_size, cfg.shrinkage, cfg.queue_min) for m in names})
        if cfg.use_recovery and len(names) > 1:
            # g_m reads the other modalities' slots (absent ones zeroed) plus their presence flags
            inputs = (len(names) - 1) * (d + 1)
            self.recovery = nn.ModuleDict({m: mlp(inputs, d, d, cfg.dropout) for m in names})
        self.head = mlp(d, d, self.num_outputs, cfg.dropout)
        self._pending: dict[str, Tensor] = {}  # clean features of the last training step, for the queues

    @staticmethod
    def _check(cfg: DRFConfig) -> None:
        if cfg.quality_measure not in QUALITY_MEASURES:
            raise ValueError(f"drf: quality_measure {cfg.quality_measure!r} not one of {', '.join(QUALITY_MEASURES)}")
        if cfg.recovery_distance not in ("mmd", "cmd"):
            raise ValueError(f"drf: recovery_distance {cfg.recovery_distance!r} not one of mmd, cmd")
        if cfg.disrupt_mode not in DISRUPT_MODES:
            raise ValueError(f"drf: disrupt_mode {cfg.disrupt_mode!r} not one of {', '.join(DISRUPT_MODES)}")
        if not 0.0 <= cfg.disrupt_rate <= 1.0:
            raise ValueError(f"drf: disrupt_rate must be in [0, 1], got {cfg.disrupt_rate}")
        if cfg.tau <= 0:
            raise ValueError(f"drf: tau must be > 0, got {cfg.tau}")
        if cfg.use_recovery and not (cfg.recovery_sample_loss or cfg.recovery_dist_loss):
            raise ValueError("drf: use_recovery needs recovery_sample_loss or recovery_dist_loss (else g is never trained)")

    # --- the model ----------------------------------------------------------------------
    def forward(self, batch: Batch) -> Output:
        result = self.run(batch)
        extras = {"quality": result.quality.quality, "fusion_weights": result.quality.weights,
                  "recovered": result.recovered}
        return Output(result.pred, extras)

    def run(self, batch: Batch) -> DRFPass:
        _, _, encoded = self.encoders(batch)
        present = batch.present
        features = dict(encoded)
        recovered = torch.zeros_like(present)
        if self.cfg.use_recovery and len(self.modalities) > 1:
            # Recover from what is there; a sample with nothing present has nothing to recover from.
            recovered = ~present & present.any(dim=1, keepdim=True)
            for j, m in enumerate(self.modalities):
                if bool(recovered[:, j].any()):
                    features[m] = torch.where(recovered[:, j : j + 1], self.recover(m, encoded, present), encoded[m])
        available = present | recovered
        quality = self.score(features, available)
        pred = self.fuse(features, quality.weights)
        return DRFPass(present, recovered, encoded, features, quality, pred)

    def recover(self, target: str, encoded: dict[str, Tensor], sources: Tensor) -> Tensor:
        """g_target from the modalities flagged in `sources` (B, M); the others are zeroed, so their
        values cannot reach the result."""
        parts = []
        for j, m in enumerate(self.modalities):
            if m == target:
                continue
            flag = sources[:, j : j + 1].to(encoded[m].dtype)
            parts += [encoded[m] * flag, flag]
        return self.recovery[target](torch.cat(parts, dim=-1))

    def score(self, features: dict[str, Tensor], available: Tensor) -> Quality:
        cfg = self.cfg
        return score_modalities(self.queues, features, available, cfg.tau, cfg.quality_measure, cfg.top_k,
                                weighted=cfg.use_quality)

    def fuse(self, features: dict[str, Tensor], weights: Tensor) -> Tensor:
        """Head over the quality-weighted sum of the available slots, sum_m w_m f_m (B, d)."""
        fused = sum(features[m] * weights[:, j : j + 1] for j, m in enumerate(self.modalities))
        pred = self.head(fused)
        return pred.squeeze(-1) if self.num_outputs == 1 else pred

    # --- training -----------------------------------------------------------------------
    def loss(self, batch: Batch, phase: str) -> dict[str, Tensor]:
        cfg = self.cfg
        _, _, clean = self.encoders(batch)  # the clean pass: recovery targets, queue entries
        disruption = random_disruption(batch, cfg.disrupt_rate, cfg.disrupt_mode)
        view = self.run(disruption.batch)
        task = self.task_loss(view.pred, batch)
        zero = task.new_zeros(())
        margin = self._margin(clean, view, disruption.corrupted) if cfg.use_quality else zero
        sample, distribution = zero, zero
        if cfg.use_recovery and len(self.modalities) > 1:
            sample, distribution = self._recovery_losses(clean, batch.present)
        total = task + cfg.w_quality * margin + cfg.w_sample * sample + cfg.w_dist * distribution
        if self.training:
            self._pending = {m: clean[m][batch.present[:, j]].detach() for j, m in enumerate(self.modalities)}
        return {"loss": total, "task": task, "quality_margin": margin,
                "recovery_sample": sample, "recovery_dist": distribution}

    def after_step(self) -> None:
        """Enqueue the last training step's clean, present features (never in eval mode)."""
        if self.training:
            for m, values in self._pending.items():
                self.queues[m].push(values)
        self._pending = {}

    def _margin(self, clean: dict[str, Tensor], view: DRFPass, corrupted: Tensor) -> Tensor:
        """Clean above corrupted: for every (sample, modality) the disruption corrupted, the clean
        feature's log-quality must beat the corrupted one's by `margin`."""
        cfg = self.cfg
        clean_log, corrupt_log = [], []
        for j, m in enumerate(self.modalities):
            rows = corrupted[:, j]
            if not bool(rows.any()) or not self.queues[m].ready:
                continue
            for values, out in ((clean[m][rows], clean_log), (view.features[m][rows], corrupt_log)):
                out.append(-modality_distance(self.queues[m], values, cfg.quality_measure, cfg.top_k) / cfg.tau)
        if not clean_log:
            return view.pred.sum() * 0.0
        return quality_margin_loss(torch.cat(clean_log), torch.cat(corrupt_log), self.cfg.margin)

    def _recovery_losses(self, clean: dict[str, Tensor], present: Tensor) -> tuple[Tensor, Tensor]:
        """Sample loss (MSE + 1 - cos to the detached true feature) and distribution loss (MMD or
        CMD to the queue), averaged over the modalities that have targets in this batch."""
        cfg = self.cfg
        samples, distributions = [], []
        for j, m in enumerate(self.modalities):
            others = present.clone()
            others[:, j] = False
            rows = present[:, j] & others.any(dim=1)
            if not bool(rows.any()):
                continue
            sources = random_modality_dropout(others, complete_fraction=0.5)
            rebuilt = self.recover(m, clean, sources)[rows]
            target = clean[m][rows].detach()
            if cfg.recovery_sample_loss:
                samples.append(mse_loss(rebuilt, target) + (1.0 - cosine_similarity(rebuilt, target, dim=-1)).mean())
            queue = self.queues[m]
            if cfg.recovery_dist_loss and queue.ready and rebuilt.shape[0] >= 2:
                reference = queue.sample(cfg.dist_queue_samples)
                distance = rbf_mmd if cfg.recovery_distance == "mmd" else cmd
                distributions.append(distance(rebuilt, reference))
        zero = next(iter(clean.values())).sum() * 0.0
        sample = torch.stack(samples).mean() if samples else zero
        distribution = torch.stack(distributions).mean() if distributions else zero
        return sample, distribution
