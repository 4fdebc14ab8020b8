"""Shared pieces of the results-layer tests: a small smoke study and caches that share its trained models."""
from __future__ import annotations

import shutil
from pathlib import Path

from mslib.cache import REPO_ROOT, load_tensors

# 2 batches, few iterations, a light worst-case ensemble (1 agreement target, 8 Square queries), one template
OVERRIDES = {"n_samples": 10, "batch_size": 5, "n_iter": 2, "eps_grid": (0.0, 0.05, 0.1),
             "templates": ("a photo of a {}.",), "square_queries": 8, "extra": {"agreement_targets": 1}}


def fresh_cache(root: Path, copy_models: bool = False) -> Path:
    """A results cache without results that shares the repo's trained models and datasets (linked, or
    copied with ``copy_models`` so a test may damage them)."""
    root.mkdir(parents=True)
    real = REPO_ROOT / "data"
    for entry in real.iterdir() if real.exists() else []:
        if entry.name in ("results", "submitit", "stamps"):
            continue
        if copy_models and entry.name == "models":
            shutil.copytree(entry, root / entry.name, symlinks=False)
        else:
            (root / entry.name).symlink_to(entry.resolve())
    return root


def batch_files(cache: Path) -> dict[str, dict]:
    """Every cached batch file (results/<key>/batch_*.pt and .x.pt) of a cache, without its timing."""
    out = {}
    for f in sorted((cache / "results").glob("*/batch_*.pt")):
        d = load_tensors(f)
        d.pop("seconds", None)
        out[f"{f.parent.name}/{f.name}"] = d
    return out
