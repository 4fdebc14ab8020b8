"""A robust VLM for the offline profiles: the LiT model's image tower adversarially fine-tuned, FARE-style.

``load_lit_fare(profile, name, spec)`` (source ``lit-fare``) starts from the cached clean LiT model of
``spec["base"]`` (a ``lit`` spec, trained first if missing), keeps its text tower locked and fine-tunes its
image tower φ with the unsupervised embedding objective of FARE (Schlarmann et al. 2024, "Robust CLIP"):

    min_φ  E_x  max_{‖δ‖∞ ≤ eps}  ‖φ(x + δ) − φ₀(x)‖²₂

where φ₀ is the frozen clean tower: a perturbed image must keep the clean model's embedding of the clean
image, so the zero-shot head (text embeddings) needs no change. The inner maximization is PGD with a
uniform random start (``steps`` sign steps of size 2.5·eps/steps; ``steps=1`` is FGSM-RS, step 1.25·eps).

The result is an open_clip model folder in ``data/models/<key>/`` (``open_clip_config.json`` +
``open_clip_model.safetensors`` + checksums, the layout of :func:`mslib.models.local.load_lit_vlm`), keyed by
this spec, the dataset, the templates, ``CODE_VERSION`` and the SHA-256 of the base model's weights (another
base checkpoint retrains). ``train_info.json`` records the training time and, for the base and the fine-tuned
model, clean zero-shot test accuracy and accuracy under a PGD-CE attack on the zero-shot logits (a quick
check; the study's APGD-CE numbers are the ones reported).
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..cache import entry_dir, file_sha256, folder_intact, write_checksums, write_json
from .local import _LIT_KEYS, _check_spec, _class_names, _lr_at, _normal_mode, _optimizer_step, _train_data, \
    _zero_shot, evaluate, even_spread, load_lit_vlm, load_released_lit, locate_model_folder, locate_released, model_dir
from .released import announce_training
from .zeroshot import ImagePreprocess, ZeroShotClassifier

CODE_VERSION = "lit-fare-1"

_FARE_KEYS = {"source", "base", "eps", "steps", "epochs", "lr", "batch_size", "seed", "train_subset",
              "weight_decay", "warmup", "n_check", "n_test"}
CHECK_ITERS = 10  # PGD iterations of the robustness check in train_info.json
FARE_TRAIN_MS = 7.0  # per image, epoch and forward-backward pass on 2 CPU cores (the estimate said before training)
VLM_LOGIT_SCALE = 100.0  # the CLIP-like scale on cosine similarities for CE (as the study's VLM attacks)


def _check_fare_spec(spec: dict[str, Any]) -> None:
    _check_spec(spec, _FARE_KEYS, ("base", "eps", "steps", "epochs", "lr", "batch_size", "seed"), "lit-fare")
    base = spec["base"]
    if not isinstance(base, dict) or base.get("source", "lit") != "lit":
        raise ValueError(f"lit-fare spec field 'base' must be a 'lit' VLM spec dict, got {base!r}")
    _check_spec(base, _LIT_KEYS, (), "lit-fare base")
    eps = spec["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"lit-fare spec field 'eps' must be in (0, 1), got {eps!r}")
    if isinstance(spec["steps"], bool) or not isinstance(spec["steps"], int) or spec["steps"] < 1:
        raise ValueError(f"lit-fare spec field 'steps' must be an int >= 1, got {spec['steps']!r}")


def fare_record(profile: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """What a lit-fare model is keyed by: its spec, the data, the templates, the code version and the SHA-256
    of the base model's weights (the base must be trained)."""
    from .openclip_factory import WEIGHTS_NAME

    base_dir = model_dir("lit", profile, spec["base"])
    return {"kind": "lit-fare", "dataset": profile.dataset, "data_options": dict(profile.data_options),
            "spec": dict(spec), "templates": list(profile.templates), "code_version": CODE_VERSION,
            "base_sha256": file_sha256(base_dir / WEIGHTS_NAME)}


def fare_dir(profile: Any, spec: dict[str, Any]):
    """The cache folder ``data/models/<key>/`` of a lit-fare recipe (see :func:`fare_record`)."""
    return entry_dir("models", fare_record(profile, spec))


def _pgd(loss_fn, x: torch.Tensor, eps: float, steps: int, g: torch.Generator) -> torch.Tensor:
    """x + δ maximizing ``loss_fn`` (summed over the batch) by PGD from a uniform start in the eps-ball."""
    alpha = 1.25 * eps if steps == 1 else 2.5 * eps / steps
    delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(x + delta).sum(), [delta])
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


@torch.enable_grad()
def train_fare(visual: nn.Module, reference: nn.Module, preprocess: nn.Module, x: torch.Tensor,
               spec: dict[str, Any], desc: str = "fare") -> None:
    """Fine-tune ``visual`` in place: PGD on ‖visual(x+δ) − reference(x)‖², then a step on that loss."""
    g = torch.Generator().manual_seed(int(spec["seed"]))
    eps, steps = float(spec["eps"]), int(spec["steps"])
    for p in reference.parameters():
        p.requires_grad_(False)
    reference.eval()
    opt = torch.optim.AdamW(visual.parameters(), lr=float(spec["lr"]),
                            weight_decay=float(spec.get("weight_decay", 1e-4)))
    bs, epochs = int(spec["batch_size"]), int(spec["epochs"])
    steps_per_epoch = math.ceil(len(x) / bs)
    total, step = epochs * steps_per_epoch, 0
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{epochs}", leave=False)
        for b in bar:
            xb = x[perm[b * bs:(b + 1) * bs]]
            with torch.no_grad():
                target = reference(preprocess(xb))

            def emb_loss(xa: torch.Tensor) -> torch.Tensor:
                return (visual(preprocess(xa)) - target).pow(2).sum(dim=1)

            visual.eval()  # the inner attack sees the model as it is evaluated
            xa = _pgd(emb_loss, xb, eps, steps, g)
            visual.train()
            loss = emb_loss(xa).mean()
            _optimizer_step(opt, loss, _lr_at(step, total, float(spec["lr"]), float(spec.get("warmup", 0.1))), bar, b)
            step += 1
    visual.eval()


def pgd_accuracy(zs: ZeroShotClassifier, x: torch.Tensor, y: torch.Tensor, eps: float, iters: int = CHECK_ITERS,
                 seed: int = 0, batch_size: int = 250) -> float:
    """Zero-shot accuracy under PGD-CE (random start, ``iters`` steps) on the scaled similarities."""
    g = torch.Generator().manual_seed(seed)
    for p in zs.parameters():
        p.requires_grad_(False)
    correct = 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        with torch.enable_grad():
            xa = _pgd(lambda xx: F.cross_entropy(VLM_LOGIT_SCALE * zs(xx), yb, reduction="none"), xb, eps, iters, g)
        with torch.no_grad():
            correct += int((zs(xa).argmax(1) == yb).sum())
    return correct / max(1, len(y))


@_normal_mode
def load_lit_fare(profile: Any, name: str, spec: dict[str, Any]) -> ZeroShotClassifier:
    """The FARE-fine-tuned LiT VLM of ``spec`` as a :class:`ZeroShotClassifier` (trained once, then cached)."""
    from .openclip_factory import CONFIG_NAME, WEIGHTS_NAME, create_open_clip, read_open_clip_config, save_open_clip

    _check_fare_spec(spec)
    base_spec = {"source": "lit", **spec["base"]}
    templates = list(profile.templates)
    released = load_released_lit("lit-fare", profile, spec, base_spec, CODE_VERSION)
    if released is not None:
        return released
    base_zs = load_lit_vlm(profile, f"{name}-base", base_spec)  # trains the clean model if it is missing
    base_dir = model_dir("lit", profile, base_spec)
    folder = fare_dir(profile, {**spec, "base": base_spec})
    trained = folder_intact(folder, WEIGHTS_NAME)
    if not trained:
        from ..data import load_split

        config = read_open_clip_config(base_dir)
        model_cfg, pre = config["model_cfg"], config["preprocess_cfg"]
        model, _ = create_open_clip(base_dir)
        reference, _ = create_open_clip(base_dir)
        preprocess = ImagePreprocess(pre["size"], pre["mean"], pre["std"], channels=3,
                                     interpolation=pre.get("interpolation", "bilinear"))
        x, _, _ = _train_data(profile, spec)
        announce_training(name, "lit-fare", profile, spec,
                          FARE_TRAIN_MS * (int(spec["steps"]) + 1) * len(x) * int(spec["epochs"]) / 60e3)
        t0 = time.perf_counter()
        train_fare(model.visual, reference.visual, preprocess, x, spec, desc=name)
        seconds = time.perf_counter() - t0
        save_open_clip(model, folder, model_cfg, pre)
        write_checksums(folder, [CONFIG_NAME, WEIGHTS_NAME])  # last: marks the folder complete
        loaded, tok = create_open_clip(folder)
        xt, yt, names = load_split(profile.dataset, "test", profile.data_options)
        robust = _zero_shot(loaded, tok, names, templates).eval()
        n_check = int(spec.get("n_check", 200))
        check = even_spread(n_check, len(yt))
        # the clean accuracies of train_info: the whole test set, or an even spread of n_test (a test profile's
        # fine-tune would otherwise spend twice as long scoring 10,000 images as it spends training)
        scored = even_spread(int(spec.get("n_test", len(yt))), len(yt))
        eps = float(spec["eps"])
        info = {"name": name, "train_seconds": round(seconds, 1), "n_train": len(x), "eps": eps,
                "inner_steps": int(spec["steps"]), "n_test": len(scored), "n_check": n_check,
                "check_attack": f"PGD-{CHECK_ITERS} CE on {VLM_LOGIT_SCALE:g}x similarities, eps {eps:g}"}
        for tag, zs in (("base", base_zs), ("fare", robust)):
            info[f"{tag}_zero_shot_test_accuracy"] = evaluate(zs, xt[scored], yt[scored], batch_size=500)
            info[f"{tag}_zero_shot_pgd_accuracy"] = pgd_accuracy(zs, xt[check], yt[check], eps)
        info.update(trained_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), torch=torch.__version__,
                    threads=torch.get_num_threads(), checkpoint_bytes=(folder / WEIGHTS_NAME).stat().st_size)
        write_json(info, folder / "train_info.json")
    model, tokenizer = create_open_clip(folder)
    zs = _zero_shot(model, tokenizer, _class_names(profile), templates).eval()
    zs.checkpoint_files = [folder / CONFIG_NAME, folder / WEIGHTS_NAME]
    return zs


def locate_lit_fare(profile: Any, name: str, spec: dict[str, Any]) -> list[tuple[Any, str]] | None:
    """The model folder's files :func:`load_lit_fare` would load, with their SHA-256 checked against its
    ``checksums.json``, without loading them (None if the base or the fine-tune is not trained yet, or damaged).
    """
    from .openclip_factory import WEIGHTS_NAME

    _check_fare_spec(spec)
    base_spec = {"source": "lit", **spec["base"]}
    released = locate_released("lit-fare", profile, spec, base_spec, CODE_VERSION)
    if released is not None:
        return released
    if not (model_dir("lit", profile, base_spec) / WEIGHTS_NAME).is_file():
        return None
    return locate_model_folder(fare_dir(profile, {**spec, "base": base_spec}))


__all__ = ["CODE_VERSION", "fare_dir", "fare_record", "load_lit_fare", "locate_lit_fare", "pgd_accuracy",
           "train_fare"]
