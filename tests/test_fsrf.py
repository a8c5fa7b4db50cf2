"""FSRF: its distribution losses, the noise branch, recovery only where missing, DAS directions
(the return direction blind to the full view's scale, alignment with a stop-gradient on the full
view), distillation whose strength does not depend on the label range, the ablation switches,
and that it learns on synthetic MOSI."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import make_tiny_dataset
from robustmsa.config import RunConfig, apply_overrides
from robustmsa.data import load_dataset
from robustmsa.data.batch import SplitTensors
from robustmsa.data.schema import LabelSpec
from robustmsa.evaluation.evaluate import evaluate
from robustmsa.methods.base import create_method, method_class
from robustmsa.nn.distribution import bidirectional_kl, bin_logits, cmd, diff_loss, distill_kl, gaussian_prior_kl
from robustmsa.training.trainer import Trainer

SMALL = {"d": 16, "heads": 2, "max_frames": 8}


@pytest.fixture(autouse=True, scope="module")
def one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def dataset():
    return make_tiny_dataset(n=32)


def small_fsrf(spec, **overrides):
    torch.manual_seed(0)
    return create_method("fsrf", spec, **{**SMALL, **overrides})


def complete_batch(dataset, split="test"):
    return SplitTensors(dataset[split], dataset.spec).batch(slice(None))


# --- shared losses ----------------------------------------------------------------------


def test_cmd_is_zero_for_identical_samples_and_grows_with_mean_or_spread():
    x = torch.randn(512, 8, generator=torch.Generator().manual_seed(0))
    assert cmd(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert 0 < cmd(x, x + 0.1) < cmd(x, x + 0.5) < cmd(x, x + 2.0)
    assert 0 < cmd(x, 1.2 * x) < cmd(x, 2.0 * x)


def test_diff_loss_is_zero_for_orthogonal_and_positive_for_correlated():
    # Sylvester-Hadamard columns: zero mean, mutually orthogonal, every row of the same norm,
    # so centring and row normalisation keep them orthogonal.
    hadamard = torch.ones(1, 1)
    for _ in range(6):
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)], 0)
    a, b = hadamard[:, 1:4], hadamard[:, 4:7]
    assert diff_loss(a, b).item() == pytest.approx(0.0, abs=1e-8)
    noise = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    assert diff_loss(a, a + 0.1 * noise) > 0.1
    assert diff_loss(a, a + 0.1 * noise) > 10 * diff_loss(a, b + 0.1 * noise)


def test_gaussian_prior_kl_is_zero_only_at_the_prior():
    zeros = torch.zeros(4, 3)
    assert gaussian_prior_kl(zeros, zeros).item() == 0.0
    assert gaussian_prior_kl(zeros + 1.0, zeros).item() == pytest.approx(0.5)
    assert gaussian_prior_kl(zeros, zeros + 1.0) > 0 and gaussian_prior_kl(zeros, zeros - 1.0) > 0


@pytest.mark.parametrize("make_logits", ["classes", "bins"])
def test_each_das_direction_sends_gradients_only_to_its_student(make_logits):
    generator = torch.Generator().manual_seed(0)
    if make_logits == "classes":
        full = torch.randn(6, 3, generator=generator, requires_grad=True)
        miss = torch.randn(6, 3, generator=generator, requires_grad=True)
        logits_full, logits_miss = full, miss
    else:  # regression predictions as a distribution over sentiment bins
        full = torch.randn(6, generator=generator, requires_grad=True)
        miss = torch.randn(6, generator=generator, requires_grad=True)
        centres = torch.linspace(-3, 3, 13)
        logits_full, logits_miss = bin_logits(full, centres), bin_logits(miss, centres)
    full_teaches_miss, miss_teaches_full = bidirectional_kl(logits_full, logits_miss)
    assert full_teaches_miss > 0 and miss_teaches_full > 0
    for term, student, teacher in ((full_teaches_miss, miss, full), (miss_teaches_full, full, miss)):
        grad_student, grad_teacher = torch.autograd.grad(term, (student, teacher), retain_graph=True, allow_unused=True)
        assert grad_student is not None and grad_student.abs().sum() > 0
        assert grad_teacher is None or grad_teacher.abs().sum() == 0


# --- the method -------------------------------------------------------------------------


def test_noise_branch_never_reaches_the_fused_representation(dataset):
    method = small_fsrf(dataset.spec)
    method.eval()
    batch = complete_batch(dataset)
    before = method.run(batch, with_noise=True)
    assert before.noise_mean and before.noise_logvar  # the noise factors are computed ...
    noise_parameters = list(method.noise_mean.parameters()) + list(method.noise_logvar.parameters())
    unused = torch.autograd.grad(before.fused.sum() + before.pred.sum(), noise_parameters, allow_unused=True)
    assert all(g is None for g in unused)  # ... but nothing fused depends on them
    with torch.no_grad():
        for p in noise_parameters:
            p.add_(10 * torch.randn_like(p))
    after = method.run(batch, with_noise=True)
    assert torch.equal(after.fused, before.fused) and torch.equal(after.pred, before.pred)
    assert not torch.allclose(after.noise_mean["text"], before.noise_mean["text"])


def test_recovery_runs_only_for_missing_modalities(dataset):
    method = small_fsrf(dataset.spec)
    method.eval()
    complete = complete_batch(dataset)
    present = complete.present.clone()
    present[:, 0] = False  # text missing for every sample
    missing_text = complete.with_present(present)

    with torch.no_grad():
        full, partial = method.run(complete), method.run(missing_text)
        method.cfg.use_recovery = False
        partial_off = method.run(missing_text)
        method.cfg.use_recovery = True
    assert not full.recovered.any()
    assert partial.recovered[:, 0].all() and not partial.recovered[:, 1:].any()
    assert torch.equal(method(missing_text).extras["recovered"], partial.recovered)
    for m in ("audio", "vision"):  # present: the same factors with or without recovery and text
        for factors in ("homo", "hetero"):
            assert torch.equal(getattr(partial, factors)[m], getattr(full, factors)[m])
            assert torch.equal(getattr(partial, factors)[m], getattr(partial_off, factors)[m])
    assert not torch.allclose(partial.homo["text"], partial_off.homo["text"])  # recovered vs. absent

    # Changing the recovery networks moves only the recovered factors.
    with torch.no_grad():
        for p in list(method.recover_homo.parameters()) + list(method.recover_hetero.parameters()):
            p.add_(torch.randn_like(p))
        full_changed, partial_changed = method.run(complete), method.run(missing_text)
    assert torch.equal(full_changed.pred, full.pred)
    assert not torch.allclose(partial_changed.homo["text"], partial.homo["text"])
    assert torch.equal(partial_changed.homo["audio"], partial.homo["audio"])


def test_loss_names_every_term_and_recovery_learns_toward_detached_targets(dataset):
    method = small_fsrf(dataset.spec)
    method.train()
    torch.manual_seed(0)
    terms = method.loss(complete_batch(dataset, "train"), "train")
    expected = {"loss", "task", "task_full", "task_miss", "sim", "diff", "recon", "prior", "recovery",
                "das_kl_full_to_miss", "das_kl_miss_to_full", "das_align"}
    assert set(terms) == expected
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())
    # E_p^m only produces the (detached) targets of recovery: no recovery gradient may reach it,
    # while the recovery networks themselves are trained by it.
    targets_only = list(method.heterogeneous.parameters())
    learners = list(method.recover_homo.parameters()) + list(method.recover_hetero.parameters())
    grads = torch.autograd.grad(terms["recovery"], targets_only + learners, allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in grads[: len(targets_only)])
    assert any(g is not None and g.abs().sum() > 0 for g in grads[len(targets_only) :])


def test_prepare_records_training_label_statistics_and_the_checkpoint_carries_them(dataset):
    method = small_fsrf(dataset.spec)
    train = complete_batch(dataset, "train")
    method.prepare(SplitTensors(dataset["train"], dataset.spec))
    labels = torch.as_tensor(dataset["train"].labels, dtype=torch.float64)
    assert method.label_mean.item() == pytest.approx(labels.mean().item(), abs=1e-6)
    assert method.label_std.item() == pytest.approx(labels.std().item(), abs=1e-6)
    state = method.state_dict()
    assert {"label_mean", "label_std"} <= set(state)
    # The task loss is L1 in label-std units by default, plain L1 with task_scale="label".
    pred = torch.zeros(len(train.labels))
    plain = torch.nn.functional.l1_loss(pred, train.labels)
    assert method.task_loss(pred, train).item() == pytest.approx(plain.item() / labels.std().item(), rel=1e-5)
    method.cfg.task_scale = "label"
    assert method.task_loss(pred, train).item() == pytest.approx(plain.item(), rel=1e-5)


def _das_to_task_gradient_ratio(dataset, high: float, **options) -> float:
    """|d DAS / d miss| over |d task / d full| for labels on [-high, high], the same predictions
    and labels expressed in that range's units (MOSI high=3, SIMS high=1)."""
    generator = torch.Generator().manual_seed(0)
    labels_unit = torch.randn(32, generator=generator).clamp(-2.5, 2.5)
    full_unit = labels_unit + 0.3 * torch.randn(32, generator=generator)
    scale = high / 3.0
    spec = dataset.spec.__class__(dataset.spec.name, dataset.spec.modalities, LabelSpec("regression", -high, high))
    method = small_fsrf(spec, **options)
    method.label_mean.fill_(0.0)
    method.label_std.fill_(scale)
    full = (full_unit * scale).requires_grad_(True)
    miss = (0.4 * full_unit * scale).requires_grad_(True)  # the degraded view: shrunk
    batch = complete_batch(dataset, "train")
    labeled = replace(batch, labels=labels_unit * scale, labeled=torch.ones(32, dtype=torch.bool))
    (grad_task,) = torch.autograd.grad(method.task_loss(full, labeled), full)
    (grad_das,) = torch.autograd.grad(distill_kl(method.das_logits(full), method.das_logits(miss)), miss)
    return (grad_das.norm() / grad_task.norm()).item()


def test_distillation_to_task_gradient_ratio_is_the_same_on_every_label_range(dataset):
    """MOSI [-3, 3] and SIMS [-1, 1]: the ratio of the DAS gradient to the task gradient is the
    same by default, whereas bins over the label range with a plain L1 task (the first design)
    make DAS several times stronger on SIMS."""
    assert _das_to_task_gradient_ratio(dataset, 3.0) == pytest.approx(_das_to_task_gradient_ratio(dataset, 1.0), rel=1e-4)
    first = {"das_scale": "range", "task_scale": "label"}
    assert _das_to_task_gradient_ratio(dataset, 1.0, **first) > 2.5 * _das_to_task_gradient_ratio(dataset, 3.0, **first)


def test_standardized_return_direction_cannot_shrink_or_shift_the_full_view(dataset):
    method = small_fsrf(dataset.spec)
    generator = torch.Generator().manual_seed(0)
    full = (1.5 * torch.randn(64, generator=generator)).requires_grad_(True)
    miss = (0.3 * full + 0.2 * torch.randn(64, generator=generator)).detach().requires_grad_(True)
    term = method._return_kl(full, miss)
    grad_full, grad_miss = torch.autograd.grad(term, (full, miss), allow_unused=True)
    assert term > 0 and grad_full.abs().sum() > 0
    assert grad_miss is None or grad_miss.abs().sum() == 0  # the full view is the student
    # No component along a shift (all ones) or a rescaling (the predictions themselves).
    assert grad_full.sum().abs() < 1e-5 * grad_full.abs().sum()
    assert (grad_full * full.detach()).sum().abs() < 1e-4 * (grad_full.abs() * full.detach().abs()).sum()
    # The first design's return on raw predictions does pull the full view's spread in.
    method.cfg.das_return = "prediction"
    (grad_raw,) = torch.autograd.grad(method._return_kl(full, miss), full)
    assert (grad_raw * full.detach()).sum() > 0  # gradient descent shrinks |full|


@pytest.mark.parametrize("mode, full_moves", [("cosine", False), ("stopgrad", False), ("symmetric", True)])
def test_view_alignment_moves_the_full_view_only_when_symmetric(mode, full_moves, dataset):
    method = small_fsrf(dataset.spec, das_align=mode)
    generator = torch.Generator().manual_seed(0)
    full = torch.randn(16, 8, generator=generator, requires_grad=True)
    miss = (0.5 * full + 0.1 * torch.randn(16, 8, generator=generator)).detach().requires_grad_(True)
    align = method._view_alignment(full, miss)
    grad_full, grad_miss = torch.autograd.grad(align, (full, miss), allow_unused=True)
    assert align > 0 and grad_miss.abs().sum() > 0
    moved = grad_full is not None and grad_full.abs().sum() > 0
    assert moved == full_moves


def test_unknown_das_mode_is_a_one_line_error(dataset):
    with pytest.raises(ValueError, match="das_align='both'.*cosine, stopgrad, symmetric"):
        small_fsrf(dataset.spec, das_align="both")


SWITCHES = {
    "use_noise": ["prior"], "use_sim": ["sim"], "use_diff": ["diff"], "use_recon": ["recon"],
    "use_recovery": ["recovery"], "use_das_kl": ["das_kl_full_to_miss", "das_kl_miss_to_full"],
    "use_das_return": ["das_kl_miss_to_full"], "use_das_align": ["das_align"],
}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_each_switch_removes_its_term_and_every_remaining_parameter_trains(switch, dataset):
    method = small_fsrf(dataset.spec, **{switch: False})
    method.train()
    torch.manual_seed(1)
    terms = method.loss(complete_batch(dataset, "train"), "train")
    assert all(terms[name].item() == 0.0 for name in SWITCHES[switch])
    terms["loss"].backward()
    silent = [n for n, p in method.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not silent


def test_fsrf_learns_on_synthetic_mosi(tmp_path):
    # v1: a learning sanity check wants the clean planted signal (v2 at n=300 is too hard for 6 epochs)
    data = load_dataset("synthetic:mosi:n=300:seed=0:v=1")
    options = [f"method.{k}={v}" for k, v in SMALL.items()]
    base = ["train.epochs=6", "train.batch_size=24", "train.patience=6", "train.lr=0.002"]
    run = apply_overrides(RunConfig("fsrf"), base + options, method_class("fsrf").config_class)
    torch.manual_seed(0)
    untrained = evaluate(create_method("fsrf", data.spec, **run.method_options), data, "valid")
    result = Trainer(tmp_path, verbose=False).fit(run, data, seed=0)
    assert result.valid_metrics["f1_non0"] > untrained["f1_non0"] + 15.0
    assert result.valid_metrics["mae"] < untrained["mae"]
