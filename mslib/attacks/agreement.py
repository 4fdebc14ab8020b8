"""Agreement attacks on Multi-Shield: drive the classifier AND the VLM to the same wrong class.

Multi-Shield accepts a prediction ŷ = argmax f only when the VLM's similarity for ŷ is within ``tolerance``
of its best one. An attacker who knows this does not fight the rejection score; it looks for a class t ≠ y
that both branches can be pushed to (Carlini & Wagner 2017; Tramer et al. 2020): then ŷ = t and the VLM
agrees, so the defense outputs a wrong class without rejecting.

For each input, the candidate targets are the ``n_targets`` wrong classes with the highest joint clean score
log softmax(f) + log softmax(scale · s) (classes both models already find plausible), tried in that order;
a sample leaves as soon as the defense outputs a wrong, non-rejected class (the first success is kept).

Two losses, both run with the APGD core of :mod:`mslib.attacks.apgd` (step schedule, checkpoints,
per-sample state, compaction):

- ``joint``: log p_f(t) + log p_s(t) (targeted cross-entropies of both branches), so both gradients count.
- ``selective`` (in the spirit of Bryniarski et al. 2022, "Evading adversarial example detectors"): the
  loss of the branch that still blocks success — the classifier's while argmax f ≠ t, the VLM's once the
  classifier is at t — so one branch's gradient cannot cancel the other's under APGD's sign step. The two
  phases are squashed into (−1, 0] and (0, 1], so APGD's "best point" always prefers a point where the
  classifier is already at t.

The attack sees the defense through :class:`BranchOutputs` (images → concat(f, s)), and success is the
defense's own rule (:func:`mslib.defense.decide`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..defense import decide
from .apgd import APGDResult, apgd

VLM_SCALE = 100.0  # CLIP's logit scale: similarities × 100 give the VLM's class probabilities


class BranchOutputs(nn.Module):
    """A Multi-Shield defense seen as images → concat(classifier logits f, VLM similarities s), (N, 2K)."""

    def __init__(self, defense: nn.Module) -> None:
        super().__init__()
        self.defense = defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, s = self.defense.branches(x)
        return torch.cat([f, s.to(f.dtype)], dim=1)


def split(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, s) from a :class:`BranchOutputs` output."""
    k = z.shape[1] // 2
    return z[:, :k], z[:, k:]


def _squash(v: torch.Tensor) -> torch.Tensor:
    """Monotone map of (−∞, 0] onto (−1, 0] (gradients never underflow, unlike exp)."""
    return v / (1.0 + v.abs())


def joint_loss(z: torch.Tensor, yt: torch.Tensor, scale: float = VLM_SCALE) -> torch.Tensor:
    """log p_f(t) + log p_s(t) for targets t = yt[:, 1] (to maximize)."""
    f, s = split(z)
    t = yt[:, 1]
    return -(F.cross_entropy(f, t, reduction="none") + F.cross_entropy(s * scale, t, reduction="none"))


def selective_loss(z: torch.Tensor, yt: torch.Tensor, scale: float = VLM_SCALE) -> torch.Tensor:
    """The blocking branch's targeted log-probability: classifier's until argmax f = t, then the VLM's."""
    f, s = split(z)
    t = yt[:, 1]
    at_t = f.argmax(dim=1) == t
    lf = _squash(-F.cross_entropy(f, t, reduction="none"))
    ls = _squash(-F.cross_entropy(s * scale, t, reduction="none"))
    return torch.where(at_t, 1.0 + ls, lf)


def defense_broken(tolerance: float):
    """Success on :class:`BranchOutputs`: the defense outputs a class that is neither y = yt[:, 0] nor reject."""

    def success(z: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        f, s = split(z)
        y = yt[:, 0] if yt.dim() == 2 else yt
        pred = decide(f, s, tolerance)
        return (pred != y) & (pred != f.shape[1])

    return success


def candidate_targets(f: torch.Tensor, s: torch.Tensor, y: torch.Tensor, n_targets: int,
                      scale: float = VLM_SCALE) -> torch.Tensor:
    """(N, n_targets) wrong classes ranked by the joint clean score log softmax(f) + log softmax(scale·s)."""
    score = F.log_softmax(f.float(), dim=1) + F.log_softmax(s.float() * scale, dim=1)
    score[torch.arange(y.shape[0], device=y.device), y] = -float("inf")
    return score.topk(n_targets, dim=1).indices


def _check_defense(model: nn.Module) -> None:
    if not (hasattr(model, "branches") and hasattr(model, "tolerance")):
        raise TypeError("the agreement attacks need a Multi-Shield model (with .branches(x) and .tolerance), "
                        f"got {type(model).__name__}; use target 'ms'")


def agreement_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, n_iter: int = 100,
                     n_restarts: int = 1, seed: int = 0, indices: torch.Tensor | None = None,
                     compact: bool = True, n_targets: int = 3, loss: str = "joint",
                     vlm_scale: float = VLM_SCALE) -> APGDResult:
    """Targeted APGD on both branches of a Multi-Shield ``model`` over its top ``n_targets`` wrong classes.

    ``loss``: ``"joint"`` or ``"selective"`` (see the module docstring). Random starts are keyed by
    (seed, target rank · n_restarts + restart, sample index). Returns an :class:`APGDResult` whose success is
    "the defense outputs a wrong class and does not reject".
    """
    _check_defense(model)
    if loss not in ("joint", "selective"):
        raise ValueError(f"loss must be 'joint' or 'selective', got {loss!r}")
    from . import sample_noise  # the package's per-sample noise (imported late: the package imports us)

    indices = torch.arange(x.shape[0]) if indices is None else indices
    adapter = BranchOutputs(model)
    with torch.no_grad():
        z0 = adapter(x)
    f0, s0 = split(z0)
    k = f0.shape[1]
    if isinstance(n_targets, bool) or not isinstance(n_targets, int) or not 1 <= n_targets <= k - 1:
        raise ValueError(f"n_targets must be an integer in [1, {k - 1}] (the wrong classes), got {n_targets!r}")
    success_fn = defense_broken(model.tolerance)
    base_loss = joint_loss if loss == "joint" else selective_loss

    def loss_fn(z: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        return base_loss(z, yt, vlm_scale)

    targets = candidate_targets(f0, s0, y, n_targets, vlm_scale)
    total = APGDResult(x.clone(), success_fn(z0, y), torch.full((x.shape[0],), -float("inf"), device=x.device))
    total.n_forward = x.shape[0]
    for j in range(n_targets):
        for r in range(n_restarts):
            todo = (~total.success).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            yt = torch.stack([y[todo], targets[todo, j]], dim=1)
            noise = sample_noise(x.shape, indices[todo.cpu()], seed, j * n_restarts + r, device=x.device,
                                 dtype=x.dtype)
            res = apgd(adapter, x[todo], yt, eps, loss_fn, success_fn, noise, n_iter=n_iter, compact=compact)
            total.absorb(todo, res)
    if not total.success_curve:
        total.success_curve = [int(total.success.sum())] * (n_iter + 1)
        total.loss_curve = [0.0] * (n_iter + 1)
    return total


def joint_budget(profile: Any) -> dict[str, Any]:
    """The joint agreement attack's budget: ``profile.agreement_targets`` targets of ``agreement_iters``
    (0: n_iter // 5, at least 5) iterations each, so it costs about one APGD run."""
    return {"n_iter": profile.agreement_iters or max(profile.n_iter // 5, 5), "n_restarts": profile.n_restarts,
            "n_targets": profile.agreement_targets}


def selective_budget(profile: Any) -> dict[str, Any]:
    """The selective agreement attack's budget: ``profile.selective_targets`` targets of ``selective_iters``
    (0: n_iter // 5, at least 5) iterations each."""
    return {"n_iter": profile.selective_iters or max(profile.n_iter // 5, 5), "n_restarts": profile.n_restarts,
            "n_targets": profile.selective_targets}


def agreement_selective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kw) -> APGDResult:
    """:func:`agreement_attack` with the selective loss (step on the branch that still blocks success)."""
    return agreement_attack(model, x, y, eps, **{"loss": "selective", **kw})


__all__ = ["BranchOutputs", "agreement_attack", "agreement_selective", "candidate_targets", "defense_broken",
           "joint_loss", "selective_loss", "split"]
