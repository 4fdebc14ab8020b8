"""Classifiers and vision-language models: a registry from a spec's ``source`` to its loader.

Every model returned here is an ``nn.Module`` in eval mode that takes images in [0, 1] and normalizes and
resizes inside ``forward``. ``load_classifier(profile, name)`` returns logits (N, K); ``load_vlm(profile)``
returns a :class:`ZeroShotClassifier` (cosine similarities, N×K) over the profile's classes and prompts.
Loaders train or fetch from the cache under ``data/`` as needed.

Each loaded model carries ``identity``: its source, spec, the loader's code version and the SHA-256 of every
checkpoint file it was built from (each loader names those files in ``checkpoint_files``). Results are keyed
by it, so another checkpoint in place, or a bumped code version, makes every result that used the model
stale. ``classifier_identity`` and ``vlm_identity`` give the same identity without loading the model, from
the checkpoint files a source's locator finds (verified, each hashed once), or None when the model is not
there yet: deciding that a study is done loads no model.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

from pathlib import Path

from ..cache import file_sha256

from .zeroshot import ImagePreprocess, ZeroShotClassifier, build_text_embeddings, build_zero_shot_classifier

# source name -> "module:function"; the function takes (profile, name, spec) and returns an nn.Module.
CLASSIFIER_SOURCES: dict[str, str] = {
    "local-cnn": "mslib.models.local:load_local_classifier",
    "robustbench": "mslib.models.paper:load_robustbench_classifier",
    "torchvision-ft": "mslib.models.paper:load_torchvision_finetuned",
}
VLM_SOURCES: dict[str, str] = {
    "lit": "mslib.models.local:load_lit_vlm",
    "lit-fare": "mslib.models.robust:load_lit_fare",
    "open_clip": "mslib.models.paper:load_open_clip_vlm",
    "hf-clip": "mslib.models.paper:load_hf_clip_vlm",
}

# source -> "module:function" taking (profile, name, spec) and returning, without loading anything, the
# checkpoint files the source's loader would build the model from (in the order of its ``checkpoint_files``)
# each with its SHA-256 checked against the file's own checksum, or None when they are not all there and
# intact (the model is then loaded, which trains or fetches it). A source without one is always loaded.
CHECKPOINT_LOCATORS: dict[str, str] = {
    "local-cnn": "mslib.models.local:locate_local_classifier",
    "lit": "mslib.models.local:locate_lit_vlm",
    "lit-fare": "mslib.models.robust:locate_lit_fare",
}


def _resolve(table: dict[str, str], source: str, what: str) -> Callable[..., nn.Module]:
    if source not in table:
        raise ValueError(f"unknown {what} source {source!r}; known: {sorted(table)}")
    module, func = table[source].split(":")
    return getattr(importlib.import_module(module), func)


def model_identity(model: nn.Module, source: str, spec: dict[str, Any], loader: Callable[..., nn.Module]
                   ) -> dict[str, Any]:
    """What makes a loaded model this model: source, spec, the loader module's ``CODE_VERSION`` and the
    SHA-256 of each file in ``model.checkpoint_files`` (in order)."""
    files = getattr(model, "checkpoint_files", None)
    if not files:
        raise RuntimeError(f"the {source!r} loader did not name the checkpoint files of its model")
    return _identity(source, spec, loader, [file_sha256(f) for f in files])


def _identity(source: str, spec: dict[str, Any], loader: Callable[..., nn.Module], sha256: list[str]
              ) -> dict[str, Any]:
    code = getattr(importlib.import_module(loader.__module__), "CODE_VERSION", None)
    return {"source": source, "spec": dict(spec), "code": code, "sha256": list(sha256)}


def _located_identity(table: dict[str, str], profile: Any, name: str, spec: dict[str, Any], what: str
                      ) -> dict[str, Any] | None:
    loader = _resolve(table, spec["source"], what)
    if spec["source"] not in CHECKPOINT_LOCATORS:
        return None
    module, func = CHECKPOINT_LOCATORS[spec["source"]].split(":")
    found: list[tuple[Path, str]] | None = getattr(importlib.import_module(module), func)(profile, name, spec)
    return None if not found else _identity(spec["source"], spec, loader, [sha for _, sha in found])


def _load(table: dict[str, str], profile: Any, name: str, spec: dict[str, Any], what: str) -> nn.Module:
    loader = _resolve(table, spec["source"], what)
    model = loader(profile, name, spec)
    model.identity = model_identity(model, spec["source"], spec, loader)
    return model.eval()


def load_classifier(profile: Any, name: str) -> nn.Module:
    """The classifier ``name`` of ``profile`` (images in [0, 1] → logits), ready in eval mode."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    if name not in profile.classifier_specs:
        raise ValueError(f"profile {profile.name!r} has no classifier {name!r}; it has {list(profile.classifiers)}")
    return _load(CLASSIFIER_SOURCES, profile, name, profile.classifier_specs[name], "classifier")


def classifier_identity(profile: Any, name: str) -> dict[str, Any] | None:
    """The ``identity`` that ``load_classifier(profile, name)`` would give its model, without loading it;
    None when its checkpoint is not there yet (or its source has no locator): then load it."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    if name not in profile.classifier_specs:
        raise ValueError(f"profile {profile.name!r} has no classifier {name!r}; it has {list(profile.classifiers)}")
    return _located_identity(CLASSIFIER_SOURCES, profile, name, profile.classifier_specs[name], "classifier")


def vlm_identity(profile: Any) -> dict[str, Any] | None:
    """The ``identity`` that ``load_vlm(profile)`` would give its model, without loading it (or None)."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    return _located_identity(VLM_SOURCES, profile, profile.vlm, profile.vlm_spec, "VLM")


def load_vlm(profile: Any) -> ZeroShotClassifier:
    """The profile's vision-language model as a zero-shot classifier over its classes and prompts."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    return _load(VLM_SOURCES, profile, profile.vlm, profile.vlm_spec, "VLM")


__all__ = [
    "CHECKPOINT_LOCATORS",
    "CLASSIFIER_SOURCES",
    "VLM_SOURCES",
    "ImagePreprocess",
    "ZeroShotClassifier",
    "build_text_embeddings",
    "build_zero_shot_classifier",
    "classifier_identity",
    "load_classifier",
    "load_vlm",
    "model_identity",
    "vlm_identity",
]
