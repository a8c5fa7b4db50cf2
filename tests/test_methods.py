"""Registry-driven: every method x every protocol on a tiny config (timm's test_models habit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_dataset
from robustmsa.data.batch import SplitTensors
from robustmsa.methods.base import create_method, list_methods
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
