"""Registry-driven: every method x every protocol on a tiny config (timm's test_models habit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_dataset, with_text_bert
from robustmsa.data.batch import SplitTensors
from robustmsa.methods.base import TextBranchConfig, create_method, list_methods, method_class
from robustmsa.missing import Protocol, make_pattern

PROTOCOLS = [
    "none", "modality:0.5", "subset:l", "subset:a,v", "frame:0.5",
    "disrupt:D:random:1", "disrupt:C:fixed:text", "disrupt:CD:random:0.6",
]
DATASETS = {
    "mosi3": lambda: make_tiny_dataset(n=32),
    "cls2": lambda: make_tiny_dataset(n=32, modalities=(("text", 10, 6), ("audio", 1, 9)), classification=True),
    # real CMU-MOSI as `data build mosi-real` writes it: two single-vector modalities, regression
    "real2": lambda: make_tiny_dataset(n=32, modalities=(("text", 1, 12), ("audio", 1, 9))),
}
SMALL = {"late_fusion": {"d": 16}, "mean_impute": {"d": 16}, "mult_lite": {"d": 16, "max_frames": 4}, "misa": {"d": 16}}


def small_method(name, spec):
    torch.manual_seed(0)
    return create_method(name, spec, **SMALL.get(name, {}))


def protocol_batch(dataset, protocol: str, seed: int = 3):
    split = dataset["test"]
    pattern = make_pattern(split, dataset.spec, Protocol.parse(protocol), seed)
    return SplitTensors(split, dataset.spec, pattern).batch(slice(None))


def test_registry_lists_the_baselines():
    assert {"late_fusion", "mean_impute", "mult_lite", "misa"} <= set(list_methods())


def test_unknown_method_and_option_are_one_line_errors(tiny_dataset):
    with pytest.raises(KeyError, match="unknown method 'nope'; available: .*late_fusion"):
        create_method("nope", tiny_dataset.spec)
    with pytest.raises(KeyError, match="method 'late_fusion' has no option 'width'"):
        create_method("late_fusion", tiny_dataset.spec, width=3)


@pytest.mark.parametrize("dataset_name", list(DATASETS))
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list_methods())
def test_shapes_loss_and_missing_values_have_no_effect(name, protocol, dataset_name):
    if dataset_name in ("cls2", "real2") and "subset:a,v" in protocol:
        protocol = "subset:a"
    dataset = DATASETS[dataset_name]()
    method = small_method(name, dataset.spec)
    method.prepare(SplitTensors(dataset["train"], dataset.spec))
    batch = protocol_batch(dataset, protocol)
    method.eval()
    out = method(batch)
    expected = (batch.size,) if dataset.spec.label.is_regression else (batch.size, 3)
    assert out.pred.shape == expected
    assert torch.isfinite(out.pred).all()

    # Perturb every value the method must not see: missing modalities and dropped frames.
    perturbed = {}
    for m in batch.modalities:
        hidden = ~batch.frame_mask[m]  # padding, dropped frames and whole missing modalities
        noise = 100 * torch.randn_like(batch.features[m])
        perturbed[m] = torch.where(hidden.unsqueeze(-1), noise, batch.features[m])
    batch_perturbed = type(batch)(**{**batch.__dict__, "features": perturbed})
    assert torch.allclose(method(batch_perturbed).pred, out.pred, atol=1e-5)

    method.train()
    losses = method.loss(batch, method.phases()[-1].name)
    assert "loss" in losses and all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("dataset_name", list(DATASETS))
@pytest.mark.parametrize("name", list_methods())
def test_gradients_reach_every_parameter(name, dataset_name):
    dataset = DATASETS[dataset_name]()
    method = small_method(name, dataset.spec)
    method.prepare(SplitTensors(dataset["train"], dataset.spec))
    batch = SplitTensors(dataset["train"], dataset.spec).batch(slice(None))
    method.train()
    torch.manual_seed(1)
    for phase in method.phases():
        method.zero_grad()
        method.loss(batch, phase.name)["loss"].backward()
    silent = [n for n, p in method.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not silent, f"{name}: no gradient reaches {silent}"


@pytest.mark.parametrize("name", list_methods())
def test_prediction_does_not_depend_on_batch_size(name, tiny_dataset):
    from robustmsa.evaluation.evaluate import predict_tensors

    method = small_method(name, tiny_dataset.spec)
    method.prepare(SplitTensors(tiny_dataset["train"], tiny_dataset.spec))
    tensors = SplitTensors(tiny_dataset["test"], tiny_dataset.spec)
    np.testing.assert_allclose(predict_tensors(method, tensors, 3), predict_tensors(method, tensors, 64), atol=1e-5)


# --- the fine-tuned text branch (method.text_encoder=finetune) on a tiny random BERT -------------

FINETUNE_METHODS = [n for n in list_methods() if issubclass(method_class(n).config_class, TextBranchConfig)]
FINETUNE_PROTOCOLS = ["none", "modality:0.5", "subset:a", "frame:0.5", "disrupt:D:random:1"]


def finetune_method(name, spec, tiny_bert, text_encoder="finetune"):
    torch.manual_seed(0)
    return create_method(name, spec, text_encoder=text_encoder, text_model=str(tiny_bert), **SMALL.get(name, {}))


def test_every_encoder_method_takes_the_text_branch_option():
    assert {"late_fusion", "mult_lite", "misa", "fsrf", "drf", "sslmm"} <= set(FINETUNE_METHODS)


@pytest.mark.parametrize("text_encoder", ["finetune", "finetune+features"])
@pytest.mark.parametrize("protocol", FINETUNE_PROTOCOLS)
@pytest.mark.parametrize("name", FINETUNE_METHODS)
def test_finetune_branch_missing_text_and_dropped_tokens_have_no_effect(name, protocol, text_encoder, tiny_bert,
                                                                       one_torch_thread):
    dataset = with_text_bert(DATASETS["real2"]())
    method = finetune_method(name, dataset.spec, tiny_bert, text_encoder)
    method.prepare(SplitTensors(dataset["train"], dataset.spec))
    batch = protocol_batch(dataset, protocol)
    method.eval()
    out = method(batch)
    assert out.pred.shape == (batch.size,) and torch.isfinite(out.pred).all()

    # every word piece the method must not see (padding, dropped, or the text is missing) -> random ids
    hidden = batch.text_bert[:, 1] == 0
    noise = torch.randint(1000, 30522, hidden.shape)
    tokens = batch.text_bert.clone()
    tokens[:, 0] = torch.where(hidden, noise, tokens[:, 0])
    text = batch.features["text"]
    unread = ~batch.frame_mask["text"] if text_encoder == "finetune+features" else torch.ones_like(batch.frame_mask["text"])
    text = torch.where(unread.unsqueeze(-1), 100 * torch.randn_like(text), text)
    perturbed = type(batch)(**{**batch.__dict__, "text_bert": tokens, "features": {**batch.features, "text": text}})
    assert torch.allclose(method(perturbed).pred, out.pred, atol=1e-5)
    if protocol != "none":
        assert bool(hidden.any())

    method.train()
    losses = method.loss(batch, method.phases()[-1].name)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("name", ["late_fusion", "sslmm"])
def test_finetune_gradients_reach_the_transformer_and_freezing_stops_them(name, tiny_bert, one_torch_thread):
    dataset = with_text_bert(DATASETS["real2"]())
    batch = SplitTensors(dataset["train"], dataset.spec).batch(slice(None))
    for freeze, expect_embeddings in ((0, True), (1, False)):
        method = create_method(name, dataset.spec, text_encoder="finetune", text_model=str(tiny_bert),
                               text_freeze_layers=freeze)
        method.train()
        torch.manual_seed(1)
        for phase in method.phases():
            method.zero_grad()
            method.loss(batch, phase.name)["loss"].backward()
        grads = {n: p.grad for n, p in method.named_parameters() if p.requires_grad}
        assert any(".model.encoder.layer.1." in n and g is not None and g.abs().sum() > 0 for n, g in grads.items())
        assert any("word_embeddings" in n for n in grads) == expect_embeddings
        assert any(".model.encoder.layer.0." in n for n in grads) == expect_embeddings
        groups = method.param_groups(1e-3)
        assert [g["lr"] for g in groups] == [1e-3, 2e-5]


def test_joined_text_branch_reads_both_the_word_pieces_and_the_text_vectors(tiny_bert, one_torch_thread):
    dataset = with_text_bert(DATASETS["real2"]())
    method = finetune_method("late_fusion", dataset.spec, tiny_bert, "finetune+features").eval()
    method.prepare(SplitTensors(dataset["train"], dataset.spec))
    assert method.encoders.frames["text"] == 2 * method.encoders.branch_frames
    batch = SplitTensors(dataset["test"], dataset.spec).batch(slice(None))
    out = method(batch).pred
    shuffled_tokens = batch.text_bert.flip(0)
    changed = type(batch)(**{**batch.__dict__, "text_bert": shuffled_tokens})
    assert not torch.allclose(method(changed).pred, out, atol=1e-4)
    changed = type(batch)(**{**batch.__dict__, "features": {**batch.features, "text": batch.features["text"].roll(1, -1)}})
    assert not torch.allclose(method(changed).pred, out, atol=1e-4)
    # the pooled text vector is the mean of the two parts' pooled vectors
    states, masks, pooled = method.encoders(batch)
    _, _, from_tokens = method.encoders._text(batch, "text")
    _, _, from_vectors = method.encoders.encoders["text"](batch.features["text"], batch.frame_mask["text"])
    torch.testing.assert_close(pooled["text"], (from_tokens + from_vectors) / 2)
    assert states["text"].shape[1] == masks["text"].shape[1] == method.encoders.frames["text"]


def test_finetune_prediction_does_not_depend_on_batch_size(tiny_bert, one_torch_thread):
    from robustmsa.evaluation.evaluate import predict_tensors

    dataset = with_text_bert(make_tiny_dataset(), max_tokens=12)
    method = finetune_method("late_fusion", dataset.spec, tiny_bert)
    tensors = SplitTensors(dataset["test"], dataset.spec)
    np.testing.assert_allclose(predict_tensors(method, tensors, 3), predict_tensors(method, tensors, 64), atol=1e-5)


def test_finetune_without_text_bert_is_a_one_line_error(tiny_bert, tiny_dataset):
    method = finetune_method("late_fusion", tiny_dataset.spec, tiny_bert)
    with pytest.raises(ValueError, match="needs text_bert token ids"):
        method(SplitTensors(tiny_dataset["test"], tiny_dataset.spec).batch(slice(None)))
    with pytest.raises(ValueError, match="text_encoder='bert'"):
        create_method("late_fusion", tiny_dataset.spec, text_encoder="bert")
