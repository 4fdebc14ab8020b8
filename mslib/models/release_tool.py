"""Retrain the offline profiles' models here and compare them with the released ones (``make train``), or
write the release from this machine's trained cache (maintainers only).

``python -m mslib.models.release_tool --train tiny`` / ``--export tiny tiny-plus``. The release itself (its
manifest, and the lookup the loaders use) is :mod:`mslib.models.released`.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from ..cache import atomic_write, file_sha256, read_json, record_key, write_json
from . import local, released, robust
from .released import MANIFEST, read_manifest


def _recipe(kind: str, profile: Any, spec: dict[str, Any]) -> dict[str, Any]:
    fare = robust.CODE_VERSION if kind == "lit-fare" else None
    return released.recipe_record(kind, profile, spec, local.CODE_VERSION, fare)


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

    if kind == "cnn":
        load_classifier(profile, name)
        folder = local.model_dir("cnn", profile, spec)
    elif kind == "lit":
        load_vlm(profile)
        folder = local.model_dir("lit", profile, spec)
    else:
        from ..experiment import variant_profile

        load_vlm(variant_profile(profile, name))
        folder = robust.fare_dir(profile, {**spec, "base": {"source": "lit", **spec["base"]}})
    return folder, read_json(folder / "train_info.json")


ACCURACY = {"cnn": "test_accuracy", "lit": "zero_shot_test_accuracy", "lit-fare": "fare_zero_shot_test_accuracy"}


def export(profile_names: list[str], root: Path | None = None) -> list[dict[str, Any]]:
    """Write the release of ``profile_names`` from this machine's trained cache (training what is missing)."""
    from safetensors.torch import save_file

    root = root or released.RELEASE_DIR
    manifest = read_manifest(root)
    written = []
    for pname in profile_names:
        for kind, name, p, spec in _profile_models(pname):
            folder, info = _trained(kind, name, p, spec)
            key = record_key(_recipe(kind, p, spec))
            if key in manifest["models"]:
                continue
            file = f"{pname}-{name}.safetensors"
            atomic_write(root / file, lambda t, s=_trained_tensors(kind, folder): save_file(s, str(t)))
            entry = {"profile": pname, "name": name, "kind": kind, "file": file, "sha256": file_sha256(root / file),
                     "bytes": (root / file).stat().st_size, "recipe": _recipe(kind, p, spec),
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
            key = record_key(_recipe(kind, p, spec))
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
