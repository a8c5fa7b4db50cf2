"""FSRF: Factorization-guided Semantic Recovery for incomplete MSA (arXiv 2510.16086, ICME 2025).

The design of METHODS.md, for each modality m with pooled encoding Z_m (Conv1D k3 + positions +
Transformer, masked mean over the valid frames):

    DHF       h^c_m = E_c(Z_m)   homogeneous, one E_c shared by all modalities
              h^p_m = E_p^m(Z_m) heterogeneous, one per modality
              h^n_m = E_n^m(Z_m) noise, one per modality: never fused, pulled toward N(0, I)
              constraints: CMD between the h^c of present modality pairs; soft orthogonality
              among h^c_m, h^p_m, h^n_m and between the h^p of different modalities;
              reconstruction D_m(h^c_m + h^p_m + h^n_m) ~ Z_m; a Gaussian-prior KL on h^n.
    recovery  a missing modality gets h^c_m = R_m(mean of the present h^c) and
              h^p_m = P_m(the same mean); a present modality's factors are never touched.
    fusion    one transformer layer over the 2M tokens (h^c, h^p) of the present or recovered
              modalities; masked means of the two halves -> the fused vector -> head.
    DAS       each training batch is seen twice: as given (full view) and with random inter- and
              intra-modality missingness (missing view). Both directions, each with a
              stop-gradient on its target (METHODS.md "Revisions", issue 12): KL(p_full || p_miss)
              teaches the missing view at full weight; the return KL(p_miss || p_full) teaches the
              full view at a small weight and on batch-standardized scores, so it can reorder but
              never shrink or shift the full view; the fused vectors are aligned with the full
              view as a fixed (detached) target.

Choices METHODS.md leaves open (each is a config option or stated here):
  * E_c, E_p^m, R_m, P_m end in a sigmoid (MISA's bounded subspaces; keeps the 5th CMD moment tame).
  * The noise prior is a VAE-style KL: h^n is the mean of a Gaussian whose log-variance comes from
    a second head; the reconstruction uses a reparameterised sample while training (`noise_sample`).
    The KL is averaged over dimensions, so its scale does not depend on d.
  * DHF constraints are computed on the full view only; the task loss is the mean of both views'.
  * Difference: the mean over each modality's factor pairs plus the mean over h^p pairs across
    modalities (MISA sums; with three factors a sum would triple the term at the same weight).
  * Reconstruction: the target Z_m is detached and D_m starts at zero, so the factors are never
    shrunk (nor Z collapsed) to make a randomly initialised decoder's job easier.
  * Recovery is trained on the missing view: for samples where m is present in the full view but
    dropped in the missing view, MSE between the recovered factors and the full view's (detached)
    true ones, so it learns exactly what it does at test time. w_recovery = 1.
  * DAS distributions: a regression output becomes a distribution over `das_bins` sentiment bins
    (logits -(z - centre)^2 / T in bin widths; T = 8 is a kernel of std 2 bins: sharper kernels
    made "predict the same constant in both views" the cheapest solution); classification uses
    logits / T. Scale-free (`das_scale="std"`): z is the score in training-label std units
    (mean / std recorded by `prepare`), bins span +-3 stds, and the task L1 is in the same units
    (`task_scale="std"`), so the DAS-to-task gradient ratio is the same on MOSI's [-3, 3] and
    SIMS' [-1, 1]. The first design (bins over the label range, raw L1) made DAS ~9x stronger on
    SIMS and shrank its predictions toward the training median.
    Validation split, seed 0, std(pred)/std(label) (slope of label ~ a*pred + b), first design ->
    these defaults (`benchmarks/fsrf_calibration.py`): SIMS-shaped v1 n=600 0.31 (2.54) -> 0.88
    (0.93); SIMS-shaped v2 n=600 0.17 (2.88) -> 0.69 (0.81); MOSI-shaped v1 n=600 0.74 (1.11) ->
    0.98 (0.86); real tri-modal MOSI 0.67 (1.22) -> 0.83 (0.99). Where the predictions only rank
    moderately (corr ~0.5 on v2) a calibrated model's std ratio is ~corr, so the slope is the
    calibration measure, the std ratio a shrinkage alarm.
  * Return direction (`das_return="standardized"`, `w_das_m2f` = 0.1): the first design's raw
    return pulled the full view toward the degraded view's near-mean predictions (valid MOSI
    std(pred)/std(label) 0.68-0.75 against 0.88-0.97 for the baselines).
  * View alignment (`das_align`): "symmetric" (default) is the first design's CMD with both
    sides moving; "cosine" pulls each sample's missing fused vector toward its own detached full
    one; "stopgrad" is CMD with the full view detached, measured in its own batch units so
    shrinking both views cannot lower it. Chosen on validation (issue 12, 2 seeds each, subset Avg
    F1 over the incomplete kept sets): synthetic SIMS v2 69.24 against cosine's 68.54, synthetic
    MOSI v2 66.77 against 66.06, both seeds ahead on both; MAE level. Symmetric CMD does pull the
    full view's spread toward the degraded view's (MOSI v2 std(pred)/std(label) 0.62-0.71 against
    0.69-0.80), at the same correlation with the labels.
    On a tiny set (n=300, 6 epochs, valid MAE): no alignment 0.91, cosine 1.35, symmetric CMD
    1.35, detached CMD 1.58 (no better than untrained). A guess, not measured: CMD's gradient
    dominates the clipped total early on.
  * The missing view drops modalities for every sample (`view_complete_fraction` = 0: the full view
    already covers complete data) and frames with a per-sample rate ~ U(0, frame_drop_max).
  * The fusion tokens carry a learned (modality, factor) embedding so the layer knows which is which.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.functional import mse_loss

from robustmsa.data.batch import Batch, SplitTensors
from robustmsa.methods.base import Method, Output, TextBranchConfig, register_method
from robustmsa.missing import training_missing_view
from robustmsa.nn.distribution import (
    batch_standardize,
    bin_logits,
    cmd,
    diff_loss,
    distill_kl,
    gaussian_prior_kl,
    pairwise_over_present,
)
from robustmsa.nn.encoders import ModalityEncoders, masked_mean, mlp, safe_padding_mask
from robustmsa.nn.fusion import present_mean


@dataclass
class FSRFConfig(TextBranchConfig):
    # encoders: Conv1D k3 + positional encoding + Transformer, d = 40 (the group's setting)
    d: int = 40
    layers: int = 1
    heads: int = 4  # d must be divisible by heads
    dropout: float = 0.1
    max_frames: int = 32  # longer sequences are window-averaged down to this length (CPU speed)
    cmd_moments: int = 5
    noise_sample: bool = True  # reconstruct from a reparameterised sample of h^n while training
    # DAS: the missing view and the distributions compared across views
    view_complete_fraction: float = 0.0  # samples the modality dropout leaves whole
    frame_drop_max: float = 0.5  # per-sample frame drop rate ~ U(0, frame_drop_max)
    das_bins: int = 13  # regression: sentiment bins over [-das_span, das_span] (see das_scale)
    das_bin_temperature: float = 8.0  # regression: bin kernel variance T/2 bin widths^2 (std 2 bins)
    das_temperature: float = 2.0  # classification: logits / T
    # Scale-free distillation (issue 12): "std" standardizes predictions with the training labels'
    # mean / std (recorded by prepare()) before binning, bins span +-das_span label stds, so the
    # kernel is 1 label std wide on any label range; "range": bins over the label range (the first
    # design: on SIMS' [-1, 1] the same kernel is ~9x stronger relative to an L1 task).
    das_scale: str = "std"
    das_span: float = 3.0
    # "std": the task L1 is divided by the training labels' std, so the task-to-regularizer ratio
    # is the same on every label range; "label": plain L1 in label units.
    task_scale: str = "std"
    # DAS directions: the full view teaches the missing view at w_das_f2m; the return direction
    # (missing teaches full) at w_das_m2f, on "standardized" predictions (each view z-scored over
    # the batch: only the ordering pattern transfers, never the spread or offset, so the weak view
    # cannot shrink the full one) or on the raw "prediction" (the first design).
    w_das_f2m: float = 1.0
    w_das_m2f: float = 0.1
    das_return: str = "standardized"
    # View alignment: "symmetric" CMD lets both views move (the first design; best subset Avg on
    # validation, see the module docstring); with the full view detached: "cosine" per sample,
    # "stopgrad" CMD of the two distributions in the full view's batch units.
    das_align: str = "symmetric"
    w_das_align: float = 1.0
    # loss weights (METHODS.md; w_recovery is ours)
    w_sim: float = 1.0
    w_diff: float = 0.3
    w_rec: float = 1.0
    w_kl: float = 0.1
    w_das: float = 1.0
    w_recovery: float = 1.0
    # ablation switches: one flag removes one component (its modules are not even built)
    use_noise: bool = True
    use_sim: bool = True
    use_diff: bool = True
    use_recon: bool = True
    use_recovery: bool = True
    use_das_kl: bool = True  # both directions of the output distillation
    use_das_return: bool = True  # only the missing -> full direction
    use_das_align: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (("das_scale", ("std", "range")), ("task_scale", ("std", "label")),
                              ("das_return", ("standardized", "prediction")), ("das_align", ("cosine", "stopgrad", "symmetric"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"fsrf: {name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")


@dataclass
class FSRFPass:
    """What one pass over a batch computes; the loss needs the intermediate pieces. Dicts are
    keyed by modality, values (B, d). `homo` / `hetero` are the factors that enter fusion: the
    modality's own where it is present, the recovered ones where `recovered` is True."""

    present: Tensor  # (B, M) bool
    recovered: Tensor  # (B, M) bool: missing and rebuilt from the present modalities
    utterance: dict[str, Tensor]  # Z_m
    homo: dict[str, Tensor]  # h^c_m
    hetero: dict[str, Tensor]  # h^p_m
    noise_mean: dict[str, Tensor]  # h^n_m (empty unless asked for)
    noise_logvar: dict[str, Tensor]
    fused: Tensor  # (B, 2d)
    pred: Tensor


def bounded(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


@register_method("fsrf")
class FSRF(Method):
    """De-redundant homo-/heterogeneous factorization, semantic recovery of missing modalities,
    and distribution-aligned self-distillation between a full and a missing view."""

    config_class = FSRFConfig

    def __init__(self, spec, cfg: FSRFConfig):
        super().__init__(spec, cfg)
        d = cfg.d
        if d % cfg.heads:
            raise ValueError(f"fsrf: d={d} is not divisible by heads={cfg.heads}")
        names = self.modalities
        self.encoders = ModalityEncoders(spec, d, "transformer", cfg.dropout, cfg.layers, cfg.heads, cfg.max_frames,
                                         text_branch=self.make_text_branch(d))
        self.homogeneous = bounded(d)  # E_c, shared
        self.heterogeneous = nn.ModuleDict({m: bounded(d) for m in names})  # E_p^m
        if cfg.use_noise:
            self.noise_mean = nn.ModuleDict({m: nn.Linear(d, d) for m in names})  # E_n^m
            self.noise_logvar = nn.ModuleDict({m: nn.Linear(d, d) for m in names})
        if cfg.use_recon:
            self.decoders = nn.ModuleDict({m: nn.Linear(d, d) for m in names})  # D_m
            for decoder in self.decoders.values():  # start at zero: learn to read the factors, never shrink them
                nn.init.zeros_(decoder.weight)
        if cfg.use_recovery:
            self.recover_homo = nn.ModuleDict({m: self._recovery_net(d) for m in names})  # R_m
            self.recover_hetero = nn.ModuleDict({m: self._recovery_net(d) for m in names})  # P_m
        self.token_type = nn.Parameter(0.02 * torch.randn(2 * len(names), d))
        self.fusion = nn.TransformerEncoderLayer(d, cfg.heads, 2 * d, cfg.dropout, batch_first=True, norm_first=True)
        self.head = mlp(2 * d, d, self.num_outputs, cfg.dropout)
        if spec.label.is_regression:
            low = spec.label.low if spec.label.low is not None else -3.0
            high = spec.label.high if spec.label.high is not None else 3.0
            if cfg.das_scale == "std":
                centres = torch.linspace(-cfg.das_span, cfg.das_span, cfg.das_bins)
            else:
                centres = torch.linspace(low, high, cfg.das_bins)
            self.register_buffer("bin_centres", centres, persistent=False)
            # Training-label statistics (prepare() records them; saved with the weights). Before
            # prepare(): the range's centre and a sixth of its width (3 stds each side).
            self.register_buffer("label_mean", torch.tensor(0.5 * (low + high)))
            self.register_buffer("label_std", torch.tensor((high - low) / 6.0))

    def _recovery_net(self, d: int) -> nn.Sequential:
        return nn.Sequential(mlp(d, d, d, self.cfg.dropout), nn.Sigmoid())  # bounded like the factors

    # --- the model ----------------------------------------------------------------------
    def forward(self, batch: Batch) -> Output:
        result = self.run(batch)
        return Output(result.pred, {"recovered": result.recovered})

    def run(self, batch: Batch, with_noise: bool = False) -> FSRFPass:
        _, _, utterance = self.encoders(batch)
        present = batch.present
        homo = {m: self.homogeneous(z) for m, z in utterance.items()}
        hetero = {m: self.heterogeneous[m](z) for m, z in utterance.items()}
        noise_mean, noise_logvar = {}, {}
        if with_noise and self.cfg.use_noise:
            noise_mean = {m: self.noise_mean[m](z) for m, z in utterance.items()}
            noise_logvar = {m: self.noise_logvar[m](z) for m, z in utterance.items()}

        recovered = torch.zeros_like(present)
        if self.cfg.use_recovery:
            # Recover from what is there; a sample with nothing present has nothing to recover from.
            recovered = ~present & present.any(dim=1, keepdim=True)
            pool = present_mean(homo, self.present_dict(batch))
            for j, m in enumerate(self.modalities):
                missing = recovered[:, j : j + 1]  # present modalities keep their own factors
                homo[m] = torch.where(missing, self.recover_homo[m](pool), homo[m])
                hetero[m] = torch.where(missing, self.recover_hetero[m](pool), hetero[m])

        fused = self.fuse(homo, hetero, present | recovered)
        pred = self.head(fused)
        pred = pred.squeeze(-1) if self.num_outputs == 1 else pred
        return FSRFPass(present, recovered, utterance, homo, hetero, noise_mean, noise_logvar, fused, pred)

    def fuse(self, homo: dict[str, Tensor], hetero: dict[str, Tensor], available: Tensor) -> Tensor:
        """Transformer layer over the available modalities' h^c and h^p tokens -> (B, 2d).
        The noise factors are not an argument: they cannot reach the prediction."""
        count = len(homo)
        mask = torch.cat([available, available], dim=1)
        tokens = torch.stack(list(homo.values()) + list(hetero.values()), dim=1) + self.token_type
        tokens = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        h = self.fusion(tokens, src_key_padding_mask=safe_padding_mask(mask))
        homo_mean = masked_mean(h[:, :count], mask[:, :count])
        hetero_mean = masked_mean(h[:, count:], mask[:, count:])
        return torch.cat([homo_mean, hetero_mean], dim=-1)

    def missing_view(self, batch: Batch) -> Batch:
        """DAS's second view: random whole-modality dropout (inter) plus frame dropout (intra)."""
        return training_missing_view(batch, self.cfg.view_complete_fraction, self.cfg.frame_drop_max)

    # --- training -----------------------------------------------------------------------
    def prepare(self, train: SplitTensors) -> None:
        """Record the (labeled) training labels' mean and std: the unit of the scale-free task loss
        and distillation bins."""
        if self.spec.label.is_regression and len(train) > 1:
            labels = train.labels.double()
            self.label_mean.fill_(float(labels.mean()))
            self.label_std.fill_(max(float(labels.std()), 1e-6))

    def task_loss(self, pred: Tensor, batch: Batch) -> Tensor:
        """The base L1 / cross-entropy, in label-std units when `task_scale="std"` (regression)."""
        loss = super().task_loss(pred, batch)
        if self.spec.label.is_regression and self.cfg.task_scale == "std":
            return loss / self.label_std
        return loss

    def loss(self, batch: Batch, phase: str) -> dict[str, Tensor]:
        cfg = self.cfg
        view = self.missing_view(batch)
        full = self.run(batch, with_noise=True)
        miss = self.run(view)
        task_full = self.task_loss(full.pred, batch)
        task_miss = self.task_loss(miss.pred, view)
        task = 0.5 * (task_full + task_miss)

        zero = task.new_zeros(())
        present = self.present_dict(batch)
        sim = pairwise_over_present(full.homo, present, self._cmd) if cfg.use_sim else zero
        diff = self._difference(full, present) if cfg.use_diff else zero
        recon = self._reconstruction(full, present) if cfg.use_recon else zero
        prior = self._prior(full, present) if cfg.use_noise else zero
        recovery = self._recovery(full, miss) if cfg.use_recovery else zero
        kl_full_to_miss, kl_miss_to_full = zero, zero
        if cfg.use_das_kl:
            kl_full_to_miss = distill_kl(self.das_logits(full.pred), self.das_logits(miss.pred))
            if cfg.use_das_return:
                kl_miss_to_full = self._return_kl(full.pred, miss.pred)
        align = self._view_alignment(full.fused, miss.fused) if cfg.use_das_align else zero
        das = cfg.w_das_f2m * kl_full_to_miss + cfg.w_das_m2f * kl_miss_to_full + cfg.w_das_align * align

        total = (task + cfg.w_sim * sim + cfg.w_diff * diff + cfg.w_rec * recon + cfg.w_kl * prior
                 + cfg.w_das * das + cfg.w_recovery * recovery)
        return {
            "loss": total, "task": task, "task_full": task_full, "task_miss": task_miss,
            "sim": sim, "diff": diff, "recon": recon, "prior": prior, "recovery": recovery,
            "das_kl_full_to_miss": kl_full_to_miss, "das_kl_miss_to_full": kl_miss_to_full, "das_align": align,
        }

    def das_logits(self, pred: Tensor) -> Tensor:
        """Temperature-softened output distribution compared across the two views; a regression
        score is first put in training-label std units when `das_scale="std"`."""
        if self.spec.label.is_regression:
            if self.cfg.das_scale == "std":
                pred = (pred - self.label_mean) / self.label_std
            return bin_logits(pred, self.bin_centres, self.cfg.das_bin_temperature)
        return pred / self.cfg.das_temperature

    def _return_kl(self, full: Tensor, miss: Tensor) -> Tensor:
        """The missing view teaches the full view. "standardized" (regression): both views'
        scores z-scored over the batch first, so the full view learns the missing view's ordering
        of the samples but the term is blind to, and cannot shrink, its spread or offset."""
        if self.spec.label.is_regression and self.cfg.das_return == "standardized":
            full, miss = batch_standardize(full), batch_standardize(miss)
            centres = torch.linspace(-self.cfg.das_span, self.cfg.das_span, self.cfg.das_bins, device=full.device)
            temperature = self.cfg.das_bin_temperature
            return distill_kl(bin_logits(miss, centres, temperature), bin_logits(full, centres, temperature))
        return distill_kl(self.das_logits(miss), self.das_logits(full))

    def _cmd(self, x: Tensor, y: Tensor) -> Tensor:
        return cmd(x, y, self.cfg.cmd_moments)

    def _view_alignment(self, full: Tensor, miss: Tensor) -> Tensor:
        """CMD between the two views' fused vectors, squashed into (0, 1) by a sigmoid (CMD is
        defined for bounded support; MISA applies it to sigmoid outputs). "stopgrad": the full
        view is the fixed target, so the alignment cannot pull its spread toward the degraded
        view's; "symmetric": both sides move."""
        if self.cfg.das_align == "cosine":  # per sample: each missing vector toward its own full one
            return (1.0 - torch.nn.functional.cosine_similarity(miss, full.detach(), dim=-1)).mean()
        if self.cfg.das_align == "stopgrad":
            # In the full view's units (its detached batch mean / std per dimension): shrinking
            # both views together, which shared weights allow, no longer lowers the distance.
            full = full.detach()
            centre, spread = full.mean(0), full.std(0) + 1e-6
            full, miss = (full - centre) / spread, (miss - centre) / spread
        return self._cmd(torch.sigmoid(full), torch.sigmoid(miss))

    def _difference(self, full: FSRFPass, present: dict[str, Tensor]) -> Tensor:
        """Mean soft orthogonality within each modality's factor pairs plus the mean across the
        modalities' h^p pairs (means, not sums: adding h^n must not triple the term's weight)."""
        within = []
        for m in self.modalities:
            keep = present[m]
            if int(keep.sum()) < 2:
                continue
            factors = [full.homo[m][keep], full.hetero[m][keep]]
            if self.cfg.use_noise:
                factors.append(full.noise_mean[m][keep])
            within += [diff_loss(a, b) for i, a in enumerate(factors) for b in factors[i + 1 :]]
        across = pairwise_over_present(full.hetero, present, diff_loss)
        return across + (torch.stack(within).mean() if within else 0.0)

    def _noise(self, full: FSRFPass, m: str) -> Tensor:
        if not self.cfg.use_noise:
            return torch.zeros_like(full.homo[m])
        mean = full.noise_mean[m]
        if self.training and self.cfg.noise_sample:
            return mean + torch.randn_like(mean) * (0.5 * full.noise_logvar[m]).exp()
        return mean

    def _reconstruction(self, full: FSRFPass, present: dict[str, Tensor]) -> Tensor:
        terms = []
        for m in self.modalities:
            keep = present[m]
            if bool(keep.any()):
                rebuilt = self.decoders[m](full.homo[m] + full.hetero[m] + self._noise(full, m))
                terms.append(mse_loss(rebuilt[keep], full.utterance[m][keep].detach()))
        return torch.stack(terms).mean() if terms else full.pred.sum() * 0.0

    def _prior(self, full: FSRFPass, present: dict[str, Tensor]) -> Tensor:
        terms = [gaussian_prior_kl(full.noise_mean[m][present[m]], full.noise_logvar[m][present[m]])
                 for m in self.modalities if bool(present[m].any())]
        return torch.stack(terms).mean() if terms else full.pred.sum() * 0.0

    def _recovery(self, full: FSRFPass, miss: FSRFPass) -> Tensor:
        """Samples whose modality m the missing view dropped: the recovered factors should match
        the full view's true ones (targets detached: recovery follows the factors, not the reverse)."""
        terms = []
        for j, m in enumerate(self.modalities):
            target = full.present[:, j] & miss.recovered[:, j]
            if bool(target.any()):
                terms.append(mse_loss(miss.homo[m][target], full.homo[m][target].detach())
                             + mse_loss(miss.hetero[m][target], full.hetero[m][target].detach()))
        return torch.stack(terms).mean() if terms else full.pred.sum() * 0.0
