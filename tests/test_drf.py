"""DRF: the feature queue, MMD / Mahalanobis, quality and the learned fusion gate, recovery only
where missing, the shared training-time augmentation (disruption), the ablation switches, and
that it learns (and that its quality separates clean from corrupted features) on synthetic
image-text data."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_dataset

from robustmsa.config import RunConfig, apply_overrides
from robustmsa.data import load_dataset
from robustmsa.data.batch import SplitTensors
from robustmsa.evaluation.evaluate import evaluate, split_tensors
from robustmsa.evaluation.quality import quality_auroc
from robustmsa.methods.base import create_method, method_class
from robustmsa.missing import CORRUPT_FRACTION, Protocol, make_pattern, random_disruption, training_augmentation
from robustmsa.nn.distribution import mahalanobis, rbf_mmd
from robustmsa.nn.quality import QualityGate, fusion_weights, modality_distance, quality_margin_loss, uniform_weights
from robustmsa.nn.queue import FeatureQueue, ledoit_wolf_shrinkage
from robustmsa.training.checkpoint import load_checkpoint, load_weights, save_weights
from robustmsa.training.trainer import Trainer

SMALL = {"d": 16, "queue_size": 64, "queue_min": 8, "dist_queue_samples": 32}
MVSA = "synthetic:mvsa:n=600:seed=0"
TRAIN = ["train.epochs=8", "train.batch_size=32", "train.patience=8", "train.lr=0.002"]
MVSA_OPTIONS = {"d": 64, "queue_size": 512}


@pytest.fixture(autouse=True, scope="module")
def one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_dataset(n=32)


@pytest.fixture(scope="module")
def pooled():
    """Two modalities, one a sequence and one a single vector (the image-text layout)."""
    return make_tiny_dataset(n=32, modalities=(("text", 10, 6), ("audio", 1, 9)), classification=True)


def small_drf(spec, **overrides):
    torch.manual_seed(0)
    return create_method("drf", spec, **{**SMALL, **overrides})


def complete_batch(dataset, split="train"):
    return SplitTensors(dataset[split], dataset.spec).batch(slice(None))


def warmed(dataset, steps=3, **overrides):
    """A DRF whose queues are ready (a few training steps' worth of clean features)."""
    method = small_drf(dataset.spec, **overrides)
    method.prepare(SplitTensors(dataset["train"], dataset.spec))
    method.train()
    batch = complete_batch(dataset)
    torch.manual_seed(2)
    for _ in range(steps):
        method.loss(batch, "train")
        method.after_step()
    assert all(q.ready for q in method.queues.values())
    return method


# --- the feature queue ------------------------------------------------------------------


def test_queue_is_fifo_and_keeps_the_last_k():
    queue = FeatureQueue(dim=2, size=5, min_count=2)
    rows = torch.arange(14.0).view(7, 2)
    queue.push(rows[:3])
    assert torch.equal(queue.contents(), rows[:3]) and int(queue.count) == 3
    queue.push(rows[3:7])  # 7 pushed into 5 slots: the two oldest are gone
    assert torch.equal(queue.contents(), rows[2:7]) and int(queue.count) == 5
    queue.push(torch.arange(100.0, 120.0).view(10, 2))  # more than K at once: the last K stay
    assert torch.equal(queue.contents(), torch.arange(110.0, 120.0).view(5, 2))
    assert torch.allclose(queue.mean, torch.arange(110.0, 120.0).view(5, 2).mean(0))


def test_queue_is_read_only_in_eval_mode_and_rejects_the_wrong_width():
    queue = FeatureQueue(dim=3, size=8)
    queue.eval()
    queue.push(torch.ones(4, 3))
    assert int(queue.count) == 0 and not queue.ready
    queue.train()
    with pytest.raises(ValueError, match=r"expected features \(n, 3\)"):
        queue.push(torch.ones(4, 2))


def test_ledoit_wolf_shrinkage_matches_sklearn():
    covariance = pytest.importorskip("sklearn.covariance")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, 12, generator=generator, dtype=torch.float64) @ torch.randn(12, 12, generator=generator, dtype=torch.float64)
    _, expected = covariance.ledoit_wolf(x.numpy())
    assert ledoit_wolf_shrinkage(x - x.mean(0)) == pytest.approx(expected, rel=1e-6)


def test_queue_statistics_are_the_shrunk_covariance_of_its_contents():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=generator) * torch.tensor([1.0, 2.0, 3.0, 0.5, 1.0, 4.0]) + 3.0
    queue = FeatureQueue(dim=6, size=40, shrinkage=0.25)
    queue.push(x)
    centred = (x - x.mean(0)).double()
    covariance = centred.t() @ centred / 40
    scale = covariance.diagonal().mean()
    shrunk = 0.75 * covariance + (0.25 + 1e-6) * scale * torch.eye(6, dtype=torch.float64)
    assert torch.allclose(queue.precision.double() @ shrunk, torch.eye(6, dtype=torch.float64), atol=1e-4)
    # A typical member is about 1 away (per dimension); a shifted point is much further.
    typical = queue.mahalanobis(x).mean()
    assert 0.5 < typical < 1.5
    assert queue.mahalanobis(x + 10.0).min() > 3 * typical


def test_mahalanobis_is_zero_at_the_mean_and_scale_free():
    mean, precision = torch.zeros(4), torch.eye(4) / 9.0  # variance 9 in every direction
    assert mahalanobis(mean[None], mean, precision)[0] == pytest.approx(0.0, abs=1e-5)
    assert mahalanobis(torch.full((1, 4), 3.0), mean, precision)[0] == pytest.approx(1.0, abs=1e-5)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_mean_shift():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=generator)
    y = torch.randn(300, 8, generator=generator)
    same = rbf_mmd(x, y)
    assert 0.0 <= same < 0.01
    shifted = [rbf_mmd(x, y + shift).item() for shift in (0.25, 0.5, 1.0, 2.0)]
    assert shifted == sorted(shifted) and shifted[0] > 2 * same and shifted[-1] > 50 * same


# --- quality and fusion weights ---------------------------------------------------------


def test_fusion_weights_sum_to_one_over_available_and_are_zero_elsewhere():
    generator = torch.Generator().manual_seed(0)
    log_quality = 3 * torch.randn(6, 3, generator=generator)
    available = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.bool)
    for weights in (fusion_weights(log_quality, available), uniform_weights(available)):
        assert torch.all(weights[~available] == 0.0)
        assert torch.allclose(weights[:5].sum(1), torch.ones(5)) and weights[5].sum() == 0.0
    weights = fusion_weights(log_quality, available)
    assert torch.allclose(weights[0], torch.softmax(log_quality[0], 0))  # softmax of log q = q / sum q
    ranked = [quality_margin_loss(torch.tensor([0.0]), torch.tensor([-gap]), margin=1.0).item() for gap in (-1, 0, 1, 3, 8)]
    assert ranked == sorted(ranked, reverse=True) and ranked[-1] < 1e-3 < ranked[-2]  # fades past the margin
    assert ranked[2] == pytest.approx(torch.nn.functional.softplus(torch.tensor(0.0)).item())  # log 2 at the margin


def test_quality_gate_starts_at_plain_fusion_and_is_monotone_in_the_distance():
    distance = torch.tensor([[1.0, 1.0, 1.0], [1.0, 30.0, 2.0], [0.5, 80.0, 9.0]])
    available = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=torch.bool)
    start = QualityGate(3)(distance, available)  # alpha ~ 0, beta = 0: the weights of plain fusion
    assert torch.allclose(start, uniform_weights(available), atol=0.02) and torch.all(start[~available] == 0)
    gate = QualityGate(3, init=0.7)
    with torch.no_grad():
        gate.slope[1] = -2.0  # a negative a_m still means alpha_m >= 0: never more weight for more distance
    weights = gate(distance, available)
    assert torch.allclose(weights.sum(1), torch.ones(3)) and torch.all(weights[~available] == 0)
    assert weights[1, 1] < weights[1, 2] < weights[1, 0]  # the farther, the lighter
    farther = gate(distance + torch.tensor([[0.0, 5.0, 0.0]]), available)
    assert farther[0, 1] < weights[0, 1] and farther[1, 1] < weights[1, 1]


def fit_gate(gate: QualityGate, draw, steps: int = 300) -> None:
    """Train only `gate` (as DRF's own param group would) on a fused regression: the prediction is
    sum_m w_m x_m, x_m a noisy copy of the target y; `draw(generator)` -> x, y, distance, available,
    recovered for one batch."""
    optimizer = torch.optim.Adam(gate.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y, distance, available, recovered = draw(generator)
        gate.train()
        gate.observe(distance, available & ~recovered & (distance < 3.0))  # the clean entries
        loss = ((gate(distance, available, recovered) * x).sum(1) - y).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def signal(generator, noise: tuple[float, float], n: int = 256):
    """Two modalities that both carry the target y, each with its own noise std."""
    y = torch.randn(n, generator=generator)
    x = torch.stack([y + noise[m] * torch.randn(n, generator=generator) for m in (0, 1)], dim=1)
    return x, y


def test_the_gate_moves_off_plain_fusion_when_a_modality_is_corrupted_in_training():
    def draw(generator):
        x, y = signal(generator, (0.3, 0.3))
        hit = torch.rand(x.shape[0], generator=generator) < 0.5  # half the samples: modality 1 corrupted
        x[hit, 1] = 3.0 * torch.randn(int(hit.sum()), generator=generator)  # its signal destroyed
        distance = 1.0 + 0.05 * torch.rand(x.shape, generator=generator)  # clean: D ~ 1, a small spread
        distance[hit, 1] += 1.0 + torch.rand(int(hit.sum()), generator=generator)  # corrupted: farther
        return x, y, distance, torch.ones_like(x, dtype=torch.bool), torch.zeros_like(x, dtype=torch.bool)

    gate = QualityGate(2)
    fit_gate(gate, draw)
    gate.eval()
    x, _, distance, available, recovered = draw(torch.Generator().manual_seed(9))
    weights = gate(distance, available, recovered)
    corrupted = distance[:, 1] > 1.5
    assert weights[corrupted, 1].mean() < 0.1  # off plain fusion (0.5): the corrupted copy hardly counts
    assert 0.35 < weights[~corrupted, 1].mean() < 0.65  # both clean: still about equal
    assert gate.alpha[1] > 0.3 and gate.alpha[0] < gate.alpha[1]  # modality 0 is never corrupted


def test_a_recovered_modality_from_a_weak_source_weighs_less_than_the_observed_one():
    def draw(generator):
        x, y = signal(generator, (0.3, 0.3))
        recovered = torch.zeros_like(x, dtype=torch.bool)
        lost = torch.rand(x.shape[0], generator=generator) < 0.5  # modality 1 missing, "recovered" badly
        recovered[lost, 1] = True
        x[lost, 1] = torch.randn(int(lost.sum()), generator=generator)  # no information about y
        distance = 1.0 + 0.05 * torch.rand(x.shape, generator=generator)  # typical-looking (the dist loss)
        return x, y, distance, torch.ones_like(recovered), recovered

    gate = QualityGate(2)
    fit_gate(gate, draw)
    gate.eval()
    x, _, distance, available, recovered = draw(torch.Generator().manual_seed(9))
    weights = gate(distance, available, recovered)
    assert weights[recovered[:, 1], 1].mean() < 0.15 < 0.85 < weights[recovered[:, 1], 0].mean()
    assert gate.offset[1] < -1.0
    assert 0.35 < weights[~recovered[:, 1], 1].mean() < 0.65  # observed: plain fusion is kept
    # without the offset a recovered slot is scored by its (typical) distance: the gate cannot tell
    # it from an observed one, so both weigh the same, a compromise that also starves the observed one
    blind = QualityGate(2, recovered_offset=False)
    fit_gate(blind, draw)
    blind.eval()
    unaware = blind(distance, available, recovered)[:, 1]
    assert abs(unaware[recovered[:, 1]].mean() - unaware[~recovered[:, 1]].mean()) < 0.05
    assert unaware[~recovered[:, 1]].mean() < weights[~recovered[:, 1], 1].mean() - 0.1


def test_the_gate_standardizes_by_clean_running_statistics_saved_with_it():
    gate = QualityGate(2, init=1.0)
    generator = torch.Generator().manual_seed(0)
    clean = torch.ones(64, 2, dtype=torch.bool)
    for _ in range(200):
        gate.observe(torch.stack([2.0 + 0.1 * torch.randn(64, generator=generator),
                                  5.0 + 1.0 * torch.randn(64, generator=generator)], 1).clamp_min(0), clean)
    assert gate.center[0] == pytest.approx(math.log(3.0), abs=0.01) and gate.center[1] == pytest.approx(math.log(6.0), abs=0.03)
    assert gate.spread[0] == pytest.approx(0.1 / 3.0, rel=0.1) and gate.spread[1] == pytest.approx(1.0 / 6.0, rel=0.15)
    z = gate.score(torch.tensor([[2.0, 5.0]]))
    assert torch.allclose(z, torch.zeros(1, 2), atol=0.3)  # a typical clean input scores ~0 on each scale
    gate.eval()
    frozen = gate.center.clone()
    gate.observe(torch.full((64, 2), 50.0), clean)  # evaluation never moves the statistics
    assert torch.equal(gate.center, frozen)
    restored = QualityGate(2, init=1.0)
    restored.load_state_dict(gate.state_dict())
    assert torch.equal(restored.score(torch.tensor([[9.0, 9.0]])), gate.score(torch.tensor([[9.0, 9.0]])))


def test_training_steps_feed_the_gate_the_clean_distance_statistics(pooled):
    method = warmed(pooled)
    assert bool(method.gate.observed.all()) and torch.all(method.gate.center > 0)
    batch = complete_batch(pooled)
    with torch.no_grad():
        clean = torch.log1p(method.run(batch).quality.distance)
    # the running statistics describe the clean inputs: those score ~0 on the gate's scale
    assert torch.allclose(clean.mean(0), method.gate.center, atol=3 * method.gate.spread.max().item())


def test_the_gate_has_its_own_learning_rate(pooled):
    method = small_drf(pooled.spec, gate_lr_scale=10.0)
    groups = method.param_groups(1e-3)
    gate = [g for g in groups if any(p is method.gate.slope for p in g["params"])]
    assert len(gate) == 1 and gate[0]["lr"] == pytest.approx(1e-2) and len(gate[0]["params"]) == 3
    assert sum(len(g["params"]) for g in groups) == len([p for p in method.parameters() if p.requires_grad])
    assert len(small_drf(pooled.spec, gate_lr_scale=1.0).param_groups(1e-3)) == 1


@pytest.mark.parametrize("recovery", [False, True])
def test_method_weights_sum_to_one_over_the_modalities_a_sample_has(tiny, recovery):
    method = warmed(tiny, use_recovery=recovery)
    method.eval()
    split = tiny["test"]
    pattern = make_pattern(split, tiny.spec, Protocol.parse("modality:0.5"), seed=0)
    batch = SplitTensors(split, tiny.spec, pattern).batch(slice(None))
    out = method(batch)
    weights, quality, recovered = out.extras["fusion_weights"], out.extras["quality"], out.extras["recovered"]
    available = batch.present | recovered
    assert torch.equal(recovered, ~batch.present) if recovery else not recovered.any()
    assert torch.all(weights[~available] == 0.0) and torch.all(quality[~available] == 0.0)
    assert torch.allclose(weights.sum(1), torch.ones(batch.size))
    assert torch.all(quality[available] > 0) and torch.all(quality <= 1)
    if not recovery:  # a discarded modality simply gets nothing
        discarded = split_tensors(tiny, "test", Protocol.parse("disrupt:D:fixed:text"), 0).batch(slice(None))
        weights = method(discarded).extras["fusion_weights"]
        assert torch.all(weights[:, 0] == 0.0) and torch.allclose(weights[:, 1:].sum(1), torch.ones(discarded.size))


# --- the queues inside the method ---------------------------------------------------------


def test_queue_holds_exactly_the_clean_present_training_features_without_dropout(tiny):
    method = small_drf(tiny.spec, dropout=0.3, disrupt_rate=1.0)  # every sample disrupted
    method.train()
    batch = complete_batch(tiny)
    present = batch.present.clone()
    present[:5, 0] = False  # some samples come without text
    batch = batch.with_present(present)
    method.loss(batch, "train")
    assert all(int(q.count) == 0 for q in method.queues.values())  # nothing before the step ends
    method.after_step()
    with torch.no_grad():
        noisy = method.encoders(batch)[2]
        method.eval()
        _, _, clean = method.encoders(batch)
    assert not torch.allclose(noisy["text"], clean["text"], atol=1e-3)  # dropout does change them
    for j, m in enumerate(method.modalities):
        # the clean test-time encodings of the present samples: not the disrupted view, not the
        # missing ones, and without dropout, so train-time and test-time distances share a scale
        assert torch.allclose(method.queues[m].contents(), clean[m][present[:, j]], atol=1e-6)
    method.after_step()  # a second call without a new step adds nothing
    assert int(method.queues["text"].count) == int(present[:, 0].sum())


def test_queue_is_not_updated_in_eval_mode(tiny):
    method = warmed(tiny)
    before = {k: v.clone() for k, v in method.state_dict().items() if k.startswith("queues.")}
    method.eval()
    batch = complete_batch(tiny, "test")
    method(batch)
    method.after_step()
    method.loss(batch, "train")  # even a loss computed in eval mode queues nothing
    method.after_step()
    after = {k: v for k, v in method.state_dict().items() if k.startswith("queues.")}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_queues_are_saved_and_restored_with_the_weights(tiny, tmp_path):
    method = warmed(tiny)
    save_weights(tmp_path / "model.safetensors", method.state_dict())
    restored = create_method("drf", tiny.spec, **SMALL)
    assert not restored.queues["text"].ready
    restored.load_state_dict(load_weights(tmp_path / "model.safetensors"))
    for m in method.modalities:
        assert torch.equal(restored.queues[m].contents(), method.queues[m].contents())
        assert torch.equal(restored.queues[m].precision, method.queues[m].precision)
    method.eval(), restored.eval()
    batch = complete_batch(tiny, "test")
    assert torch.equal(restored(batch).extras["quality"], method(batch).extras["quality"])


# --- recovery -----------------------------------------------------------------------------


def test_recovery_is_used_only_where_a_modality_is_missing(tiny):
    method = warmed(tiny)
    method.eval()
    complete = complete_batch(tiny, "test")
    present = complete.present.clone()
    present[::2, 0] = False  # text missing for every other sample
    partial = complete.with_present(present)
    with torch.no_grad():
        full, half = method.run(complete), method.run(partial)
        for p in method.recovery.parameters():
            p.add_(torch.randn_like(p))
        full_changed, half_changed = method.run(complete), method.run(partial)
    assert not full.recovered.any() and torch.equal(half.recovered, ~present)
    assert torch.equal(full_changed.pred, full.pred)  # complete samples never touch g
    kept = present[:, 0]
    assert torch.equal(half_changed.pred[kept], half.pred[kept])
    assert not torch.allclose(half_changed.pred[~kept], half.pred[~kept])
    for j, m in enumerate(method.modalities):  # present slots hold the modality's own encoding
        rows = present[:, j]
        assert torch.equal(half.features[m][rows], half.encoded[m][rows])


@pytest.mark.parametrize("distance", ["mmd", "cmd"])
def test_recovery_losses_learn_toward_detached_targets(tiny, distance):
    method = warmed(tiny, recovery_distance=distance)
    torch.manual_seed(0)
    terms = method.loss(complete_batch(tiny), "train")
    assert set(terms) == {"loss", "task", "quality_ranking", "recovery_sample", "recovery_dist"}
    assert terms["recovery_sample"] > 0 and terms["recovery_dist"] > 0
    recovery = list(method.recovery.parameters())
    grads = torch.autograd.grad(terms["recovery_sample"] + terms["recovery_dist"], recovery, allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads[-2:])


SWITCHES = {
    "use_quality": [],
    "use_recovery": ["recovery_sample", "recovery_dist"],
    "recovery_sample_loss": ["recovery_sample"],
    "recovery_dist_loss": ["recovery_dist"],
}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_each_switch_removes_its_term_and_every_remaining_parameter_trains(switch, pooled):
    method = warmed(pooled, **{switch: False})
    torch.manual_seed(1)
    terms = method.loss(complete_batch(pooled), "train")
    assert all(terms[name].item() == 0.0 for name in SWITCHES[switch])
    assert all(terms[name].item() > 0.0 for name in set(terms) - set(SWITCHES[switch]) - {"quality_ranking"})
    terms["loss"].backward()
    silent = [n for n, p in method.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not silent
    if switch == "use_quality":
        assert not hasattr(method, "gate")
        method.eval()
        out = method(complete_batch(pooled, "test"))
        assert torch.allclose(out.extras["fusion_weights"], torch.full_like(out.extras["fusion_weights"], 0.5))
    if switch == "use_recovery":
        assert not hasattr(method, "recovery")


def test_the_gate_reads_the_distance_detached_and_learns_from_the_task(pooled):
    method = warmed(pooled)
    batch = complete_batch(pooled)
    torch.manual_seed(3)
    view = method.run(random_disruption(batch, 1.0, "C", torch.Generator().manual_seed(0)).batch)
    weights = view.quality.weights
    # the weights move with the gate's parameters and never with the features the distance scores
    encoder_grads = torch.autograd.grad(weights[:, 0].sum(), list(method.encoders.parameters()), allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in encoder_grads)
    terms = method.loss(batch, "train")
    slope, bias = torch.autograd.grad(terms["task"], [method.gate.slope, method.gate.bias])
    assert slope.abs().sum() > 0 and bias.abs().sum() > 0


def test_the_ranking_loss_trains_the_scorer_and_never_the_features(pooled):
    method = warmed(pooled)
    torch.manual_seed(3)
    terms = method.loss(complete_batch(pooled), "train")
    assert terms["quality_ranking"] > 0  # untrained: corrupted features are not yet ranked below clean ones
    scorer = [p for n, p in method.named_parameters() if n.startswith("emphasis.")]
    others = [p for n, p in method.named_parameters() if not n.startswith("emphasis.")]
    grads = torch.autograd.grad(terms["quality_ranking"], scorer + others, allow_unused=True)
    assert all(g.abs().sum() > 0 for g in grads[: len(scorer)])  # one set of direction weights per modality
    assert all(g is None or g.abs().sum() == 0 for g in grads[len(scorer):])


def test_direction_weights_of_one_are_the_plain_mahalanobis_distance():
    generator = torch.Generator().manual_seed(4)
    queue = FeatureQueue(dim=5, size=50, min_count=2)
    queue.push(torch.randn(50, 5, generator=generator) @ torch.randn(5, 5, generator=generator))
    x = torch.randn(7, 5, generator=generator)
    assert torch.allclose(modality_distance(queue, x, emphasis=torch.ones(5)), queue.mahalanobis(x), atol=1e-4)
    # all the weight on one whitened direction: the distance along that direction only
    one = modality_distance(queue, x, emphasis=torch.tensor([5.0, 0, 0, 0, 0]))
    assert torch.allclose(one, queue.whiten(x)[:, 0].abs(), atol=1e-4)
    queue.push(torch.randn(50, 5, generator=generator) * 3.0)  # new statistics: the cached factor follows
    assert torch.allclose(modality_distance(queue, x, emphasis=torch.ones(5)), queue.mahalanobis(x), atol=1e-4)
    restored = FeatureQueue(dim=5, size=50, min_count=2)
    restored.whiten(x)  # a factor of the identity precision, cached ...
    restored.load_state_dict(queue.state_dict())  # ... then the precision is loaded in place
    assert torch.allclose(restored.whiten(x), queue.whiten(x), atol=1e-5)


def test_a_gate_that_trusts_the_distance_moves_weight_off_a_far_modality(pooled):
    method = warmed(pooled)
    method.eval()
    batch = complete_batch(pooled, "test")
    with torch.no_grad():
        start = method(batch).extras["fusion_weights"]
        assert torch.allclose(start, torch.full((batch.size, 2), 0.5), atol=0.03)  # plain fusion at first
        method.gate.slope.fill_(2.0)
        clean = torch.expm1(method.gate.center)  # the distance of a typical clean input, per modality
        typical = method.run(batch, clean.expand(batch.size, 2))
        far = method.run(batch, torch.stack([clean[0], torch.tensor(30.0)]).expand(batch.size, 2))
    assert torch.allclose(typical.quality.weights, torch.full((batch.size, 2), 0.5))
    assert torch.all(far.quality.weights[:, 1] < 0.1)
    assert not torch.allclose(far.pred, typical.pred)


def test_bad_options_are_one_line_errors(tiny):
    with pytest.raises(ValueError, match="use_recovery needs recovery_sample_loss or recovery_dist_loss"):
        create_method("drf", tiny.spec, recovery_sample_loss=False, recovery_dist_loss=False)
    with pytest.raises(ValueError, match="quality_measure 'entropy'"):
        create_method("drf", tiny.spec, quality_measure="entropy")
    with pytest.raises(ValueError, match="disrupt_mode 'X'"):
        create_method("drf", tiny.spec, disrupt_mode="X")
    for method in ("drf", "late_fusion"):
        with pytest.raises(ValueError, match="train_disruption 'corrupt' not one of none, disrupt"):
            create_method(method, tiny.spec, train_disruption="corrupt")


def test_cosine_quality_measure_runs_and_ranks_shifted_features_lower(tiny):
    method = warmed(tiny, quality_measure="cosine", top_k=4)
    method.eval()
    batch = complete_batch(tiny, "test")
    out = method(batch)
    assert torch.all((out.extras["quality"] > 0) & (out.extras["quality"] <= 1))
    queue = method.queues["text"]
    typical = queue.top_k_cosine(queue.contents()[:8], 4)
    assert torch.all(typical > queue.top_k_cosine(-queue.contents()[:8], 4))


def test_two_modality_regression_data():
    data = make_tiny_dataset(n=32, modalities=(("text", 12, 8), ("vision", 15, 6)))
    method = warmed(data)
    method.eval()
    batch = split_tensors(data, "test", Protocol.parse("disrupt:CD:random:1"), 0).batch(slice(None))
    out = method(batch)
    assert out.pred.shape == (batch.size,) and torch.isfinite(out.pred).all()
    assert all(out.extras[k].shape == (batch.size, 2) for k in ("quality", "fusion_weights", "recovered"))
    assert torch.equal(out.extras["recovered"], ~batch.present)


# --- the training-time disruption ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["C", "D", "CD"])
def test_random_disruption_hits_one_modality_of_the_drawn_samples(pooled, mode):
    batch = complete_batch(pooled)
    result = random_disruption(batch, 0.5, mode, torch.Generator().manual_seed(0))
    hit = result.discarded | result.corrupted
    assert int(hit.any(1).sum()) == round(0.5 * batch.size) and torch.all(hit.sum(1) <= 1)
    assert not (result.discarded & result.corrupted).any()
    discards = int(result.discarded.sum())
    assert discards == {"C": 0, "D": 16, "CD": 8}[mode]
    view = result.batch
    assert torch.equal(view.present, batch.present & ~result.discarded)  # discards are told ...
    for j, m in enumerate(view.modalities):
        gone = result.discarded[:, j]
        assert torch.all(view.features[m][gone] == 0) and not view.frame_mask[m][gone].any()
        rows = result.corrupted[:, j]
        assert torch.equal(view.frame_mask[m][rows], batch.frame_mask[m][rows])  # ... corruption is not
        untouched = ~(result.discarded[:, j] | rows)
        assert torch.equal(view.features[m][untouched], batch.features[m][untouched])
        if rows.any():
            original, corrupted = batch.features[m][rows], view.features[m][rows]
            if original.shape[1] == 1:  # a single vector: a 40-80 % share of its elements zeroed
                zeroed = ((corrupted == 0) & (original != 0)).float().mean((1, 2))
                assert torch.all((zeroed >= CORRUPT_FRACTION[0] - 0.12) & (zeroed <= CORRUPT_FRACTION[1] + 0.12))
            else:  # frames zeroed, only valid ones
                zeroed = (corrupted == 0).all(-1) & batch.frame_mask[m][rows]
                assert torch.all(zeroed.sum(1) >= 1)
                assert torch.all((corrupted == original).all(-1) | zeroed)


def test_the_training_augmentation_is_one_shared_named_option(pooled):
    batch = complete_batch(pooled)

    def augmented(name, seed=0, **options):
        method = create_method(name, pooled.spec, **options)
        method.train()
        torch.manual_seed(seed)
        return method.training_view(batch)

    # late_fusion can train under DRF's disruption, DRF under the shared missing view: same draws, same view
    for options in ({"train_missing": False, "train_disruption": "disrupt", "disrupt_rate": 1.0},
                    {"train_missing": True, "train_disruption": "none"}):
        a, b = augmented("late_fusion", **options), augmented("drf", **options)
        assert torch.equal(a.corrupted, b.corrupted) and torch.equal(a.batch.present, b.batch.present)
        assert torch.equal(a.batch.features["text"], b.batch.features["text"])
    disrupted = augmented("late_fusion", train_missing=False, train_disruption="disrupt", disrupt_rate=1.0)
    assert bool((disrupted.corrupted | disrupted.discarded).any(1).all())  # every sample hit
    default = augmented("late_fusion")  # late_fusion's default: the missing view only, nothing corrupted
    assert not default.corrupted.any() and not default.discarded.any()
    assert not torch.equal(default.batch.present, batch.present)
    both = training_augmentation(batch, True, 0.5, "disrupt", 1.0, "D", torch.Generator().manual_seed(1))
    assert torch.all(both.batch.present <= batch.present) and both.discarded.any()
    method = create_method("drf", pooled.spec, train_disruption="disrupt")
    method.eval()  # never at evaluation
    assert method.training_view(batch).batch is batch


def test_random_disruption_never_discards_the_last_modality_and_is_seeded(pooled):
    batch = complete_batch(pooled)
    present = batch.present.clone()
    present[:, 1] = False  # only text left
    lonely = batch.with_present(present)
    result = random_disruption(lonely, 1.0, "D", torch.Generator().manual_seed(0))
    assert not result.discarded.any() and torch.equal(result.corrupted[:, 0], torch.ones(batch.size, dtype=torch.bool))
    a = random_disruption(batch, 0.6, "CD", torch.Generator().manual_seed(5))
    b = random_disruption(batch, 0.6, "CD", torch.Generator().manual_seed(5))
    assert torch.equal(a.discarded, b.discarded) and torch.equal(a.batch.features["text"], b.batch.features["text"])


# --- learning on synthetic image-text data ------------------------------------------------


@pytest.fixture(scope="module")
def trained_mvsa(tmp_path_factory):
    data = load_dataset(MVSA)
    options = [f"method.{k}={v}" for k, v in MVSA_OPTIONS.items()]
    run = apply_overrides(RunConfig("drf"), TRAIN + options, method_class("drf").config_class)
    torch.manual_seed(0)
    untrained = evaluate(create_method("drf", data.spec, **run.method_options), data, "valid")
    result = Trainer(tmp_path_factory.mktemp("drf"), verbose=False).fit(run, data, seed=0)
    return data, untrained, result


def test_drf_learns_on_synthetic_mvsa(trained_mvsa):
    data, untrained, result = trained_mvsa
    assert result.valid_metrics["acc"] > untrained["acc"] + 10.0
    assert result.valid_metrics["f1"] > untrained["f1"] + 10.0
    checkpoint = load_checkpoint(result.path)
    assert all(q.ready for q in checkpoint.method.queues.values())  # the queues came back with the weights
    disrupted = evaluate(checkpoint.method, data, "valid", "disrupt:CD:random:1")
    assert disrupted["acc"] > untrained["acc"] + 5.0


def test_quality_ranks_clean_above_corrupted_on_held_out_data(trained_mvsa):
    data, _, result = trained_mvsa
    auroc = quality_auroc(load_checkpoint(result.path).method, data)
    print(f"\nDRF quality AUROC (clean vs corrupted, test split of {MVSA}): "
          + ", ".join(f"{m} {v:.4f}" for m, v in auroc.items()))
    assert all(v > 0.9 for v in auroc.values()), auroc  # 0.5 = blind; measured 0.973 (text), 1.000 (image)


# --- the bench presets --------------------------------------------------------------------


def test_drf_ablation_preset_runs_every_variant_and_the_fairness_grid_once(tmp_path):
    from robustmsa.bench import make_grid, run_grid

    options = ["train.epochs=1", "method.d=16"]  # options both methods have
    grid = make_grid("drf-ablation", data=["synthetic:mvsa:n=60:seed=1"], seeds=[0], overrides=options)
    table = make_grid("drf-table", data=["synthetic:mvsa:n=60:seed=1"], seeds=[0], methods=["drf", "late_fusion"],
                      overrides=options)
    assert list(grid.variants) == ["full", "w/o quality weighting", "gate: raw log(1 + D), not standardized",
                                   "gate: recovered slots scored by distance, no offset",
                                   "gate: at the network's learning rate", "w/o recovery", "recovery: sample loss only",
                                   "recovery: distribution loss only", "trained with the missing augmentation",
                                   "trained with DRF's disruption"]
    assert grid.protocols == table.protocols and grid.protocols[0] == "none"
    assert "disrupt:CD:fixed:image" in grid.protocols and grid.protocols[-1] == "disrupt:CD:random:1"
    jobs = grid.jobs()
    assert {job.key for job in table.jobs()} <= {job.key for job in jobs}  # each default cell is the table's run
    cells = {(job.method, job.variant): set(job.overrides) - set(options) for job in jobs}
    assert len(cells) == 12 and all(method == "drf" for method, _ in list(cells)[:8])
    # the 2x2 grid: each method under each augmentation, the same options for both methods
    disrupt = {"method.train_missing=false", "method.train_disruption=disrupt"}
    missing = {"method.train_missing=true", "method.train_disruption=none"}
    assert cells["late_fusion", "trained with DRF's disruption"] == disrupt
    assert cells["drf", "trained with the missing augmentation"] == missing
    assert cells["drf", "trained with DRF's disruption"] == cells["drf", "full"] == set()  # drf's defaults
    result = run_grid(grid, tmp_path, progress=False)
    assert result.ran == 11 and not result.failed  # "full" and drf's disruption cell are one run
    assert set(zip(result.rows["method"], result.rows["variant"])) == set(cells)
    assert len(result.rows) == 12 * len(grid.protocols) * 3  # cells x columns x (acc, f1, f1_macro)


def test_drf_presets_add_real_low_quality_text_on_data_built_from_raw_text(tiny_real):
    from robustmsa.bench import make_grid
    from robustmsa.missing import TEXTNOISE_KINDS

    _, path = tiny_real
    for preset in ("drf-table", "drf-ablation"):
        grid = make_grid(preset, data=[str(path)], seeds=[0])
        columns = grid.dataset_protocols[str(path)]
        assert columns[:12] == make_grid(preset, data=["synthetic:mvsa:n=60:seed=1"]).protocols[:1] + [
            f"disrupt:{mode}:fixed:{m}" for m in ("text", "audio") for mode in ("C", "D", "CD")] + [
            f"disrupt:CD:random:{r}" for r in ("0.2", "0.4", "0.6", "0.8", "1")]
        assert columns[12:] == [f"textnoise:{k}:0.8" for k in TEXTNOISE_KINDS] + ["textnoise:mix:0.5"]
        assert all(job.protocols == tuple(columns) for job in grid.jobs())
