"""Attacks on small real models: effect, bounds, reproducibility, agreement with pyautoattack, compaction."""
from __future__ import annotations

import pytest
import torch

import mslib
from mslib import MultiShield
from mslib.attacks import losses, run_attack
from mslib.attacks.apgd import apgd


def _acc(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_apgd_ce_breaks_a_model_at_large_eps_and_not_at_tiny_eps(small_classifier, fashion_small):
    _, _, x, y = fashion_small
    x, y = x[:100], y[:100]
    clean = _acc(small_classifier, x, y)
    assert clean > 0.6
    x_big = mslib.attack(small_classifier, x, y, "apgd-ce", eps=0.2, n_iter=20)
    assert _acc(small_classifier, x_big, y) < 0.1
    x_tiny = mslib.attack(small_classifier, x, y, "apgd-ce", eps=1e-7, n_iter=5)
    assert _acc(small_classifier, x_tiny, y) == pytest.approx(clean)
    assert (x_tiny - x).abs().max() <= 1e-7 + 1e-6


@pytest.mark.parametrize("name", ["apgd-ce", "apgd-dlr"])
def test_bound_holds_and_seed_reproduces(small_classifier, fashion_small, name):
    _, _, x, y = fashion_small
    x, y = x[:60], y[:60]
    a = mslib.attack(small_classifier, x, y, name, eps=0.05, n_iter=10, seed=3, batch_size=25)
    b = mslib.attack(small_classifier, x, y, name, eps=0.05, n_iter=10, seed=3, batch_size=60)
    assert (a - x).abs().max() <= 0.05 + 1e-6
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)  # batch size does not change anything: noise is keyed by sample index
    c = mslib.attack(small_classifier, x, y, name, eps=0.05, n_iter=10, seed=4)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_same_robust_accuracy_as_pyautoattack(small_classifier, fashion_small, loss):
    """Same inputs, same seed (same random start) -> same robust accuracy as pyautoattack's APGDAttack."""
    from pyautoattack.autopgd_base import APGDAttack

    _, _, x, y = fashion_small
    model = small_classifier
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    xc, yc = x[correct][:150], y[correct][:150]
    aa = APGDAttack(model, norm="Linf", eps=0.04, n_iter=20, seed=0, loss=loss, device="cpu")
    x_aa = aa.perturb(xc, yc)
    torch.manual_seed(0)
    noise = torch.rand(xc.shape)  # pyautoattack's draw after manual_seed(seed)
    ours = apgd(model, xc, yc, 0.04, losses.ce_loss if loss == "ce" else losses.dlr_loss,
                losses.misclassified, noise, n_iter=20)
    acc_aa = _acc(model, x_aa, yc)
    assert 0.05 < acc_aa < 0.95  # a case where the attack matters
    assert _acc(model, ours.x_adv, yc) == acc_aa
    assert (~ours.success).float().mean().item() == pytest.approx(acc_aa)


def test_compaction_gives_the_same_result_for_surviving_samples(small_classifier, fashion_small):
    _, _, x, y = fashion_small
    x, y = x[:120], y[:120]
    full = run_attack(small_classifier, x, y, "apgd-ce", eps=0.04, n_iter=20, compact=False)
    comp = run_attack(small_classifier, x, y, "apgd-ce", eps=0.04, n_iter=20, compact=True)
    assert torch.equal(full.success, comp.success)
    survivors = ~full.success
    assert survivors.any() and full.success.any()
    assert torch.allclose(full.x_adv[survivors], comp.x_adv[survivors], atol=1e-6)
    assert comp.n_forward < full.n_forward  # compaction skipped work




def test_reject_aware_attack_on_multishield(small_classifier, stand_in_vlm, fashion_small):
    _, _, x, y = fashion_small
    ms = MultiShield(small_classifier, stand_in_vlm, tolerance=1e-3)
    x, y = x[:80], y[:80]
    res = run_attack(ms, x, y, "apgd-ce-reject", eps=0.15, n_iter=20)
    pred = ms.predict(res.x_adv)
    broken = (pred != y) & (pred != 10)
    assert torch.equal(broken, res.success)
    assert broken.float().mean() > 0.3  # the adaptive attack does break Multi-Shield at a large eps
    for name in ("apgd-dlr-reject", "apgd-dlr-reject-excl"):  # the paper's DLR loss and the stronger one
        res_dlr = run_attack(ms, x, y, name, eps=0.15, n_iter=20)
        assert (res_dlr.x_adv - x).abs().max() <= 0.15 + 1e-6
        assert torch.equal(res_dlr.success, (ms.predict(res_dlr.x_adv) != y) & (ms.predict(res_dlr.x_adv) != 10))


def test_bad_input_is_a_clear_error(small_classifier, fashion_small):
    _, _, x, y = fashion_small
    x, y = x[:4], y[:4]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mslib.attack(small_classifier, x * 255, y, "apgd-ce", 0.1)
    with pytest.raises(ValueError, match="rank 4"):
        mslib.attack(small_classifier, x[0], y, "apgd-ce", 0.1)
    with pytest.raises(ValueError, match="channels"):
        mslib.attack(small_classifier, x.repeat(1, 2, 1, 1), y, "apgd-ce", 0.1)
    with pytest.raises(ValueError, match="labels"):
        mslib.attack(small_classifier, x, y[:3], "apgd-ce", 0.1)
    with pytest.raises(ValueError, match="eps"):
        mslib.attack(small_classifier, x, y, "apgd-ce", 0.0)
    with pytest.raises(ValueError, match="NaN"):
        mslib.attack(small_classifier, x.masked_fill(x > 0.5, float("nan")), y, "apgd-ce", 0.1)
    with pytest.raises(ValueError, match="unknown attack"):
        mslib.attack(small_classifier, x, y, "fgsm-please", 0.1)
    with pytest.raises(TypeError, match="integer"):
        mslib.attack(small_classifier, x, y.float(), "apgd-ce", 0.1)


def test_apgd_through_run_attack_matches_pyautoattack_sample_by_sample(small_classifier, fashion_small, monkeypatch):
    """run_attack (per-sample noise keyed by dataset index, restarts on what is still unbroken) against
    pyautoattack's APGDAttack fed the same start points: the same samples broken at the same points.

    Catches: the noise keyed by batch position instead of dataset index, a restart reusing restart 0's noise
    or re-attacking broken samples, or a step-size/checkpoint schedule that drifts from AutoAttack's; each
    moves individual samples even where the overall accuracy happens to agree."""
    from pyautoattack.autopgd_base import APGDAttack

    from mslib.attacks import sample_noise

    _, _, x, y = fashion_small
    model = small_classifier
    for p in model.parameters():
        p.requires_grad_(False)
    idx = torch.arange(1000, 1000 + len(y))  # dataset indices, as the executor passes them
    # one DLR step at eps 0.05: the random start decides some samples, so a later restart breaks more
    ours = run_attack(model, x, y, "apgd-dlr", 0.05, n_iter=1, n_restarts=3, seed=5, indices=idx, compact=False)
    one = run_attack(model, x, y, "apgd-dlr", 0.05, n_iter=1, n_restarts=1, seed=5, indices=idx, compact=False)
    assert one.success.sum() < ours.success.sum() < len(y)  # the restarts matter here, and not all break

    aa = APGDAttack(model, norm="Linf", eps=0.05, n_iter=1, n_restarts=3, seed=0, loss="dlr", device="cpu")
    single, rand, restart = aa.attack_single_run, torch.rand, iter(range(3))

    def with_our_noise(xs, ys, x_init=None):  # pyautoattack draws torch.rand(x.shape) for its start point
        r = next(restart)
        rows = [int((x == xi).flatten(1).all(1).nonzero()[0]) for xi in xs]
        noise = sample_noise(xs.shape, idx[rows], 5, r)
        monkeypatch.setattr(torch, "rand", lambda *a, **k: noise.clone())
        try:
            return single(xs, ys, x_init)
        finally:
            monkeypatch.setattr(torch, "rand", rand)

    aa.attack_single_run = with_our_noise
    x_aa = aa.perturb(x, y)
    with torch.no_grad():
        broken_aa = model(x_aa).argmax(1) != y
    # the same samples broken (the points may differ: we keep the first point that breaks a sample,
    # pyautoattack the last one)
    assert torch.equal(ours.success, broken_aa)


def test_every_attack_counts_its_steps_in_an_option_of_its_budget():
    # the executor sizes an attack's curves from this option (APGD: iterations, Square: queries), so a spec
    # whose budget lacks it would store a one-point curve for every batch it reuses whole
    from mslib.attacks import ATTACK_SPECS

    p = mslib.get_profile("smoke")
    for name, spec in ATTACK_SPECS.items():
        assert spec.budget(p)[spec.steps_option] >= 1, name
