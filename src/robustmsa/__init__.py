"""robustmsa: multimodal sentiment analysis that stays accurate when modalities are missing or
low quality and when labels are scarce.

Public API (lazy, so `import robustmsa` stays fast):
    load_dataset, Trainer, RunConfig, create_method, list_methods, load_checkpoint, evaluate, Protocol
"""

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": "robustmsa.data",
    "Trainer": "robustmsa.training.trainer",
    "RunConfig": "robustmsa.config",
    "create_method": "robustmsa.methods.base",
    "list_methods": "robustmsa.methods.base",
    "load_checkpoint": "robustmsa.training.checkpoint",
    "evaluate": "robustmsa.evaluation.evaluate",
    "Protocol": "robustmsa.missing",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'robustmsa' has no attribute {name!r}")
