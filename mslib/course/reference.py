"""Reference solutions of the course's exercises: what :mod:`mslib.course.check` compares a student's code with.

Reading this file is reading the answers. Lessons fall back on these functions (through
:func:`mslib.course.check.mine_or_reference`) while an exercise is not solved yet, so every notebook runs top
to bottom before its exercises are done. Each function is the textbook formula in a few lines, written for
clarity rather than speed; the library's own versions (``mslib.attack``, ``mslib.defense.decide``,
``mslib.metrics``) are what the lessons measure with.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ---- lesson 1: adversarial examples -----------------------------------------------------------------
def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The closest point to ``x_adv`` in the L∞ ball of radius eps around ``x`` that is also an image in [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): x + eps · sign(∇x CE(model(x), y)), clipped to [0, 1]."""
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    grad, = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0.0, 1.0).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """PGD (Madry et al. 2018): a uniform random start in the ball, then ``steps`` signed steps of size alpha,
    each projected back onto the ball ∩ [0, 1]."""
    x_adv = project(x + (2 * torch.rand_like(x) - 1) * eps, x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        grad, = torch.autograd.grad(loss, x_adv)
        x_adv = project(x_adv.detach() + alpha * grad.sign(), x, eps)
    return x_adv.detach()


# ---- lesson 2: strong attacks ------------------------------------------------------------------------
def dlr_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio per sample: −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3), π sorting z descending."""
    z_sorted = z.sort(dim=1, descending=True).values
    z_y = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    return -(z_y - others) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def apgd_checkpoints(n_iter: int) -> list[int]:
    """The iterations at which APGD may halve its step size: intervals of ⌊0.22N⌋, each next one ⌊0.03N⌋
    shorter but at least ⌊0.06N⌋ (each at least 1), up to N."""
    first, decrement, minimum = (max(int(f * n_iter), 1) for f in (0.22, 0.03, 0.06))
    points, t, k = [], 0, first
    while t + k <= n_iter:
        t += k
        points.append(t)
        k = max(k - decrement, minimum)
    return points


def momentum_step(x_k: torch.Tensor, x_prev: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, eps: float,
                  step: float, alpha: float = 0.75) -> torch.Tensor:
    """One APGD update: z = P(x_k + step · sign(grad)); x_next = P(x_k + alpha (z − x_k) + (1 − alpha)(x_k − x_prev))."""
    z = project(x_k + step * grad.sign(), x, eps)
    return project(x_k + alpha * (z - x_k) + (1 - alpha) * (x_k - x_prev), x, eps)


# ---- lesson 3: adversarial training ------------------------------------------------------------------
def fgsm_rs_perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                    delta0: torch.Tensor) -> torch.Tensor:
    """FGSM with a random start (Wong et al. 2020): from x0 = clip(x + delta0), one signed step of size alpha,
    projected onto the eps-ball around x and [0, 1]."""
    x0 = (x + delta0).clamp(0.0, 1.0).requires_grad_(True)
    loss = F.cross_entropy(model(x0), y)
    grad, = torch.autograd.grad(loss, x0)
    return project(x0.detach() + alpha * grad.sign(), x, eps)


def adversarial_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                     generator: torch.Generator) -> torch.Tensor:
    """The FGSM-RS training loss of a batch: CE of the model on its FGSM-RS examples (a differentiable scalar)."""
    delta0 = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    x_adv = fgsm_rs_perturb(model, x, y, eps, alpha, delta0)
    return F.cross_entropy(model(x_adv), y)


# ---- lesson 4: rejection -----------------------------------------------------------------------------
def class_embeddings(encode_text, classnames, templates) -> torch.Tensor:
    """(K, D): per class, normalize each template's text embedding, average them, normalize the average."""
    rows = []
    for name in classnames:
        emb = F.normalize(encode_text([t.format(name) for t in templates]).float(), dim=-1)
        rows.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(rows)


def multishield_decide(f: torch.Tensor, s: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Labels in 0..K: ŷ = argmax f, rejected (K) when max s − s_ŷ > tolerance."""
    y_hat = f.argmax(dim=1)
    gap = s.max(dim=1).values - s.gather(1, y_hat[:, None]).squeeze(1)
    return torch.where(gap > tolerance, torch.full_like(y_hat, f.shape[1]), y_hat)


def tolerance_sweep(f: torch.Tensor, s: torch.Tensor, y: torch.Tensor, tolerances):
    """Clean accuracy (a rejection is an error) and clean rejection rate of Multi-Shield at each tolerance."""
    import pandas as pd

    rows = []
    for tol in tolerances:
        pred = multishield_decide(f, s, tol)
        rows.append({"tolerance": tol, "clean_acc": (pred == y).float().mean().item(),
                     "clean_reject": (pred == f.shape[1]).float().mean().item()})
    return pd.DataFrame(rows)


# ---- lesson 5: adaptive attacks ----------------------------------------------------------------------
def reject_aware_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample CE(z, y) + CE(z, K) for K+1 logits whose last one means "rejected"."""
    reject = torch.full_like(y, z.shape[1] - 1)
    return F.cross_entropy(z, y, reduction="none") + F.cross_entropy(z, reject, reduction="none")


def outcome_breakdown(pred: torch.Tensor, y: torch.Tensor, reject_label: int) -> dict[str, float]:
    """Fractions correct / rejected / wrong (sum 1) and robust = correct + rejected."""
    correct = (pred == y).float().mean().item()
    rejected = (pred == reject_label).float().mean().item()
    return {"correct": correct, "rejected": rejected, "wrong": 1.0 - correct - rejected,
            "robust": correct + rejected}


def agreement_loss(f: torch.Tensor, s: torch.Tensor, target: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """Per sample log softmax(f)_t + log softmax(scale · s)_t: high when both branches favour the target t."""
    t = target[:, None]
    return F.log_softmax(f, dim=1).gather(1, t).squeeze(1) + F.log_softmax(scale * s, dim=1).gather(1, t).squeeze(1)


# ---- lesson 6: evaluating honestly -------------------------------------------------------------------
def worst_case(robust: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per sample: robust under every attack (logical AND of the boolean masks)."""
    masks = list(robust.values())
    out = masks[0].bool().clone()
    for m in masks[1:]:
        out &= m.bool()
    return out


def wilson_interval(count: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of count/n at the given z (1.96 for 95%)."""
    p = count / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


GRADIENT_FREE_FLAG = "a gradient-free attack beats the gradient attacks"
EPS_HALF_FLAG = "the defense at eps beats the classifier at eps/2"


def red_flags(gradient_acc: float, gradient_free_acc: float, defense_acc: float, clf_acc_half_eps: float
              ) -> list[str]:
    """The two sanity checks of lesson 6, as a list of the flags raised (robust accuracies as fractions)."""
    flags = []
    if gradient_free_acc < gradient_acc:
        flags.append(GRADIENT_FREE_FLAG)
    if defense_acc > clf_acc_half_eps:
        flags.append(EPS_HALF_FLAG)
    return flags
