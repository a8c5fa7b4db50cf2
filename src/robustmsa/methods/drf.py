"""DRF: Distribution-based feature Recovery and Fusion (arXiv 2511.18751, ACM MM 2024).

The design of METHODS.md with its 2026-11-29 revision, for modalities m with pooled encodings f_m
(per-modality encoder to d):

    queues    per modality a FIFO of K clean training features (`nn.queue.FeatureQueue`), filled in
              `after_step` from the step's clean, present samples encoded without dropout (as at
              test time, so distances have one scale): the reference of the recovery's
              distribution loss. Beside it, per modality an input queue: the standardized inputs
              (`nn.quality.standardized_input`) of K random clean training samples, filled once
              in `prepare()` (inputs do not change during training).
    quality   D_m the Mahalanobis distance of the standardized input to the input queue, the
              queue's whitened directions weighted by the scorer (`quality_space=feature`: of f_m
              to the feature queue; `quality_measure=cosine`: 1 - mean top-k cosine similarity);
              reported per prediction as q_m = exp(-D_m / tau). No loss can move D_m by bending
              features: the encoder is trained on corrupted inputs to use what they still carry,
              which makes its features a poor detector (synthetic MVSA v1, D on f_m without the
              old margin loss: test AUROC text 0.68-0.82, image 0.75-0.99), while the input keeps
              the corruption in plain view (0.97-1.00 on MVSA v1 and real MOSI, untrained).
    fusion    the head reads sum_m w_m f_m over the available slots, w = `nn.quality.QualityGate`:
              softmax over the available modalities of beta_m - alpha_m * z_m, alpha_m >= 0, with
              z_m = log(1 + D_m) standardized by its running mean / std over clean, present
              training inputs (`gate_standardize`: an O(1) alpha then has an O(1) effect), and for
              a recovered modality beta_m + gamma_m, a learned offset (`gate_recovered_offset`: a
              text recovered from weak audio can weigh little, falling back to what is there).
              The gate trains in its own param group at `gate_lr_scale` x the network's rate.
              It starts at plain fusion (late fusion's mean) and can stay there: being atypical is
              not being useless, and only the task loss knows how much a corrupted modality still
              tells. The queue distance is its only quality input, and it reads it detached (the
              task loss never reshapes D).
    recovery  g_m maps the present modalities (any subset S, absent ones zeroed and flagged) to
              modality m. Trained on clean samples: sample loss MSE + (1 - cos) to the true f_m
              and distribution loss MMD (multi-bandwidth RBF; option CMD) between the batch of
              g_m outputs and the queue of m. At inference a missing modality is replaced by g_m
              of the present ones; a present modality always keeps its own feature.
    training  the shared training-time augmentation (`methods.base.TrainingAugmentation`); DRF's
              default is `train_disruption=disrupt`: the `disrupt` protocol in-batch
              (`missing.random_disruption`: a fraction of samples lose one modality, corrupted
              silently or discarded). `late_fusion` takes the same option, so the two compare
              under the same augmentation.

Choices METHODS.md leaves open (each is stated here or is an option):
  * The ranking (margin) loss trains the scorer, never the features (issue 13): it compares
    standardized inputs (or no-gradient features), and its only parameters are the weights of the
    queue's whitened directions in the Mahalanobis distance (`nn.quality.DirectionWeights`, all 1
    at first: the plain distance). Its pairs are its own (each sample clean and with one modality
    corrupted), so the scorer learns under any training augmentation. Training the encoder to
    rank instead pushed corrupted features off-distribution, destroying what they still carry.
  * A recovered modality takes part in fusion like a present one: its slot holds g_m(S) and its
    weight comes from the recovered feature's own distance to the queue of m (the distribution
    loss pulls it there). The weights are 0 exactly where a modality is neither present nor
    recovered; with `use_recovery=False` that is every missing modality.
  * D_m is divided by sqrt(dim) (about 1 for a typical clean input or feature whatever the width).
    Until a queue holds `queue_min` entries it gives D = 0 (uniform weights); until the feature
    queue does, the distribution loss is 0.
  * During training the gate reads the distances of a no-dropout, no-gradient pass over the same
    augmented batch, so alpha is learned on the distance scale it meets at test time.
  * Targets of the sample loss are detached (recovery follows the features, not the reverse);
    its inputs are not, so the source encoders learn to carry what m needs.
  * Recovery training drops a random subset of the other present modalities (always keeping
    one), so g_m sees every source set it meets at test time, not only "all the others".
  * The distribution loss compares with `dist_queue_samples` random queued features (the whole
    queue would cost K^2 kernel entries per step).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.functional import cosine_similarity, mse_loss

from robustmsa.data.batch import Batch, SplitTensors
from robustmsa.methods.base import Method, Output, TrainingAugmentation, register_method
from robustmsa.missing import random_disruption, random_modality_dropout
from robustmsa.nn.distribution import cmd, rbf_mmd
from robustmsa.nn.encoders import ModalityEncoders, mlp
from robustmsa.nn.quality import (
    QUALITY_MEASURES,
    DirectionWeights,
    Quality,
    QualityGate,
    modality_distance,
    quality_margin_loss,
    standardized_input,
    uniform_weights,
)
from robustmsa.nn.queue import FeatureQueue


@dataclass
class DRFConfig(TrainingAugmentation):
    d: int = 256  # METHODS.md's width; pooled ("pool") encoders keep it cheap on CPU
    encoder: str = "pool"  # pool | conv | transformer (nn.encoders.SequenceEncoder)
    max_frames: int = 64  # longer sequences are window-averaged down to this length
    dropout: float = 0.1
    # queues
    queue_size: int = 2048  # K
    queue_min: int = 16  # a queue scores nothing until it holds this many features
    shrinkage: float | None = None  # None: Ledoit-Wolf; else a fixed weight of the scaled identity
    # quality
    quality_space: str = "input"  # input: the standardized input (`standardized_input`); feature: f_m
    quality_measure: str = "mahalanobis"  # or "cosine" (mean top-k cosine similarity to the queue)
    top_k: int = 16
    tau: float = 1.0  # reported quality q = exp(-D / tau)
    gate_init: float = 0.01  # starting |a_m| of the fusion gate: ~0, i.e. plain fusion
    gate_standardize: bool = True  # the gate reads log(1 + D) standardized by its clean running mean / std
    gate_recovered_offset: bool = True  # a recovered modality's logit is beta_m + a learned gamma_m, not its distance's
    gate_lr_scale: float = 10.0  # the gate's learning rate, in units of train.lr (its own param group)
    margin: float = 1.0  # ranking loss: clean D below corrupted D by this much (a typical D is ~1)
    w_quality: float = 1.0  # weight of the ranking loss (it trains the scorer's direction weights only)
    # recovery
    recovery_distance: str = "mmd"  # or "cmd"
    w_sample: float = 1.0
    w_dist: float = 1.0
    dist_queue_samples: int = 256
    # training-time augmentation (the shared options): DRF's own disruption, no missing view
    train_missing: bool = False
    train_disruption: str = "disrupt"
    # ablation switches
    use_quality: bool = True  # off: plain fusion (equal weights over the available modalities)
    use_recovery: bool = True  # off: a missing modality is simply left out
    recovery_sample_loss: bool = True
    recovery_dist_loss: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quality_measure not in QUALITY_MEASURES:
            raise ValueError(f"drf: quality_measure {self.quality_measure!r} not one of {', '.join(QUALITY_MEASURES)}")
        if self.quality_space not in ("input", "feature"):
            raise ValueError(f"drf: quality_space {self.quality_space!r} not one of input, feature")
        if self.recovery_distance not in ("mmd", "cmd"):
            raise ValueError(f"drf: recovery_distance {self.recovery_distance!r} not one of mmd, cmd")
        if self.gate_lr_scale <= 0:
            raise ValueError(f"drf: gate_lr_scale must be > 0, got {self.gate_lr_scale}")
        if self.tau <= 0:
            raise ValueError(f"drf: tau must be > 0, got {self.tau}")
        if self.use_recovery and not (self.recovery_sample_loss or self.recovery_dist_loss):
            raise ValueError("drf: use_recovery needs recovery_sample_loss or recovery_dist_loss (else g is never trained)")


@dataclass
class DRFPass:
    """One pass over a batch. features: the slots that enter fusion, keyed by modality (B, d): the
    modality's own encoding where present, g_m(present) where recovered, zeros otherwise."""

    present: Tensor  # (B, M) bool
    recovered: Tensor  # (B, M) bool
    encoded: dict[str, Tensor]  # f_m from the encoder (0 where missing)
    features: dict[str, Tensor]
    quality: Quality | None = None
    pred: Tensor | None = None


@contextmanager
def as_at_test_time(module: nn.Module) -> Iterator[None]:
    """Run `module` as at test time (eval mode: no dropout) without gradients, then restore its mode."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


@register_method("drf")
class DRF(Method):
    """Per-modality feature queues; fusion weighted by a learned monotone function of each
    modality's distance to its queue; recovery of missing modalities by inter-modal mappings
    supervised by samples and distributions."""

    config_class = DRFConfig

    def __init__(self, spec, cfg: DRFConfig):
        super().__init__(spec, cfg)
        d, names = cfg.d, self.modalities
        self.encoders = ModalityEncoders(spec, d, cfg.encoder, cfg.dropout, max_frames=cfg.max_frames,
                                         text_branch=self.make_text_branch(d))
        self.queues = nn.ModuleDict({m: FeatureQueue(d, cfg.queue_size, cfg.shrinkage, cfg.queue_min) for m in names})
        # Quality on the input needs an input of feature vectors: a fine-tuned text branch reads
        # word pieces, so its text is scored on f_text against the feature queue instead.
        self.input_scored = {m.name for m in spec.modalities if cfg.quality_space == "input"
                             and not (m.name == "text" and self.encoders.text_branch is not None)}
        dims = [m.dim if m.name in self.input_scored else d for m in spec.modalities]
        if self.input_scored:
            self.input_queues = nn.ModuleDict({m.name: FeatureQueue(m.dim, cfg.queue_size, cfg.shrinkage, cfg.queue_min)
                                               for m in spec.modalities if m.name in self.input_scored})
        if cfg.use_quality:
            self.gate = QualityGate(len(names), cfg.gate_init, cfg.gate_standardize,
                                    recovered_offset=cfg.gate_recovered_offset and self.recovers)
        if cfg.quality_measure == "mahalanobis":
            self.emphasis = DirectionWeights(dims)  # the quality scorer's own parameters
        if self.recovers:
            # g_m reads the other modalities' slots (absent ones zeroed) plus their presence flags
            inputs = (len(names) - 1) * (d + 1)
            self.recovery = nn.ModuleDict({m: mlp(inputs, d, d, cfg.dropout) for m in names})
        self.head = mlp(d, d, self.num_outputs, cfg.dropout)
        self._pending: dict[str, Tensor] = {}  # clean features of the last training step, for the queues

    @property
    def recovers(self) -> bool:
        return self.cfg.use_recovery and len(self.modalities) > 1

    # --- the model ----------------------------------------------------------------------
    def forward(self, batch: Batch) -> Output:
        result = self.run(batch)
        extras = {"quality": result.quality.quality, "fusion_weights": result.quality.weights,
                  "recovered": result.recovered}
        return Output(result.pred, extras)

    def run(self, batch: Batch, distance: Tensor | None = None) -> DRFPass:
        """Slots, quality, weights and prediction. `distance` (B, M): the distances the gate reads,
        if not those of this pass's own slots (training passes those of a no-dropout pass)."""
        slots = self.slots(batch)
        available = slots.present | slots.recovered
        if distance is None:
            distance = self.distances(batch, slots)
        weights = (self.gate(distance.detach(), available, slots.recovered) if self.cfg.use_quality
                   else uniform_weights(available))
        slots.quality = Quality.of(distance, available, self.cfg.tau, weights)
        slots.pred = self.fuse(slots.features, weights)
        return slots

    def slots(self, batch: Batch) -> DRFPass:
        """Encode, and recover what is missing from what is there (a sample with nothing present
        has nothing to recover from)."""
        _, _, encoded = self.encoders(batch)
        present = batch.present
        features = dict(encoded)
        recovered = torch.zeros_like(present)
        if self.recovers:
            recovered = ~present & present.any(dim=1, keepdim=True)
            for j, m in enumerate(self.modalities):
                if bool(recovered[:, j].any()):
                    features[m] = torch.where(recovered[:, j : j + 1], self.recover(m, encoded, present), encoded[m])
        return DRFPass(present, recovered, encoded, features)

    def scored(self, batch: Batch, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """What quality is measured on, per modality: the standardized input, or the features."""
        return {m: standardized_input(batch.features[m], batch.frame_mask[m]) if m in self.input_scored else features[m]
                for m in self.modalities}

    def distances(self, batch: Batch, slots: DRFPass) -> Tensor:
        """(B, M) distance of each modality to its queue. A recovered modality has no input of its
        own: its distance is that of the recovered feature to the feature queue (about 1 when
        typical, the scale of every distance here)."""
        scored = self.scored(batch, slots.features)
        columns = []
        for j, m in enumerate(self.modalities):
            distance = self.distance(j, scored[m])
            rows = slots.recovered[:, j]
            if m in self.input_scored and bool(rows.any()):
                own = modality_distance(self.queues[m], slots.features[m], self.cfg.quality_measure, self.cfg.top_k)
                distance = torch.where(rows, own, distance)
            columns.append(distance)
        return torch.stack(columns, dim=1)

    def distance(self, index: int, values: Tensor) -> Tensor:
        """D of modality `index` for the rows of `values` (B, dim) in the quality space, with the
        scorer's direction weights."""
        cfg, m = self.cfg, self.modalities[index]
        queue = self.input_queues[m] if m in self.input_scored else self.queues[m]
        emphasis = self.emphasis(index) if cfg.quality_measure == "mahalanobis" else None
        return modality_distance(queue, values, cfg.quality_measure, cfg.top_k, emphasis)

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

    def fuse(self, features: dict[str, Tensor], weights: Tensor) -> Tensor:
        """Head over the weighted sum of the available slots, sum_m w_m f_m (B, d)."""
        fused = sum(features[m] * weights[:, j : j + 1] for j, m in enumerate(self.modalities))
        pred = self.head(fused)
        return pred.squeeze(-1) if self.num_outputs == 1 else pred

    # --- training -----------------------------------------------------------------------
    def prepare(self, train: SplitTensors) -> None:
        """Fill the input queues once with the standardized inputs of K random clean training
        samples: inputs do not change during training, so neither does their distribution, and
        quality is scored from the first step on."""
        if not self.input_scored:
            return
        parts: dict[str, list[Tensor]] = {m: [] for m in self.modalities if m in self.input_scored}
        for batch in train.batches(256):
            for j, m in enumerate(self.modalities):
                if m in parts:
                    parts[m].append(standardized_input(batch.features[m], batch.frame_mask[m])[batch.present[:, j]])
        was_training = self.training
        self.train()  # a queue only grows in training mode
        for m, values in parts.items():
            values = torch.cat(values)
            self.input_queues[m].push(values[torch.randperm(len(values))[: self.cfg.queue_size]])
        self.train(was_training)

    def loss(self, batch: Batch, phase: str) -> dict[str, Tensor]:
        cfg = self.cfg
        augmented = self.training_view(batch).batch
        _, _, clean = self.encoders(batch)  # the clean pass: recovery inputs and targets
        with as_at_test_time(self):  # the scale of test time: queue entries, the gate's distances
            _, _, plain = self.encoders(batch)
        if self.training and cfg.use_quality:
            self._observe_clean(batch, plain)
        with as_at_test_time(self):
            slots = self.slots(augmented)
            distance = self.distances(augmented, slots)
        view = self.run(augmented, distance)
        task = self.task_loss(view.pred, batch)
        ranking = self._ranking(batch, plain) if hasattr(self, "emphasis") else task.new_zeros(())
        sample = distribution = task.new_zeros(())
        if self.recovers:
            sample, distribution = self._recovery_losses(clean, batch.present)
        total = task + cfg.w_quality * ranking + cfg.w_sample * sample + cfg.w_dist * distribution
        if self.training:
            self._pending = {m: plain[m][batch.present[:, j]] for j, m in enumerate(self.modalities)}
        return {"loss": total, "task": task, "quality_ranking": ranking,
                "recovery_sample": sample, "recovery_dist": distribution}

    def _observe_clean(self, batch: Batch, plain: dict[str, Tensor]) -> None:
        """Feed the gate's running statistics the distances of the clean, present inputs (`plain`:
        their no-dropout features; while a feature queue is still filling they score 0 and are left out)."""
        with torch.no_grad():
            scored = self.scored(batch, plain)
            distance = torch.stack([self.distance(j, scored[m]) for j, m in enumerate(self.modalities)], dim=1)
        self.gate.observe(distance, batch.present & (distance > 0))

    def param_groups(self, lr: float) -> list[dict]:
        """The shared groups, with the gate in its own at `gate_lr_scale` * lr: a handful of scalars
        that the task loss reaches only through the weights of a convex combination, so at the
        network's rate they hardly move within a run."""
        groups = super().param_groups(lr)
        if not hasattr(self, "gate") or self.cfg.gate_lr_scale == 1.0:
            return groups
        gate = list(self.gate.parameters())
        ids = {id(p) for p in gate}
        groups[0]["params"] = [p for p in groups[0]["params"] if id(p) not in ids]
        return [*groups, {"params": gate, "lr": lr * self.cfg.gate_lr_scale}]

    def after_step(self) -> None:
        """Enqueue the last training step's clean, present features (never in eval mode)."""
        if self.training:
            for m, values in self._pending.items():
                self.queues[m].push(values)
        self._pending = {}

    def _ranking(self, batch: Batch, plain: dict[str, Tensor]) -> Tensor:
        """Clean above corrupted, on pairs of its own: every sample with one present modality
        corrupted (`random_disruption` at rate 1, mode C), whatever the training augmentation is;
        the clean one's log-quality -D/tau must beat the corrupted one's by `margin`. Both sides
        are inputs or no-gradient features, so this trains the scorer's direction weights only."""
        hit = random_disruption(batch, 1.0, "C")
        clean = self.scored(batch, plain)
        if len(self.input_scored) == len(self.modalities):  # inputs only: no encoder pass needed
            corrupted = self.scored(hit.batch, plain)
        else:
            with as_at_test_time(self):
                corrupted = self.scored(hit.batch, self.encoders(hit.batch)[2])
        clean_log, corrupt_log = [], []
        for j, m in enumerate(self.modalities):
            rows = hit.corrupted[:, j]
            if bool(rows.any()):
                clean_log.append(-self.distance(j, clean[m][rows]) / self.cfg.tau)
                corrupt_log.append(-self.distance(j, corrupted[m][rows]) / self.cfg.tau)
        if not clean_log:
            return plain[self.modalities[0]].new_zeros(())
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
