"""mslib: the Multi-Shield study package (defense, attacks, metrics, data and model loaders)."""
from __future__ import annotations

from .defense import MultiShield, decide, rejection_logits
from .models import ZeroShotClassifier, build_zero_shot_classifier, load_classifier, load_vlm
from .profiles import Profile, get_profile

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: keep `import mslib` light
    if name in ("attack", "attacks"):
        from . import attacks

        return attacks.attack if name == "attack" else attacks
    if name in ("load_eval_set",):
        from .data import load_eval_set

        return load_eval_set
    if name == "metrics":
        from . import metrics

        return metrics
    raise AttributeError(f"module 'mslib' has no attribute {name!r}")


__all__ = [
    "MultiShield",
    "Profile",
    "ZeroShotClassifier",
    "attack",
    "build_zero_shot_classifier",
    "decide",
    "get_profile",
    "load_classifier",
    "load_eval_set",
    "load_vlm",
    "rejection_logits",
]
