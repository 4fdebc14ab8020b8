"""Metrics on hand-made predictions equal hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from mslib import metrics

LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
REJECT = 3
CLEAN = torch.tensor([0, 1, 2, 0, 3, 2, 1, 1, 2, 0])   # 8 correct, 1 rejected (idx 4), 1 wrong (idx 6)
ADV = torch.tensor([3, 0, 2, 3, 3, 1, 1, 1, 0, 0])     # correct: 2,6?,7,9 ; rejected: 0,3,4


def test_clean_accuracy_counts_rejections_as_errors():
    r = metrics.clean_accuracy(CLEAN, LABELS)
    assert (r.count, r.n) == (8, 10) and r.value == 0.8


def test_rejection_rates():
    assert metrics.rejection_rate(CLEAN, REJECT).value == 0.1
    assert metrics.rejection_rate(ADV, REJECT).value == 0.3


def test_robust_accuracy_counts_rejections_as_robust():
    # correct: idx 2, 7, 9 (idx 6: label 0, pred 1 -> wrong); rejected: 0, 3, 4 -> 6 of 10
    assert metrics.robust_accuracy(ADV, LABELS, REJECT).value == 0.6
    # without a reject label only the 3 correct ones count
    assert metrics.robust_accuracy(ADV, LABELS).value == 0.3


def test_attack_success_rate_among_clean_correct():
    # clean-correct: 0,1,2,3,5,7,8,9 (8). broken & not rejected among them: 1 (pred 0), 5 (pred 1), 8 (pred 0)
    r = metrics.attack_success_rate(CLEAN, ADV, LABELS, REJECT)
    assert (r.count, r.n) == (3, 8)


def test_wilson_interval_by_hand():
    lo, hi = metrics.wilson_interval(8, 10)
    z = 1.959963984540054
    p, n = 0.8, 10
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert lo == pytest.approx(c - h) and hi == pytest.approx(c + h)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert metrics.wilson_interval(0, 20)[0] == 0.0 and metrics.wilson_interval(20, 20)[1] == 1.0


def test_evaluate_and_shape_errors():
    out = metrics.evaluate(CLEAN, ADV, LABELS, REJECT)
    assert set(out) == {"clean_acc", "robust_acc", "attack_success", "clean_reject", "adv_reject"}
    assert out["robust_acc"].low <= out["robust_acc"].value <= out["robust_acc"].high
    with pytest.raises(ValueError, match="same length"):
        metrics.clean_accuracy(CLEAN[:5], LABELS)


def _paired(both: int, only_a: int, only_b: int, neither: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.tensor([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=torch.bool)
    b = torch.tensor([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=torch.bool)
    return a, b


@pytest.mark.parametrize("cells, expected", [
    # (both, only a, only b, neither) -> (d, lower, upper). By hand (Newcombe 1998, method 10): Wilson limits
    # l_i, u_i of each rate as roots of (p - p̂)² = z² p(1 - p)/n; φ = (AD - BC)/√(efgh) with AD - BC
    # replaced by max(AD - BC - n/2, 0) when positive; lower d - √((p̂1-l1)² - 2φ(p̂1-l1)(u2-p̂2) + (u2-p̂2)²),
    # upper d + √((u1-p̂1)² - 2φ(u1-p̂1)(p̂2-l2) + (p̂2-l2)²).
    # 20/7/2/11: p̂ = 27/40, 22/40; Wilson [0.520177, 0.799155], [0.398291, 0.692947];
    # AD - BC = 206 -> 186, efgh = 27·13·22·18, φ = 0.498898
    ((20, 7, 2, 11), (0.125, -0.024403, 0.265129)),
    # 5/3/1/1: AD - BC = 2 < n/2 -> φ = 0 (the correction floors it), the two Wilson intervals combine freely
    ((5, 3, 1, 1), (0.2, -0.186962, 0.521086)),
    # 0/4/0/6: b never holds (φ = 0 by the empty margin); the upper limit is a's Wilson upper 0.687326
    ((0, 4, 0, 6), (0.4, 0.038386, 0.687326)),
])
def test_paired_difference_matches_newcombe_by_hand(cells, expected):
    """Catches: the Wald interval, Newcombe's φ without its continuity correction or with the cells swapped,
    the two limits' terms crossed (l with u), or the interval built around the wrong difference (b − a)."""
    d = metrics.paired_difference(*_paired(*cells))
    assert (d.value, d.low, d.high) == pytest.approx(expected, abs=5e-7)
    assert (d.n, d.only_a, d.only_b) == (sum(cells), cells[1], cells[2])
    # swapping the two outcomes mirrors the interval exactly
    r = metrics.paired_difference(*reversed(_paired(*cells)))
    assert (r.value, r.low, r.high) == pytest.approx((-expected[0], -expected[2], -expected[1]), abs=5e-7)


def test_outcome_codes_and_worst_case_on_a_hand_labelled_batch():
    """Catches: a rejection counted as correct or as a break, a wrong class counted as rejected, or a worst
    case that lets a later attack's rejection (or an earlier one's correct answer) hide a break."""
    from mslib.metrics import BROKEN, CORRECT, REJECTED, status, worst_case

    y = torch.tensor([0, 1, 2, 3, 0, 1])  # K = 4, label 4 = rejected
    first = torch.tensor([0, 4, 1, 3, 4, 1])   # correct, rejected, fooled, correct, rejected, correct
    second = torch.tensor([4, 2, 2, 3, 0, 4])  # rejected, fooled, correct, correct, correct, rejected
    assert status(first, y, 4).tolist() == [CORRECT, REJECTED, BROKEN, CORRECT, REJECTED, CORRECT]
    assert status(second, y, 4).tolist() == [REJECTED, BROKEN, CORRECT, CORRECT, CORRECT, REJECTED]
    # without a reject label (the classifier alone) the prediction 4 is just wrong
    assert status(first, y).tolist() == [CORRECT, BROKEN, BROKEN, CORRECT, BROKEN, CORRECT]
    worst = worst_case([status(first, y, 4), status(second, y, 4)])
    assert worst.tolist() == [REJECTED, BROKEN, BROKEN, CORRECT, REJECTED, REJECTED]
    # shares of the batch: correct 1/6, rejected 3/6, fooled 2/6; robust (correct or rejected) 4/6
    assert [int((worst == c).sum()) for c in (CORRECT, REJECTED, BROKEN)] == [1, 3, 2]
