"""Issue 16's speed changes keep their promises: shared memory only where nothing is masked (and
the dataset is never written), the same calls without Fabric, longest runs first."""

from __future__ import annotations

import numpy as np
import torch

from conftest import make_tiny_dataset
from robustmsa.bench import job_cost, make_grid, run_grid
from robustmsa.data.batch import SplitTensors, masked_features
from robustmsa.missing import Protocol, make_pattern
from robustmsa.training.trainer import SingleCPU


def test_complete_split_shares_the_datasets_memory_masked_split_copies_it():
    dataset = make_tiny_dataset(n=24)
    split = dataset["train"]
    before = {m: x.copy() for m, x in split.features.items()}
    complete = SplitTensors(split, dataset.spec)
    assert all(np.shares_memory(complete.features[m].numpy(), split.features[m]) for m in split.features)
    masked = SplitTensors(split, dataset.spec, make_pattern(split, dataset.spec, Protocol.parse("modality:0.5"), 0))
    for j, m in enumerate(dataset.spec.modality_names):
        assert not np.shares_memory(masked.features[m].numpy(), split.features[m])
        gone = ~masked.present[:, j]
        assert gone.any() and masked.features[m][gone].abs().sum() == 0
        np.testing.assert_array_equal(split.features[m], before[m])  # the dataset is untouched


def test_masked_features_equals_numpy_masking_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7, 3)).astype(np.float32)
    keep = rng.random((5, 7)) < 0.6
    corrupt = rng.random((5, 7, 1)) < 0.3
    expected = x * keep[:, :, None] * ~corrupt
    np.testing.assert_array_equal(masked_features(x, keep, corrupt).numpy(), expected)
    hidden = x.copy()
    hidden[0, 6] = 1.0  # a value where keep is False must be zeroed, not shared
    keep[0, 6] = False
    assert masked_features(hidden, keep).numpy()[0, 6].sum() == 0 and hidden[0, 6].sum() == 3.0
    padded = x * keep[:, :, None]
    assert np.shares_memory(masked_features(padded, keep).numpy(), padded)


def test_single_cpu_clips_like_fabric_over_the_optimizers_parameters():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    frozen = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    SingleCPU().backward((model(torch.randn(8, 4)) * 100).sum() + frozen(torch.randn(8, 4)).sum())
    total = SingleCPU().clip_gradients(model, optimizer, max_norm=1.0)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert total > 1.0 and abs(float(norm) - 1.0) < 1e-4
    assert frozen.weight.grad.abs().sum() > 1.0  # not the optimizer's: left alone


def test_the_costliest_runs_start_first(tmp_path, monkeypatch):
    order = []
    monkeypatch.setattr("robustmsa.bench.run_job", lambda job, out, threads: order.append(job.method))
    grid = make_grid("demo", ["synthetic:mosi:n=60:seed=1"], ["mean_impute", "late_fusion", "sslmm"], [0])
    run_grid(grid, tmp_path, progress=False)
    assert order == ["sslmm", "late_fusion", "mean_impute"]
    assert [job_cost(j) for j in grid.jobs()] == [0.5, 1.0, 25.0]
