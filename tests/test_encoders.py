"""The shared sequence encoders: the packed frame-wise path must be the padded computation."""

from __future__ import annotations

import pytest
import torch

from robustmsa.nn.encoders import SequenceEncoder, masked_downsample, masked_mean


def padded_reference(encoder: SequenceEncoder, x: torch.Tensor, mask: torch.Tensor):
    """The pool encoder as it ran before packing: every frame, padding included, then masks."""
    if encoder.downsample > 1:
        x, mask = masked_downsample(x, mask, encoder.downsample)
    else:
        x = x * mask.unsqueeze(-1)
    h = encoder.frame(encoder.norm_in(x)) * mask.unsqueeze(-1)
    h = encoder.out_norm(h) * mask.unsqueeze(-1)
    return h, mask, masked_mean(h, mask)


def random_frames(batch: int, length: int, dim: int, seed: int):
    """Frames with per-sample lengths (some empty) and a few dropped frames inside."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, dim, generator=g) * 3 + 1
    lengths = torch.randint(0, length + 1, (batch,), generator=g)
    lengths[0] = 0
    mask = torch.arange(length)[None, :] < lengths[:, None]
    mask &= torch.rand(batch, length, generator=g) > 0.2
    return x, mask


@pytest.mark.parametrize("downsample", [1, 3])
def test_packed_pool_encoder_equals_the_padded_computation_in_eval(downsample, one_torch_thread):
    torch.manual_seed(0)
    encoder = SequenceEncoder(7, 16, "pool", downsample=downsample).eval()
    x, mask = random_frames(9, 20, 7, seed=1)
    with torch.no_grad():
        got = encoder(x, mask)
        want = padded_reference(encoder, x, mask)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert torch.equal(g, w)


def test_packed_pool_encoder_ignores_padding_values_and_trains(one_torch_thread):
    """Values under the mask cannot reach the output, and gradients reach every parameter."""
    torch.manual_seed(0)
    encoder = SequenceEncoder(5, 8, "pool")
    x, mask = random_frames(6, 11, 5, seed=2)
    noisy = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, 1e6))
    encoder.eval()
    with torch.no_grad():
        assert torch.equal(encoder(x, mask)[2], encoder(noisy, mask)[2])
    encoder.train()
    states, _, pooled = encoder(x, mask)
    assert torch.all(states[~mask] == 0)
    pooled.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
