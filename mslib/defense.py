"""Multi-Shield: a classifier paired with a zero-shot VLM, abstaining when they disagree.

For classifier logits f (N, K) and VLM cosine similarities s (N, K), with ŷ = argmax f, the defense emits
K + 1 logits: the classifier's K logits and, last, the rejection score

    r(x) = max_k f_k(x) + |max_k s_k(x) − s_ŷ(x)| − tolerance.

The prediction is the argmax of these K+1 logits (label K: rejected): in exact arithmetic, rejected exactly
when the VLM's similarity for ŷ lies more than ``tolerance`` below its best similarity, otherwise ŷ.

:class:`ConfidenceRejector` is the baseline with the same interface that needs no VLM: the classifier alone,
rejecting when its max softmax probability is below a threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_finite_output, check_int, check_tolerance, check_unit_range


def rejection_logits(f: torch.Tensor, s: torch.Tensor, tolerance: float) -> torch.Tensor:
    """(N, K+1) Multi-Shield logits from classifier logits ``f`` and VLM similarities ``s`` (both (N, K))."""
    if f.shape != s.shape:
        raise ValueError(
            f"classifier and VLM must score the same classes: classifier gives {tuple(f.shape)}, "
            f"VLM gives {tuple(s.shape)}"
        )
    f_max, y_hat = f.max(dim=1)
    gap = (s.max(dim=1).values - s.gather(1, y_hat[:, None]).squeeze(1)).abs()
    r = f_max + gap.to(f.dtype) - tolerance
    return torch.cat([f, r[:, None]], dim=1)


def decide(f: torch.Tensor, s: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Labels in 0..K from classifier logits and VLM similarities; K means rejected.

    The argmax of the K+1 :func:`rejection_logits`, as in the original code, so the tables, the executor and
    every attack's success rule decide alike on every float32 input (a comparison ``gap > tolerance`` would
    not: just above the tolerance, ``max f + gap − tolerance`` can round to ``max f``). A tie goes to the
    class (argmax takes the first maximum).
    """
    return rejection_logits(f, s, tolerance).argmax(dim=1)  # it checks that f and s score the same classes


# A batch where at most this share of rows needs the VLM's backward pass runs it on those rows alone, their
# forward pass recomputed with a graph: a forward and a backward pass on a share p of the rows cost less than
# the whole batch's backward pass while p < B/(F+B), about 0.55 for tiny's ViT on a CPU (F forward, B backward).
SUBSET_SHARE = 0.5


@dataclass
class BranchWork:
    """Rows of one backward pass through Multi-Shield whose VLM backward was left out (``skipped``), run
    with an exactly zero output gradient because other rows of the batch needed it (``idle``), or run on
    those rows alone after their VLM forward pass was recomputed with a graph (``recomputed``)."""

    skipped: int = 0
    idle: int = 0
    recomputed: int = 0


class MultiShield(nn.Module):
    """``forward(x)`` → K+1 logits (classifier logits, rejection score); ``predict(x)`` → labels in 0..K.

    ``rejects = True`` tells rejection-aware attacks that the last logit means "rejected". Inputs must be
    finite images in [0, 1]; a branch that returns NaN/inf raises in both ``forward`` and ``predict``, so
    the two never disagree silently.
    """

    rejects = True

    def __init__(self, classifier: nn.Module, vlm: nn.Module, tolerance: float = 1e-3) -> None:
        super().__init__()
        check_tolerance(tolerance, "tolerance")
        for arg, m in (("classifier", classifier), ("vlm", vlm)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{arg} must be a torch.nn.Module (images in [0, 1] -> scores), "
                                f"got {type(m).__name__}")
        k_clf = getattr(classifier, "num_classes", None)
        k_vlm = getattr(vlm, "num_classes", None)
        if k_clf is not None and k_vlm is not None and k_clf != k_vlm:
            raise ValueError(f"the VLM scores {k_vlm} classes but the classifier {k_clf}")
        self.classifier = classifier
        self.vlm = vlm
        self.tolerance = tolerance

    @property
    def tolerance(self) -> float:
        """The rejection tolerance (finite, >= 0; checked on every assignment)."""
        return self._tolerance

    @tolerance.setter
    def tolerance(self, value: float) -> None:
        self._tolerance = check_tolerance(value, "tolerance")

    def branches(self, x: torch.Tensor, x_vlm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier logits and VLM similarities, each computed once (inputs and outputs checked); the VLM
        reads ``x_vlm`` when given (the same images, another autograd leaf)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (N, C, H, W) in [0, 1], got {shape}")
        check_unit_range(x, "x")
        f = check_finite_output(self.classifier(x), "the classifier branch of MultiShield", x.shape[0])
        s = check_finite_output(self.vlm(x if x_vlm is None else x_vlm), "the VLM branch of MultiShield", x.shape[0])
        return f, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, s = self.branches(x)
        return rejection_logits(f, s, self.tolerance)

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor, loss_fn, skip_idle: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, BranchWork]:
        """Logits, per-sample loss and its input gradient at ``x``, and what the VLM's backward pass did
        (:class:`BranchWork`). With ``skip_idle=False`` the gradient is bit for bit what autograd through
        ``forward`` gives; with it, see below.

        The VLM's part of the input gradient is its backward pass fed dloss/ds. Where the classifier's and
        the VLM's top classes coincide, ``|max s − s_ŷ|`` does not depend on s (max and gather pick the same
        entry, and the gradient of |·| at 0 is 0), so dloss/ds is exactly 0 there whatever the loss. A
        batch whose every row has a zero dloss/ds gets an exactly zero VLM part (zero in, zero out through
        every layer of a finite network; only the sign of a zero may differ, and APGD's sign step adds ±0),
        so ``skip_idle`` leaves that backward pass out. Where at most :data:`SUBSET_SHARE` of the rows have a
        nonzero dloss/ds, ``skip_idle`` runs the VLM's forward and backward passes again on those rows alone.
        Those passes use other matrix kernels, so the VLM part of such a row may differ from the whole
        batch's in its last bits. APGD steps by the sign of the gradient, which last bits flip only on a
        component within rounding of zero. On tiny's study and on the paper's chain, x_adv came out
        byte-identical (``benchmarks/README.md``).
        """
        x = x.detach().requires_grad_(True)
        xv = x.detach().requires_grad_(True)  # the VLM's own leaf: its graph is walked only when needed
        with torch.enable_grad():
            f, s = self.branches(x, xv)
            logits = rejection_logits(f, s, self.tolerance)
            loss = loss_fn(logits, y)
            grad, g_s = torch.autograd.grad(loss.sum(), [x, s], allow_unused=True)
            g_s = torch.zeros_like(s) if g_s is None else g_s
            idle = (g_s == 0).all(dim=1)
            n, needs = x.shape[0], (~idle).nonzero().squeeze(1)
            if skip_idle and bool(idle.all()):
                work = BranchWork(skipped=n)
            elif skip_idle and needs.numel() <= SUBSET_SHARE * n:
                xs = x.detach()[needs].requires_grad_(True)
                grad = grad.index_add(0, needs, torch.autograd.grad(self.vlm(xs), [xs], g_s[needs])[0])
                work = BranchWork(skipped=n - needs.numel(), recomputed=needs.numel())
            else:
                grad = grad + torch.autograd.grad(s, [xv], g_s)[0]
                work = BranchWork(idle=int(idle.sum()))
        return logits.detach(), loss.detach(), grad.detach(), work

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels in 0..K (K = rejected)."""
        f, s = self.branches(x)
        return decide(f, s, self.tolerance)

    @property
    def reject_label(self) -> int | None:
        return getattr(self.classifier, "num_classes", None) or getattr(self.vlm, "num_classes", None)


# ---- a baseline that needs no VLM: reject when the classifier is unsure ----------------------------------
# log(threshold) is floored here, far below log(1/K) for any realistic K: threshold 0 never rejects.
_LOG_FLOOR = -1e4
# threshold_for_rejections cuts this far above the largest log p_max to reject every sample (p_max may round
# to 1), so no threshold it returns exceeds exp(max cut); a larger one only says "reject everything"
_ALL_CUTS = (1e-6, 1e-5, 1e-4, 1e-3)
MAX_THRESHOLD = math.exp(max(_ALL_CUTS))


def log_confidence(f: torch.Tensor) -> torch.Tensor:
    """log of the classifier's max softmax probability, log p_max = −logsumexp(f − max f), per sample."""
    return -torch.logsumexp(f - f.max(dim=1, keepdim=True).values, dim=1)


def _log_threshold(threshold: float, like: torch.Tensor) -> torch.Tensor:
    lt = math.log(threshold) if threshold > 0 else _LOG_FLOOR
    return torch.tensor(max(lt, _LOG_FLOOR), dtype=like.dtype, device=like.device)


def confidence_logits(f: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N, K+1) logits of the confidence rejector: ``f − max f`` (the top class scores exactly 0) and, last,
    the rejection score ``log(threshold) − log p_max``.

    The rejection logit wins the argmax exactly when log p_max < log(threshold) (a tie goes to the class,
    so the rule is strict: p_max == threshold is not rejected). Over the K+1 logits the softmax equals the
    softmax of [log p_1..log p_K, log threshold], so rejection-aware losses see the rejection score
    move with the classifier's confidence and the whole output is differentiable.
    """
    shifted = f - f.max(dim=1, keepdim=True).values
    r = _log_threshold(threshold, f) - log_confidence(f)
    return torch.cat([shifted, r[:, None]], dim=1)


def confidence_decide(f: torch.Tensor, threshold: float) -> torch.Tensor:
    """Labels in 0..K from classifier logits: K (rejected) where log p_max < log(threshold), else argmax f.

    The same comparison as the argmax of :func:`confidence_logits` (its rejection score is compared with the
    top class's exact 0), so ``predict`` and the logits never disagree.
    """
    r = _log_threshold(threshold, f) - log_confidence(f)
    y_hat = f.argmax(dim=1)
    return torch.where(r > 0, torch.full_like(y_hat, f.shape[1]), y_hat)


def threshold_for_rejections(f: torch.Tensor, n_reject: int) -> float:
    """The confidence threshold at which the rejector rejects exactly ``n_reject`` of the samples with clean
    logits ``f`` (fewer or more only where confidences tie at the cut, even as float64 probabilities).

    Exact quantile rule: sort log p_max ascending and take the (n_reject+1)-th value as log(threshold)
    (strictly below it is rejected); ``n_reject = N`` cuts just above the largest, so all are rejected even
    where p_max rounds to 1 (the threshold then exceeds 1). The threshold is a probability, so the cut goes
    through exp/log: the candidate whose float32 log gives exactly ``n_reject`` rejections is returned.
    """
    n = f.shape[0]
    check_int(n_reject, "n_reject", 0, maximum=n)
    if n_reject == 0:
        return 0.0
    lc = log_confidence(f)
    srt = torch.sort(lc).values.double().tolist()

    def count(thr: float) -> int:
        return int((lc < _log_threshold(thr, lc)).sum())

    if n_reject < n:
        lo, hi = srt[n_reject - 1], srt[n_reject]
        cuts = [hi, (lo + hi) / 2, float(torch.nextafter(torch.tensor(hi, dtype=lc.dtype),
                                                          torch.tensor(lo, dtype=lc.dtype)))]
    else:
        top = srt[-1]
        cuts = [top + d * max(1.0, abs(top)) for d in _ALL_CUTS]
    candidates = [math.exp(c) for c in cuts]
    return min(candidates, key=lambda t: abs(count(t) - n_reject))


def threshold_for_rate(f: torch.Tensor, rate: float) -> float:
    """The threshold whose clean rejection rate on logits ``f`` is ``rate`` (rounded to a whole sample)."""
    if not (isinstance(rate, (int, float)) and 0 <= rate <= 1):
        raise ValueError(f"rate must be a number in [0, 1], got {rate!r}")
    return threshold_for_rejections(f, int(round(rate * f.shape[0])))


def matched_threshold(f: torch.Tensor, s: torch.Tensor, tolerance: float) -> float:
    """The confidence threshold that rejects as many clean samples as Multi-Shield does (at ``tolerance``),
    from the clean classifier logits ``f`` and VLM similarities ``s`` of those samples."""
    n_ms = int((decide(f, s, tolerance) == f.shape[1]).sum())
    return threshold_for_rejections(f, n_ms)


class ConfidenceRejector(nn.Module):
    """The classifier alone, rejecting when its max softmax probability is below ``threshold``.

    Same interface as :class:`MultiShield`: ``forward(x)`` → K+1 logits (last = rejected, see
    :func:`confidence_logits`), ``predict(x)`` → labels in 0..K, ``rejects = True`` for the rejection-aware
    attacks. Pick ``threshold`` with :func:`threshold_for_rate` or :func:`matched_threshold`.
    """

    rejects = True

    def __init__(self, classifier: nn.Module, threshold: float) -> None:
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"classifier must be a torch.nn.Module (images in [0, 1] -> logits), "
                            f"got {type(classifier).__name__}")
        self.classifier = classifier
        self.threshold = check_tolerance(threshold, "threshold")
        if self.threshold > MAX_THRESHOLD:  # a probability: above 1 it rejects every input, a useless defense
            raise ValueError(f"threshold must be a probability in [0, 1] (up to {MAX_THRESHOLD:.6g}, where "
                             f"threshold_for_rejections rejects even inputs whose confidence rounds to 1), "
                             f"got {threshold!r}")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (N, C, H, W) in [0, 1], got {shape}")
        check_unit_range(x, "x")
        return check_finite_output(self.classifier(x), "the classifier of ConfidenceRejector", x.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return confidence_logits(self.logits(x), self.threshold)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels in 0..K (K = rejected)."""
        return confidence_decide(self.logits(x), self.threshold)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.classifier, "num_classes", None)

    @property
    def reject_label(self) -> int | None:
        return self.num_classes
