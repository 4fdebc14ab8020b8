"""APGD (Croce & Hein 2020), L∞, with per-sample state and batch compaction.

The algorithm follows AutoAttack's ``APGDAttack.attack_single_run``: random start on the eps-ball surface,
step size 2·eps halved at checkpoints (p_0 = 0, p_1 = 0.22, shrinking by 0.03 down to 0.06 of n_iter) when
the loss oscillates or stalls, momentum 0.75, restart from the best point. Every piece of state (step size,
best loss, best point, loss history, checkpoint flags) is per sample, so a sample whose attack has
succeeded can leave the batch at once (``compact=True``) without changing what happens to the others: the
surviving samples follow exactly the trajectory they would in an uncompacted run.

Unlike AutoAttack, the loss and the success criterion are arguments, which is what the rejection-aware
variants need.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .losses import LossFn, SuccessFn


@dataclass
class APGDResult:
    """Outcome of one APGD run on a batch: adversarial points, success mask, per-iteration trace, cost."""

    x_adv: torch.Tensor
    success: torch.Tensor
    loss_best: torch.Tensor
    success_curve: list[int] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)
    n_forward: int = 0
    n_backward: int = 0
    # rows of backward passes whose second branch (Multi-Shield's VLM) was left out because its output
    # gradient was exactly zero there, rows on which it ran with a zero output gradient because other rows of
    # their batch needed it, and rows whose branch forward pass was run again for a backward pass on them alone
    n_branch_skipped: int = 0
    n_branch_idle: int = 0
    n_branch_recomputed: int = 0
    # per sample: 1 if the loss gradient w.r.t. the input was exactly zero at the first start point, 0 if
    # not, -1 if never measured (broken before any gradient step, or a gradient-free attack)
    zero_grad: torch.Tensor | None = None

    def absorb(self, todo: torch.Tensor, res: "APGDResult") -> None:
        """Merge a run on the samples ``todo`` (e.g. a restart) into this result: successes and better
        points replace the current ones, curves are appended (offset by the successes so far), costs add."""
        better = res.success | (res.loss_best > self.loss_best[todo]) | torch.isinf(self.loss_best[todo])
        self.x_adv[todo[better]] = res.x_adv[better]
        self.loss_best[todo] = torch.maximum(self.loss_best[todo], res.loss_best)
        self.success[todo] = res.success
        base = int(self.success.sum()) - int(res.success.sum())
        self.success_curve += [base + c for c in res.success_curve]
        self.loss_curve += list(res.loss_curve)
        self.n_forward += res.n_forward
        self.n_backward += res.n_backward
        self.n_branch_skipped += res.n_branch_skipped
        self.n_branch_idle += res.n_branch_idle
        self.n_branch_recomputed += res.n_branch_recomputed
        if res.zero_grad is not None:
            if self.zero_grad is None:
                self.zero_grad = torch.full((self.success.shape[0],), -1, dtype=torch.int8, device=res.zero_grad.device)
            first = self.zero_grad[todo] < 0  # keep each sample's first measurement (its first start point)
            self.zero_grad[todo[first]] = res.zero_grad[first]


def zero_gradient(grad: torch.Tensor) -> torch.Tensor:
    """Per sample: 1 (int8) where every entry of the input gradient is exactly zero, else 0.

    AutoAttack's ``check_zero_gradients`` idea, made exact: such a start point is a fixed point of APGD (the
    sign step, the momentum and the checkpoints all leave it where it is), e.g. under the paper's DLR
    rejection loss, whose two terms cancel when y and the rejection class are the two largest logits. A
    gradient that is merely tiny (1e-12, a saturated softmax) still has signs, and APGD's sign step moves.
    """
    return (grad.reshape(grad.shape[0], -1) == 0).all(dim=1).to(torch.int8)


def checkpoint_schedule(n_iter: int) -> tuple[int, int, int]:
    """AutoAttack's (first interval, decrement, minimum interval) in iterations."""
    return max(int(0.22 * n_iter), 1), max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)


def linf_random_start(x: torch.Tensor, eps: float, noise: torch.Tensor) -> torch.Tensor:
    """AutoAttack's L∞ start: x + eps · t/‖t‖∞ for t = 2u − 1, u ~ U[0, 1) given as ``noise``."""
    t = 2 * noise - 1
    norm = t.abs().reshape(t.shape[0], -1).max(dim=1).values.view(-1, *([1] * (t.dim() - 1)))
    return (x + eps * t / (norm + 1e-12)).clamp(0.0, 1.0)


def _loss_and_grad(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, res: APGDResult,
                   skip_idle_branches: bool):
    """Logits, loss and input gradient at ``x_adv``; a model with its own ``loss_and_grad`` (Multi-Shield:
    it leaves out a branch's backward pass that can only add zeros) computes them, and its work is counted."""
    own = getattr(model, "loss_and_grad", None)
    if own is not None:
        logits, loss, grad, work = own(x_adv, y, loss_fn, skip_idle_branches)
        res.n_branch_skipped += work.skipped
        res.n_branch_idle += work.idle
        res.n_branch_recomputed += work.recomputed
        return logits, loss, grad
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        loss = loss_fn(logits, y)
        grad = torch.autograd.grad(loss.sum(), [x_adv])[0].detach()
    return logits.detach(), loss.detach(), grad


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    loss_fn: LossFn,
    success_fn: SuccessFn,
    noise: torch.Tensor,
    n_iter: int = 100,
    rho: float = 0.75,
    compact: bool = True,
    x_init: torch.Tensor | None = None,
    skip_fixed_points: bool = True,
    skip_idle_branches: bool = True,
) -> APGDResult:
    """One APGD run from a random start (``noise`` ~ U[0,1), shape of ``x``) or from ``x_init``.

    Returns, per sample, the first point found that satisfies ``success_fn`` (else the last iterate's best
    point by loss) and whether one was found. With ``compact`` and ``skip_fixed_points``, a sample whose
    start point is a fixed point (exactly zero gradient, inside the projection's box) leaves the batch at
    once with that point as its result, which is exactly where the full run would leave it.
    ``skip_idle_branches`` lets a model with its own ``loss_and_grad`` leave out backward work that can only
    add zeros (the same bytes either way).
    """
    n = x.shape[0]
    dims = [1] * (x.dim() - 1)
    out_x = x.clone()
    out_success = torch.zeros(n, dtype=torch.bool, device=x.device)
    loss_best_all = torch.full((n,), -float("inf"), device=x.device)
    res = APGDResult(out_x, out_success, loss_best_all)

    idx = torch.arange(n, device=x.device)  # positions (in this batch) of the samples still attacked
    x_adv = x_init.clone() if x_init is not None else linf_random_start(x, eps, noise)
    x_adv = x_adv.clamp(0.0, 1.0)
    logits, loss, grad = _loss_and_grad(model, x_adv, y, loss_fn, res, skip_idle_branches)
    res.n_forward += n
    res.n_backward += n
    res.zero_grad = zero_gradient(grad)

    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
    out_x.copy_(x_adv)  # AutoAttack keeps the start as the fallback "adversarial" point
    loss_best_all[idx] = loss_best
    step = torch.full((n, *dims), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_adv_old = x_adv.clone()
    loss_steps = torch.zeros(n_iter, n, device=x.device)
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones_like(loss_best)
    k, size_decr, n_iter_min = checkpoint_schedule(n_iter)
    counter3 = 0
    ys = y
    # the projection onto the eps-ball ∩ [0, 1] as one clamp with per-pixel bounds (exactly the composition
    # of the two clamps: the intersection is never empty for x in [0, 1])
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    bshape = (-1, *dims)

    def record_success(succ: torch.Tensor, points: torch.Tensor) -> None:
        new = succ & ~out_success[idx]
        if new.any():
            out_x[idx[new]] = points[new]
            out_success[idx[new]] = True

    record_success(success_fn(logits, ys), x_adv)
    res.success_curve.append(int(out_success.sum()))
    res.loss_curve.append(float(loss_best_all.mean()))
    # A zero gradient makes the first step x + step·sign(0) = x and the momentum term 0, provided the start
    # already lies in the box [lo, hi] (the random start can exceed it by one rounding); the gradient there
    # is zero again, so every later step, checkpoint and restart-from-best keeps the same point.
    fixed = torch.zeros(n, dtype=torch.bool, device=x.device)
    if compact and skip_fixed_points:
        inside = ((x_adv >= lo) & (x_adv <= hi)).reshape(n, -1).all(dim=1)
        fixed = res.zero_grad.bool() & inside & ~out_success

    for i in range(n_iter):
        if compact:
            keep = ~out_success[idx] & ~fixed[idx]
            if not keep.all():
                (idx, lo, hi, ys, x_adv, x_adv_old, grad, grad_best, x_best, loss_best, step, loss_best_last_check,
                 reduced_last_check) = (t[keep] for t in (idx, lo, hi, ys, x_adv, x_adv_old, grad, grad_best, x_best,
                                                          loss_best, step, loss_best_last_check, reduced_last_check))
                loss_steps = loss_steps[:, keep]
            if idx.numel() == 0:
                res.success_curve.extend([int(out_success.sum())] * (n_iter - i))
                res.loss_curve.extend([float(loss_best_all.mean())] * (n_iter - i))
                break

        with torch.no_grad():
            grad2 = x_adv - x_adv_old
            x_adv_old = x_adv
            a = 0.75 if i > 0 else 1.0
            # step · sign(grad) is exact, so the fused multiply-add rounds exactly as x + step · sign(grad)
            x1 = torch.clamp(torch.addcmul(x_adv, step, torch.sign(grad)), lo, hi)
            x_adv = torch.clamp(x_adv + (x1 - x_adv) * a + grad2 * (1 - a), lo, hi)

        logits, loss, grad = _loss_and_grad(model, x_adv, ys, loss_fn, res, skip_idle_branches)
        res.n_forward += idx.numel()
        res.n_backward += idx.numel()
        record_success(success_fn(logits, ys), x_adv)

        with torch.no_grad():
            loss_steps[i] = loss
            improved = loss > loss_best
            if improved.all():  # common while the loss climbs: take the new tensors, no copy (never mutated)
                x_best, grad_best, loss_best = x_adv, grad, loss
            elif improved.any():  # one pass each instead of masked gather + scatter
                x_best = torch.where(improved.view(bshape), x_adv, x_best)
                grad_best = torch.where(improved.view(bshape), grad, grad_best)
                loss_best = torch.where(improved, loss, loss_best)
            loss_best_all[idx] = loss_best
            counter3 += 1
            if counter3 == k:
                increases = torch.zeros_like(loss_best)
                for c in range(k):
                    increases += (loss_steps[i - c] > loss_steps[i - c - 1]).float()
                osc = (increases <= k * rho).float()
                no_impr = (1.0 - reduced_last_check) * (loss_best_last_check >= loss_best).float()
                osc = torch.max(osc, no_impr)
                reduced_last_check = osc.clone()
                loss_best_last_check = loss_best.clone()
                flag = osc > 0
                if flag.any():
                    step[flag] /= 2.0
                    x_adv = x_adv.clone()
                    x_adv[flag] = x_best[flag]
                    grad[flag] = grad_best[flag]
                k = max(k - size_decr, n_iter_min)
                counter3 = 0
        res.success_curve.append(int(out_success.sum()))
        res.loss_curve.append(float(loss_best_all.mean()))

    # samples never broken: return their best-loss point (the most promising start for another attack)
    with torch.no_grad():
        failed = ~out_success[idx]
        out_x[idx[failed]] = x_best[failed]
    return res


def n_iter_checkpoints(n_iter: int) -> list[int]:
    """The iterations at which APGD may halve its step size (for plots and tests)."""
    k, dec, kmin = checkpoint_schedule(n_iter)
    points, t = [], 0
    while True:
        t += k
        if t > n_iter:
            return points
        points.append(t)
        k = max(k - dec, kmin)


__all__ = ["APGDResult", "apgd", "checkpoint_schedule", "linf_random_start", "n_iter_checkpoints", "zero_gradient"]
