"""SSLMM and its graph block: masks in message passing, intra/inter separation, label scarcity,
pre-training, the mean teacher, and learning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_dataset
from robustmsa.bench import make_grid
from robustmsa.config import RunConfig, apply_overrides
from robustmsa.data.batch import SplitTensors
from robustmsa.evaluation.evaluate import evaluate
from robustmsa.methods.base import create_method, method_class
from robustmsa.missing import label_strata, labeled_mask
from robustmsa.nn.graph import AttentionReadout, GraphMessagePassing, MessageStep, relation_mask, step_kinds
from robustmsa.training.checkpoint import load_checkpoint, load_weights
from robustmsa.training.streams import PairedStreams, paired_batches, stream_order
from robustmsa.training.trainer import Trainer

GROUPS = torch.tensor([0, 0, 1, 1, 2, 2])  # three modalities, two segment nodes each
D = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Many small ops: a second intra-op thread on a busy 2-core machine costs ~10x in spin waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset():
    return make_tiny_dataset(n=96, seed=1)


def toy_nodes(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, len(GROUPS), D, generator=torch.Generator().manual_seed(seed))


def run_config(*overrides: str) -> RunConfig:
    base = ["train.batch_size=16", "method.d=16", "train.patience=20", "method.pretrain_epochs=2"]
    return apply_overrides(RunConfig("sslmm"), base + list(overrides), method_class("sslmm").config_class)


# ------------------------------------------------------------------------------ graph


def test_missing_nodes_neither_send_nor_receive():
    torch.manual_seed(0)
    graph, readout = GraphMessagePassing(D, rounds=3, heads=2).eval(), AttentionReadout(D).eval()
    nodes = toy_nodes()
    mask = torch.ones(4, len(GROUPS), dtype=torch.bool)
    mask[0, 2:4] = False  # sample 0: modality 1 missing
    mask[1, 5] = False  # sample 1: one padded segment
    mask[2, :2] = mask[2, 4:] = False  # sample 2: only modality 1 left
    states = graph(nodes, GROUPS, mask)
    pooled, weights = readout(states, mask)

    perturbed = torch.where(mask.unsqueeze(-1), nodes, 1e3 * torch.randn_like(nodes))
    states_p = graph(perturbed, GROUPS, mask)
    pooled_p, _ = readout(states_p, mask)
    torch.testing.assert_close(states_p, states)
    torch.testing.assert_close(pooled_p, pooled)
    assert (states[~mask] == 0).all()  # a missing node receives nothing: its state stays zero
    assert (weights[~mask] == 0).all() and torch.allclose(weights.sum(1), torch.ones(4))  # read-out: no null key

    # A valid node's value does reach the read-out (the test above could not pass by ignoring inputs).
    changed = nodes.clone()
    changed[0, 0] += 3.0 * torch.randn(D)  # not a constant shift: LayerNorm would remove that
    assert not torch.allclose(readout(graph(changed, GROUPS, mask), mask)[0][0], pooled[0])


def test_intra_steps_stay_inside_a_modality_and_inter_steps_leave_it():
    torch.manual_seed(0)
    graph = GraphMessagePassing(D, rounds=2, heads=2).eval()
    mask = torch.ones(4, len(GROUPS), dtype=torch.bool)
    mask[3, 4:] = False  # one sample without modality 2
    _, attention = graph(toy_nodes(), GROUPS, mask, return_attention=True)
    assert [kind for kind, _ in attention] == ["intra", "inter", "intra", "inter"]
    same = (GROUPS[:, None] == GROUPS[None, :]).expand(4, 2, -1, -1)
    for kind, weights in attention:  # (B, heads, receivers, senders)
        crossing = weights[~same] if kind == "intra" else weights[same]
        assert (crossing == 0).all(), kind
        assert (weights[3, :, :, 4:] == 0).all()  # the missing modality sends nothing
        assert (weights[3, :, 4:] == 0).all()  # ... and receives nothing
        received = weights[:3].sum(-1)  # the rest of each row went to the learned null key
        assert (received > 0).all() and (received <= 1 + 1e-6).all()


@pytest.mark.parametrize("kind, reached", [("intra", [0, 1]), ("inter", [0, 2, 3, 4, 5])])
def test_one_step_moves_information_only_along_its_edges(kind, reached):
    torch.manual_seed(0)
    step = MessageStep(D, heads=2, dropout=0.0).eval()
    mask = torch.ones(4, len(GROUPS), dtype=torch.bool)
    allowed = relation_mask(GROUPS, kind).expand(4, -1, -1)
    nodes = toy_nodes()
    out, _ = step(nodes, allowed, mask)
    nodes_p = nodes.clone()
    nodes_p[:, 0] += 3.0 * torch.randn(D)  # perturb node 0 (modality 0, segment 0)
    out_p, _ = step(nodes_p, allowed, mask)
    moved = [j for j in range(len(GROUPS)) if not torch.allclose(out[:, j], out_p[:, j])]
    assert moved == reached


def test_message_modes_and_bad_mode():
    assert step_kinds(3, "intra") == ["intra"] * 6 and step_kinds(1, "inter") == ["inter"] * 2
    with pytest.raises(ValueError, match="message passing mode 'both'"):
        step_kinds(3, "both")
    with pytest.raises(ValueError, match="message passing mode"):
        create_method("sslmm", make_tiny_dataset(n=8).spec, message_passing="both")


# ------------------------------------------------------------------- label scarcity


def test_labeled_split_is_exact_stratified_and_seeded(dataset, tmp_path, monkeypatch):
    """The trainer gives SSLMM's pre-training every training sample with the seeded, stratified
    labeled flags, its fine-tuning paired streams (the labeled rows; every row, labels hidden),
    and a supervised method only the labeled part."""
    seen: dict[str, list] = {}
    def spy(self, fabric, model, method, optimizer, data, *args, **kwargs):
        if isinstance(data, PairedStreams):
            seen.setdefault(method.name, []).append(data)
        else:
            seen.setdefault(method.name, []).append(data.labeled.numpy().copy() if len(data) == 96 else len(data))
        return {}  # only what each phase is given matters here

    monkeypatch.setattr(Trainer, "_train_epoch", spy)
    Trainer(tmp_path, verbose=False).fit(run_config("labeled_ratio=0.5", "train.epochs=1"), dataset, seed=3)
    late = apply_overrides(RunConfig("late_fusion"), ["labeled_ratio=0.5", "train.epochs=1", "method.d=8"],
                           method_class("late_fusion").config_class)
    Trainer(tmp_path, verbose=False).fit(late, dataset, seed=3)

    labels = dataset["train"].labels
    expected = labeled_mask(labels, 0.5, seed=3, family="mosi")
    *pretrain, paired = seen["sslmm"]
    assert len(pretrain) == 2 and all((flags == expected).all() for flags in pretrain)  # all 96 samples
    assert paired.k == 1 and len(paired.labeled) == 48 and bool(paired.labeled.labeled.all())
    torch.testing.assert_close(paired.labeled.labels, torch.from_numpy(labels[expected]).float())
    assert len(paired.unlabeled) == 96 and not bool(paired.unlabeled.labeled.any())
    assert seen["late_fusion"] == [48]
    assert expected.sum() == 48
    strata = label_strata(labels, "mosi")
    for stratum in np.unique(strata):
        assert abs(expected[strata == stratum].sum() - 0.5 * (strata == stratum).sum()) <= 1
    assert (labeled_mask(labels, 0.5, seed=3, family="mosi") == expected).all()
    assert (labeled_mask(labels, 0.5, seed=4, family="mosi") != expected).any()


def test_unlabeled_samples_are_used_but_their_labels_never_are(dataset):
    torch.manual_seed(0)
    method = create_method("sslmm", dataset.spec, d=16)
    labeled = np.arange(96) % 2 == 0
    tensors = SplitTensors(dataset["train"], dataset.spec, labeled=labeled)
    batch = tensors.batch(slice(0, 32))
    method.train()
    torch.manual_seed(1)
    losses = method.loss(batch, "finetune")
    assert float(losses["consistency"].detach()) > 0  # the unlabeled half feeds the mean-teacher term
    scrambled = type(batch)(**{**batch.__dict__, "labels": torch.where(batch.labeled, batch.labels, batch.labels + 7)})
    torch.manual_seed(1)
    again = method.loss(scrambled, "finetune")
    assert all(torch.equal(losses[k], again[k]) for k in losses)
    all_labeled = type(batch)(**{**batch.__dict__, "labeled": torch.ones_like(batch.labeled)})
    assert float(method.loss(all_labeled, "finetune")["consistency"]) == 0.0


def test_phases_follow_the_ablation_switches(dataset):
    spec = dataset.spec
    full = create_method("sslmm", spec).phases()
    assert [(p.name, p.select, p.uses_unlabeled) for p in full] == [("pretrain", False, True), ("finetune", True, True)]
    assert [p.name for p in create_method("sslmm", spec, use_pretrain=False).phases()] == ["finetune"]
    assert full[-1].unlabeled_k == 1 and create_method("sslmm", spec, unlabeled_k=3).phases()[-1].unlabeled_k == 3
    supervised = create_method("sslmm", spec, use_consistency=False, use_recon=False).phases()[-1]
    assert not supervised.uses_unlabeled and supervised.unlabeled_k == 0


# ------------------------------------------------------------------- paired streams


def test_paired_streams_pass_the_unlabeled_rows_once_and_redraw_few_labels(dataset):
    every = SplitTensors(dataset["train"], dataset.spec)
    few = SplitTensors(dataset["train"].subset(np.arange(10)), dataset.spec)
    streams = PairedStreams(few, every, k=3)
    pairs = list(streams.batches(8, torch.Generator().manual_seed(0)))
    assert len(pairs) == streams.steps(8) == 4  # ceil(96 / (3 * 8)): one pass over the unlabeled stream
    assert all(lab.size == 8 and not bool(unl.labeled.any()) for lab, unl in pairs)
    assert [unl.size for _, unl in pairs] == [24, 24, 24, 24]
    seen_unlabeled = torch.cat([unl.index for _, unl in pairs])
    assert sorted(seen_unlabeled.tolist()) == list(range(96))  # each row once
    drawn = torch.cat([lab.index for lab, _ in pairs])
    assert set(drawn.tolist()) == set(range(10)) and len(drawn) == 32  # all 10 labels, topped up by redraws
    again = list(streams.batches(8, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a.index, b.index) and torch.equal(c.index, d.index) for (a, c), (b, d) in zip(pairs, again))
    assert sorted(stream_order(10, 4, torch.Generator().manual_seed(0)).tolist()).__len__() == 4
    assert len(set(stream_order(10, 4, torch.Generator().manual_seed(0)).tolist())) == 4  # no repeats when enough
    with pytest.raises(ValueError, match="unlabeled_ratio_k"):
        next(paired_batches(few, every, 8, 0, torch.Generator()))


def test_paired_loss_uses_the_unlabeled_batch_but_never_its_labels(dataset):
    torch.manual_seed(0)
    method = create_method("sslmm", dataset.spec, d=16, rampup_steps=0)
    tensors = SplitTensors(dataset["train"], dataset.spec)
    labeled, unlabeled = tensors.batch(slice(0, 8)), PairedStreams(tensors, tensors, 1).unlabeled.batch(slice(8, 40))
    method.train()
    torch.manual_seed(1)
    losses = method.loss(labeled, "finetune", unlabeled=unlabeled)
    assert all(float(losses[k].detach()) > 0 for k in ("task", "consistency", "feature", "recon"))
    scrambled = type(unlabeled)(**{**unlabeled.__dict__, "labels": unlabeled.labels + 7})
    torch.manual_seed(1)
    again = method.loss(labeled, "finetune", unlabeled=scrambled)
    assert all(torch.equal(losses[k], again[k]) for k in losses)


def test_teacher_views_are_really_weak(dataset):
    torch.manual_seed(0)
    method = create_method("sslmm", dataset.spec, d=16)
    tensors = SplitTensors(dataset["train"], dataset.spec)
    features, node_mask = method.teacher.encode(tensors.batch(slice(None)))
    noisy, mask = method.weak_view(features, node_mask)
    groups = method.teacher.groups
    for j in range(len(method.modalities)):  # never a whole modality
        had = node_mask[:, groups == j].any(1)
        assert bool(mask[:, groups == j].any(1)[had].all())
    assert float(mask.sum()) >= 0.85 * float(node_mask.sum())  # ~5% of the nodes go on average
    kept = mask.unsqueeze(-1).expand_as(features)
    relative = (noisy - features)[kept].std() / features[kept].std()
    assert 0.02 < float(relative) < 0.1  # small feature noise (weak_noise = 0.05)


def test_strong_view_perturbs_inside_every_node(dataset):
    """Where a modality is one node, the strong view's node drops can only drop it whole: the
    feature-level perturbation changes what a kept node carries."""
    torch.manual_seed(0)
    features = torch.randn(64, 6, 16)
    plain = create_method("sslmm", dataset.spec, d=16)
    assert torch.equal(plain.perturb(features), features)  # defaults: node drops only
    dropped = create_method("sslmm", dataset.spec, d=16, strong_feature_drop=0.25).perturb(features)
    assert 0.2 < float((dropped == 0).float().mean()) < 0.3  # channels dropped at the asked rate
    torch.testing.assert_close(dropped[dropped != 0], features[dropped != 0] / 0.75)  # inverted dropout
    assert float((dropped != 0).reshape(-1, 16).any(1).float().mean()) > 0.99  # a node keeps something
    noisy = create_method("sslmm", dataset.spec, d=16, strong_noise=0.5).perturb(features)
    assert 0.45 < float((noisy - features).std() / features.std()) < 0.55
    for bad in ({"strong_feature_drop": 1.0}, {"strong_noise": -0.1}, {"ema_epochs": -1.0}, {"finetune_lr": -1e-3}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            create_method("sslmm", dataset.spec, d=16, **bad)


def test_schedules_count_in_epochs_of_the_run(dataset, tmp_path, monkeypatch):
    from robustmsa.methods.base import Phase
    from robustmsa.methods.sslmm import SSLMM

    method = create_method("sslmm", dataset.spec, d=16, rampup_epochs=2.0, ema_epochs=0.5, rampup_steps=7)
    assert method.rampup_length() == 7 and method.ema_rate() == 0.99  # before the epoch length is known
    method.begin_phase(Phase("pretrain"), 50)  # only fine-tuning epochs count
    assert method.rampup_length() == 7
    method.begin_phase(Phase("finetune"), 10)
    assert method.rampup_length() == 20 and method.ema_rate() == pytest.approx(0.8)  # horizon 1/(1-0.8) = 5 steps
    method.ema_steps.fill_(10)
    assert method.rampup() == pytest.approx(np.exp(-5 * 0.5**2))
    assert create_method("sslmm", dataset.spec, d=16, finetune_lr=3e-4).phases()[-1].lr == 3e-4
    assert create_method("sslmm", dataset.spec, d=16).phases()[-1].lr is None  # the training config's lr

    seen = []
    monkeypatch.setattr(SSLMM, "begin_phase", lambda self, phase, steps: seen.append((phase.name, steps)))
    run = run_config("labeled_ratio=0.25", "method.pretrain_epochs=1", "train.epochs=1", "method.unlabeled_k=2")
    Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    rows = len(dataset["train"])
    assert seen == [("pretrain", -(-rows // 16)), ("finetune", -(-rows // 32))]  # paired: one unlabeled pass


def test_pseudo_labels_can_skip_the_ramp(dataset):
    """ramp_pseudo=false: confident pseudo-labels count at full weight while the rest of the
    consistency is still ramping up."""
    tensors = SplitTensors(dataset["train"], dataset.spec)
    labeled, unlabeled = tensors.batch(slice(0, 16)), PairedStreams(tensors, tensors, 1).unlabeled.batch(slice(16, 80))
    totals = {}
    for ramp_pseudo in (True, False):
        torch.manual_seed(0)
        method = create_method("sslmm", dataset.spec, d=16, rampup_steps=100, ramp_pseudo=ramp_pseudo,
                               pseudo_confidence=0.0, pseudo_margin=0.0)
        method.train()
        torch.manual_seed(1)
        totals[ramp_pseudo] = losses = method.loss(labeled, "finetune", unlabeled=unlabeled)
    ramp, pseudo = float(losses["ramp"]), float(losses["pseudo"])
    assert ramp < 0.01 and pseudo > 0
    gap = float(totals[False]["loss"] - totals[True]["loss"])
    assert gap == pytest.approx((1 - ramp) * pseudo, rel=1e-4)


# ---------------------------------------------------------------------- pre-training


def test_pretraining_loss_falls(dataset):
    torch.manual_seed(0)
    method = create_method("sslmm", dataset.spec, d=16, dropout=0.0)
    tensors = SplitTensors(dataset["train"], dataset.spec, labeled=np.zeros(96, dtype=bool))
    optimizer = torch.optim.AdamW(method.parameters(), lr=3e-3)

    def measured() -> dict[str, float]:
        torch.manual_seed(123)  # the same views before and after training
        with torch.no_grad():
            return {k: float(v) for k, v in method.loss(tensors.batch(slice(None)), "pretrain").items()}

    before = measured()
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        for batch in tensors.batches(32, generator):
            loss = method.loss(batch, "pretrain")["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = measured()
    assert after["loss"] < 0.85 * before["loss"]
    assert after["mnm"] < before["mnm"] and after["contrast"] < before["contrast"]


UTTERANCE_MIX = (("text", 1, 12), ("audio", 16, 6), ("vision", 1, 5))  # two one-node modalities, one sequence


@pytest.mark.parametrize("mode", ["drop", "keep", "perturb"])
def test_pretraining_views_keep_one_node_modalities_unless_asked_to_drop_them(mode):
    dataset = make_tiny_dataset(n=64, modalities=UTTERANCE_MIX, seed=2)
    torch.manual_seed(0)
    method = create_method("sslmm", dataset.spec, d=16, single_node_pretrain=mode, single_node_feature_drop=0.5)
    net = method.student
    assert net.single_node().tolist() == [True] + [False] * 8 + [True]  # text, 8 audio segments, vision
    features, node_mask = net.encode(SplitTensors(dataset["train"], dataset.spec).batch(slice(None)))
    views = [method.pretrain_view(features, node_mask) for _ in range(20)]
    single, multi = node_mask & net.single_node(), node_mask & ~net.single_node()
    single_kept = all(bool(mask[single].all()) for _, mask in views)
    assert single_kept == (mode != "drop")  # drop: utterance modalities leave views like any node
    assert all(not bool(mask[multi].all()) for _, mask in views)  # sequence segments are dropped in every mode
    changed = [(view != features).any(-1) for view, _ in views]
    assert all(not bool(c[multi].any()) for c in changed)  # sequence nodes carry their features unchanged
    assert all(bool(c[single].any()) == (mode == "perturb") for c in changed)  # perturb: inside the kept node


def test_keep_skips_pretraining_only_where_every_modality_is_one_node():
    utterances = make_tiny_dataset(n=32, modalities=(("text", 1, 12), ("audio", 1, 6)), seed=3)
    mixed = make_tiny_dataset(n=32, modalities=UTTERANCE_MIX, seed=3)
    names = lambda data, mode: [p.name for p in create_method("sslmm", data.spec, single_node_pretrain=mode).phases()]
    assert names(utterances, "keep") == ["finetune"]  # nothing left to mask
    assert names(utterances, "drop") == names(utterances, "perturb") == names(mixed, "keep") == ["pretrain", "finetune"]
    method = create_method("sslmm", utterances.spec, d=16, single_node_pretrain="perturb")
    method.train()
    losses = method.loss(SplitTensors(utterances["train"], utterances.spec).batch(slice(None)), "pretrain")
    assert float(losses["mnm"].detach()) == 0.0 and float(losses["contrast"].detach()) > 0  # no node dropped: contrast only
    with pytest.raises(ValueError, match="single_node_pretrain"):
        create_method("sslmm", utterances.spec, single_node_pretrain="skip")
    with pytest.raises(ValueError, match="single_node_feature_drop"):
        create_method("sslmm", utterances.spec, single_node_feature_drop=1.0)


def test_single_node_rule_leaves_sequence_data_untouched(dataset):
    """Where every modality has several nodes, the three settings train the same numbers."""
    batch = SplitTensors(dataset["train"], dataset.spec).batch(slice(None))
    losses = []
    for mode in ("drop", "keep", "perturb"):
        torch.manual_seed(0)
        method = create_method("sslmm", dataset.spec, d=16, single_node_pretrain=mode)
        method.train()
        assert not bool(method.student.single_node().any())
        torch.manual_seed(1)
        losses.append(method.loss(batch, "pretrain"))
    assert all(torch.equal(other[k], losses[0][k]) for other in losses[1:] for k in losses[0])


# ----------------------------------------------------------------------- mean teacher


def test_teacher_moves_only_by_ema_in_after_step(dataset):
    torch.manual_seed(0)
    method = create_method("sslmm", dataset.spec, d=16)
    assert not any(p.requires_grad for p in method.teacher.parameters())
    trainable = [p for p in method.parameters() if p.requires_grad]
    assert not {id(p) for p in method.teacher.parameters()} & {id(p) for p in trainable}
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    tensors = SplitTensors(dataset["train"], dataset.spec, labeled=np.arange(96) % 2 == 0)
    method.train()

    method.loss(tensors.batch(slice(0, 32)), "finetune")["loss"].backward()  # syncs teacher := student
    snapshot = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    torch.testing.assert_close(snapshot["head.0.weight"], method.student.head[0].weight.detach())
    optimizer.step()
    assert all(torch.equal(v, snapshot[k]) for k, v in method.teacher.state_dict().items())
    student = method.student.head[0].weight.detach().clone()
    assert not torch.equal(student, snapshot["head.0.weight"])

    method.after_step()  # first EMA step: decay min(1 - 1/2, 0.99) = 0.5
    torch.testing.assert_close(method.teacher.head[0].weight, 0.5 * snapshot["head.0.weight"] + 0.5 * student)
    assert int(method.ema_steps) == 1

    method.loss(tensors.batch(slice(0, 32)), "pretrain")
    frozen = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    method.after_step()  # pre-training steps leave the teacher alone
    assert all(torch.equal(v, frozen[k]) for k, v in method.teacher.state_dict().items())


def test_teacher_is_saved_in_the_checkpoint_and_training_learns(dataset, tmp_path):
    torch.manual_seed(0)
    untrained = evaluate(create_method("sslmm", dataset.spec, d=16), dataset, "valid")
    run = run_config("labeled_ratio=0.5", "method.pretrain_epochs=1", "train.epochs=6")
    result = Trainer(tmp_path, verbose=False).fit(run, dataset, seed=0)
    weights = load_weights(result.path / "model.safetensors")
    assert any(k.startswith("teacher.") for k in weights) and int(weights["ema_steps"]) > 0
    checkpoint = load_checkpoint(result.path)
    method = checkpoint.method
    torch.testing.assert_close(method.teacher.head[0].weight, weights["teacher.head.0.weight"])
    assert not torch.equal(method.teacher.head[0].weight, method.student.head[0].weight)

    log = [json.loads(line) for line in (result.path / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in log] == ["pretrain"] + ["finetune"] * 6 and "valid" not in log[0]
    # student and teacher both scored at each validation; the better one is served and saved
    for record in log[1:]:
        scores = record["selection"]["served_scores"]
        assert set(scores) == {"student", "teacher"}
        assert scores[record["selection"]["served"]] == max(scores.values())
    selection = json.loads((result.path / "metrics.json").read_text())["selection"]
    assert bool(weights["serve_teacher"]) == (selection["served"] == "teacher")
    assert bool(method.serve_teacher) == (selection["served"] == "teacher")
    served = method.teacher if bool(method.serve_teacher) else method.student
    batch = SplitTensors(dataset["valid"], dataset.spec).batch(slice(0, 8))
    method.eval()
    torch.testing.assert_close(method(batch).pred, served.run(*served.encode(batch)).pred)
    older = {k: v for k, v in method.state_dict().items() if k != "serve_teacher"}  # saved before serving existed
    fresh = create_method("sslmm", dataset.spec, d=16)
    fresh.load_state_dict(older)
    assert not bool(fresh.serve_teacher)
    trained = evaluate(method, dataset, "valid")
    assert trained["mae"] < 0.6 * untrained["mae"]
    assert trained["acc2_non0"] > 80.0  # an untrained net can rank this planted signal by chance too


# ---------------------------------------------------------------------------- bench


def test_ablation_preset_has_one_variant_per_component():
    grid = make_grid("sslmm-ablation", seeds=[0])
    assert grid.methods == ["sslmm"] and grid.protocols == ["modality:0.5"]
    assert "data.labeled_ratio=0.5" in grid.overrides
    assert list(grid.variants) == ["full", "w/o pre-training", "w/o unlabeled consistency", "w/o reconstruction",
                                   "intra-modal messages only", "inter-modal messages only"]
    assert grid.variant_rows  # an ablation table: one row per variant
    for extra in grid.variants.values():  # every variant is a valid run config
        apply_overrides(RunConfig("sslmm"), grid.overrides + extra, method_class("sslmm").config_class)
    assert len({job.key for job in grid.jobs()}) == 6 * len(grid.datasets)
