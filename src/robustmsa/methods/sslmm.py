"""SSLMM: Semi-Supervised Learning with Missing Modalities (Information Fusion 120, 2025).

The design of METHODS.md:

    graph       each modality's sequence is projected to d and pooled into <= S segments (the
                shared pool encoder, windows of ceil(L/S) frames); a segment is a node carrying a
                modality and a segment-position embedding. T rounds of an intra-modal step
                (a node hears the nodes of its own modality) then an inter-modal step (only the
                nodes of the other modalities); missing modalities and empty segments neither
                send nor receive (nn/graph.py). Read-out: masked attention pooling -> head.
    pre-train   self-supervised, all training samples, no labels. Two randomly masked views
                (whole modalities and random segments dropped): masked node modelling, i.e.
                the dropped nodes' projected features are rebuilt from what the view's graph
                holds, plus InfoNCE between the two views' read-outs.
    fine-tune   semi-supervised, on paired streams (training/streams.py): each step a labeled
                batch and an unlabeled batch (every training row, label hidden) of `unlabeled_k`
                times its size. Task loss on the labeled batch (on the training-time missing
                augmentation every method shares, `training_missing_view`); on the unlabeled
                batch, consistency between the student on a strongly masked view and a mean
                teacher on two really weak views (a few segments dropped, small feature noise,
                never a whole modality), weighted by the teacher's confidence, on three things:
                the score, the L2-normalised read-out features, and confident polarity
                pseudo-labels; modality reconstruction of the modalities the strong view dropped.
                At each validation the student and the teacher are both scored; the better one
                is served (`serve_teacher`, saved with the weights; selection record "served").

Choices METHODS.md leaves open (each is a config option or stated here):
  * The self-supervised and teacher / strong views are drawn on the nodes after encoding: dropping
    a node from the graph is the same as dropping its segment's frames, and the encoder runs once.
    Modality dropout is the shared LNLN-style policy (`random_modality_dropout`); segment dropout
    draws a per-sample rate ~ U(0, max) (`random_frame_dropout` on the node mask); a view always
    keeps one node. The supervised view is the shared frame-level augmentation, so the task loss
    sees what the baselines' does.
  * Reconstruction targets are the encoder's node features, detached and layer-normalised
    (MAE's normalised targets): the encoder cannot shrink them to make the loss small.
    Decoder queries are the target's modality + segment embeddings plus the view's read-out.
  * InfoNCE is on the L2-normalised read-outs themselves (no projection head): the read-out is
    what the head sees, so that is what should not depend on which modalities are there.
  * The teacher is reset to the (pre-trained) student when fine-tuning starts, then follows it by
    EMA with the mean-teacher warm-up min(1 - 1/(step+1), ema_decay); the consistency weight ramps
    up as exp(-5 (1 - t)^2) over `rampup_steps`, since the teacher's head starts untrained.
  * Why these fixes (issue 14): one mixed loader gave the task term ~6 labeled rows of 64 at ratio
    0.1; a teacher view that drops whole modalities on half the rows is not weak; consistency on
    the scalar score alone re-teaches the masking invariance the supervised view already learns;
    and the EMA teacher lags the student, so evaluating only the student wastes it.
  * `unlabeled_k` = 1 by default: the unlabeled pass then has as many steps as a full-data
    epoch, the optimizer budget the baselines get under `train.equal_budget`.
  * Teacher confidence: two weakly masked teacher views. Classification: the max probability of
    their mean; regression: exp(-(p1 - p2)^2 / sigma^2) with sigma = confidence_scale * label
    range. Consistency is confidence-weighted MSE (regression) or KL (classification).
  * Fine-tuning uses the unlabeled samples when consistency or reconstruction is on; with both
    off it is a supervised graph model on the labeled part.
  * Options tried for label-scarce runs (issue 14), off by default because no candidate was ahead
    on validation on both real MOSI and synthetic MOSI v2 (benchmarks/SSLMM_VALIDATION.md):
    `rampup_epochs` / `ema_epochs` count the ramp and the teacher's EMA horizon in fine-tuning
    epochs (the trainer passes the epoch length to `begin_phase`), `strong_noise` /
    `strong_feature_drop` perturb the strong view inside every node (with one node per modality,
    node drops can only drop whole modalities), `finetune_lr`, and `ramp_pseudo=false`.
  * A modality that is one node (utterance vectors: real MOSI here) is special in pre-training:
    dropping it from a view makes masked node modelling rebuild one modality from another, and
    InfoNCE pull a text-only read-out towards an audio-only one (the ratio ablation on real MOSI
    measured pre-training as harmful). `single_node_pretrain` says what the views do with it:
    `drop` (as any node), `keep` (never dropped, never a rebuilt target; with every modality one
    node nothing is left to mask and the pre-training phase is skipped) or `perturb` (kept, its
    feature channels dropped per view, so InfoNCE contrasts two versions of it). The rule reads
    the data's structure (nodes per modality), never the dataset's name; sequence modalities are
    untouched by it. The default is the one chosen on validation (benchmarks/SSLMM_VALIDATION.md).
  * Training-time randomness (views, dropout) draws from torch's RNG, which the trainer seeds per
    run and saves in the resume state, like every other method's augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from robustmsa.data.batch import Batch
from robustmsa.methods.base import Method, Output, Phase, TextBranchConfig, register_method
from robustmsa.missing import (
    random_frame_dropout,
    random_modality_dropout,
    training_missing_view,
)
from robustmsa.nn.encoders import ModalityEncoders, mlp
from robustmsa.nn.graph import AttentionReadout, GraphMessagePassing, NodeQueryDecoder

PRETRAIN, FINETUNE = "pretrain", "finetune"
SERVE_OPTIONS = ("auto", "student", "teacher")
SINGLE_NODE_OPTIONS = ("drop", "keep", "perturb")


@dataclass
class SSLMMConfig(TextBranchConfig):
    # graph
    d: int = 32
    segments: int = 8  # S: nodes per modality (at most)
    rounds: int = 3  # T
    heads: int = 4  # d must be divisible by heads
    encoder: str = "pool"  # node projection: pool (frame MLP) or conv
    dropout: float = 0.1
    message_passing: str = "alternate"  # alternate | intra | inter
    # pre-training (self-supervised)
    pretrain_epochs: int = 10
    pretrain_lr: float = 1e-3
    pretrain_segment_drop: float = 0.5  # per-view segment drop rate ~ U(0, this)
    temperature: float = 0.2  # InfoNCE
    w_mnm: float = 1.0
    w_contrast: float = 1.0
    single_node_pretrain: str = "keep"  # a one-node modality in pre-training: keep | drop | perturb
    single_node_feature_drop: float = 0.2  # single_node_pretrain=perturb: its channels dropped per view
    # fine-tuning (semi-supervised)
    weak_complete_fraction: float = 0.5  # supervised view: this fraction stays whole
    frame_drop_max: float = 0.5  # supervised view: the shared augmentation's frame drop rate
    weak_segment_drop: float = 0.1  # teacher views: segment drop rate ~ U(0, this), no modality drop
    weak_noise: float = 0.05  # teacher views: Gaussian node-feature noise, times the features' std
    strong_segment_drop: float = 0.5  # strong view: every sample may lose modalities, and segments
    strong_noise: float = 0.0  # strong view: Gaussian node-feature noise, times the features' std
    strong_feature_drop: float = 0.0  # strong view: node-feature channels dropped with this probability
    finetune_lr: float = 0.0  # 0: the training config's lr
    ema_decay: float = 0.99  # used when ema_epochs = 0
    ema_epochs: float = 0.0  # > 0: EMA horizon 1/(1-decay) in epochs
    rampup_steps: int = field(default=100, metadata={"min": 0})  # 0: no ramp-up; used when rampup_epochs = 0
    rampup_epochs: float = 0.0  # > 0: ramp-up over this many epochs
    ramp_pseudo: bool = True  # false: confident pseudo-labels at full weight from the first step
    confidence_scale: float = 0.1  # regression: sigma as a fraction of the label range
    w_consistency: float = 1.0  # on the score
    w_feature: float = 1.0  # on the L2-normalised read-out (1 - cosine to the teacher's)
    w_pseudo: float = 1.0  # on confident polarity pseudo-labels (logistic loss on the sign)
    pseudo_confidence: float = 0.8  # teacher confidence a pseudo-label needs
    pseudo_margin: float = 0.1  # regression: |teacher score| it needs, as a fraction of the label range
    unlabeled_k: int = field(default=1, metadata={"min": 1})  # unlabeled batch = k x labeled batch
    serve: str = "auto"  # auto (the better on validation) | student | teacher
    w_recon: float = 1.0
    # ablation switches
    use_pretrain: bool = True
    use_consistency: bool = True
    use_recon: bool = True


@dataclass
class GraphPass:
    """One pass of the graph over one view: node states, read-out, prediction."""

    node_mask: Tensor  # (B, N) bool: the view's valid nodes
    states: Tensor  # (B, N, d)
    readout: Tensor  # (B, d)
    readout_weights: Tensor  # (B, N)
    pred: Tensor

    def chunk(self, parts: int) -> list[GraphPass]:
        """Split a pass over `parts` stacked views back into one pass per view."""
        pieces = [t.chunk(parts) for t in (self.node_mask, self.states, self.readout, self.readout_weights, self.pred)]
        return [GraphPass(*view) for view in zip(*pieces)]


class SSLMMNet(nn.Module):
    """Encoders -> segment nodes -> message passing -> read-out -> head (the student, and without
    its decoder, the teacher)."""

    def __init__(self, spec, cfg: SSLMMConfig, num_outputs: int, with_decoder: bool = True,
                 text_branch: nn.Module | None = None):
        super().__init__()
        d = cfg.d
        self.num_outputs = num_outputs
        self.modalities = spec.modality_names
        self.encoders = ModalityEncoders(spec, d, cfg.encoder, cfg.dropout, max_frames=cfg.segments,
                                         text_branch=text_branch)
        counts = [self.encoders.frames[m] for m in self.modalities]  # nodes per modality
        self.register_buffer("groups", torch.cat([torch.full((c,), j) for j, c in enumerate(counts)]), persistent=False)
        self.register_buffer("segment", torch.cat([torch.arange(c) for c in counts]), persistent=False)
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(len(counts), d))
        self.segment_embedding = nn.Parameter(0.02 * torch.randn(max(counts), d))
        self.graph = GraphMessagePassing(d, cfg.rounds, cfg.heads, cfg.message_passing, cfg.dropout)
        self.readout = AttentionReadout(d)
        self.head = mlp(d, d, num_outputs, cfg.dropout)
        if with_decoder:
            self.decoder = NodeQueryDecoder(d, d, cfg.heads, cfg.dropout)

    def encode(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(node features (B, N, d) before any embedding, node mask (B, N)); a node is valid when
        its modality is present and its segment holds at least one kept frame."""
        states, masks, _ = self.encoders(batch)
        features = torch.cat([states[m] for m in self.modalities], dim=1)
        node_mask = torch.cat([masks[m] for m in self.modalities], dim=1) & batch.present[:, self.groups]
        return features * node_mask.unsqueeze(-1).to(features.dtype), node_mask

    def single_node(self) -> Tensor:
        """(N,) bool: the node is its modality's only one (an utterance-vector modality)."""
        return torch.bincount(self.groups)[self.groups] == 1

    def node_embedding(self) -> Tensor:
        """(N, d): which modality and which segment each node is."""
        return self.modality_embedding[self.groups] + self.segment_embedding[self.segment]

    def run_views(self, views: list[tuple[Tensor, Tensor]]) -> list[GraphPass]:
        """One pass per (node features, node mask) view of the same samples, computed as one
        stacked batch (fewer, larger ops: cheaper on CPU than separate passes)."""
        stacked = self.run(torch.cat([features for features, _ in views]), torch.cat([mask for _, mask in views]))
        return stacked.chunk(len(views))

    def run(self, features: Tensor, node_mask: Tensor) -> GraphPass:
        nodes = features + self.node_embedding()
        states = self.graph(nodes, self.groups, node_mask)
        readout, weights = self.readout(states, node_mask)
        pred = self.head(readout)
        return GraphPass(node_mask, states, readout, weights, pred.squeeze(-1) if self.num_outputs == 1 else pred)

    def reconstruct(self, view: GraphPass) -> Tensor:
        """(B, N, d): every node's features as the view's graph predicts them."""
        queries = self.node_embedding().unsqueeze(0) + view.readout.unsqueeze(1)
        return self.decoder(queries, view.states, view.node_mask)


def masked_view(node_mask: Tensor, groups: Tensor, complete_fraction: float, segment_drop: float) -> tuple[Tensor, Tensor]:
    """A randomly masked view: (node mask (B, N), kept modalities (B, M)). Whole modalities go by
    the LNLN-style policy, then segments with a per-sample rate ~ U(0, segment_drop); a sample that
    had a node keeps at least one."""
    present = modality_any(node_mask, groups)
    kept = random_modality_dropout(present, complete_fraction=complete_fraction)
    view = random_frame_dropout(node_mask & kept[:, groups], segment_drop)
    lost = node_mask.any(dim=1) & ~view.any(dim=1)
    if bool(lost.any()):  # give back one random node of the kept modalities
        scores = torch.rand(node_mask.shape, device=node_mask.device).masked_fill(~(node_mask & kept[:, groups]), -1.0)
        rescue = torch.zeros_like(view).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
        view = view | (rescue & lost.unsqueeze(1))
    return view, kept


def modality_any(node_mask: Tensor, groups: Tensor) -> Tensor:
    """(B, M) bool: the modality has at least one valid node."""
    return torch.stack([(node_mask & (groups == j)).any(dim=1) for j in range(int(groups.max()) + 1)], dim=1)


def weak_mask(node_mask: Tensor, groups: Tensor, segment_drop: float) -> Tensor:
    """Segments dropped at a per-sample rate ~ U(0, segment_drop), but never a whole modality: a
    modality that would lose every node keeps them all (a one-segment modality is never dropped)."""
    view = random_frame_dropout(node_mask, segment_drop)
    lost = (modality_any(node_mask, groups) & ~modality_any(view, groups))[:, groups]
    return view | (node_mask & lost)


def perturb_features(features: Tensor, drop: float, noise: float) -> Tensor:
    """Channel dropout at rate `drop` (inverted, as `F.dropout`), then Gaussian noise of `noise`
    times the features' std; either at 0 is skipped (and draws nothing from the RNG)."""
    if drop > 0:
        features = F.dropout(features, drop, training=True)
    if noise > 0:
        features = features + noise * features.detach().std() * torch.randn_like(features)
    return features


def info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE: row i of `a` and row i of `b` are the positive pair, the other rows of the
    batch the negatives. a, b (B, d)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.t() / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


@register_method("sslmm")
class SSLMM(Method):
    """Graph message passing over modality segments, self-supervised pre-training, and
    mean-teacher semi-supervised fine-tuning with modality reconstruction."""

    config_class = SSLMMConfig

    def __init__(self, spec, cfg: SSLMMConfig):
        super().__init__(spec, cfg)
        if cfg.d % cfg.heads:
            raise ValueError(f"sslmm: d={cfg.d} is not divisible by heads={cfg.heads}")
        if cfg.serve not in SERVE_OPTIONS:
            raise ValueError(f"sslmm: serve={cfg.serve!r}; expected one of {', '.join(SERVE_OPTIONS)}")
        for name in ("strong_noise", "finetune_lr", "ema_epochs", "rampup_epochs"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"sslmm: {name}={getattr(cfg, name)}; expected >= 0")
        if cfg.single_node_pretrain not in SINGLE_NODE_OPTIONS:
            raise ValueError(f"sslmm: single_node_pretrain={cfg.single_node_pretrain!r}; "
                             f"expected one of {', '.join(SINGLE_NODE_OPTIONS)}")
        for name in ("strong_feature_drop", "single_node_feature_drop"):
            if not 0.0 <= getattr(cfg, name) < 1.0:
                raise ValueError(f"sslmm: {name}={getattr(cfg, name)}; expected in [0, 1)")
        self.student = SSLMMNet(spec, cfg, self.num_outputs, text_branch=self.make_text_branch(cfg.d))
        self.teacher = SSLMMNet(spec, cfg, self.num_outputs, with_decoder=False, text_branch=self.make_text_branch(cfg.d))
        self.teacher.requires_grad_(False)  # moved by EMA in after_step, never by the optimizer
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("teacher_ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("serve_teacher", torch.tensor(cfg.serve == "teacher"))
        self._phase = FINETUNE
        self._steps_per_epoch = 0  # of the fine-tuning phase, once it has begun (begin_phase)
        label = spec.label
        self.label_range = (label.high - label.low) if label.is_regression and label.high is not None else 6.0

    def train(self, mode: bool = True) -> SSLMM:
        """The teacher never uses dropout: its targets vary only with the masked views."""
        super().train(mode)
        self.teacher.eval()
        return self

    def phases(self) -> list[Phase]:
        cfg = self.cfg
        semi = cfg.use_consistency or cfg.use_recon
        finetune = Phase(FINETUNE, lr=cfg.finetune_lr or None, uses_unlabeled=semi,
                         unlabeled_k=cfg.unlabeled_k if semi else 0)
        if not cfg.use_pretrain or not self.pretrain_has_work():
            return [finetune]
        return [Phase(PRETRAIN, epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr, select=False, uses_unlabeled=True), finetune]

    def pretrain_has_work(self) -> bool:
        """False when `single_node_pretrain=keep` and every modality is one node: the views would
        then mask nothing, and pre-training would only contrast dropout noise."""
        return self.cfg.single_node_pretrain != "keep" or not bool(self.student.single_node().all())

    def begin_phase(self, phase: Phase, steps_per_epoch: int) -> None:
        """The fine-tuning epoch length: `rampup_epochs` and `ema_epochs` are counted in it."""
        if phase.name == FINETUNE:
            self._steps_per_epoch = steps_per_epoch

    def forward(self, batch: Batch) -> Output:
        net = self.teacher if bool(self.serve_teacher) and bool(self.teacher_ready) else self.student
        features, node_mask = net.encode(batch)
        result = net.run(features, node_mask)
        weights = result.readout_weights
        per_modality = torch.stack([weights[:, net.groups == j].sum(1) for j in range(len(self.modalities))], 1)
        return Output(result.pred, {"modality_attention": per_modality})

    # --- serving: the student or its mean teacher, whichever validates better ------------
    def serving_options(self) -> list[str]:
        return ["student", "teacher"] if self.cfg.serve == "auto" and self._phase == FINETUNE else []

    def serve(self, option: str) -> None:
        if option not in ("student", "teacher"):
            super().serve(option)
        self.serve_teacher.fill_(option == "teacher")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints saved before `serve_teacher` existed served the student."""
        state_dict.setdefault(prefix + "serve_teacher", torch.tensor(False))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- training -----------------------------------------------------------------------
    def loss(self, batch: Batch, phase: str, unlabeled: Batch | None = None) -> dict[str, Tensor]:
        """`unlabeled`: the unlabeled stream's batch of a paired phase; without it the unlabeled
        terms use the unlabeled rows of `batch`."""
        self._phase = phase
        return self.pretrain_loss(batch) if phase == PRETRAIN else self.finetune_loss(batch, unlabeled)

    def pretrain_loss(self, batch: Batch) -> dict[str, Tensor]:
        cfg, net = self.cfg, self.student
        features, node_mask = net.encode(batch)
        views = [self.pretrain_view(features, node_mask) for _ in range(2)]
        stacked = net.run(torch.cat([f for f, _ in views]), torch.cat([m for _, m in views]))
        target = F.layer_norm(features.detach(), features.shape[-1:]).repeat(2, 1, 1)
        mnm = self._rebuild_error(stacked, target, node_mask.repeat(2, 1) & ~stacked.node_mask)
        first, second = stacked.chunk(2)
        usable = node_mask.any(dim=1)  # a sample with no node at all has nothing to contrast
        contrast = (info_nce(first.readout[usable], second.readout[usable], cfg.temperature)
                    if int(usable.sum()) >= 2 else mnm * 0.0)
        total = cfg.w_mnm * mnm + cfg.w_contrast * contrast
        return {"loss": total, "mnm": mnm, "contrast": contrast}

    def pretrain_view(self, features: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        """One self-supervised view: (node features, node mask). Segments and whole modalities are
        dropped at random; a modality that is one node (utterance vectors) is dropped with them only
        under `single_node_pretrain=drop`. Dropping it makes masked node modelling rebuild one
        modality from another and InfoNCE pull a text-only read-out towards an audio-only one; with
        `keep` / `perturb` it stays in every view and is never a rebuilt target (its nodes are
        not dropped), and `perturb` drops its feature channels per view instead, so the contrast
        also sees two versions of what that modality carries."""
        cfg, groups = self.cfg, self.student.groups
        if cfg.single_node_pretrain == "drop":
            return features, masked_view(node_mask, groups, 0.0, cfg.pretrain_segment_drop)[0]
        fixed = node_mask & self.student.single_node()  # (B, N): nodes every view keeps
        mask = masked_view(node_mask & ~fixed, groups, 0.0, cfg.pretrain_segment_drop)[0] | fixed
        if cfg.single_node_pretrain == "perturb" and bool(fixed.any()):
            dropped = perturb_features(features, cfg.single_node_feature_drop, 0.0)
            features = torch.where(fixed.unsqueeze(-1), dropped, features)
        return features, mask

    def finetune_loss(self, batch: Batch, unlabeled: Batch | None = None) -> dict[str, Tensor]:
        cfg, net = self.cfg, self.student
        # The supervised view is the training-time missing augmentation every method shares.
        supervised = net.encode(training_missing_view(batch, cfg.weak_complete_fraction, cfg.frame_drop_max))
        pool = batch if unlabeled is None else unlabeled  # the rows the unlabeled terms see
        rows = ~pool.labeled
        consistency_on = cfg.use_consistency and bool(rows.any())
        if not (cfg.use_recon or consistency_on):
            task = self.task_loss(net.run(*supervised).pred, batch)
            zero = task.new_zeros(())
            return {"loss": task, "task": task, "consistency": zero, "recon": zero, "ramp": zero}
        features, node_mask = net.encode(pool)
        strong_mask, kept = masked_view(node_mask, net.groups, 0.0, cfg.strong_segment_drop)
        strong_features = self.perturb(features)
        if pool is batch:
            weak, strong = net.run_views([supervised, (strong_features, strong_mask)])
        else:
            weak, strong = net.run(*supervised), net.run(strong_features, strong_mask)
        task = self.task_loss(weak.pred, batch)
        zero = task.new_zeros(())
        terms = {"consistency": zero, "feature": zero, "pseudo": zero, "recon": zero, "ramp": zero}
        if cfg.use_recon:  # nodes of modalities the strong view dropped, that the sample had
            target = F.layer_norm(features.detach(), features.shape[-1:])
            terms["recon"] = self._rebuild_error(strong, target, node_mask & ~kept[:, net.groups])
        if consistency_on:
            terms.update(self._consistency(pool, strong, rows))
            terms["ramp"] = task.new_tensor(self.rampup())
        ramped = cfg.w_consistency * terms["consistency"] + cfg.w_feature * terms["feature"]
        pseudo = cfg.w_pseudo * terms["pseudo"]
        ramped, pseudo = (ramped + pseudo, 0.0) if cfg.ramp_pseudo else (ramped, pseudo)
        total = task + terms["ramp"] * ramped + pseudo + cfg.w_recon * terms["recon"]
        return {"loss": total, "task": task, **terms}

    def _rebuild_error(self, view: GraphPass, target: Tensor, which: Tensor) -> Tensor:
        """Mean squared error of the rebuilt features on the nodes `which` (B, N)."""
        if not bool(which.any()):
            return view.readout.sum() * 0.0  # keeps the graph: nothing to rebuild in this batch
        rebuilt = self.student.reconstruct(view)
        return F.mse_loss(rebuilt[which], target[which])

    def perturb(self, features: Tensor) -> Tensor:
        """The strong view's feature-level perturbation on every node. Where a modality is one node
        (utterance vectors), dropping nodes can only drop whole modalities; this perturbs what is
        inside a modality."""
        return perturb_features(features, self.cfg.strong_feature_drop, self.cfg.strong_noise)

    def weak_view(self, features: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        """A really weak view: a few segments dropped (rate ~ U(0, weak_segment_drop)), never a
        whole modality, and Gaussian noise of `weak_noise` times the features' std on the rest."""
        mask = weak_mask(node_mask, self.teacher.groups, self.cfg.weak_segment_drop)
        noise = self.cfg.weak_noise * features.std() * torch.randn_like(features)
        return (features + noise) * mask.unsqueeze(-1).to(features.dtype), mask

    @torch.no_grad()
    def teacher_targets(self, batch: Batch, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(target, confidence, read-out) for the samples `rows` (B,) bool, from two weak views
        through the teacher (run on those samples only: the teacher costs nothing on the rest)."""
        self._sync_teacher_once()
        cfg, net = self.cfg, self.teacher
        features, node_mask = net.encode(batch)
        features, node_mask = features[rows], node_mask[rows]
        views = net.run_views([self.weak_view(features, node_mask) for _ in range(2)])
        preds = [view.pred for view in views]
        readout = 0.5 * (views[0].readout + views[1].readout)
        if self.spec.label.is_regression:
            sigma = cfg.confidence_scale * self.label_range
            return 0.5 * (preds[0] + preds[1]), torch.exp(-((preds[0] - preds[1]) / sigma) ** 2), readout
        probs = 0.5 * (preds[0].softmax(-1) + preds[1].softmax(-1))
        return probs, probs.max(dim=-1).values, readout

    def _consistency(self, batch: Batch, strong: GraphPass, rows: Tensor) -> dict[str, Tensor]:
        """Confidence-weighted agreement of the student (strong view) with the teacher on the rows
        `rows`: the score (MSE, or KL for classes), the read-out (1 - cosine), and the polarity
        (or class) of the confident, clear-cut teacher targets."""
        target, confidence, readout = self.teacher_targets(batch, rows)
        pred, student_readout = strong.pred[rows], strong.readout[rows]
        feature = confidence * (1.0 - F.cosine_similarity(student_readout, readout, dim=-1))
        sure = confidence >= self.cfg.pseudo_confidence
        if self.spec.label.is_regression:
            score = (pred - target) ** 2
            sure = sure & (target.abs() >= self.cfg.pseudo_margin * self.label_range)
            pseudo = F.softplus(-torch.sign(target) * pred)  # logistic loss on the score's sign
        else:
            score = (target * (target.clamp_min(1e-8).log() - pred.log_softmax(-1))).sum(-1)
            pseudo = F.cross_entropy(pred, target.argmax(-1), reduction="none")
        pseudo = (pseudo * sure).sum() / sure.sum().clamp_min(1)
        return {"consistency": (confidence * score).mean(), "feature": feature.mean(), "pseudo": pseudo}

    def rampup(self) -> float:
        """Consistency weight factor in (0, 1]: exp(-5 (1 - t)^2), t = EMA steps / ramp-up steps."""
        steps = self.rampup_length()
        if steps <= 0:
            return 1.0
        t = min(1.0, int(self.ema_steps) / steps)
        return math.exp(-5.0 * (1.0 - t) ** 2)

    def rampup_length(self) -> float:
        """Ramp-up steps: `rampup_epochs` fine-tuning epochs once the epoch length is known, else
        `rampup_steps`. In epochs, the ramp ends at the same point of a run on any dataset size."""
        cfg = self.cfg
        if cfg.rampup_epochs > 0 and self._steps_per_epoch:
            return cfg.rampup_epochs * self._steps_per_epoch
        return cfg.rampup_steps

    def ema_rate(self) -> float:
        """The teacher's EMA decay: horizon 1 / (1 - decay) = `ema_epochs` fine-tuning epochs once
        the epoch length is known, else `ema_decay`. A fixed decay of 0.99 lags 100 steps: five
        MOSI epochs, longer than label-scarce runs last before early stopping."""
        cfg = self.cfg
        if cfg.ema_epochs > 0 and self._steps_per_epoch:
            return 1.0 - 1.0 / max(1.0, cfg.ema_epochs * self._steps_per_epoch)
        return cfg.ema_decay

    # --- the mean teacher ---------------------------------------------------------------
    def _sync_teacher_once(self) -> None:
        """Fine-tuning starts with the teacher equal to the (pre-trained) student."""
        if not bool(self.teacher_ready):
            student = self.student.state_dict()
            self.teacher.load_state_dict({name: student[name] for name in self.teacher.state_dict()})
            self.teacher_ready.fill_(True)

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA update of the teacher after each fine-tuning optimizer step."""
        if self._phase != FINETUNE:
            return
        self._sync_teacher_once()
        decay = min(1.0 - 1.0 / (int(self.ema_steps) + 2), self.ema_rate())
        student = dict(self.student.named_parameters())
        for name, param in self.teacher.named_parameters():
            param.lerp_(student[name], 1.0 - decay)
        student_buffers = dict(self.student.named_buffers())
        for name, buffer in self.teacher.named_buffers():
            buffer.copy_(student_buffers[name])
        self.ema_steps += 1
