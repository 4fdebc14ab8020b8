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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..cache import file_sha256

from .zeroshot import ImagePreprocess, ZeroShotClassifier, build_text_embeddings, build_zero_shot_classifier

@dataclass(frozen=True)
class SourceSpec:
    """Everything the package needs to know about one model source; each field a ``"module:function"``.

    ``load(profile, name, spec)`` returns the model, naming the files it was built from in
    ``checkpoint_files`` (their hashes, with the loader module's ``CODE_VERSION``, are its identity).
    ``locate(profile, name, spec)`` returns those files with their verified SHA-256 without loading anything,
    or None when they are not all there (the model is then loaded, which trains or fetches it); a source
    without one is always loaded. ``assets(spec, how)`` lists the :class:`~mslib.integrity.Asset` s a spec
    needs from outside (each knows how to fetch itself); ``standin(spec)`` writes random-weight files in
    their places and returns their paths.
    """

    name: str
    kind: str  # classifier | vlm
    display: str
    load: str
    locate: str | None = None
    assets: str | None = None
    standin: str | None = None
    # bump when a change to this source's loading changes what its models compute (the identities of its
    # models, and the keys of every result made with them, change with it; the loader module's CODE_VERSION
    # would change those of every source in the module)
    version: int = 1

    def function(self, field: str) -> Callable[..., Any]:
        """The function a field names (``ValueError`` when the source has none)."""
        ref = getattr(self, field)
        if ref is None:
            raise ValueError(f"model source {self.name!r} has no {field} function")
        module, func = ref.split(":")
        return getattr(importlib.import_module(module), func)


_PAPER = "mslib.models.paper:"
_LOCAL = "mslib.models.local:"
_STANDINS = "mslib.standins:standin_"
# Every model source a profile can name in a classifier or VLM spec ("source": ...).
SOURCES: dict[str, SourceSpec] = {s.name: s for s in (
    SourceSpec("local-cnn", "classifier", "small CNN trained here", _LOCAL + "load_local_classifier",
               _LOCAL + "locate_local_classifier"),
    SourceSpec("robustbench", "classifier", "RobustBench model zoo", _PAPER + "load_robustbench_classifier",
               assets=_PAPER + "robustbench_assets", standin=_STANDINS + "robustbench"),
    SourceSpec("torchvision-ft", "classifier", "torchvision model fine-tuned here",
               _PAPER + "load_torchvision_finetuned", assets=_PAPER + "torchvision_assets",
               standin=_STANDINS + "torchvision"),
    SourceSpec("lit", "vlm", "LiT model trained here", _LOCAL + "load_lit_vlm", _LOCAL + "locate_lit_vlm"),
    SourceSpec("lit-fare", "vlm", "LiT model, FARE-fine-tuned here", "mslib.models.robust:load_lit_fare",
               "mslib.models.robust:locate_lit_fare"),
    # version 2: class prompts encoded many classes per forward pass (the same means, other last bits)
    SourceSpec("open_clip", "vlm", "open_clip checkpoint", _PAPER + "load_open_clip_vlm",
               assets=_PAPER + "open_clip_assets", standin=_STANDINS + "open_clip", version=2),
    SourceSpec("hf-clip", "vlm", "Hugging Face CLIP", _PAPER + "load_hf_clip_vlm", assets=_PAPER + "hf_clip_assets",
               standin=_STANDINS + "hf_clip", version=2),
)}
# views by kind (source name -> "module:function" of the loader)
CLASSIFIER_SOURCES: dict[str, str] = {n: s.load for n, s in SOURCES.items() if s.kind == "classifier"}
VLM_SOURCES: dict[str, str] = {n: s.load for n, s in SOURCES.items() if s.kind == "vlm"}


def source_spec(source: Any, kind: str | None = None) -> SourceSpec:
    """The registered :class:`SourceSpec` of ``source`` (of ``kind`` when given), or a ``ValueError`` listing
    the registered ones."""
    known = sorted(n for n, s in SOURCES.items() if kind is None or s.kind == kind)
    if not isinstance(source, str) or source not in known:
        what = {"vlm": "VLM", None: "model"}.get(kind, kind)
        raise ValueError(f"unknown {what} source {source!r}; known: {known}")
    return SOURCES[source]


def _resolve(source: str, what: str) -> Callable[..., nn.Module]:
    return source_spec(source, "vlm" if what == "VLM" else "classifier").function("load")


def model_identity(model: nn.Module, source: str, spec: dict[str, Any], loader: Callable[..., nn.Module]
                   ) -> dict[str, Any]:
    """What makes a loaded model this model: source, spec, the loader module's ``CODE_VERSION`` and the
    SHA-256 of each file in ``model.checkpoint_files`` (in order); a loader that verified its files' hashes
    while loading hands them over as ``model.checkpoint_sha256`` (None for a file it did not hash), so no
    file is hashed twice."""
    files = getattr(model, "checkpoint_files", None)
    if not files:
        raise RuntimeError(f"the {source!r} loader did not name the checkpoint files of its model")
    known = getattr(model, "checkpoint_sha256", None)
    if known is None or len(known) != len(files):
        known = [None] * len(files)
    sha256 = [k if k is not None else file_sha256(f) for f, k in zip(files, known)]
    return _identity(source, spec, loader, sha256)


def _identity(source: str, spec: dict[str, Any], loader: Callable[..., nn.Module], sha256: list[str]
              ) -> dict[str, Any]:
    code = getattr(importlib.import_module(loader.__module__), "CODE_VERSION", None)
    identity = {"source": source, "spec": dict(spec), "code": code, "sha256": list(sha256)}
    version = SOURCES[source].version
    if version != 1:  # absent at 1, so the identities of sources never bumped stay what they were
        identity["source_version"] = version
    return identity


def _located_identity(profile: Any, name: str, spec: dict[str, Any], what: str) -> dict[str, Any] | None:
    loader = _resolve(spec["source"], what)
    src = SOURCES[spec["source"]]
    if src.locate is None:
        return None
    found: list[tuple[Path, str]] | None = src.function("locate")(profile, name, spec)
    return None if not found else _identity(spec["source"], spec, loader, [sha for _, sha in found])


def _load(profile: Any, name: str, spec: dict[str, Any], what: str) -> nn.Module:
    loader = _resolve(spec["source"], what)
    model = loader(profile, name, spec)
    model.identity = model_identity(model, spec["source"], spec, loader)
    return model.eval()


def load_classifier(profile: Any, name: str) -> nn.Module:
    """The classifier ``name`` of ``profile`` (images in [0, 1] → logits), ready in eval mode."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    if name not in profile.classifier_specs:
        raise ValueError(f"profile {profile.name!r} has no classifier {name!r}; it has {list(profile.classifiers)}")
    return _load(profile, name, profile.classifier_specs[name], "classifier")


def classifier_identity(profile: Any, name: str) -> dict[str, Any] | None:
    """The ``identity`` that ``load_classifier(profile, name)`` would give its model, without loading it;
    None when its checkpoint is not there yet (or its source has no locator): then load it."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    if name not in profile.classifier_specs:
        raise ValueError(f"profile {profile.name!r} has no classifier {name!r}; it has {list(profile.classifiers)}")
    return _located_identity(profile, name, profile.classifier_specs[name], "classifier")


def vlm_identity(profile: Any) -> dict[str, Any] | None:
    """The ``identity`` that ``load_vlm(profile)`` would give its model, without loading it (or None)."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    return _located_identity(profile, profile.vlm, profile.vlm_spec, "VLM")


def load_vlm(profile: Any) -> ZeroShotClassifier:
    """The profile's vision-language model as a zero-shot classifier over its classes and prompts."""
    from ..profiles import get_profile

    profile = get_profile(profile)
    return _load(profile, profile.vlm, profile.vlm_spec, "VLM")


__all__ = [
    "CLASSIFIER_SOURCES",
    "SOURCES",
    "SourceSpec",
    "VLM_SOURCES",
    "ImagePreprocess",
    "ZeroShotClassifier",
    "build_text_embeddings",
    "build_zero_shot_classifier",
    "classifier_identity",
    "load_classifier",
    "load_vlm",
    "model_identity",
    "source_spec",
    "vlm_identity",
]
