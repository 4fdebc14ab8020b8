"""Fidelity to the original Multi-Shield code (FrancescoVillani/Multi-Shield): the paper's losses and
sampler, checked against values computed by hand from the original definitions (docs/fidelity.md).

The original (``modified_autopgd_base.py``): ``dlr_loss(x, y) = -(x[y] - x_sorted[-2] * [top is y]
- x_sorted[-1] * [top is not y]) / (x_sorted[-1] - x_sorted[-3] + 1e-12)`` and
``rejection_dlr(z, y) = dlr_loss(z, y) + dlr_loss(z, K)``; a sample counts as robust when its
prediction is y or K. The sampler (``ingredients/dataset.py``): ``random.seed(1233)`` then
``random.sample(range(len(test_set)), n)`` (``range(1, len)`` for Food-101 and Pets).
"""
from __future__ import annotations

import random

import pytest
import torch

from mslib.attacks import ATTACKS, REJECT_AWARE, losses

EPS = 1e-12  # the DLR denominator's guard, as in AutoAttack


def _z(*rows):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=True)


# --------------------------------------------------------------------------------------------- losses
# Four logits, the last (index 3) is the rejection class; y = 1 throughout.
CASES = {
    # y and the rejection class are the two largest: sorted 0.5, 1, 3, 4 -> denominator 4 - 1 = 3
    "cancelling": ([1.0, 3.0, 0.5, 4.0], 1 / 3 - 1 / 3, -(3 - 1) / 3 - (4 - 1) / 3),
    # y on top, rejection last: sorted 1, 2, 4, 5 -> denominator 5 - 2 = 3
    "y_top": ([2.0, 5.0, 4.0, 1.0], -(5 - 4) / 3 - (1 - 5) / 3, -(5 - 4) / 3 - (1 - 4) / 3),
    # another class on top (the attack's goal): sorted 1, 2, 3, 6 -> denominator 6 - 2 = 4
    "broken": ([6.0, 2.0, 1.0, 3.0], -(2 - 6) / 4 - (3 - 6) / 4, -(2 - 6) / 4 - (3 - 6) / 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dlr_reject_losses_match_hand_computed_values(case):
    row, paper, excl = CASES[case]
    z, y = _z(row), torch.tensor([1])
    assert losses.dlr_reject_loss_paper(z, y).item() == pytest.approx(paper, abs=1e-9)
    assert losses.dlr_reject_loss_excl(z, y).item() == pytest.approx(excl, abs=1e-9)


def test_paper_dlr_loss_cancels_when_y_and_reject_are_the_top_two():
    z, y = _z([1.0, 3.0, 0.5, 4.0], [0.2, 2.5, -1.0, 2.4]), torch.tensor([1, 1])
    loss = losses.dlr_reject_loss_paper(z, y)
    assert torch.equal(loss, torch.zeros(2, dtype=z.dtype))  # exactly zero, not just small
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert torch.equal(grad, torch.zeros_like(grad))  # the attack has nothing to follow
    excl = losses.dlr_reject_loss_excl(z, y)
    (grad_excl,) = torch.autograd.grad(excl.sum(), z)
    assert (excl != 0).all() and (grad_excl.abs().sum(dim=1) > 0).all()


def test_paper_dlr_loss_is_the_sum_of_two_plain_autoattack_dlr_terms():
    torch.manual_seed(0)
    z, y = torch.randn(50, 11, dtype=torch.float64), torch.randint(0, 10, (50,))
    u = torch.arange(50)

    def plain_dlr(z, c):  # AutoAttack's APGDAttack.dlr_loss, written out
        zs, ind = z.sort(dim=1)
        top_is_c = (ind[:, -1] == c).double()
        return -(z[u, c] - zs[:, -2] * top_is_c - zs[:, -1] * (1 - top_is_c)) / (zs[:, -1] - zs[:, -3] + EPS)

    expected = plain_dlr(z, y) + plain_dlr(z, torch.full_like(y, 10))
    assert torch.allclose(losses.dlr_reject_loss_paper(z, y), expected, atol=1e-12)
    assert torch.allclose(losses.dlr_loss(z, y), plain_dlr(z, y), atol=1e-12)


def test_ce_reject_loss_and_success_rule_are_the_originals():
    z, y = _z([1.0, 3.0, 0.5, 4.0], [6.0, 2.0, 1.0, 3.0]), torch.tensor([1, 1])
    lse = torch.logsumexp(z, dim=1)
    expected = (lse - z[:, 1]) + (lse - z[:, 3])  # CE(z, y) + CE(z, K)
    assert torch.allclose(losses.ce_reject_loss(z, y), expected)
    # robust (not a success) when the prediction is y or K: row 0 predicts K, row 1 predicts class 0
    assert losses.misclassified_not_rejected(z, y).tolist() == [False, True]


def test_attack_names_say_which_dlr_loss():
    assert ATTACKS["apgd-dlr-reject"].__doc__.startswith("APGD maximizing dlr_reject_loss_paper")
    assert ATTACKS["apgd-dlr-reject-excl"].__doc__.startswith("APGD maximizing dlr_reject_loss_excl")
    assert {"apgd-ce-reject", "apgd-dlr-reject", "apgd-dlr-reject-excl"} <= REJECT_AWARE
    assert not hasattr(losses, "dlr_reject_loss")  # no name shared by the two meanings
