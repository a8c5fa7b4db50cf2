"""Checkpoints: safetensors weights + JSON config, written atomically; loading runs no code.

Layout of one seed's folder:
  config.json         resolved run config, dataset spec, data hash, seed, input standardization
  model.safetensors   the best weights (selected on the validation split)
  metrics.json        validation metrics of the best weights
  last.safetensors    resume state: weights, optimizer moments, RNG state
  state.json          resume state: phase, epoch, best score, patience, completed flag
  log.jsonl           one line per epoch
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from robustmsa.data.io import atomic_write_bytes, parse_json
from robustmsa.data.schema import DataError, DatasetSpec
from robustmsa.data.standardize import FeatureStats
from robustmsa.methods.base import Method, create_method


def write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    return parse_json(Path(path).read_text(), str(path))


def save_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(contiguous))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load(Path(path).read_bytes())
    except SafetensorError as exc:  # truncated by a full disk or a partial copy
        raise DataError(f"{path}: not a readable safetensors file ({' '.join(str(exc).split())[:120]}); "
                        "it is truncated or corrupt: copy it again, or delete the seed folder and retrain") from None


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into tensors (for safetensors) and JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


@dataclass
class Checkpoint:
    """A trained seed: its folder, config and the method with the best weights loaded."""

    path: Path
    config: dict
    method: Method

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def method_name(self) -> str:
        return self.config["run"]["method"]


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Rebuild the method from config.json and load model.safetensors (no unpickling)."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    for f in (config_file, weights_file):
        if not f.exists():
            raise FileNotFoundError(f"{folder}: not a checkpoint folder (missing {f.name})")
    config = read_json(config_file)
    try:
        spec = DatasetSpec.from_dict(config["spec"])
        method = create_method(config["run"]["method"], spec, **config["method_config"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"{config_file}: not a robustmsa checkpoint config ({type(exc).__name__}: {exc})") from None
    weights = load_weights(weights_file)
    try:
        method.load_state_dict({k: v.to(map_location) for k, v in weights.items()})
    except RuntimeError as exc:  # missing / unexpected keys or shapes: the two files are from different runs
        detail = " ".join(str(exc).split())[:200]
        raise DataError(f"{weights_file}: weights do not match {config_file.name} ({detail})") from None
    method.input_stats = FeatureStats.from_dict(config.get("standardize"))  # absent: trained on raw inputs
    method.eval()
    return Checkpoint(folder, config, method)


def find_checkpoints(paths: list[str | Path]) -> list[Path]:
    """Expand run folders (holding seed*/ subfolders) into checkpoint folders, sorted."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.json").exists() and (p / "model.safetensors").exists():
            found.append(p)
            continue
        seeds = sorted(q.parent for q in p.glob("**/model.safetensors"))
        if not seeds:
            raise FileNotFoundError(f"{p}: no checkpoint (model.safetensors) found there")
        found.extend(seeds)
    return found
