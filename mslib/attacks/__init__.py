"""Attacks on models that map images in [0, 1] to logits, behind one entry point.

``mslib.attack(model, images, labels, name, eps, ...)`` returns adversarial images; ``run_attack`` returns
an :class:`AttackResult` with the success mask, per-iteration curves and the cost (forward/backward
passes, seconds). Attacks are registered as :class:`AttackSpec` entries in :data:`ATTACK_SPECS` (function, rejection-aware,
gradient-free, budget under a profile, the reader's name); adding one is one entry.

Randomness is per sample: the random start of sample ``i`` is drawn from a generator seeded by
``(seed, restart, indices[i])``, so results do not depend on the batch size, on how samples are sharded,
or on which other samples are attacked alongside.
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .._checks import check_eps, check_images, check_int, check_labels
from . import losses
from .apgd import APGDResult, apgd


@dataclass
class AttackResult:
    """Adversarial images (on CPU), success per sample, curves summed over batches, and cost."""

    x_adv: torch.Tensor
    success: torch.Tensor
    success_curve: list[int] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)
    n_forward: int = 0
    n_backward: int = 0
    n_branch_skipped: int = 0  # rows of backward passes whose VLM part was left out (it could only add zeros)
    n_branch_idle: int = 0  # rows on which it ran with a zero output gradient (other rows of the batch needed it)
    n_branch_recomputed: int = 0  # rows whose VLM forward ran again for a backward pass on fewer rows
    seconds: float = 0.0
    zero_grad: torch.Tensor | None = None  # int8 per sample: 1 zero input gradient at the start, 0 not, -1 unmeasured


# An attack function attacks one batch (already on the model's device) and returns an APGDResult-like
# object. Signature: fn(model, x, y, eps, *, n_iter, n_restarts, seed, indices, compact, **options).
AttackFn = Callable[..., APGDResult]


def sample_noise(shape: Sequence[int], indices: torch.Tensor, seed: int, restart: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """U[0, 1) noise of ``shape`` whose row ``j`` depends only on (seed, restart, indices[j])."""
    rows = []
    g = torch.Generator()
    for i in indices.tolist():
        h = hashlib.sha256(f"{seed}:{restart}:{i}".encode()).digest()
        g.manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
        rows.append(torch.rand(tuple(shape[1:]), generator=g))
    return torch.stack(rows).to(device=device, dtype=dtype) if rows else torch.empty(tuple(shape), device=device)


def apgd_restarts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, loss_fn: losses.LossFn,
                  success_fn: losses.SuccessFn, n_iter: int = 100, n_restarts: int = 1, seed: int = 0,
                  indices: torch.Tensor | None = None, compact: bool = True, rho: float = 0.75,
                  skip_fixed_points: bool = True, skip_idle_branches: bool = True) -> APGDResult:
    """APGD with restarts: samples already broken (clean or by an earlier restart) are not attacked again.
    ``skip_fixed_points=False`` attacks fixed points too, ``skip_idle_branches=False`` runs Multi-Shield's
    VLM backward pass where it can only add zeros (same results, for benchmarks of the skips)."""
    indices = torch.arange(x.shape[0]) if indices is None else indices
    with torch.no_grad():
        logits = model(x)
    success = success_fn(logits, y)
    total = APGDResult(x.clone(), success.clone(), torch.full((x.shape[0],), -float("inf"), device=x.device))
    total.n_forward = x.shape[0]
    for r in range(n_restarts):
        todo = (~total.success).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        noise = sample_noise(x.shape, indices[todo.cpu()], seed, r, device=x.device, dtype=x.dtype)
        res = apgd(model, x[todo], y[todo], eps, loss_fn, success_fn, noise, n_iter=n_iter, rho=rho, compact=compact,
                   skip_fixed_points=skip_fixed_points, skip_idle_branches=skip_idle_branches)
        total.absorb(todo, res)
    if not total.success_curve:
        total.success_curve = [int(total.success.sum())] * (n_iter + 1)
        total.loss_curve = [0.0] * (n_iter + 1)
    return total


def _apgd_variant(loss_fn: losses.LossFn, success_fn: losses.SuccessFn) -> AttackFn:
    def run(model, x, y, eps, **kw):
        return apgd_restarts(model, x, y, eps, loss_fn=loss_fn, success_fn=success_fn, **kw)

    run.__doc__ = f"APGD maximizing {loss_fn.__name__}, success = {success_fn.__name__}."
    return run


def apgd_budget(profile: Any) -> dict[str, Any]:
    """A gradient attack's budget under a profile: its iterations and restarts."""
    return {"n_iter": profile.n_iter, "n_restarts": profile.n_restarts}


@dataclass(frozen=True)
class AttackSpec:
    """One attack and everything its consumers need: the function, whether its success rule reads the last
    logit as "rejected", whether it uses gradients, its budget under a profile (the options that the plan
    keys and ``run_attack`` takes), and the reader's name and one-line description."""

    name: str
    fn: AttackFn
    label: str
    description: str
    reject_aware: bool = False
    gradient_free: bool = False
    budget: Callable[[Any], dict[str, Any]] = apgd_budget
    # the budget option that counts the attack's steps (its curves have one point per step, plus the start)
    steps_option: str = "n_iter"
    # where the attack means something else on one target (a transfer from the classifier or the VLM, the
    # paper's pair on Multi-Shield): target -> the one-line description there (else ``description``)
    on_target: dict[str, str] = field(default_factory=dict)
    # the reader's name on a target where it is not ``label`` plus the target (``labels`` adds "on the
    # classifier", "on the confidence rejector", ...): target -> the whole name there
    shown_on: dict[str, str] = field(default_factory=dict)
    # bump when a change to this attack's code changes what it returns: the keys of its results (and of the
    # results built on them) change with it, and only theirs
    version: int = 1

    def describe(self, target: str) -> str:
        """One line on what this attack does on ``target`` (``clf``, ``ms``, ``vlm``, ``conf``)."""
        return self.on_target.get(target, self.description)


# name -> spec; ATTACKS and REJECT_AWARE are views of it for callers that need only the function or the flag
ATTACK_SPECS: dict[str, AttackSpec] = {}
ATTACKS: dict[str, AttackFn] = {}
REJECT_AWARE: set[str] = set()


def register_attack(spec: AttackSpec) -> None:
    """Add an attack (one entry; tables, labels and the plan read it from here)."""
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"register_attack takes an AttackSpec, got {type(spec).__name__}")
    ATTACK_SPECS[spec.name] = spec
    ATTACKS[spec.name] = spec.fn
    if spec.reject_aware:
        REJECT_AWARE.add(spec.name)


def attack_spec(name: str) -> AttackSpec:
    """The registered spec of attack ``name``; an unknown name fails with the list of registered ones."""
    if name not in ATTACK_SPECS:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACK_SPECS)}")
    return ATTACK_SPECS[name]


for _spec in (
    AttackSpec("apgd-ce", _apgd_variant(losses.ce_loss, losses.misclassified), "APGD-CE",
               "APGD, cross-entropy of the true class",
               on_target={"clf": "non-adaptive: APGD-CE on the classifier, transferred",
                          "vlm": "transfer: APGD-CE on the VLM alone"}),
    AttackSpec("apgd-dlr", _apgd_variant(losses.dlr_loss, losses.misclassified), "APGD-DLR",
               "APGD, difference-of-logits ratio (scale-invariant)",
               on_target={"clf": "non-adaptive: APGD-DLR on the classifier, transferred",
                          "vlm": "transfer: APGD-DLR on the VLM alone (scale-invariant)"}),
    AttackSpec("apgd-ce-reject", _apgd_variant(losses.ce_reject_loss, losses.misclassified_not_rejected),
               "APGD-CE, rejection-aware", "APGD, CE on true + reject class", reject_aware=True,
               on_target={"ms": "adaptive (paper): APGD, CE on true + reject class"},
               shown_on={"ms": "APGD-CE, rejection-aware (adaptive, paper)",
                         "conf": "APGD-CE, rejection-aware (the paper’s loss), on the confidence rejector"}),
    # version 3: the two DLR terms divided on their own again, operation for operation as the original code
    # (version 2 shared the division: an exact zero gradient, a fixed point the original's attack is not)
    AttackSpec("apgd-dlr-reject", _apgd_variant(losses.dlr_reject_loss_paper, losses.misclassified_not_rejected),
               "APGD-DLR, rejection-aware", "APGD, DLR on true + reject class, after CE", reject_aware=True,
               on_target={"ms": "adaptive (paper): APGD, DLR on true + reject class, after CE"},
               shown_on={"ms": "APGD-DLR, rejection-aware (adaptive, paper)",
                         "conf": "APGD-DLR, rejection-aware (the paper’s loss), on the confidence rejector"}, version=3),
    AttackSpec("apgd-dlr-reject-excl",
               _apgd_variant(losses.dlr_reject_loss_excl, losses.misclassified_not_rejected),
               "APGD-DLR, rejection-aware, reject excluded",
               "APGD, DLR against the best class that is neither true nor reject", reject_aware=True,
               shown_on={"ms": "APGD-DLR, rejection-aware, reject excluded (stronger)",
                         "conf": "APGD-DLR, rejection-aware, reject excluded (stronger), on the confidence rejector"}),
):
    register_attack(_spec)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and parameters without gradients for the duration of an attack; restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def output_classes(model: nn.Module, x0: torch.Tensor) -> int:
    """The number of real classes K of ``model`` (K+1 outputs for a rejecting model, last = reject), from
    ``model.num_classes`` when it is an int, else from one forward pass on the single image ``x0``."""
    rejects = getattr(model, "rejects", False) is True
    k = getattr(model, "num_classes", None)
    if isinstance(k, int) and not isinstance(k, bool) and not rejects:
        return k
    with torch.no_grad():
        z = model(x0)
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] != x0.shape[0]:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"model must map a batch (N, C, H, W) to logits (N, K); got {shape} for {tuple(x0.shape)}")
    k = z.shape[1] - (1 if rejects else 0)
    if k < 2:
        raise ValueError(f"model must score at least 2 classes, got {z.shape[1]} output(s)")
    return k


def _check_rejecting(model: nn.Module, name: str) -> None:
    # A reject-aware success criterion reads the last logit as "rejected"; on a plain classifier that is a
    # real class, and the attack would silently report wrong numbers.
    if name in REJECT_AWARE and getattr(model, "rejects", False) is not True:
        raise ValueError(f"attack {name!r} needs a rejecting model (K+1 logits, last = reject): model must "
                         f"declare rejects = True, as mslib.MultiShield does; got a {type(model).__name__} "
                         "without it")
    # The converse: a plain attack reads the reject logit as one more wrong class, so a rejection would count
    # as a break and every rate built on it would be wrong.
    if name not in REJECT_AWARE and getattr(model, "rejects", False) is True:
        raise ValueError(f"attack {name!r} counts a rejection as a success, but {type(model).__name__} rejects "
                         f"(rejects = True): use a rejection-aware attack, one of {sorted(REJECT_AWARE)}")


def run_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, name: str, eps: float,
               n_iter: int = 100, n_restarts: int = 1, seed: int = 0, batch_size: int = 250,
               indices: torch.Tensor | None = None, compact: bool = True, progress: bool = False,
               **options) -> AttackResult:
    """Run attack ``name`` batch by batch; see :func:`attack`. Returns an :class:`AttackResult`.

    Inputs are checked once per call: float64/float16/bfloat16 images are cast to float32 (so ``x_adv``
    is float32), integer labels of any dtype are cast to int64 and must lie in 0..K−1 for the model's K.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (images in [0, 1] -> logits), got {type(model).__name__}")
    if not isinstance(name, str) or name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {sorted(ATTACK_SPECS)}")
    _check_rejecting(model, name)
    if "reject" in options:  # the rejection-aware variant is its own attack, checked against the model above
        raise ValueError(f"run_attack takes no option 'reject': choose the rejection-aware attack by name "
                         f"(e.g. 'square-reject', 'apgd-ce-reject'), not {name!r} with reject=...")
    images = check_images(images)
    eps = check_eps(eps, "eps")
    check_int(n_iter, "n_iter", 1)
    check_int(n_restarts, "n_restarts", 1)
    check_int(batch_size, "batch_size", 1)
    check_int(seed, "seed", 0)
    indices = torch.arange(images.shape[0]) if indices is None else torch.as_tensor(indices).cpu()
    if indices.shape != (images.shape[0],):
        raise ValueError(f"indices must have shape ({images.shape[0]},), got {tuple(indices.shape)}")
    fn = ATTACKS[name]
    device = model_device(model)
    out = AttackResult(images.clone(), torch.zeros(images.shape[0], dtype=torch.bool))
    t0 = time.perf_counter()
    starts = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{name} eps={eps:g}", unit="batch", leave=False)
    with frozen(model):  # eval mode for the one forward pass that may be needed to learn K
        labels = check_labels(labels, images.shape[0], num_classes=output_classes(model, images[:1].to(device)))
        for s in starts:
            sl = slice(s, s + batch_size)
            x = images[sl].to(device)
            y = labels[sl].to(device)
            res = fn(model, x, y, eps, n_iter=n_iter, n_restarts=n_restarts, seed=seed, indices=indices[sl],
                     compact=compact, **options)
            out.x_adv[sl] = res.x_adv.detach().cpu()
            out.success[sl] = res.success.cpu()
            out.success_curve = _add(out.success_curve, res.success_curve)
            out.loss_curve = _add(out.loss_curve, [v * x.shape[0] for v in res.loss_curve])
            out.n_forward += res.n_forward
            out.n_backward += res.n_backward
            out.n_branch_skipped += getattr(res, "n_branch_skipped", 0)
            out.n_branch_idle += getattr(res, "n_branch_idle", 0)
            out.n_branch_recomputed += getattr(res, "n_branch_recomputed", 0)
            if getattr(res, "zero_grad", None) is not None:
                if out.zero_grad is None:
                    out.zero_grad = torch.full((images.shape[0],), -1, dtype=torch.int8)
                out.zero_grad[sl] = res.zero_grad.cpu()
    out.loss_curve = [v / max(images.shape[0], 1) for v in out.loss_curve]
    out.seconds = time.perf_counter() - t0
    check_perturbation(images, out.x_adv, eps)
    return out


def _add(a: list, b: list) -> list:
    if not a:
        return list(b)
    n = max(len(a), len(b))
    a = a + [a[-1]] * (n - len(a))
    b = list(b) + [b[-1]] * (n - len(b)) if b else [0] * n
    return [u + v for u, v in zip(a, b)]


def check_perturbation(images: torch.Tensor, x_adv: torch.Tensor, eps: float, slack: float = 1e-6) -> None:
    """Raise if an adversarial image leaves [0, 1] or the L∞ ball of radius eps (+ slack) around its input."""
    if x_adv.shape != images.shape:
        raise RuntimeError(f"attack returned shape {tuple(x_adv.shape)} for inputs {tuple(images.shape)}")
    if torch.isnan(x_adv).any() or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError("attack returned images outside [0, 1]")
    dist = (x_adv - images).abs().reshape(images.shape[0], -1).max(dim=1).values
    if (dist > eps + slack).any():
        raise RuntimeError(f"attack exceeded the L∞ budget: max distance {dist.max().item():.6g} > eps {eps:g}")


def attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, name: str, eps: float,
           n_iter: int = 100, n_restarts: int = 1, seed: int = 0, batch_size: int = 250, **options) -> torch.Tensor:
    """Adversarial images for ``model`` (images in [0, 1] → logits) under attack ``name`` at L∞ radius eps.

    ``name``: one of :data:`ATTACKS` — ``apgd-ce``, ``apgd-dlr`` (AutoAttack's APGD), ``apgd-ce-reject``,
    ``apgd-dlr-reject`` (for a model whose last logit means "rejected": loss on the true plus the
    rejection class; success only when the prediction is neither), and the attacks registered by
    :mod:`mslib.attacks`' other modules; the rejection-aware ones need a model with ``rejects = True``.
    ``eps`` is in image units (0 < eps < 1; 8/255, not 8). Seeded and reproducible; every returned image is
    float32, lies in [0, 1] and within eps of its input. Samples that are already misclassified are
    returned unchanged. Bad input raises ``TypeError``/``ValueError`` naming the argument.
    """
    return run_attack(model, images, labels, name, eps, n_iter=n_iter, n_restarts=n_restarts, seed=seed,
                      batch_size=batch_size, **options).x_adv


__all__ = ["ATTACKS", "ATTACK_SPECS", "AttackResult", "AttackSpec", "REJECT_AWARE", "apgd_budget", "apgd_restarts",
           "attack", "attack_spec", "check_perturbation", "frozen", "output_classes", "register_attack", "run_attack",
           "sample_noise"]

# ---- stronger adaptive attacks on rejecting models: one registry entry each ----------------------------
from . import agreement, selective, square  # noqa: E402

for _spec in (
    AttackSpec("agreement", agreement.agreement_attack, "agreement attack, joint loss",
               "agreement: targeted APGD on both branches (joint loss)", reject_aware=True,
               budget=agreement.joint_budget),
    AttackSpec("agreement-selective", agreement.agreement_selective, "agreement attack, selective loss",
               "agreement: targeted APGD on the blocking branch (selective)", reject_aware=True,
               budget=agreement.selective_budget),
    AttackSpec("apgd-disagree", selective.disagreement_attack, "APGD, disagreement loss (Palumbo et al. 2024)",
               "APGD on members wrong and agreeing (Palumbo et al. 2024); accepted-and-wrong on a "
               "single-model rejector", reject_aware=True),
    AttackSpec("apgd-detector", selective.detector_attack, "APGD, detector-aware margin (Tramèr 2022)",
               "APGD on the margin of the best class that is neither true nor reject (detector as class K+1)",
               reject_aware=True),
    # version 2: a draw that leaves the point where it is is not queried (fewer forwards; on a model whose
    # rounding depends on the batch, margins equal to the last ulp can then be compared differently)
    AttackSpec("square", square.square_attack, "Square", "gradient-free: Square Attack, margin",
               gradient_free=True, budget=square.budget, steps_option="n_queries", version=2),
    AttackSpec("square-reject", square.square_reject, "Square, rejection-aware",
               "gradient-free: Square Attack, rejection-aware margin", reject_aware=True, gradient_free=True,
               budget=square.budget, steps_option="n_queries", version=2,
               shown_on={"ms": "Square, rejection-aware (gradient-free)",
                         "conf": "Square, rejection-aware (gradient-free), on the confidence rejector"}),
):
    register_attack(_spec)
