"""Rates with 95% confidence intervals, computed from predictions and labels only.

Conventions (Multi-Shield): a prediction equal to ``reject_label`` (K) means "rejected". On clean inputs a
rejection counts as an error; on adversarial inputs an example counts as robust when it is classified
correctly *or* rejected. Attack success: the adversarial prediction is wrong and not a rejection, among the
samples the defense got right on clean inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass(frozen=True)
class Rate:
    """A proportion ``count / n`` with its 95% Wilson score interval [low, high]."""

    count: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.count / self.n if self.n else float("nan")

    def __float__(self) -> float:
        return self.value

    def __str__(self) -> str:
        return f"{100 * self.value:.1f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (n={self.n})"


def wilson_interval(count: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sound at 0 and n, unlike the normal one)."""
    if n == 0:
        return float("nan"), float("nan")
    p = count / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(mask: torch.Tensor) -> Rate:
    """The :class:`Rate` of True entries in a boolean vector."""
    mask = torch.as_tensor(mask).bool().reshape(-1)
    count, n = int(mask.sum()), int(mask.numel())
    return Rate(count, n, *wilson_interval(count, n))


def _check(pred: torch.Tensor, labels: torch.Tensor, name: str = "pred") -> None:
    if pred.shape != labels.shape or pred.dim() != 1:
        raise ValueError(f"{name} and labels must be vectors of the same length, got {tuple(pred.shape)} "
                         f"and {tuple(labels.shape)}")


# Per-sample outcomes of a (possibly rejecting) model: the codes every table and the executor's reuse rule use.
CORRECT, REJECTED, BROKEN = 0, 1, 2
OUTCOME_CODES = {CORRECT: "correct", REJECTED: "rejected", BROKEN: "fooled"}


def status(pred: torch.Tensor, labels: torch.Tensor, reject_label: int | None = None) -> torch.Tensor:
    """Per-sample outcome: 0 correct, 1 rejected (``pred == reject_label``), 2 wrong and not rejected."""
    out = torch.full_like(labels, BROKEN)
    out[pred == labels] = CORRECT
    if reject_label is not None:
        out[(pred == reject_label)] = REJECTED
    return out


def broken(pred: torch.Tensor, labels: torch.Tensor, reject_label: int | None = None) -> torch.Tensor:
    """Per sample: the prediction is a wrong class that is not "rejected" (the attack broke the model)."""
    return status(pred, labels, reject_label) == BROKEN


def worst_case(statuses: Iterable[torch.Tensor]) -> torch.Tensor:
    """Per-sample worst outcome over attacks (broken beats rejected beats correct)."""
    return torch.stack(list(statuses)).max(dim=0).values


def clean_accuracy(pred: torch.Tensor, labels: torch.Tensor) -> Rate:
    """Fraction of clean inputs predicted correctly (a rejection is an error)."""
    _check(pred, labels)
    return rate(pred == labels)


def rejection_rate(pred: torch.Tensor, reject_label: int) -> Rate:
    """Fraction of inputs rejected."""
    return rate(torch.as_tensor(pred) == reject_label)


def robust_accuracy(adv_pred: torch.Tensor, labels: torch.Tensor, reject_label: int | None = None) -> Rate:
    """Fraction of adversarial inputs classified correctly or (with a reject label) rejected."""
    _check(adv_pred, labels, "adv_pred")
    ok = adv_pred == labels
    if reject_label is not None:
        ok = ok | (adv_pred == reject_label)
    return rate(ok)


def attack_success_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor,
                        reject_label: int | None = None) -> Rate:
    """Among samples correct on clean inputs, the fraction whose adversarial input is wrong and not rejected."""
    _check(clean_pred, labels, "clean_pred")
    _check(adv_pred, labels, "adv_pred")
    broken = adv_pred != labels
    if reject_label is not None:
        broken = broken & (adv_pred != reject_label)
    return rate(broken[clean_pred == labels])


def evaluate(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor,
             reject_label: int | None = None) -> dict[str, Rate]:
    """All rates of one (model, attack) pair: clean accuracy and rejection, robust accuracy and rejection, ASR."""
    out = {
        "clean_acc": clean_accuracy(clean_pred, labels),
        "robust_acc": robust_accuracy(adv_pred, labels, reject_label),
        "attack_success": attack_success_rate(clean_pred, adv_pred, labels, reject_label),
    }
    if reject_label is not None:
        out["clean_reject"] = rejection_rate(clean_pred, reject_label)
        out["adv_reject"] = rejection_rate(adv_pred, reject_label)
    return out


@dataclass(frozen=True)
class Difference:
    """A paired difference of two proportions on the same samples, ``a − b``, with its 95% interval."""

    value: float
    low: float
    high: float
    n: int
    only_a: int  # samples where a holds and b does not
    only_b: int

    def __str__(self) -> str:
        return f"{100 * self.value:+.1f} points [{100 * self.low:+.1f}, {100 * self.high:+.1f}] (n={self.n})"


def paired_difference(a: torch.Tensor, b: torch.Tensor, z: float = 1.959963984540054) -> Difference:
    """``mean(a) − mean(b)`` for two boolean outcomes on the same samples, with Newcombe's (1998, method 10)
    95% interval for paired proportions: Wilson intervals of each rate combined through the correlation of
    the pairs (sound at 0 and 1 and when the two rates are close, unlike the Wald interval)."""
    a, b = torch.as_tensor(a).bool().reshape(-1), torch.as_tensor(b).bool().reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have the same length, got {a.numel()} and {b.numel()}")
    n = int(a.numel())
    if n == 0:
        return Difference(float("nan"), float("nan"), float("nan"), 0, 0, 0)
    both, only_a = int((a & b).sum()), int((a & ~b).sum())
    only_b, neither = int((~a & b).sum()), int((~a & ~b).sum())
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, z)
    l2, u2 = wilson_interval(both + only_b, n, z)
    denom = (both + only_a) * (neither + only_b) * (both + only_b) * (neither + only_a)
    num = both * neither - only_a * only_b
    if denom == 0:
        phi = 0.0
    else:  # Newcombe's continuity-corrected correlation
        phi = (max(num - n / 2, 0) if num > 0 else num) / math.sqrt(denom)
    d = p1 - p2
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return Difference(d, max(-1.0, d - delta), min(1.0, d + eps), n, only_a, only_b)
