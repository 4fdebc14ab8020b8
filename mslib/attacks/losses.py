"""Per-sample attack losses (to maximize) and success criteria on logits.

Plain losses act on K logits. The rejection-aware ("-reject") variants act on a model with a rejection
logit at index K (e.g. :class:`mslib.MultiShield`, K+1 logits): they add the loss on the true class and
the loss on the rejection class, and an attack succeeds only when the prediction is neither.
``dlr_reject_loss_paper`` is the original code's DLR version, ``dlr_reject_loss_excl`` a stronger one.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SuccessFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true class (untargeted: maximize)."""
    return F.cross_entropy(z, y, reduction="none")


def dlr_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), as in AutoAttack's APGD-DLR."""
    z_sorted, ind_sorted = z.sort(dim=1)
    top_is_y = (ind_sorted[:, -1] == y).to(z.dtype)
    u = torch.arange(z.shape[0], device=z.device)
    other = z_sorted[:, -2] * top_is_y + z_sorted[:, -1] * (1.0 - top_is_y)
    return -(z[u, y] - other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def _dlr_excluding(z: torch.Tensor, c: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """DLR margin of class ``c`` against the best class outside ``excluded`` (N×K bool mask)."""
    u = torch.arange(z.shape[0], device=z.device)
    best_other = z.masked_fill(excluded, float("-inf")).max(dim=1).values
    z_sorted = z.sort(dim=1).values
    return -(z[u, c] - best_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def ce_reject_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE on the true class plus CE on the rejection class (the last logit): Multi-Shield's adaptive loss."""
    reject = torch.full_like(y, z.shape[1] - 1)
    return F.cross_entropy(z, y, reduction="none") + F.cross_entropy(z, reject, reduction="none")


def dlr_reject_loss_paper(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The original Multi-Shield code's DLR rejection loss, as it computes it: AutoAttack's DLR of the true
    class plus AutoAttack's DLR of the rejection class (the last logit), each divided on its own
    (:func:`dlr_loss` twice: its loss and input gradient are bit-identical to AutoAttack's expression).

    When y and the rejection class are the two largest logits the two terms are exact negatives: the loss is
    exactly 0, but its input gradient is not. The backward pass sums each logit's contributions in an order
    that leaves a rounding residual (about 1e-9 of a gradient's usual size), and APGD steps by the *sign* of
    the gradient, so the paper's attack moves there anyway, along the signs of rounding errors. That walk
    breaks many samples (tiny, standard CNN: about half of those the CE stage leaves), so it is kept exactly
    as the original runs it; summing the terms before one division makes the gradient exactly 0 and the
    attack a fixed point, which reports a far higher robust accuracy than the paper's code on the same models.
    """
    reject = torch.full_like(y, z.shape[1] - 1)
    return dlr_loss(z, y) + dlr_loss(z, reject)


def dlr_reject_loss_excl(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DLR on the true class plus DLR on the rejection class, each against the best class that is neither.

    A stronger variant of :func:`dlr_reject_loss_paper`: excluding y and the rejection class from "best
    other" keeps a gradient when they are the two largest logits (where the paper's loss cancels to 0).
    """
    reject = torch.full_like(y, z.shape[1] - 1)
    excluded = torch.zeros_like(z, dtype=torch.bool)
    excluded[torch.arange(z.shape[0], device=z.device), y] = True
    excluded[:, -1] = True
    return _dlr_excluding(z, y, excluded) + _dlr_excluding(z, reject, excluded)


def misclassified(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Success of an untargeted attack: the predicted class is not the true one."""
    return z.argmax(dim=1) != y


def misclassified_not_rejected(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Success against a rejecting model (last logit = reject): the prediction is neither y nor reject."""
    pred = z.argmax(dim=1)
    return (pred != y) & (pred != z.shape[1] - 1)
