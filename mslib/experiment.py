"""Experiments: (profile, classifier, target, attack, eps) → cached adversarial examples and predictions.

A :class:`Runner` holds one (profile, dataset) setting: its evaluation set and its models. ``clean(clf)``
and ``attacked(clf, target, attack, eps)`` return the classifier logits ``f`` and the VLM similarities
``s`` on clean and adversarial inputs, from which every metric of the study (classifier, VLM, Multi-Shield
at any tolerance) is computed without touching a model again.

Results live in ``data/results/<key>/`` (``record.json`` says what produced them) as one file per batch,
written atomically, so a killed run loses at most the batch in flight and a rerun skips finished batches.
``shard=(i, n)`` runs batches i, i+n, i+2n, ...; shards merge into exactly the unsharded result, because
random starts are keyed by sample index (see :mod:`mslib.attacks`).

Across an eps sweep a sample broken at a smaller eps is not attacked again: its adversarial example lies
inside every larger ball, so it is reused, and the security curve is monotone by construction. The record
of a result therefore names the smaller eps values (``eps_chain``) it builds on.

Targets: ``clf`` (the classifier alone: the non-adaptive attack, transferred to Multi-Shield), ``ms``
(Multi-Shield's K+1 logits: the adaptive attacks), ``vlm`` (the VLM alone, similarities × 100 as logits).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from .attacks import ATTACKS, REJECT_AWARE, frozen, run_attack
from .cache import entry_dir, load_tensors, save_tensors
from .defense import MultiShield, decide
from .profiles import Profile, get_profile

CODE_VERSION = "mslib-attacks-1"  # bump when a change to the attacks changes their results
TARGETS = ("clf", "ms", "vlm")
VLM_LOGIT_SCALE = 100.0

# The attacks the study runs, per target, at every eps of the profile's grid (and at profile.eps).
STUDY_PLAN: dict[str, tuple[str, ...]] = {
    "clf": ("apgd-ce", "apgd-dlr"),
    "ms": ("apgd-ce-reject", "apgd-dlr-reject"),
}


# ---- the worst-case ensemble against Multi-Shield (issue 7) -------------------------------------------
ADAPTIVE_CODE_VERSION = "mslib-adaptive-1"  # bump when a change to the ensemble's extra attacks changes results
# (target, attack) in the order they run. Those in STUDY_PLAN are computed alone (over the whole eps grid);
# the others only at the requested eps (the profile's) and only on the samples that every earlier attack
# left unbroken (AutoAttack's scheme), so each of their results holds the worst case so far. A sample is
# broken when Multi-Shield outputs a wrong class that is not "rejected".
ENSEMBLE: tuple[tuple[str, str], ...] = (
    ("clf", "apgd-ce"), ("clf", "apgd-dlr"),               # non-adaptive: transferred from the classifier
    ("ms", "apgd-ce-reject"), ("ms", "apgd-dlr-reject"),   # the paper's adaptive attacks
    ("vlm", "apgd-ce"),                                    # transferred from the VLM alone
    ("ms", "agreement"), ("ms", "agreement-selective"),    # both branches driven to one wrong class
    ("ms", "square-reject"),                               # gradient-free check for gradient masking
)
SQUARE_QUERIES_PER_ITER = 1  # Square's default budget: profile.n_iter × this queries (forward passes only)


def attack_options(profile: Profile, attack: str) -> dict[str, Any]:
    """``run_attack`` keyword arguments of the ensemble's extra attacks, driven by the profile.

    On CPU a VLM forward+backward dominates the cost and every sample that survives the ensemble pays each
    attack's full budget, so the defaults stay near one APGD run in all: the agreement attack tries
    ``agreement_targets`` (3) targets with ``agreement_iters`` (n_iter // 5) iterations each, its selective
    variant ``selective_targets`` (1) with ``selective_iters`` (n_iter // 5), Square ``square_queries``
    (n_iter × SQUARE_QUERIES_PER_ITER) forward passes. Keys of ``profile.extra`` override these defaults
    (a GPU run should raise them, e.g. Square to AutoAttack's 5000 queries).
    """
    ex, n = profile.extra, profile.n_iter
    if attack == "agreement":
        return {"n_targets": int(ex.get("agreement_targets", 3)),
                "n_iter": int(ex.get("agreement_iters", max(n // 5, 5)))}
    if attack == "agreement-selective":
        return {"n_targets": int(ex.get("selective_targets", 1)),
                "n_iter": int(ex.get("selective_iters", max(n // 5, 5)))}
    if attack.startswith("square"):
        return {"n_queries": int(ex.get("square_queries", SQUARE_QUERIES_PER_ITER * n))}
    return {}


def in_study_plan(target: str, attack: str) -> bool:
    """Whether (target, attack) is computed alone over the eps grid (else only as an ensemble stage)."""
    return attack in STUDY_PLAN.get(target, ())


PRECISIONS = ("fp32", "bf16")


class Autocast(nn.Module):
    """Runs ``module`` under CUDA autocast (bf16) and returns float32 outputs, so attack math stays float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    @property
    def num_classes(self) -> int | None:
        return getattr(self.module, "num_classes", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=self.dtype):
            return self.module(x).float()


def speed_settings(profile: Profile) -> dict[str, Any]:
    """The profile's CUDA speed settings that are in effect (empty on CPU or when off), for result records."""
    if profile.precision not in PRECISIONS:
        raise ValueError(f"profile precision must be one of {PRECISIONS}, got {profile.precision!r}")
    if not str(profile.device).startswith("cuda"):
        return {}
    out: dict[str, Any] = {}
    if profile.precision != "fp32":
        out["precision"] = profile.precision
    if profile.channels_last:
        out["channels_last"] = True
    return out


def prepare_model(model: nn.Module, profile: Profile) -> nn.Module:
    """Move a loaded model to the profile's device and apply its CUDA speed settings (channels_last, bf16)."""
    settings = speed_settings(profile)
    model = model.to(profile.device)
    if settings.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    if settings.get("precision") == "bf16":
        model = Autocast(model)
    return model


class ScaledLogits(nn.Module):
    """A VLM's cosine similarities times a CLIP-like logit scale, so CE-based attacks get useful gradients."""

    def __init__(self, vlm: nn.Module, scale: float = VLM_LOGIT_SCALE) -> None:
        super().__init__()
        self.vlm = vlm
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vlm(x) * self.scale


def _require_assets(profile: Profile) -> None:
    try:
        from .fetch import require_assets
    except ImportError:  # the paper-asset checker is optional for the offline profiles
        return
    require_assets(profile.name)


@dataclass
class Outputs:
    """Classifier logits and VLM similarities on some inputs (N×K each), with the attack's bookkeeping."""

    f: torch.Tensor
    s: torch.Tensor
    x_adv: torch.Tensor | None = None
    success: torch.Tensor | None = None
    success_curve: list[float] | None = None
    loss_curve: list[float] | None = None
    n_forward: int = 0
    seconds: float = 0.0

    def clf_pred(self) -> torch.Tensor:
        return self.f.argmax(dim=1)

    def vlm_pred(self) -> torch.Tensor:
        return self.s.argmax(dim=1)

    def ms_pred(self, tolerance: float) -> torch.Tensor:
        return decide(self.f, self.s, tolerance)


class Runner:
    """Cached evaluation of one (profile, dataset): clean and adversarial outputs of its models."""

    def __init__(self, profile: Profile | str, dataset: str | None = None, progress: bool = True,
                 shard: tuple[int, int] | None = None, compact: bool = True) -> None:
        from .data import load_eval_set

        self.profile = get_profile(profile, dataset) if isinstance(profile, str) else profile
        _require_assets(self.profile)
        if shard is not None:
            i, n = shard
            if not (isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
                raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
        self.shard = shard
        self.progress = progress
        self.compact = compact
        self.images, self.labels, self.class_names, self.indices = load_eval_set(self.profile, with_indices=True)
        self.num_classes = len(self.class_names)
        self._classifiers: dict[str, nn.Module] = {}
        self._vlm: nn.Module | None = None

    # ---- models ----------------------------------------------------------------------------------------
    def classifier(self, name: str) -> nn.Module:
        if name not in self._classifiers:
            from .models import load_classifier

            self._classifiers[name] = prepare_model(load_classifier(self.profile, name), self.profile)
        return self._classifiers[name]

    def vlm(self) -> nn.Module:
        if self._vlm is None:
            from .models import load_vlm

            self._vlm = prepare_model(load_vlm(self.profile), self.profile)
        return self._vlm

    def defense(self, clf: str, tolerance: float | None = None) -> MultiShield:
        tol = self.profile.tolerance if tolerance is None else tolerance
        return MultiShield(self.classifier(clf), self.vlm(), tolerance=tol)

    def target_model(self, clf: str, target: str) -> nn.Module:
        if target == "clf":
            return self.classifier(clf)
        if target == "ms":
            return self.defense(clf)
        if target == "vlm":
            return ScaledLogits(self.vlm())
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")

    # ---- records ---------------------------------------------------------------------------------------
    def _base_record(self, clf: str) -> dict[str, Any]:
        p = self.profile
        idx = self.indices.tolist()
        return {
            "profile": p.name, "dataset": p.dataset, "data_options": p.data_options,
            "n_samples": len(idx), "indices_sha256": hashlib.sha256(str(idx).encode()).hexdigest(),
            "classifier": {"name": clf, "spec": p.classifier_specs[clf]},
            "vlm": {"name": p.vlm, "spec": p.vlm_spec, "templates": list(p.templates)},
            "batch_size": p.batch_size, **speed_settings(p),
        }

    def eps_chain(self, eps: float) -> list[float]:
        """The grid's eps values below ``eps`` (ascending) that a result at ``eps`` builds on."""
        return sorted(e for e in self.profile.eps_grid if 0 < e < eps)

    def attack_record(self, clf: str, target: str, attack: str, eps: float) -> dict[str, Any]:
        p = self.profile
        return {
            "kind": "attack", "code": CODE_VERSION, **self._base_record(clf), "target": target, "attack": attack,
            "eps": float(eps), "eps_chain": self.eps_chain(eps), "n_iter": p.n_iter, "n_restarts": p.n_restarts,
            "seed": p.seed, "tolerance": p.tolerance if target == "ms" else None, "compact": self.compact,
        }

    # ---- batches ---------------------------------------------------------------------------------------
    def _batches(self) -> list[int]:
        starts = list(range(0, self.images.shape[0], self.profile.batch_size))
        if self.shard is not None:
            i, n = self.shard
            starts = starts[i::n]
        return starts

    def _evaluate(self, clf: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        classifier, vlm = self.classifier(clf), self.vlm()  # load (maybe train) outside inference mode
        with torch.inference_mode():
            x = x.to(self.profile.device)
            return classifier(x).float().cpu(), vlm(x).float().cpu()

    def _merge(self, folder, starts: Iterable[int], cat: tuple[str, ...], keep: tuple[str, ...] = ()
               ) -> dict[str, Any]:
        """Per-sample tensors (``cat``) concatenated over batches; per-batch values (``keep``) as lists."""
        parts = [load_tensors(folder / f"batch_{b:07d}.pt") for b in starts]
        out: dict[str, Any] = {k: torch.cat([pt[k] for pt in parts]) for k in cat}
        out.update({k: [pt[k] for pt in parts] for k in keep})
        return out

    def _missing(self, folder, starts: list[int]) -> list[int]:
        return [b for b in starts if not (folder / f"batch_{b:07d}.pt").exists()]

    def _complete_or_raise(self, folder, what: str) -> list[int]:
        all_starts = list(range(0, self.images.shape[0], self.profile.batch_size))
        missing = self._missing(folder, all_starts)
        if missing:
            raise RuntimeError(f"{what}: {len(missing)} of {len(all_starts)} batches are not computed yet "
                               f"(sharded run in progress?); run the remaining shards, then merge ({folder})")
        return all_starts

    # ---- results ---------------------------------------------------------------------------------------
    def clean(self, clf: str) -> Outputs:
        """Classifier logits and VLM similarities on the clean evaluation set (cached)."""
        folder = entry_dir("results", {"kind": "clean", **self._base_record(clf)})
        bs = self.profile.batch_size
        for b in self._missing(folder, self._batches()):
            f, s = self._evaluate(clf, self.images[b:b + bs])
            save_tensors({"f": f, "s": s}, folder / f"batch_{b:07d}.pt")
        if self.shard is not None and self._missing(folder, list(range(0, self.images.shape[0], bs))):
            return None  # type: ignore[return-value]
        merged = self._merge(folder, self._complete_or_raise(folder, "clean outputs"), ("f", "s"))
        return Outputs(merged["f"], merged["s"])

    def attacked(self, clf: str, target: str, attack: str, eps: float) -> Outputs | None:
        """Outputs on adversarial examples of ``attack`` against ``target`` at L∞ radius ``eps`` (cached).

        With a shard set, computes only that shard's batches and returns None until all shards are done.
        """
        bs = self.profile.batch_size
        if not self.ensure(clf, target, attack, eps) and self.shard is not None:
            return None
        folder = entry_dir("results", self.attack_record(clf, target, attack, eps))
        starts = self._complete_or_raise(folder, f"{attack} on {target} at eps={eps:g}")
        m = self._merge(folder, starts, ("f", "s", "x_adv", "success"),
                        ("success_curve", "loss_curve", "n_forward", "seconds"))
        return Outputs(m["f"], m["s"], m["x_adv"], m["success"], _sum_curves(m["success_curve"]),
                       _mean_curves(m["loss_curve"], [len(x) for x in torch.split(m["success"], bs)]),
                       int(sum(m["n_forward"])), float(sum(m["seconds"])))

    def ensure(self, clf: str, target: str, attack: str, eps: float) -> bool:
        """Compute this shard's missing batches of a result (not loading the others); True when all are done.

        Memory stays bounded by the batch size: each batch (and its smaller-eps counterpart) is read, attacked
        and written on its own.
        """
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; choose one of {sorted(ATTACKS)}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if attack in REJECT_AWARE and target != "ms":
            raise ValueError(f"{attack} needs a rejecting model: use target='ms'")
        p = self.profile
        folder = entry_dir("results", self.attack_record(clf, target, attack, eps))
        todo = self._missing(folder, self._batches())
        if todo:
            chain = self.eps_chain(eps)
            prev = None
            if chain:  # the smaller eps first (this shard's batches), read back one batch at a time
                self.ensure(clf, target, attack, chain[-1])
                prev = entry_dir("results", self.attack_record(clf, target, attack, chain[-1]))
            model = self.target_model(clf, target)
            bar = todo
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(todo, desc=f"{p.dataset}/{clf} {attack}@{target} eps={eps:g}", unit="batch", leave=False)
            with frozen(model):
                for b in bar:
                    self._attack_batch(model, clf, attack, eps, b, prev, folder)
        return not self._missing(folder, list(range(0, self.images.shape[0], p.batch_size)))

    def _attack_batch(self, model: nn.Module, clf: str, attack: str, eps: float, b: int,
                      prev_folder, folder) -> None:
        p = self.profile
        x = self.images[b:b + p.batch_size]
        y = self.labels[b:b + p.batch_size]
        t0 = time.perf_counter()
        x_adv = x.clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool)
        prev = None
        if prev_folder is not None:  # broken at a smaller eps: reuse, do not attack again
            prev = load_tensors(prev_folder / f"batch_{b:07d}.pt")
            done = prev["success"].clone()
            x_adv[done] = prev["x_adv"][done]
        todo = (~done).nonzero().squeeze(1)
        curve, loss_curve, n_fwd = [int(done.sum())] * (p.n_iter + 1), [0.0] * (p.n_iter + 1), 0
        if todo.numel():
            res = run_attack(model, x[todo], y[todo], attack, eps, n_iter=p.n_iter, n_restarts=p.n_restarts,
                             seed=p.seed, batch_size=p.batch_size, indices=self.indices[b:b + p.batch_size][todo],
                             compact=self.compact)
            x_adv[todo] = res.x_adv
            done[todo] = res.success
            curve = [int(done.sum()) - int(res.success.sum()) + c for c in res.success_curve]
            loss_curve = [v * todo.numel() / x.shape[0] for v in res.loss_curve]
            n_fwd = res.n_forward
        if prev is not None and todo.numel() < x.shape[0]:  # outputs on reused examples are known already
            f, s = prev["f"].clone(), prev["s"].clone()
            if todo.numel():
                f[todo], s[todo] = self._evaluate(clf, x_adv[todo])
        else:
            f, s = self._evaluate(clf, x_adv)
        save_tensors({"x_adv": x_adv, "f": f, "s": s, "success": done, "success_curve": torch.tensor(curve),
                      "loss_curve": torch.tensor(loss_curve), "n_forward": n_fwd,
                      "seconds": time.perf_counter() - t0}, folder / f"batch_{b:07d}.pt")


    # ---- the worst-case ensemble ---------------------------------------------------------------------
    def stage_record(self, clf: str, i: int, eps: float) -> dict[str, Any]:
        """Record of ensemble stage ``i`` (run on the samples that stages 0..i-1 left unbroken)."""
        target, attack = ENSEMBLE[i]
        return {**self.attack_record(clf, target, attack, eps), "kind": "ensemble-stage", "eps_chain": [],
                "tolerance": self.profile.tolerance, "adaptive_code": ADAPTIVE_CODE_VERSION,
                "options": attack_options(self.profile, attack), "after": [list(st) for st in ENSEMBLE[:i]]}

    def ensemble(self, clf: str, eps: float | None = None) -> list[tuple[str, str, Outputs]] | None:
        """(target, attack, outputs) for every attack of :data:`ENSEMBLE` at ``eps`` (default: the profile's).

        Outputs of STUDY_PLAN attacks are their stand-alone results; those of the other stages hold the
        worst case so far (samples broken earlier keep that adversarial example and are not attacked again).
        The worst case over the ensemble is the per-sample worst status over all of them. With a shard
        set, computes only that shard's batches and returns None until all shards are done.
        """
        eps = self.profile.eps if eps is None else eps
        if not self.ensure_ensemble(clf, eps) and self.shard is not None:
            return None
        out = []
        for i, (target, attack) in enumerate(ENSEMBLE):
            if in_study_plan(target, attack):
                out.append((target, attack, self.attacked(clf, target, attack, eps)))
                continue
            folder = entry_dir("results", self.stage_record(clf, i, eps))
            starts = self._complete_or_raise(folder, f"ensemble stage {attack} on {target} at eps={eps:g}")
            m = self._merge(folder, starts, ("f", "s", "x_adv", "success"),
                            ("success_curve", "loss_curve", "n_forward", "seconds"))
            sizes = [len(x) for x in torch.split(m["success"], self.profile.batch_size)]
            out.append((target, attack, Outputs(m["f"], m["s"], m["x_adv"], m["success"],
                                                _sum_curves(m["success_curve"]), _mean_curves(m["loss_curve"], sizes),
                                                int(sum(m["n_forward"])), float(sum(m["seconds"])))))
        return out

    def ensure_ensemble(self, clf: str, eps: float | None = None) -> bool:
        """Compute this shard's missing batches of every ensemble stage (nothing merged); True when all are done."""
        eps = self.profile.eps if eps is None else eps
        done = True
        for i, (target, attack) in enumerate(ENSEMBLE):
            done &= (self.ensure(clf, target, attack, eps) if in_study_plan(target, attack)
                     else self._ensure_stage(clf, i, eps))
        return done

    def _stage_folder(self, clf: str, j: int, eps: float):
        target, attack = ENSEMBLE[j]
        rec = self.attack_record(clf, target, attack, eps) if in_study_plan(target, attack) \
            else self.stage_record(clf, j, eps)
        return entry_dir("results", rec)

    def _ensure_stage(self, clf: str, i: int, eps: float) -> bool:
        """Stage ``i`` for this shard's batches, read and written one batch at a time (stages < i first)."""
        p = self.profile
        target, attack = ENSEMBLE[i]
        folder = entry_dir("results", self.stage_record(clf, i, eps))
        todo = self._missing(folder, self._batches())
        if todo:
            for j, (t_j, a_j) in enumerate(ENSEMBLE[:i]):  # earlier stages first (this shard's batches)
                if in_study_plan(t_j, a_j):
                    self.ensure(clf, t_j, a_j, eps)
                else:
                    self._ensure_stage(clf, j, eps)
            before = [self._stage_folder(clf, j, eps) for j in range(i)]
            model = self.target_model(clf, target)
            bar = todo
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(todo, desc=f"{p.dataset}/{clf} ensemble {attack}@{target} eps={eps:g}", unit="batch",
                           leave=False)
            with frozen(model):
                for b in bar:
                    self._stage_batch(model, clf, attack, eps, b, self._broken_before(b, before), folder)
        return not self._missing(folder, list(range(0, self.images.shape[0], p.batch_size)))

    def _broken_before(self, b: int, folders: list) -> dict[str, torch.Tensor]:
        """Batch ``b``: which samples the earlier stages (result folders) broke, with their examples and outputs."""
        p = self.profile
        y = self.labels[b:b + p.batch_size]
        part = {"success": torch.zeros(y.shape[0], dtype=torch.bool), "x_adv": self.images[b:b + p.batch_size].clone(),
                "f": None, "s": None}
        for folder in folders:
            t = load_tensors(folder / f"batch_{b:07d}.pt")
            if part["f"] is None:
                part["f"], part["s"] = t["f"].clone(), t["s"].clone()
            pred = decide(t["f"], t["s"], p.tolerance)
            new = (pred != y) & (pred != self.num_classes) & ~part["success"]
            for key in ("x_adv", "f", "s"):
                part[key][new] = t[key][new]
            part["success"] |= new
        return part

    def _stage_batch(self, model: nn.Module, clf: str, attack: str, eps: float, b: int,
                     prev: dict[str, torch.Tensor], folder) -> None:
        p = self.profile
        x = self.images[b:b + p.batch_size]
        y = self.labels[b:b + p.batch_size]
        t0 = time.perf_counter()
        x_adv, done = prev["x_adv"].clone(), prev["success"].clone()
        todo = (~done).nonzero().squeeze(1)
        curve, loss_curve, n_fwd = [int(done.sum())] * (p.n_iter + 1), [0.0] * (p.n_iter + 1), 0
        if todo.numel():
            opts = {"n_iter": p.n_iter, **attack_options(p, attack)}
            res = run_attack(model, x[todo], y[todo], attack, eps, n_restarts=p.n_restarts, seed=p.seed,
                             batch_size=p.batch_size, indices=self.indices[b:b + p.batch_size][todo],
                             compact=self.compact, **opts)
            x_adv[todo] = res.x_adv
            # the curve counts the attack's own successes (for the VLM transfer: the VLM fooled) on top of
            # the samples broken earlier
            curve = [int(done.sum()) + c for c in res.success_curve]
            loss_curve = [v * todo.numel() / x.shape[0] for v in res.loss_curve]
            n_fwd = res.n_forward
        if prev["f"] is not None and todo.numel() < x.shape[0]:  # outputs on kept examples are known already
            f, s = prev["f"].clone(), prev["s"].clone()
            if todo.numel():
                f[todo], s[todo] = self._evaluate(clf, x_adv[todo])
        else:
            f, s = self._evaluate(clf, x_adv)
        pred = decide(f, s, p.tolerance)
        broken = ((pred != y) & (pred != self.num_classes)) | done
        save_tensors({"x_adv": x_adv, "f": f, "s": s, "success": broken, "success_curve": torch.tensor(curve),
                      "loss_curve": torch.tensor(loss_curve), "n_forward": n_fwd,
                      "seconds": time.perf_counter() - t0}, folder / f"batch_{b:07d}.pt")


def _sum_curves(curves: list) -> list[float]:
    n = max(len(c) for c in curves)
    out = torch.zeros(n)
    for c in curves:
        c = torch.as_tensor(c, dtype=torch.float32)
        out += torch.cat([c, c[-1:].expand(n - len(c))]) if len(c) < n else c
    return out.tolist()


def _mean_curves(curves: list, sizes: list[int]) -> list[float]:
    total = _sum_curves([torch.as_tensor(c, dtype=torch.float32) * w for c, w in zip(curves, sizes)])
    return [v / max(sum(sizes), 1) for v in total]


def study_eps(profile: Profile) -> list[float]:
    """Every positive eps the study attacks at: the grid and the profile's eps."""
    return sorted({e for e in profile.eps_grid if e > 0} | {profile.eps})


def run_study(profile_name: str, shard: tuple[int, int] | None = None, progress: bool = True,
              plan: dict[str, tuple[str, ...]] | None = None, overrides: dict[str, Any] | None = None,
              compact: bool = True) -> bool:
    """Compute (or resume) every cached result the notebooks read. Returns True when all shards are done.

    ``overrides`` replace profile fields for every dataset (e.g. ``{"n_samples": 20}`` for a quick run);
    ``compact=False`` runs the attacks without batch compaction (a separate cache entry; for benchmarks).
    """
    plan = STUDY_PLAN if plan is None else plan
    complete = True
    for ds in get_profile(profile_name).datasets:
        prof = get_profile(profile_name, ds, **(overrides or {}))
        runner = Runner(prof, ds, progress=progress, shard=shard, compact=compact)
        jobs = [(clf, target, attack, eps) for clf in runner.profile.classifiers
                for target, attacks in plan.items() for attack in attacks for eps in study_eps(runner.profile)]
        bar: Iterable = jobs
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(jobs, desc=f"{profile_name}/{ds}", unit="attack")
        for clf in runner.profile.classifiers:
            complete &= runner.clean(clf) is not None
        for clf, target, attack, eps in bar:  # compute only; nothing is merged into memory here
            complete &= runner.ensure(clf, target, attack, eps)
        if plan is STUDY_PLAN:  # the default study also runs the worst-case ensemble at the profile's eps
            for clf in runner.profile.classifiers:
                complete &= runner.ensure_ensemble(clf)
    return complete


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` → (i, n) with 0 <= i < n."""
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compute the cached results of a profile's study.")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--shard", default=None, help="i/n: run only shard i of n (merge by running all shards)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        done = run_study(args.profile, parse_shard(args.shard))
    except FileNotFoundError as e:  # missing data or paper assets: one clear message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'complete' if done else 'shard finished'}: profile {args.profile} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
