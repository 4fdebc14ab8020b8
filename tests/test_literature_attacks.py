"""The evaluation's own footing: the literature's attack losses on hand-built logits, one decision rule at the
float32 boundary, an exact zero-gradient flag, and the skip of APGD's fixed points proven exact."""
from __future__ import annotations

import math

import pytest
import torch

import mslib
from mslib.attacks import losses, run_attack
from mslib.attacks.apgd import apgd, zero_gradient
from mslib.attacks.selective import accepted_wrong_loss, detector_margin_loss, disagreement_loss
from mslib.defense import MultiShield, decide, rejection_logits

from results_helpers import TopTwo


def _grad(fn, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.clone().requires_grad_(True)
    loss = fn(z, y)
    g, = torch.autograd.grad(loss.sum(), [z])
    return loss.detach(), g


# ---- the detector-aware margin (detector as class K+1) ---------------------------------------------------
def test_detector_margin_hand_computed_values_and_gradients():
    # K = 3 classes + the rejection logit (index 3); y = 0
    z = torch.tensor([[1.0, 3.0, 0.0, 2.0],    # accepted and wrong is the argmax: margin 3 - max(1, 2) = 1
                      [1.0, 2.0, 0.0, 4.0],    # the rejection logit on top: 2 - 4 = -2, the step lowers reject
                      [5.0, 2.0, 0.0, 4.0]])   # the true class on top: 2 - 5 = -3, the step lowers the true class
    y = torch.zeros(3, dtype=torch.long)
    loss, g = _grad(detector_margin_loss, z, y)
    assert loss.tolist() == [1.0, -2.0, -3.0]
    assert g.tolist() == [[0.0, 1.0, 0.0, -1.0], [0.0, 1.0, 0.0, -1.0], [-1.0, 1.0, 0.0, 0.0]]
    # positive exactly where the argmax of the K+1 logits is a wrong, accepted class
    assert torch.equal(loss > 0, losses.misclassified_not_rejected(z, y))


def test_detector_margin_is_positive_exactly_when_the_success_rule_says_broken():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 11, generator=g) * 3
    y = torch.randint(0, 10, (2000,), generator=g)
    assert torch.equal(detector_margin_loss(z, y) > 0, losses.misclassified_not_rejected(z, y))


# ---- Palumbo et al.: accepted and wrong ----------------------------------------------------------------
def test_accepted_wrong_loss_hand_computed():
    # logits [0, ln 3, 0, 0], y = 0, reject = 3: softmax = [1, 3, 1, 1] / 6; accepted-and-wrong = {1, 2}
    z = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0]])
    y = torch.tensor([0])
    loss, g = _grad(accepted_wrong_loss, z, y)
    assert loss.item() == pytest.approx(math.log(4 / 6), abs=1e-6)
    # d/dz_j = p_j (within the set) - p_j (all): class 1: 3/4 - 3/6, class 2: 1/4 - 1/6, y and reject: -1/6
    assert g[0].tolist() == pytest.approx([-1 / 6, 0.25, 1 / 12, -1 / 6], abs=1e-6)
    # the case the loss exists for: the rejection logit on top, an accepted wrong class still reachable
    z2 = torch.tensor([[0.0, 1.0, 0.0, 5.0]])
    _, g2 = _grad(accepted_wrong_loss, z2, y)
    assert g2[0, 3] < 0 < g2[0, 1]  # ascent lowers "rejected" and raises the wrong class


def test_disagreement_loss_hand_computed_and_rewards_agreement_on_a_wrong_class():
    # K = 2, scale 1: f = [0, 0] (p_f = [1/2, 1/2]); VLM logits [ln 3, 0] (p_s = [3/4, 1/4]); y = 0
    f = torch.tensor([[0.0, 0.0]])
    s = torch.tensor([[math.log(3.0), 0.0]])
    y = torch.tensor([0])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL(p_s || p_f)
    loss, g = _grad(lambda z, t: disagreement_loss(z, t, scale=1.0), torch.cat([f, s], 1), y)
    assert loss.item() == pytest.approx(math.log(2) + math.log(4 / 3) - kl, abs=1e-6)
    # classifier part: CE gradient p_f - e_y = [-1/2, 1/2] plus -dKL/df = p_s - p_f = [1/4, -1/4]
    assert g[0, :2].tolist() == pytest.approx([-0.25, 0.25], abs=1e-6)
    # VLM part: p_s - e_y = [-1/4, 1/4] minus dKL/dv_j = p_j (log(p_j / pf_j) - KL)
    dkl = [0.75 * (math.log(1.5) - kl), 0.25 * (math.log(0.5) - kl)]
    assert g[0, 2:].tolist() == pytest.approx([-0.25 - dkl[0], 0.25 - dkl[1]], abs=1e-6)
    # members wrong and agreeing score higher than members wrong and disagreeing (same CEs, KL 0 vs > 0)
    f3, y3 = torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([0])
    agree = disagreement_loss(torch.cat([f3, torch.tensor([[0.0, 2.0, 0.0]])], 1), y3, scale=1.0)
    disagree = disagreement_loss(torch.cat([f3, torch.tensor([[0.0, 0.0, 2.0]])], 1), y3, scale=1.0)
    assert agree.item() > disagree.item()


@pytest.mark.parametrize("name", ["apgd-disagree", "apgd-detector"])
def test_literature_attacks_report_exactly_the_defenses_own_breaks(name, small_classifier, stand_in_vlm,
                                                                   fashion_small):
    _, _, x, y = fashion_small
    ms = MultiShield(small_classifier, stand_in_vlm, tolerance=1e-3)
    rej = mslib.ConfidenceRejector(small_classifier, 0.9)
    for model in (ms, rej):
        res = run_attack(model, x[:24], y[:24], name, 0.1, n_iter=5)
        pred = model(res.x_adv).argmax(1)
        assert torch.equal(res.success, (pred != y[:24]) & (pred != 10)), type(model).__name__


def test_a_rejection_aware_attack_refuses_a_plain_classifier(small_classifier, fashion_small):
    _, _, x, y = fashion_small
    with pytest.raises(ValueError, match="needs a rejecting model"):
        mslib.attack(small_classifier, x[:2], y[:2], "apgd-detector", 0.1)


# ---- one decision rule -----------------------------------------------------------------------------------
def test_decision_rule_at_the_float32_boundary_tables_and_attack_success_agree():
    # max f = 10, tol = 1e-3, gap = tol + 2e-7: the comparison gap > tol says "reject", but the K+1 logits
    # the attacks and the original code take the argmax of round max f + gap - tol to max f (accepted)
    tol = 1e-3
    f = torch.tensor([[10.0, 0.0, -1.0]])
    s = torch.tensor([[0.0, tol + 2e-7, 0.0]])
    gap = s.max(1).values - s[:, 0]
    assert bool(gap > tol)  # the old rule would reject this sample
    z = rejection_logits(f, s, tol)
    assert z[0, 3] == z[0, 0]  # the rejection score rounds onto the top class: a tie, which goes to the class
    y = torch.tensor([1])  # the classifier's answer 0 is wrong
    pred = decide(f, s, tol)
    assert pred.item() == 0  # accepted: the tables count a break ...
    assert bool(losses.misclassified_not_rejected(z, y))  # ... exactly as the attacks' success rule does
    from mslib.metrics import broken
    from mslib.store import Outputs
    assert bool(broken(pred, y, f.shape[1]))
    out = Outputs(f=f, s=s)
    assert torch.equal(out.ms_pred(tol), pred)


def test_decide_is_the_argmax_of_the_k_plus_1_logits_on_random_and_boundary_inputs():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(5000, 10, generator=g) * 5
    s = torch.rand(5000, 10, generator=g)
    top = f.argmax(1)
    for tol in (0.0, 1e-3, 0.05):
        s_edge = s.clone()  # put every gap within a few ulps of the tolerance
        s_edge[torch.arange(5000), top] = s.max(1).values - tol - torch.randint(-3, 4, (5000,), generator=g) * 1e-8
        for ss in (s, s_edge):
            assert torch.equal(decide(f, ss, tol), rejection_logits(f, ss, tol).argmax(1))


# ---- the zero-gradient flag and the skip of fixed points ---------------------------------------------------
def test_zero_gradient_flag_is_exact():
    tiny = torch.full((1, 1, 2, 2), 1e-30)  # tiny but nonzero: its signs are defined, APGD's sign step moves
    assert zero_gradient(torch.zeros(2, 1, 2, 2)).tolist() == [1, 1]
    assert zero_gradient(tiny).tolist() == [0]
    # a saturated CE on scaled VLM-like logits: the gradient underflows to ~1e-20 but is not zero
    z = torch.tensor([[60.0, 0.0, -5.0]], requires_grad=True)
    g, = torch.autograd.grad(losses.ce_loss(z, torch.tensor([0])).sum(), [z])
    assert 0 < g.abs().max() < 1e-20 and zero_gradient(g).tolist() == [0]


@pytest.mark.parametrize("loss", ["paper-dlr-reject", "ce"])
def test_skipping_fixed_points_returns_the_same_bytes(loss, small_classifier, fashion_small):
    """Catches a skip that drops a sample which would still move, or returns another point than the start."""
    _, _, x, y = fashion_small
    if loss == "paper-dlr-reject":
        model = TopTwo().eval()
        xs = torch.rand(12, 1, 2, 2, generator=torch.Generator().manual_seed(0))
        ys = torch.tensor([0, 1] * 6)  # half fixed points (y = 0), half not
        args = (losses.dlr_reject_loss_paper, losses.misclassified_not_rejected)
    else:
        model, xs, ys = small_classifier, x[:40], y[:40]
        args = (losses.ce_loss, losses.misclassified)
    noise = torch.rand(xs.shape, generator=torch.Generator().manual_seed(1))
    with mslib.attacks.frozen(model):
        a = apgd(model, xs, ys, 0.1, *args, noise, n_iter=12, skip_fixed_points=True)
        b = apgd(model, xs, ys, 0.1, *args, noise, n_iter=12, skip_fixed_points=False)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert torch.equal(a.loss_best, b.loss_best) and torch.equal(a.zero_grad, b.zero_grad)
    assert a.success_curve == b.success_curve
    n_fixed = int(((a.zero_grad == 1) & ~a.success).sum())
    if loss == "paper-dlr-reject":
        assert n_fixed == 6  # the y = 0 samples
        assert b.n_backward - a.n_backward == n_fixed * 12  # every step of every fixed point saved
    else:
        assert n_fixed == 0 and a.n_backward == b.n_backward


# ---- the plan: budgets from the specs, the convergence stages ---------------------------------------------
def test_the_plan_takes_budgets_from_the_specs_and_adds_the_convergence_stages_only_where_asked():
    """Catches a Square budget that falls back to n_iter queries, and convergence stages that are not stronger,
    do not run after the whole ensemble, or leak into a profile that does not ask for them."""
    from mslib.plan import CONVERGENCE, dataset_plan
    from mslib.profiles import get_profile

    ids = {"standard": {"id": 1}, "fgsm-rs": {"id": 2}, "vlm": {"id": 3}, "vlm:lit-vit-s-fare": {"id": 4}}
    tiny = dataset_plan(get_profile("tiny"), range(10), ids)
    plus = dataset_plan(get_profile("tiny-plus"), range(10), ids)
    square = [j for j in tiny.ensemble["standard"] if j.attack == "square-reject"]
    assert [dict(j.options)["n_queries"] for j in square] == [1000]  # tiny's documented budget
    assert [dict(j.options)["n_queries"] for j in plus.ensemble["standard"] if j.attack == "square-reject"] == [5000]
    assert "n_iter" not in dict(square[0].options)
    # tiny-plus holds every tiny job but Square (its bigger budget is another job), and more
    assert not tiny.convergence
    assert {j.key for j in tiny.jobs() if j.attack != "square-reject"} < {j.key for j in plus.jobs()}
    assert not {j.key for j in tiny.jobs() if j.attack == "square-reject"} & {j.key for j in plus.jobs()}
    for defense, base in (("ms", plus.ensemble["standard"]), ("conf", plus.baseline["standard"])):
        stages = plus.convergence["standard", defense]
        assert [j.attack for j in stages] == list(CONVERGENCE[defense])
        assert all(j.target == defense for j in stages)
        for i, j in enumerate(stages):
            assert j.after == (*base, *stages[:i])  # on what the whole ensemble and every earlier stage left
            o, same = dict(j.options), next(dict(b.options) for b in base if b.attack == j.attack)
            if j.attack == "square-reject":
                assert o["n_queries"] == 4 * same["n_queries"] == 20000 and o["n_restarts"] == same["n_restarts"]
            else:
                assert o["n_iter"] == 4 * same["n_iter"] and o["n_restarts"] == 5
    # the robust-VLM configuration is checked only where the profile asks for it (its own flag)
    assert not plus.variants["lit-vit-s-fare"].convergence
    both = dataset_plan(get_profile("tiny-plus", variant_convergence=True), range(10), ids)
    assert both.variants["lit-vit-s-fare"].convergence.keys() == plus.convergence.keys()
    assert {j.key for j in plus.jobs()} < {j.key for j in both.jobs()}


def test_the_paper_dlr_follows_rounding_residuals_on_multi_shield_where_y_and_reject_lead(small_classifier,
                                                                                        stand_in_vlm, fashion_small):
    """Catches a cancellation "fixed" in a way the original code does not have it (the two DLR terms summed
    before one division: an exact zero gradient, so the paper's attack would become a fixed point and report a
    far higher robust accuracy than the original code on the same models). Where y and the rejection logit are
    the two largest the loss is exactly 0, yet the original's separately divided terms leave a gradient of
    rounding residuals on every such sample: orders of magnitude below the stronger variant's, with signs that
    APGD's sign step follows; the exact-zero flag stays 0."""
    _, _, x, y = fashion_small
    ms = MultiShield(small_classifier, stand_in_vlm, tolerance=1e-3)
    xs = x[:120].clone().requires_grad_(True)
    with mslib.attacks.frozen(ms):
        z = ms(xs)
        paper = losses.dlr_reject_loss_paper(z, y[:120])
        g, = torch.autograd.grad(paper.sum(), [xs], retain_graph=True)
        g_excl, = torch.autograd.grad(losses.dlr_reject_loss_excl(z, y[:120]).sum(), [xs])
    top2 = z.detach().topk(2, dim=1).indices
    lead = ((top2 == y[:120, None]).any(1) & (top2 == 10).any(1))
    assert lead.sum() >= 30  # most correctly classified samples
    assert (paper[lead] == 0).all() and (paper[~lead] != 0).all()
    size, size_excl = g.flatten(1).abs().amax(1), g_excl.flatten(1).abs().amax(1)
    assert (size[lead] > 0).all() and not zero_gradient(g).any()
    assert (size[lead] < 1e-3 * size_excl[lead]).all()
