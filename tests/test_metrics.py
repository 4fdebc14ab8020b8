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
