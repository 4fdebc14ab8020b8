"""Attacks from the literature on rejecting (selective) classifiers, for Multi-Shield and the confidence rejector.

Both run the APGD core (step schedule, checkpoints, restarts, per-sample state) with a loss aimed at the one
outcome that breaks a rejecting model: a wrong answer that is *accepted*.

- ``apgd-disagree`` after Palumbo et al. (ICML 2024, "Two heads are actually better than one"), whose
  attack on a disagreement rejector (reject when its members disagree, as Multi-Shield's classifier and VLM
  do) maximizes every member's cross-entropy on the true class while minimizing the members' disagreement:
  ``CE(f, y) + CE(scale·s, y) − KL(p_s ‖ p_f)`` (their ``disagreement_attack_loss``: members wrong *and*
  in agreement, so the defense accepts). A rejector that exposes no members (the confidence rejector's K+1
  logits) gets the same objective on its single output: the log-probability of an accepted wrong class,
  ``log Σ_{j ∉ {y, reject}} softmax(z)_j``.
- ``apgd-detector``: the detector-aware objective (Carlini & Wagner 2017, as Tramèr 2022 asks of any
  detector evaluation): the detector is one more class of a combined K+1-class model, attacked with the
  margin of the best class that is neither the true one nor "rejected", ``z_t − max(z_y, z_reject)``. The
  max puts the step on whichever of the two currently blocks success; the loss is positive exactly when
  the argmax of the K+1 logits is a wrong, accepted class, so loss and success rule cannot disagree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .agreement import VLM_SCALE, BranchOutputs, defense_broken, split
from .apgd import APGDResult


def disagreement_loss(z: torch.Tensor, y: torch.Tensor, scale: float = VLM_SCALE) -> torch.Tensor:
    """Palumbo et al.'s attack loss on the two members of Multi-Shield (``z`` = concat(f, s), see
    :class:`~mslib.attacks.agreement.BranchOutputs`): CE(f, y) + CE(scale·s, y) − KL(p_s ‖ p_f)."""
    f, s = split(z)
    vlm = s * scale
    kl = F.kl_div(F.log_softmax(f, dim=1), F.log_softmax(vlm, dim=1), reduction="none", log_target=True).sum(1)
    return F.cross_entropy(f, y, reduction="none") + F.cross_entropy(vlm, y, reduction="none") - kl


def _wrong_accepted(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """N×(K+1) mask of the classes that are neither y nor the rejection class (the last)."""
    mask = torch.ones_like(z, dtype=torch.bool)
    mask[torch.arange(z.shape[0], device=z.device), y] = False
    mask[:, -1] = False
    return mask


def accepted_wrong_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log Σ_{j ∉ {y, reject}} softmax(z)_j on K+1 logits: the log-probability of an accepted wrong answer."""
    wrong = z.masked_fill(~_wrong_accepted(z, y), float("-inf"))
    return torch.logsumexp(wrong, dim=1) - torch.logsumexp(z, dim=1)


def detector_margin_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_t − max(z_y, z_reject) on K+1 logits, t the best class that is neither y nor reject (> 0: broken)."""
    best_wrong = z.masked_fill(~_wrong_accepted(z, y), float("-inf")).max(dim=1).values
    return best_wrong - torch.maximum(z[torch.arange(z.shape[0], device=z.device), y], z[:, -1])


def disagreement_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                        vlm_scale: float = VLM_SCALE, **kw) -> APGDResult:
    """APGD on Palumbo et al.'s objective: Multi-Shield's two members (``model.branches``) wrong and agreeing,
    or, for a rejector without members, :func:`accepted_wrong_loss` on its K+1 logits."""
    from . import apgd_restarts  # the package's restart loop (imported late: the package imports us)

    if hasattr(model, "branches") and hasattr(model, "tolerance"):
        def loss_fn(z: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
            return disagreement_loss(z, yy, vlm_scale)

        return apgd_restarts(BranchOutputs(model), x, y, eps, loss_fn=loss_fn,
                             success_fn=defense_broken(model.tolerance), **kw)
    return apgd_restarts(model, x, y, eps, loss_fn=accepted_wrong_loss,
                         success_fn=losses.misclassified_not_rejected, **kw)


def detector_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kw) -> APGDResult:
    """APGD on the detector-aware margin :func:`detector_margin_loss` of a rejecting model's K+1 logits."""
    from . import apgd_restarts

    return apgd_restarts(model, x, y, eps, loss_fn=detector_margin_loss,
                         success_fn=losses.misclassified_not_rejected, **kw)


__all__ = ["accepted_wrong_loss", "detector_attack", "detector_margin_loss", "disagreement_attack",
           "disagreement_loss"]
