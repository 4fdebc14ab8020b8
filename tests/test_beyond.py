"""Beyond the paper: the confidence rejector (a baseline without a VLM), the attack-health flags, the robust
(FARE-fine-tuned) VLM as a configuration of the study, and the tables that compare them."""
from __future__ import annotations

import math

import pytest
import torch

from mslib.attacks import losses, run_attack
from mslib.attacks.apgd import apgd, zero_gradient
from mslib.defense import (ConfidenceRejector, confidence_decide, confidence_logits, decide, log_confidence,
                           matched_threshold, threshold_for_rate, threshold_for_rejections)

from results_helpers import OVERRIDES, fresh_cache, smoke_models  # noqa: F401


# ---- the confidence rejector --------------------------------------------------------------------------
def test_confidence_logits_reject_exactly_below_the_threshold_ties_go_to_the_class():
    # K = 2, equal logits: p_max = 0.5 exactly
    f = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    p_max = torch.softmax(f, 1).max(1).values
    for thr in (0.4, 0.5, 0.6, 0.9, 0.99):
        z = confidence_logits(f, thr)
        pred = z.argmax(1)
        assert torch.equal(pred, confidence_decide(f, thr))
        expected = torch.where(p_max < thr, torch.full_like(pred, 2), f.argmax(1))
        if thr == 0.5:  # the tie p_max == threshold: not rejected (the rule is strict), first row keeps class 0
            assert pred[0] == 0
        else:
            assert torch.equal(pred, expected), thr
    # by hand: row 1 has p_max = 1/(1+e^-2) = 0.8808; rejected at 0.9, kept at 0.88
    assert confidence_decide(f[1:2], 0.9).item() == 2 and confidence_decide(f[1:2], 0.88).item() == 0
    # the top class scores exactly 0, the rejection logit log(thr) - log p_max
    z = confidence_logits(f, 0.9)
    assert torch.equal(z[:, :2].max(1).values, torch.zeros(3))
    assert torch.allclose(z[:, 2], math.log(0.9) - torch.log(p_max))
    # threshold 0 never rejects, a threshold above 1 rejects everything
    assert (confidence_decide(f, 0.0) != 2).all() and (confidence_decide(f, 1.5) == 2).all()


def test_confidence_rejector_module_matches_the_rule_and_is_differentiable(small_classifier, fashion_small):
    _, _, x, y = fashion_small
    x = x[:64]
    rej = ConfidenceRejector(small_classifier, 0.8)
    with torch.no_grad():
        f = small_classifier(x)
    p_max = torch.softmax(f, 1).max(1).values
    pred = rej.predict(x)
    assert torch.equal(pred == 10, p_max < 0.8)
    assert torch.equal(rej(x).argmax(1), pred)
    xg = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(rej(xg)[:, -1].sum(), [xg])
    assert g.abs().sum() > 0  # the rejection score moves with the input
    assert rej.rejects and rej.num_classes == 10
    with pytest.raises(ValueError, match="threshold"):
        ConfidenceRejector(small_classifier, float("nan"))
    with pytest.raises(TypeError, match="classifier"):
        ConfidenceRejector(lambda v: v, 0.5)


@pytest.mark.parametrize("rate", [0.0, 0.03, 0.1, 0.25, 0.5, 0.999, 1.0])
def test_threshold_for_rate_achieves_the_requested_clean_rejection_rate(rate):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(301, 10, generator=g) * 3
    thr = threshold_for_rate(f, rate)
    achieved = float((confidence_decide(f, thr) == 10).float().mean())
    assert abs(achieved - rate) <= 1 / (2 * 301) + 1e-12
    # exact counts: every count from 0 to N is reachable
    for m in (0, 1, 7, 150, 300, 301):
        assert int((confidence_decide(f, threshold_for_rejections(f, m)) == 10).sum()) == m


def test_saturated_confidences_can_all_be_rejected():
    f = torch.tensor([[100.0, 0.0], [50.0, 0.0], [1.0, 0.0]])  # p_max rounds to 1 for the first two
    assert log_confidence(f)[0] == 0
    thr = threshold_for_rejections(f, 3)
    assert thr > 1 and (confidence_decide(f, thr) == 2).all()
    assert int((confidence_decide(f, threshold_for_rejections(f, 1)) == 2).sum()) == 1


def test_matched_threshold_rejects_as_many_clean_samples_as_multi_shield():
    g = torch.Generator().manual_seed(1)
    f, s = torch.randn(200, 10, generator=g) * 2, torch.rand(200, 10, generator=g)
    for tol in (0.0, 0.05, 0.2, 1.0):
        n_ms = int((decide(f, s, tol) == 10).sum())
        assert int((confidence_decide(f, matched_threshold(f, s, tol)) == 10).sum()) == n_ms


def test_rejection_aware_attacks_run_on_the_rejector(small_classifier, fashion_small):
    _, _, x, y = fashion_small
    rej = ConfidenceRejector(small_classifier, 0.9)
    for name in ("apgd-ce-reject", "apgd-dlr-reject-excl", "square-reject"):
        res = run_attack(rej, x[:20], y[:20], name, 0.1, n_iter=3)
        pred = rej.predict(res.x_adv)
        assert torch.equal(res.success, (pred != y[:20]) & (pred != 10)), name


# ---- attack health: zero gradients -------------------------------------------------------------------
def test_paper_dlr_reject_loss_has_zero_gradient_when_y_and_reject_are_the_top_two():
    # hand-built K+1 logits: true class 0 first, the rejection logit (last) second -> loss 0, gradient 0
    z = torch.tensor([[5.0, 1.0, 0.5, -1.0, 4.0], [5.0, 4.5, 0.5, -1.0, 4.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    loss = losses.dlr_reject_loss_paper(z, y)
    g, = torch.autograd.grad(loss.sum(), [z])
    assert loss[0].item() == 0 and torch.equal(g[0], torch.zeros(5))
    assert g[1].abs().sum() > 0  # class 1 sits between y and reject: a gradient exists
    assert torch.equal(zero_gradient(g), torch.tensor([1, 0], dtype=torch.int8))
    # the stronger variant keeps a gradient on the first sample
    g2, = torch.autograd.grad(losses.dlr_reject_loss_excl(z, y).sum(), [z])
    assert g2[0].abs().sum() > 0


class _TopTwo(torch.nn.Module):
    """K+1 = 4 logits from a linear map where, for every input in [0, 1], class 0 and the rejection logit
    are the two largest: the paper's DLR-reject loss is 0 with zero gradient everywhere."""

    rejects = True

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(4, 4)
        with torch.no_grad():
            self.w.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0.1, 0, 0], [0, 0, 0.1, 0], [1.0, 0, 0, 0]]))
            self.w.bias.copy_(torch.tensor([10.0, 0, 0, 5.0]))

    def forward(self, x):
        return self.w(x.flatten(1)[:, :4])


def test_apgd_records_the_zero_gradient_share_at_its_start():
    model = _TopTwo().eval()
    x = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(6, dtype=torch.long)
    res = run_attack(model, x, y, "apgd-dlr-reject", 0.1, n_iter=3)
    assert res.zero_grad is not None and (res.zero_grad == 1).all() and not res.success.any()
    res = run_attack(model, x, y, "apgd-ce-reject", 0.1, n_iter=3)
    assert (res.zero_grad == 0).all()
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    direct = apgd(model, x, y, 0.1, losses.dlr_reject_loss_paper, losses.misclassified_not_rejected, noise, n_iter=2)
    assert (direct.zero_grad == 1).all()
