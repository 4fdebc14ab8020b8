"""The paper's models, loaded from local files only: RobustBench classifiers, fine-tuned torchvision
ResNet-18s, the CIFAR-10 fine-tuned Hugging Face CLIP and the open_clip CLIPA-v2.

Each loader takes ``(profile, name, spec)`` (the registry in :mod:`mslib.models`) and returns an eval-mode
``nn.Module`` on [0, 1] images that resizes and normalizes inside ``forward``. Nothing here touches the
network: :mod:`mslib.fetch` puts the files in place, and a missing file raises ``FileNotFoundError`` naming
it and the fetch command.

Where the files live (all under :func:`mslib.cache.data_root`, i.e. ``data/``):

- RobustBench: ``models/robustbench/<dataset>/<threat_model>/<Name>.pt`` (RobustBench's own ``model_dir``
  layout; ensembles as ``<Name>.pt_m0.pt``, ``<Name>.pt_m1.pt``, ...); ``$MSLIB_ROBUSTBENCH_DIR`` overrides.
- Hugging Face CLIP: ``models/hf/<org>--<repo>/`` (``save_pretrained`` folders).
- open_clip: ``models/open_clip/<org>--<repo>/`` (hub layout: ``open_clip_config.json`` + weights, and the
  text tower's tokenizer files).
- torchvision ImageNet weights: ``models/torchvision/<file from the weights URL>``; fine-tuned models are
  trained here and cached under ``models/torchvision-ft/<key>/``.

RobustBench's architectures come from the ``robustbench`` package's model zoo (``robustbench.model_zoo``),
imported without ``robustbench/__init__.py`` (which needs ``autoattack``, ``gdown`` and ``pkg_resources``);
see ``docs/robustbench.md``. Checkpoints are read with ``weights_only=True`` after a check that the file is a
PyTorch checkpoint at all (not an HTML page saved under a ``.pt`` name).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cache import data_root, entry_dir, load_tensors, save_tensors
from ..integrity import FETCH_COMMAND as _FETCH
from ..integrity import Asset, asset_files, is_complete, manifest_key, mark_complete, read_manifest, verify_file
from .zeroshot import ImagePreprocess, ZeroShotClassifier, build_text_embeddings, build_zero_shot_classifier

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FETCH_COMMAND = _FETCH.format(profile="paper")
CODE_VERSION = "paper-models-1"  # bump when a change here changes what a loaded model computes
INPUT_NORMS = ("config", "openai")  # open_clip input normalization: the config's mean/std, or OpenAI CLIP's


# =============================================================================================== helpers
def hub_folder(kind: str, repo: str) -> Path:
    """``data/models/<kind>/<org>--<repo>`` for a hub repository name (``hf-hub:`` prefix allowed)."""
    repo = repo.removeprefix("hf-hub:").strip("/")
    return data_root() / "models" / kind / repo.replace("/", "--")


def hf_folder(repo: str) -> Path:
    """Where a Hugging Face hub repository is kept (``save_pretrained`` layout)."""
    return hub_folder("hf", repo)


def open_clip_folder(repo: str) -> Path:
    """Where an open_clip hub repository is kept (``open_clip_config.json`` + weights)."""
    return hub_folder("open_clip", repo)


def _missing(what: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found at {path}. Fetch it on a machine with internet with "
                             f"`{FETCH_COMMAND}` (it downloads into data/), then copy data/ here.")


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """Raise a clear ``ValueError`` unless ``path`` starts like a PyTorch checkpoint (zip or legacy pickle).

    Google Drive and other hosts often answer with an HTML page (quota, virus-scan warning) that download
    scripts save under the checkpoint's name; loading it then fails with an obscure unpickling error.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing("checkpoint", path)
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return path
    text = head.lstrip().lower()
    hint = ("it is an HTML page (a download host's error or confirmation page), "
            if text.startswith((b"<!doctype", b"<html", b"<head", b"<?xml")) else "")
    raise ValueError(f"{path} is not a PyTorch checkpoint: {hint}its first bytes are {head[:40]!r}. "
                     f"Delete it and fetch it again with `{FETCH_COMMAND}`.")


def _safe_globals() -> list[Any]:
    """Plain data types some published checkpoints pickle beside their weights (no code runs for these)."""
    import argparse

    import numpy as np

    allowed: list[Any] = [argparse.Namespace, np.dtype, np.ndarray]
    for mod, name in (("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                      ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")):
        try:
            allowed.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "bool")]
    return allowed


def load_checkpoint(path: str | os.PathLike) -> Any:
    """A checkpoint's content, read with ``torch.load(weights_only=True)`` (a small allow-list of plain data
    types included), after :func:`check_checkpoint_file`. Never unpickles arbitrary objects."""
    path = check_checkpoint_file(path)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for a disallowed global, RuntimeError for a broken zip
        raise ValueError(f"cannot load {path} safely with weights_only=True: {e}. The file may be corrupt (fetch "
                         f"it again) or hold pickled objects beyond tensors, which mslib refuses to execute.") from e


class ResizeInput(nn.Module):
    """Resize [0, 1] images to a model's input size inside ``forward`` (no normalization: the wrapped model
    normalizes itself, as RobustBench models do). A no-op when the size already matches."""

    def __init__(self, model: nn.Module, size: int | None, resize_mode: str = "squash",
                 interpolation: str = "bilinear") -> None:
        super().__init__()
        self.model = model
        self.prep = ImagePreprocess(size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize_mode=resize_mode,
                                    interpolation=interpolation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.prep(x))


class NormalizedClassifier(nn.Module):
    """``model(preprocess(x))``: a classifier on [0, 1] images that resizes and normalizes inside."""

    def __init__(self, model: nn.Module, preprocess: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(x))


def _profile_class_names(profile: Any) -> list[str]:
    """The class names of the profile's dataset, without decoding images where the loader allows."""
    from ..data import load_labels

    return list(load_labels(profile.dataset, "test", profile.data_options)[1])


def _device(profile: Any) -> str:
    dev = getattr(profile, "device", "cpu") or "cpu"
    return dev


# ============================================================================================ RobustBench
ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")
ROBUSTBENCH_THREAT_MODELS = ("Linf", "L2", "corruptions")
ROBUSTBENCH_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
# Models RobustBench loads without the ``model.`` prefix / with timm's Swin key conversion (utils.load_model).
_RB_NO_PREFIX = {"Singh2023Revisiting_ConvNeXt-T-ConvStem", "Singh2023Revisiting_ViT-B-ConvStem",
                 "Singh2023Revisiting_ConvNeXt-S-ConvStem", "Singh2023Revisiting_ConvNeXt-B-ConvStem",
                 "Singh2023Revisiting_ConvNeXt-L-ConvStem", "Peng2023Robust", "Chen2024Data_WRN_50_2",
                 "Xu2024MIMIR_Swin-B", "Xu2024MIMIR_Swin-L"}
_RB_SWIN_FILTER = {"Liu2023Comprehensive_Swin-B", "Liu2023Comprehensive_Swin-L", "Mo2022When_Swin-B",
                   "RodriguezMunoz2024Characterizing_Swin-B", "RodriguezMunoz2024Characterizing_Swin-L"}
_RB_LENIENT_MESSAGES = ('Missing key(s) in state_dict: "mu", "sigma".',
                        'Missing key(s) in state_dict: "normalize.mean", "normalize.std"',
                        'Missing key(s) in state_dict: "mean", "std".')


def robustbench_dir() -> Path:
    """RobustBench's ``model_dir``: ``$MSLIB_ROBUSTBENCH_DIR`` or ``data/models/robustbench``."""
    env = os.environ.get("MSLIB_ROBUSTBENCH_DIR")
    return Path(env) if env else data_root() / "models" / "robustbench"


def robustbench_zoo() -> Any:
    """``robustbench.model_zoo.models`` (the registry ``model_dicts``), imported without running
    ``robustbench/__init__.py``.

    PyPI's robustbench 1.1.1 imports ``autoattack`` (PyPI: ``pyautoattack``), ``gdown`` and ``pkg_resources``
    at package import, for its download and evaluation code that mslib does not use; the model zoo itself
    needs only torch, timm, geotorch, torchdiffeq and PyYAML. When the package is not already imported, a
    bare package module stands in for ``robustbench`` so that ``robustbench.model_zoo`` loads on its own.
    """
    if "robustbench" not in sys.modules:
        spec = importlib.util.find_spec("robustbench")
        if spec is None or not spec.submodule_search_locations:
            raise _robustbench_missing(ModuleNotFoundError("No module named 'robustbench'"))
        stub = types.ModuleType("robustbench", "robustbench's model zoo only (see mslib.models.paper)")
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        stub.__file__ = spec.origin
        stub._mslib_stub = True
        sys.modules["robustbench"] = stub
    try:
        return importlib.import_module("robustbench.model_zoo.models")
    except ImportError as e:
        raise _robustbench_missing(e) from e


def _robustbench_missing(e: Exception) -> ImportError:
    return ImportError(
        f"RobustBench's model zoo cannot be imported ({e}). Install it as docs/robustbench.md says: "
        "`pip install --no-deps robustbench==1.1.1` (its pins conflict with open_clip's timm), plus "
        "`pip install geotorch torchdiffeq pyyaml` for the zoo's imports.")


def _rb_enums(dataset: str, threat_model: str) -> tuple[Any, Any]:
    if dataset not in ROBUSTBENCH_DATASETS:
        raise ValueError(f"RobustBench dataset must be one of {ROBUSTBENCH_DATASETS}, got {dataset!r}")
    if threat_model not in ROBUSTBENCH_THREAT_MODELS:
        raise ValueError(f"RobustBench threat_model must be one of {ROBUSTBENCH_THREAT_MODELS}, got {threat_model!r}")
    enums = importlib.import_module("robustbench.model_zoo.enums")
    return enums.BenchmarkDataset(dataset), enums.ThreatModel(threat_model)


def _timm_name(name: str, dataset: str, threat_model: str) -> str:
    return f"{name.lower().replace('-', '_')}_{dataset}_{threat_model.lower()}"


def robustbench_entry(name: str, dataset: str = "cifar10", threat_model: str = "Linf") -> dict[str, Any]:
    """How RobustBench builds ``name``: ``{"kind": "timm"|"zoo", "n_files": ..., "preprocessing": ...}``."""
    import timm

    zoo = robustbench_zoo()
    ds, tm = _rb_enums(dataset, threat_model)
    tname = _timm_name(name, dataset, threat_model)
    if timm.is_model(tname):
        return {"kind": "timm", "timm_name": tname, "n_files": 1, "preprocessing": "timm"}
    models = zoo.model_dicts[ds][tm]
    if name not in models:
        raise ValueError(f"{name!r} is not a RobustBench {dataset}/{threat_model} model")
    gid = models[name]["gdrive_id"]
    if gid is None:
        raise ValueError(f"RobustBench lists no checkpoint for {name!r}")
    return {"kind": "zoo", "n_files": len(gid) if isinstance(gid, list) else 1, "ensemble": isinstance(gid, list),
            "preprocessing": models[name].get("preprocessing")}


def robustbench_checkpoint_paths(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
                                 model_dir: str | os.PathLike | None = None, n_files: int | None = None) -> list[Path]:
    """The checkpoint file(s) of ``name`` in RobustBench's layout ``<model_dir>/<dataset>/<threat>/<name>.pt``
    (an ensemble of n models: ``<name>.pt_m0.pt`` ... ``<name>.pt_m{n-1}.pt``, as RobustBench names them)."""
    base = Path(model_dir) if model_dir is not None else robustbench_dir()
    path = base / dataset / threat_model / f"{name}.pt"
    if n_files is None:
        n_files = robustbench_entry(name, dataset, threat_model)["n_files"]
    entry_is_ensemble = n_files > 1
    return [Path(f"{path}_m{i}.pt") for i in range(n_files)] if entry_is_ensemble else [path]


def robustbench_adds_model_prefix(name: str, dataset: str) -> bool:
    """Whether RobustBench loads ``name``'s checkpoint under the ``model.`` prefix of its normalization
    wrapper (ImageNet zoo models, but for a few; utils.load_model)."""
    return dataset == "imagenet" and name not in _RB_NO_PREFIX


def _rm_prefix(state: dict[str, Any], substr: str) -> "OrderedDict[str, Any]":
    # RobustBench's rm_substr_from_state_dict, kept as is (it cuts len(substr) characters when substr occurs).
    return OrderedDict((k[len(substr):] if substr in k else k, v) for k, v in state.items())


def _load_strict_or_known(model: nn.Module, state: dict[str, Any], name: str, dataset: str) -> nn.Module:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        # RobustBench tolerates exactly these: normalization buffers absent from ImageNet checkpoints.
        if dataset == "imagenet" and any(m in str(e) for m in _RB_LENIENT_MESSAGES):
            model.load_state_dict(state, strict=False)
        else:
            raise ValueError(f"checkpoint for RobustBench model {name!r} does not match its architecture: {e}") from e
    return model


def build_robustbench_architecture(name: str, dataset: str = "cifar10", threat_model: str = "Linf") -> nn.Module:
    """RobustBench's architecture for ``name`` with random weights (its registry's constructor)."""
    import timm

    entry = robustbench_entry(name, dataset, threat_model)
    if entry["kind"] == "timm":
        return timm.create_model(entry["timm_name"], pretrained=False,
                                 num_classes=ROBUSTBENCH_CLASSES[dataset])
    ds, tm = _rb_enums(dataset, threat_model)
    return robustbench_zoo().model_dicts[ds][tm][name]["model"]()


def load_robustbench_model(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
                           model_dir: str | os.PathLike | None = None) -> nn.Module:
    """A RobustBench model from local checkpoint(s), loaded as ``robustbench.utils.load_model`` does, but
    with ``weights_only=True`` and without any download. Returns the model in eval mode ([0, 1] inputs).

    Each file's SHA-256 must match ``data/manifest.json`` (recorded by :mod:`mslib.fetch`, or for a file
    provided by hand by ``python -m mslib.fetch --record PATH``); otherwise ``ValueError``."""
    entry = robustbench_entry(name, dataset, threat_model)
    paths = robustbench_checkpoint_paths(name, dataset, threat_model, model_dir, entry["n_files"])
    hashes = []
    for p in paths:
        if not p.is_file():
            raise _missing(f"RobustBench checkpoint of {name} ({dataset}/{threat_model})", p)
        # RobustBench's hosts serve error pages and truncated files under the checkpoint's name: the hash
        # recorded at fetch time is the only proof this is the file the results claim to come from.
        hashes.append(verify_file(p, f"RobustBench checkpoint of {name}"))
    model = _load_robustbench_files(name, dataset, threat_model, entry, paths)
    model.checkpoint_sha256 = hashes  # verified above: the model's identity reuses them
    return model


def _load_robustbench_files(name: str, dataset: str, threat_model: str, entry: dict[str, Any],
                            paths: list[Path]) -> nn.Module:
    model = build_robustbench_architecture(name, dataset, threat_model)
    if entry["kind"] == "timm":
        ckpt = load_checkpoint(paths[0])
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
        filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            state = filter_fn(state, model)
        model.load_state_dict(state, strict=True)
        return model.eval()
    if not entry["ensemble"]:
        ckpt = load_checkpoint(paths[0])
        if not isinstance(ckpt, dict):
            raise ValueError(f"{paths[0]} holds a {type(ckpt).__name__}, not a state dict")
        if name == "Andriushchenko2020Understanding" or "Kireev2021Effectiveness" in name:
            ckpt = ckpt["last"]
        state = ckpt["state_dict"] if "state_dict" in ckpt and isinstance(ckpt["state_dict"], dict) else ckpt
        state = _rm_prefix(_rm_prefix(state, "module."), "model.")
        if dataset == "imagenet":
            if name in _RB_SWIN_FILTER:
                from timm.models.swin_transformer import checkpoint_filter_fn

                state = checkpoint_filter_fn(state, model.model)
            if robustbench_adds_model_prefix(name, dataset):
                state = OrderedDict(("model." + k, v) for k, v in state.items())
        return _load_strict_or_known(model, state, name, dataset).eval()
    if not hasattr(model, "models"):
        raise NotImplementedError(f"RobustBench ensemble {name!r} has a custom layout mslib does not load")
    for i, p in enumerate(paths):
        ckpt = load_checkpoint(p)
        state = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
        _load_strict_or_known(model.models[i], _rm_prefix(state, "module."), name, dataset)
    return model.eval()


def load_robustbench_classifier(profile: Any, name: str, spec: dict[str, Any]) -> nn.Module:
    """Registry loader for ``source: robustbench``.

    ``spec``: ``model`` (RobustBench name; default the classifier's name), ``dataset`` (RobustBench's:
    cifar10 | cifar100 | imagenet), ``threat_model`` (Linf), ``input_size`` (the model's resolution) and
    ``resize_mode`` (squash | shortest_crop) used inside ``forward`` when images arrive at another size.
    """
    model = load_robustbench_model(spec.get("model", name), spec.get("dataset", "cifar10"),
                                   spec.get("threat_model", "Linf"), spec.get("model_dir"))
    size = spec.get("input_size")
    wrapped = ResizeInput(model, size, spec.get("resize_mode", "squash"), spec.get("interpolation", "bilinear"))
    wrapped.checkpoint_sha256 = model.checkpoint_sha256
    wrapped.checkpoint_files = robustbench_checkpoint_paths(
        spec.get("model", name), spec.get("dataset", "cifar10"), spec.get("threat_model", "Linf"),
        spec.get("model_dir"), robustbench_entry(spec.get("model", name), spec.get("dataset", "cifar10"),
                                                 spec.get("threat_model", "Linf"))["n_files"])
    return wrapped.to(_device(profile)).eval()


# =========================================================================== torchvision, fine-tuned here
TORCHVISION_ARCHS = ("resnet18", "resnet50")


def torchvision_weights_path(arch: str = "resnet18", weights: str = "IMAGENET1K_V1") -> tuple[Path, str]:
    """``(local path, URL)`` of torchvision's pretrained ``weights`` for ``arch`` under ``data/models/torchvision``."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    url = enum[weights].url
    return data_root() / "models" / "torchvision" / url.rsplit("/", 1)[-1], url


def _build_torchvision(arch: str, num_classes: int, weights: str | None) -> nn.Module:
    import torchvision

    if arch not in TORCHVISION_ARCHS:
        raise ValueError(f"arch must be one of {TORCHVISION_ARCHS}, got {arch!r}")
    model = torchvision.models.get_model(arch, weights=None)
    if weights is not None:
        path, _ = torchvision_weights_path(arch, weights)
        if not path.is_file():
            raise _missing(f"torchvision {arch} {weights} weights", path)
        model.load_state_dict(load_checkpoint(path), strict=True)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _ft_preprocess(spec: dict[str, Any]) -> ImagePreprocess:
    # input_norm "imagenet" (default: the torchvision weights' own statistics) or "openai": the original code
    # trains and evaluates its ResNet-18s on OpenAI-CLIP mean/std (training_models/*.ipynb, main.py)
    norm = spec.get("input_norm", "imagenet")
    if norm not in ("imagenet", "openai"):
        raise ValueError(f"torchvision-ft spec 'input_norm' must be 'imagenet' or 'openai', got {norm!r}")
    mean, std = (CLIP_MEAN, CLIP_STD) if norm == "openai" else (IMAGENET_MEAN, IMAGENET_STD)
    return ImagePreprocess(int(spec.get("image_size", 224)), mean, std, resize_mode=spec.get("resize_mode", "squash"))


def finetune_record(profile: Any, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Everything that makes a fine-tuned checkpoint (its cache key): dataset, data options, recipe, weights."""
    weights = spec.get("weights", "IMAGENET1K_V1")
    record = {"kind": "torchvision-ft", "dataset": profile.dataset,
              "data_options": {k: v for k, v in profile.data_options.items()
                               if k not in ("indices", "sampler", "sample_seed", "sample_start")},
              "spec": {k: v for k, v in spec.items() if k not in ("device", "num_workers")}}
    if weights is not None:
        path, _ = torchvision_weights_path(spec.get("arch", "resnet18"), weights)
        record["weights_file"] = path.name  # torchvision's file names carry their hash prefix
    return record


def train_torchvision_finetuned(profile: Any, name: str, spec: dict[str, Any], device: str | None = None,
                                progress: bool = True) -> Path:
    """Fine-tune an ImageNet-pretrained torchvision model on the profile's training split; cache and return
    the checkpoint path (a rerun with the same record loads it).

    Recipe from the paper (``spec`` keys, all recorded): ``epochs`` 5, SGD ``lr`` 1e-3 ``momentum`` 0.9,
    ``batch_size`` 64, ``image_size`` 224 (the split's stored resolution), ``seed``; all layers trained.
    """
    from .. import paper_data

    record = finetune_record(profile, name, spec)
    out = entry_dir("models/torchvision-ft", record) / "model.pt"
    if out.is_file():
        return out
    device = device or _device(profile)
    seed = int(spec.get("seed", 0))
    torch.manual_seed(seed)
    opts = {**profile.data_options, "image_size": int(spec.get("image_size", 224))}
    opts.pop("indices", None)
    if spec.get("train_subset"):
        labels, _ = paper_data.load_labels(profile.dataset, "train", opts)
        g = torch.Generator().manual_seed(seed)
        opts["indices"] = sorted(torch.randperm(len(labels), generator=g)[: int(spec["train_subset"])].tolist())
    data = paper_data.PaperImageDataset(profile.dataset, "train", opts)
    loader = torch.utils.data.DataLoader(
        data, batch_size=int(spec.get("batch_size", 64)), shuffle=True, drop_last=False,
        generator=torch.Generator().manual_seed(seed), num_workers=int(spec.get("num_workers", 0)))
    net = _build_torchvision(spec.get("arch", "resnet18"), len(data.class_names), spec.get("weights", "IMAGENET1K_V1"))
    model = NormalizedClassifier(net, _ft_preprocess(spec)).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=float(spec.get("lr", 1e-3)), momentum=float(spec.get("momentum", 0.9)))
    epochs = int(spec.get("epochs", 5))
    from tqdm.auto import tqdm

    t0 = time.time()
    for epoch in range(epochs):
        bar = tqdm(loader, desc=f"{profile.dataset} {name} epoch {epoch + 1}/{epochs}", disable=not progress)
        for x, y in bar:
            x = x.to(device, non_blocking=True).float().div_(255.0)
            y = torch.as_tensor(y).to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    state = {k: v.detach().cpu() for k, v in model.model.state_dict().items()}
    save_tensors({"state_dict": state, "num_classes": len(data.class_names), "train_seconds": time.time() - t0}, out)
    return out


def load_torchvision_finetuned(profile: Any, name: str, spec: dict[str, Any]) -> nn.Module:
    """Registry loader for ``source: torchvision-ft``: the cached fine-tuned model (trained on first use)."""
    path = train_torchvision_finetuned(profile, name, spec)
    ckpt = load_tensors(path)
    net = _build_torchvision(spec.get("arch", "resnet18"), int(ckpt["num_classes"]), None)
    net.load_state_dict(ckpt["state_dict"], strict=True)
    model = NormalizedClassifier(net, _ft_preprocess(spec))
    model.checkpoint_path = str(path)
    model.checkpoint_files = [path]
    return model.to(_device(profile)).eval()


# ==================================================================================== Hugging Face CLIP
class HFCLIPImageEncoder(nn.Module):
    """A transformers ``CLIPModel``'s image tower: preprocessed pixels → projected image embeddings."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.clip.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


class _HFTextAdapter:
    """``encode_text(tokens)`` and ``tokenizer(texts)`` for :func:`build_text_embeddings` on a CLIPModel."""

    def __init__(self, clip: nn.Module, tokenizer: Any, device: str) -> None:
        self.clip, self.tok, self.device = clip, tokenizer, device

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tok(texts, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.clip.get_text_features(**tokens)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_hf_clip(vision_dir: str | os.PathLike, text_dir: str | os.PathLike) -> tuple[nn.Module, Any]:
    """``(CLIPModel, CLIPTokenizer)`` from local ``save_pretrained`` folders, as the original code builds it:
    the full CLIP from ``text_dir`` (text tower, projections, tokenizer) with its vision tower replaced by
    the one in ``vision_dir`` (a ``CLIPVisionModel``, e.g. the CIFAR-10 fine-tuned ViT-B/32)."""
    from transformers import CLIPModel, CLIPTokenizer, CLIPVisionModel

    vision_dir, text_dir = Path(vision_dir), Path(text_dir)
    for d in (vision_dir, text_dir):
        if not (d / "config.json").is_file():
            raise _missing("Hugging Face model folder (config.json + weights)", d)
    kw = {"local_files_only": True}
    clip = CLIPModel.from_pretrained(str(text_dir), **kw)
    vision = CLIPVisionModel.from_pretrained(str(vision_dir), **kw)
    # transformers 5 flattens CLIPVisionModel (no ``vision_model`` wrapper); older saves prefix the keys
    state = {k.removeprefix("vision_model."): v for k, v in vision.state_dict().items()}
    clip.vision_model.load_state_dict(state, strict=True)
    tokenizer = CLIPTokenizer.from_pretrained(str(text_dir), **kw)
    return clip.eval(), tokenizer


def load_hf_clip_vlm(profile: Any, name: str, spec: dict[str, Any]) -> ZeroShotClassifier:
    """Registry loader for ``source: hf-clip``.

    ``spec``: ``vision`` and ``text`` (hub names, read from ``data/models/hf/<org>--<repo>``, or folders),
    ``text_norm`` (original | standard), ``image_size`` (224), ``resize_mode`` and ``interpolation`` of the
    in-forward resize (the original code upsamples CIFAR-10 bilinearly to 224).
    """
    def folder(ref: str) -> Path:
        return Path(ref) if Path(ref).is_dir() else hub_folder("hf", ref)

    device = _device(profile)
    clip, tokenizer = load_hf_clip(folder(spec["vision"]), folder(spec["text"]))
    clip = clip.to(device)
    adapter = _HFTextAdapter(clip, tokenizer, device)
    emb = build_text_embeddings(adapter, adapter.tokenize, _profile_class_names(profile), profile.templates,
                                device=device, text_norm=spec.get("text_norm", "original"))
    cfg = clip.config.vision_config
    prep = ImagePreprocess(int(spec.get("image_size", cfg.image_size)), spec.get("mean", CLIP_MEAN),
                           spec.get("std", CLIP_STD), resize_mode=spec.get("resize_mode", "squash"),
                           interpolation=spec.get("interpolation", "bilinear"))
    zs = ZeroShotClassifier(HFCLIPImageEncoder(clip), emb, prep).to(device).eval()
    object.__setattr__(zs, "text_tower", (adapter, adapter.tokenize))  # other prompts: with_prompts
    zs.checkpoint_files = asset_files(folder(spec["vision"])) + asset_files(folder(spec["text"]))
    return zs


# ============================================================================================= open_clip
def load_open_clip_vlm(profile: Any, name: str, spec: dict[str, Any]) -> ZeroShotClassifier:
    """Registry loader for ``source: open_clip``: a hub-layout folder (``model``: ``hf-hub:org/repo`` read
    from ``data/models/open_clip/<org>--<repo>``, or a folder) through :func:`create_open_clip`.

    ``spec``: ``text_norm`` (standard), ``resize_mode`` (squash) for images at another size than the model's,
    ``input_norm``: ``config`` (default: the mean/std of the folder's ``open_clip_config.json``) or
    ``openai`` (OpenAI CLIP's mean/std, which the original code feeds CLIPA whatever its config says).
    """
    from .openclip_factory import create_open_clip
    from .zeroshot import preprocess_from_open_clip

    ref = spec["model"]
    model_dir = Path(ref) if Path(ref).is_dir() else hub_folder("open_clip", ref)
    if not (model_dir / "open_clip_config.json").is_file():
        raise _missing(f"open_clip model {ref}", model_dir)
    input_norm = spec.get("input_norm", "config")
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"open_clip spec 'input_norm' must be one of {INPUT_NORMS}, got {input_norm!r}")
    device = _device(profile)
    model, tokenizer = create_open_clip(model_dir, device=device)
    mean, std = (CLIP_MEAN, CLIP_STD) if input_norm == "openai" else (None, None)
    prep = preprocess_from_open_clip(model, resize_mode=spec.get("resize_mode", "squash"), mean=mean, std=std)
    zs = build_zero_shot_classifier(model, tokenizer, _profile_class_names(profile), profile.templates,
                                    preprocess=prep, device=device, text_norm=spec.get("text_norm", "standard"))
    zs.checkpoint_files = asset_files(model_dir)
    return zs


# ================================================================================ assets (mslib.fetch)
ROBUSTBENCH_INSTALL = "pip install --no-deps robustbench==1.1.1 && pip install geotorch torchdiffeq pyyaml"
GDRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"


def fetch_robustbench(model: str, dataset: str, threat_model: str) -> list[Path]:
    """Download a RobustBench checkpoint (Google Drive or RobustBench's GitHub release) in its layout."""
    import timm

    from ..fetch import download

    paths = robustbench_checkpoint_paths(model, dataset, threat_model)
    tname = _timm_name(model, dataset, threat_model)
    if timm.is_model(tname):
        urls = [timm.create_model(tname, pretrained=False).default_cfg["url"]]
    else:
        ds, tm = _rb_enums(dataset, threat_model)
        gid = robustbench_zoo().model_dicts[ds][tm][model]["gdrive_id"]
        urls = [GDRIVE_URL.format(id=g) for g in (gid if isinstance(gid, list) else [gid])]
    manifest = read_manifest()
    for url, path in zip(urls, paths):
        if is_complete(path):
            continue
        if path.is_file() and manifest_key(path) in manifest:  # downloaded and recorded, not yet marked (or old layout)
            try:
                verify_file(path, "RobustBench checkpoint")
                mark_complete(path)
                continue
            except ValueError:
                pass  # a different file: fetch it again
        download(url, path)
        try:
            check_checkpoint_file(path)
        except ValueError:
            path.unlink()
            raise
        mark_complete(path, url)
    return paths


def _hf_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    ) and is_complete(folder)


def _open_clip_complete(folder: Path) -> bool:
    from open_clip.factory import _find_checkpoint_in_dir

    return ((folder / "open_clip_config.json").is_file() and _find_checkpoint_in_dir(folder) is not None
            and is_complete(folder))


def robustbench_assets(spec: dict[str, Any], how: str) -> list[Asset]:
    """The checkpoint file(s) of a ``robustbench`` spec (and the package, when it is not installed)."""
    def fetch(a: Asset) -> None:
        fetch_robustbench(a.params["model"], a.params["dataset"], a.params["threat_model"])

    out = []
    if importlib.util.find_spec("robustbench") is None:
        out.append(Asset("package", "robustbench (model zoo only)", Path("robustbench"), ROBUSTBENCH_INSTALL,
                         {"manual": True, "check": lambda q: importlib.util.find_spec("robustbench") is not None}))
        paths = [robustbench_dir() / spec["dataset"] / spec["threat_model"] / f"{spec['model']}.pt"]
    else:
        paths = robustbench_checkpoint_paths(spec["model"], spec["dataset"], spec["threat_model"])
    for i, path in enumerate(paths):
        label = spec["model"] + (f" (member {i})" if len(paths) > 1 else "")
        out.append(Asset("robustbench", label, path, how, {"model": spec["model"], "dataset": spec["dataset"],
                                                           "threat_model": spec["threat_model"], "member": i,
                                                           "check": is_complete, "fetch": fetch}))
    return out


def _fetch_hub(a: Asset) -> None:
    from ..fetch import fetch_hf, fetch_hf_tokenizer
    from .openclip_factory import read_open_clip_config

    fetch_hf(a.params["repo"], a.path)
    if a.kind == "open_clip":  # the text tower's Hugging Face tokenizer, read offline beside the checkpoint
        tok = read_open_clip_config(a.path)["model_cfg"]["text_cfg"].get("hf_tokenizer_name")
        if tok:
            fetch_hf_tokenizer(tok, a.path)
    mark_complete(a.path)


def hf_clip_assets(spec: dict[str, Any], how: str) -> list[Asset]:
    """The two hub folders of an ``hf-clip`` spec (none for towers given as local folders)."""
    return [Asset("hf", repo, hub_folder("hf", repo), how, {"repo": repo, "check": _hf_complete, "fetch": _fetch_hub})
            for repo in (spec["vision"], spec["text"]) if not Path(repo).is_dir()]


def open_clip_assets(spec: dict[str, Any], how: str) -> list[Asset]:
    """The hub folder of an ``open_clip`` spec (none for a local folder)."""
    if Path(spec["model"]).is_dir():
        return []
    return [Asset("open_clip", spec["model"], hub_folder("open_clip", spec["model"]), how,
                  {"repo": spec["model"], "check": _open_clip_complete, "fetch": _fetch_hub})]


def _fetch_torchvision(a: Asset) -> None:
    from ..fetch import download

    url = a.params["url"]
    # torchvision's file names end in the first hex digits of the file's SHA-256
    prefix = url.rsplit("-", 1)[-1].split(".")[0]
    download(url, a.path, sha256_prefix=prefix)
    mark_complete(a.path, url)


def torchvision_assets(spec: dict[str, Any], how: str) -> list[Asset]:
    """The ImageNet weights a ``torchvision-ft`` spec starts from (none when it trains from scratch)."""
    if not spec.get("weights"):
        return []
    path, url = torchvision_weights_path(spec.get("arch", "resnet18"), spec["weights"])
    return [Asset("torchvision", f"{spec.get('arch', 'resnet18')} {spec['weights']}", path, how,
                  {"url": url, "check": is_complete, "fetch": _fetch_torchvision})]


__all__ = [
    "HFCLIPImageEncoder",
    "NormalizedClassifier",
    "ResizeInput",
    "build_robustbench_architecture",
    "check_checkpoint_file",
    "finetune_record",
    "hf_clip_assets",
    "hf_folder",
    "hub_folder",
    "open_clip_folder",
    "load_checkpoint",
    "load_hf_clip",
    "load_hf_clip_vlm",
    "load_open_clip_vlm",
    "load_robustbench_classifier",
    "load_robustbench_model",
    "load_torchvision_finetuned",
    "open_clip_assets",
    "robustbench_assets",
    "robustbench_checkpoint_paths",
    "robustbench_dir",
    "robustbench_entry",
    "robustbench_zoo",
    "torchvision_assets",
    "torchvision_weights_path",
    "train_torchvision_finetuned",
]
