"""Classifiers and vision-language models: a registry from a spec's ``source`` to its loader.

Every model returned here is an ``nn.Module`` in eval mode that takes images in [0, 1] and normalizes and
resizes inside ``forward``. ``load_classifier(profile, name)`` returns logits (N, K); ``load_vlm(profile)``
returns a :class:`ZeroShotClassifier` (cosine similarities, N×K) over the profile's classes and prompts.
Loaders train or fetch from the cache under ``data/`` as needed.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

from .zeroshot import ImagePreprocess, ZeroShotClassifier, build_text_embeddings, build_zero_shot_classifier

# source name -> "module:function"; the function takes (profile, name, spec) and returns an nn.Module.
CLASSIFIER_SOURCES: dict[str, str] = {
    "local-cnn": "mslib.models.local:load_local_classifier",
    "robustbench": "mslib.models.paper:load_robustbench_classifier",
    "torchvision-ft": "mslib.models.paper:load_torchvision_finetuned",
}
VLM_SOURCES: dict[str, str] = {
    "lit": "mslib.models.local:load_lit_vlm",
    "open_clip": "mslib.models.paper:load_open_clip_vlm",
    "hf-clip": "mslib.models.paper:load_hf_clip_vlm",
}


def _resolve(table: dict[str, str], source: str, what: str) -> Callable[..., nn.Module]:
    if source not in table:
        raise ValueError(f"unknown {what} source {source!r}; known: {sorted(table)}")
    module, func = table[source].split(":")
    return getattr(importlib.import_module(module), func)


def load_classifier(profile: Any, name: str) -> nn.Module:
    """The classifier ``name`` of ``profile`` (images in [0, 1] → logits), ready in eval mode."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    if name not in profile.classifier_specs:
        raise ValueError(f"profile {profile.name!r} has no classifier {name!r}; it has {list(profile.classifiers)}")
    spec = profile.classifier_specs[name]
    model = _resolve(CLASSIFIER_SOURCES, spec["source"], "classifier")(profile, name, spec)
    return model.eval()


def load_vlm(profile: Any) -> ZeroShotClassifier:
    """The profile's vision-language model as a zero-shot classifier over its classes and prompts."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    spec = profile.vlm_spec
    model = _resolve(VLM_SOURCES, spec["source"], "VLM")(profile, profile.vlm, spec)
    return model.eval()


__all__ = [
    "CLASSIFIER_SOURCES",
    "VLM_SOURCES",
    "ImagePreprocess",
    "ZeroShotClassifier",
    "build_text_embeddings",
    "build_zero_shot_classifier",
    "load_classifier",
    "load_vlm",
]
