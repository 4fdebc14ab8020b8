"""Square Attack (Andriushchenko et al. 2020), L∞, as in AutoAttack: a gradient-free check.

Random search with square-shaped updates: start from vertical stripes of ±eps, then at query i draw one
square of side ≈ sqrt(p_i · H · W) (p_i from AutoAttack's schedule, p_init = 0.8, rescaled to the query
budget), set it to ±eps (one sign per channel) around the current best point, and keep the new point when
its margin is lower. If a defense only looks robust because its gradients are useless (masked, shattered,
obfuscated), a gradient-free attack is not fooled by that (Athalye et al. 2018; Tramer et al. 2020).

Unlike AutoAttack's implementation (one square position per query for the whole batch), every random draw
here is per sample, from :func:`mslib.attacks.sample_noise` keyed by (seed, restart, sample index), so a
sample's trajectory does not depend on the batch or shard it is in, and samples leave once they succeed.

``square-reject`` uses the rejection-aware margin for a model whose last logit means "rejected" (e.g.
Multi-Shield's K+1 logits): max(z_y, z_reject) − max over the other classes, and succeeds only on a wrong,
non-rejected prediction. ``square`` uses the plain margin z_y − max_{j≠y} z_j.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import losses
from .apgd import APGDResult

QUERIES_PER_ITER = 10  # default query budget of a direct call without n_queries: n_iter × this
P_INIT = 0.8  # AutoAttack's standard L∞ Square
NOISE_STREAM = 1_000_003  # offsets Square's restart index in the noise keys (apart from APGD's starts)


def p_schedule(i: int, n_queries: int, p_init: float = P_INIT) -> float:
    """AutoAttack's fraction of pixels per square at query ``i``, rescaled to a budget of ``n_queries``."""
    it = int(i / n_queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def margin(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{j≠y} z_j (≤ 0 once misclassified)."""
    u = torch.arange(z.shape[0], device=z.device)
    other = z.clone()
    other[u, y] = -float("inf")
    return z[u, y] - other.max(dim=1).values


def reject_margin(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max(z_y, z_reject) − max over classes that are neither y nor reject (last logit = reject)."""
    u = torch.arange(z.shape[0], device=z.device)
    other = z.clone()
    other[u, y] = -float("inf")
    other[:, -1] = -float("inf")
    return torch.maximum(z[u, y], z[:, -1]) - other.max(dim=1).values


def square_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, n_iter: int = 100,
                  n_restarts: int = 1, seed: int = 0, indices: torch.Tensor | None = None, compact: bool = True,
                  n_queries: int | None = None, p_init: float = P_INIT, reject: bool = False,
                  skip_unmoved: bool = True) -> APGDResult:
    """Square Attack with ``n_queries`` queries per restart (default ``n_iter × QUERIES_PER_ITER``).

    Returns an :class:`APGDResult` (x_adv, success, best margin as ``-loss_best``, curves per query, cost).
    ``compact`` is accepted for the common signature; broken samples always leave the batch.
    ``skip_unmoved=False`` also queries a draw that leaves the point unchanged (as AutoAttack does; the same
    result for a model whose output does not depend on the batch, for benchmarks of the skip).
    """
    from . import sample_noise  # the package's per-sample noise (imported late: the package imports us)

    n_queries = n_iter * QUERIES_PER_ITER if n_queries is None else n_queries
    if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries < 1:
        raise ValueError(f"n_queries must be an integer >= 1, got {n_queries!r}")
    if not (isinstance(p_init, (int, float)) and 0 < p_init <= 1):
        raise ValueError(f"p_init must be a number in (0, 1], got {p_init!r}")
    indices = torch.arange(x.shape[0]) if indices is None else indices
    margin_fn = reject_margin if reject else margin
    success_fn = losses.misclassified_not_rejected if reject else losses.misclassified
    n, c, h, w = x.shape
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)

    with torch.no_grad():
        z = model(x)
    out = APGDResult(x.clone(), success_fn(z, y), -margin_fn(z, y))
    out.n_forward = n
    for r in range(n_restarts):
        todo = (~out.success).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        # per sample: c·w stripe signs, then per query (row offset, column offset, c signs)
        noise = sample_noise((todo.numel(), c * w + n_queries * (2 + c)), indices[todo.cpu()], seed,
                             NOISE_STREAM + r, device=x.device, dtype=x.dtype)
        xs, ys = x[todo], y[todo]
        signs0 = (2 * (noise[:, :c * w] >= 0.5).to(x.dtype) - 1).view(-1, c, 1, w)
        draws = noise[:, c * w:].view(-1, n_queries, 2 + c)
        x_best = (xs + eps * signs0).clamp(0.0, 1.0)
        with torch.no_grad():
            z = model(x_best)
        out.n_forward += todo.numel()
        m_best = margin_fn(z, ys)
        succ = success_fn(z, ys)
        idx = torch.arange(todo.numel(), device=x.device)  # positions in ``todo`` still attacked
        done = succ.clone()
        curve = [int(out.success.sum()) + int(done.sum())]
        loss_curve = [float(-m_best.mean())]
        for i in range(n_queries):
            act = (~done[idx]).nonzero().squeeze(1)
            idx = idx[act]
            if idx.numel() == 0:
                curve += [curve[-1]] * (n_queries - i)
                loss_curve += [loss_curve[-1]] * (n_queries - i)
                break
            p = p_schedule(i, n_queries, p_init)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
            d = draws[idx, i]
            vh = (d[:, 0] * (h - s + 1)).long().clamp_max(h - s)
            vw = (d[:, 1] * (w - s + 1)).long().clamp_max(w - s)
            rows = (ar_h[None] >= vh[:, None]) & (ar_h[None] < vh[:, None] + s)
            cols = (ar_w[None] >= vw[:, None]) & (ar_w[None] < vw[:, None] + s)
            mask = (rows[:, :, None] & cols[:, None, :])[:, None].to(x.dtype)  # (m, 1, h, w)
            sign = (2 * (d[:, 2:] >= 0.5).to(x.dtype) - 1).view(-1, c, 1, 1)
            xc = xs[idx]
            x_new = x_best[idx] + mask * 2 * eps * sign
            x_new = torch.min(torch.max(x_new, xc - eps), xc + eps).clamp(0.0, 1.0)
            # a square whose pixels all sit at the bound it would set them to leaves the point where it is
            # (about 3 queries in 10 on Fashion-MNIST late in the schedule): its margin is the one already
            # held, so it is not queried, which is what querying it would decide (not better, not broken)
            moved = (x_new != x_best[idx]).flatten(1).any(dim=1) if skip_unmoved else \
                torch.ones(idx.numel(), dtype=torch.bool, device=x.device)
            q, x_new = idx[moved], x_new[moved]
            if q.numel():
                with torch.no_grad():
                    z = model(x_new)
                out.n_forward += q.numel()
                m_new = margin_fn(z, ys[q])
                s_new = success_fn(z, ys[q])
                better = (m_new < m_best[q]) | s_new
                upd = q[better]
                x_best[upd] = x_new[better]
                m_best[upd] = m_new[better]
                done[q[s_new]] = True
            curve.append(int(out.success.sum()) + int(done.sum()))
            loss_curve.append(float(-m_best.mean()))
        first = r == 0
        keep = done | first | (-m_best > out.loss_best[todo])
        out.x_adv[todo[keep]] = x_best[keep]
        out.loss_best[todo] = torch.maximum(out.loss_best[todo], -m_best)
        out.success[todo] = done
        out.success_curve += curve
        out.loss_curve += loss_curve
    if not out.success_curve:
        out.success_curve = [int(out.success.sum())] * (n_queries + 1)
        out.loss_curve = [float(out.loss_best.mean())] * (n_queries + 1)
    return out


def budget(profile: Any) -> dict[str, Any]:
    """Square's budget under a profile: ``profile.square_queries`` queries (AutoAttack's standard 5,000 on
    the study profiles) per restart."""
    return {"n_queries": profile.square_queries, "n_restarts": profile.n_restarts}


def square_reject(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kw) -> APGDResult:
    """:func:`square_attack` with the rejection-aware margin (last logit = reject)."""
    return square_attack(model, x, y, eps, **{"reject": True, **kw})


__all__ = ["P_INIT", "QUERIES_PER_ITER", "margin", "p_schedule", "reject_margin", "square_attack",
           "square_reject"]
