"""mslib: the Multi-Shield study package (defense, attacks, metrics, data and model loaders)."""
from __future__ import annotations

from .defense import ConfidenceRejector, MultiShield, decide, rejection_logits
from .models import ZeroShotClassifier, build_zero_shot_classifier, load_classifier, load_vlm
from .profiles import Profile, get_profile
from . import attacks, metrics
from .attacks import attack

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: data loading pulls in more than the core needs
    if name == "load_eval_set":
        import importlib

        return importlib.import_module("mslib.data").load_eval_set
    raise AttributeError(f"module 'mslib' has no attribute {name!r}")


__all__ = [
    "ConfidenceRejector",
    "MultiShield",
    "Profile",
    "ZeroShotClassifier",
    "attack",
    "attacks",
    "build_zero_shot_classifier",
    "decide",
    "get_profile",
    "load_classifier",
    "load_eval_set",
    "load_vlm",
    "metrics",
    "rejection_logits",
]
