"""Stronger adaptive attacks on small real models: agreement, Square, the worst-case ensemble, bad input."""
from __future__ import annotations

import pytest
import torch

import mslib
from mslib import MultiShield, decide
from mslib.attacks import run_attack
from mslib.attacks.agreement import BranchOutputs, candidate_targets, split


@pytest.fixture(scope="module")
def defense(small_classifier, stand_in_vlm) -> MultiShield:
    return MultiShield(small_classifier, stand_in_vlm, tolerance=1e-3)


def _correct(defense, x, y):
    with torch.no_grad():
        keep = defense.predict(x) == y
    return x[keep], y[keep]


@pytest.mark.parametrize("name", ["agreement", "agreement-selective"])
def test_agreement_attack_drives_both_branches_to_its_target(defense, fashion_small, name):
    _, _, x, y = fashion_small
    x, y = _correct(defense, x[:80], y[:80])
    with torch.no_grad():
        f0, s0 = defense.branches(x)
    target = candidate_targets(f0, s0, y, 1)[:, 0]
    res = run_attack(defense, x, y, name, eps=0.15, n_iter=20, n_targets=1)
    assert (res.x_adv - x).abs().max() <= 0.15 + 1e-6
    with torch.no_grad():
        f, s = defense.branches(res.x_adv)
    pred = decide(f, s, defense.tolerance)
    assert torch.equal(res.success, (pred != y) & (pred != 10))  # success is the defense's own decision
    assert res.success.float().mean() > 0.5  # both models are attackable at this eps
    hit = res.success & (f.argmax(1) == target) & (s.max(1).values - s.gather(1, target[:, None])[:, 0] <= 1e-3)
    assert hit.sum() >= 0.8 * res.success.sum()  # successes are the two branches agreeing on the target


def test_agreement_is_at_least_as_strong_as_the_paper_attack_here(defense, fashion_small):
    _, _, x, y = fashion_small
    x, y = _correct(defense, x[:80], y[:80])
    paper = run_attack(defense, x, y, "apgd-ce-reject", eps=0.05, n_iter=20)
    ours = run_attack(defense, x, y, "agreement", eps=0.05, n_iter=20)
    assert ours.success.sum() >= paper.success.sum()


def test_branch_outputs_adapter_matches_the_defense(defense, fashion_small):
    _, _, x, _ = fashion_small
    with torch.no_grad():
        f, s = split(BranchOutputs(defense)(x[:8]))
        f2, s2 = defense.branches(x[:8])
    assert torch.equal(f, f2) and torch.equal(s, s2)


class _OneByOne(torch.nn.Module):
    """The defense scored one image at a time: its outputs cannot depend on the batch (a batched forward may
    round differently at another batch size on some CPUs, and Square compares margins to the last ulp)."""

    rejects = True

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(x[i:i + 1]) for i in range(x.shape[0])])


def test_square_respects_the_bound_and_is_seeded(defense, fashion_small):
    """Catches random draws that depend on the batch a sample is in (they must be keyed by sample index)."""
    _, _, x, y = fashion_small
    x, y = x[:30], y[:30]
    kw = dict(eps=0.08, n_queries=60)
    a = run_attack(_OneByOne(defense), x, y, "square-reject", seed=1, batch_size=30, **kw)
    b = run_attack(_OneByOne(defense), x, y, "square-reject", seed=1, batch_size=7, **kw)
    c = run_attack(_OneByOne(defense), x, y, "square-reject", seed=2, batch_size=30, **kw)
    for r in (a, b, c):
        assert (r.x_adv - x).abs().max() <= 0.08 + 1e-6
        assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)  # per-sample noise
    assert not torch.equal(a.x_adv, c.x_adv)
    pred = defense.predict(a.x_adv)
    assert torch.equal(a.success, (pred != y) & (pred != 10))


def test_square_breaks_an_undefended_classifier(small_classifier, fashion_small):
    _, _, x, y = fashion_small
    x, y = x[:40], y[:40]
    res = run_attack(small_classifier, x, y, "square", eps=0.2, n_queries=100)
    with torch.no_grad():
        acc_clean = (small_classifier(x).argmax(1) == y).float().mean()
        acc_adv = (small_classifier(res.x_adv).argmax(1) == y).float().mean()
    assert acc_adv < acc_clean - 0.3  # the random search works without gradients
    assert res.n_backward == 0


def test_worst_case_ensemble_is_the_outcome_of_the_stored_images(defense, small_classifier, stand_in_vlm,
                                                                   tmp_path, monkeypatch):
    """Catches: a stage storing scores that are not those of its stored images (or images of another stage),
    and a worst case that picks the wrong outcome per sample (a rejection or a correct answer hiding a break)."""
    from mslib.experiment import Workspace, execute, write_index
    from mslib.plan import ENSEMBLE
    from mslib.profiles import get_profile
    from mslib.store import Store
    from mslib.metrics import BROKEN, CORRECT, REJECTED, status, worst_case
    from results_helpers import outcomes_by_hand

    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    prof = get_profile("smoke", n_samples=30, n_iter=6, eps_grid=(0.0, 0.1), batch_size=16, classifiers=("standard",),
                       square_queries=20, agreement_targets=2, vlm_variants={})
    ws = Workspace(prof)
    for name, model in (("standard", small_classifier), ("vlm", stand_in_vlm)):  # small stand-in models
        model.identity = {"stand-in": name}
        ws._models[name] = model
    plan = ws.plan()
    stages = plan.ensemble["standard"]
    assert [(j.target, j.attack) for j in stages] == list(ENSEMBLE)
    jobs = [j for j in plan.jobs() if j.kind != "zero-shot"]  # the stand-in VLM has no text tower
    summary = execute(ws, jobs, progress=False)
    assert summary.done and summary.reused == 0
    write_index("smoke", {"n_samples": 30, "n_iter": 6, "eps_grid": (0.0, 0.1), "batch_size": 16,
                          "classifiers": ("standard",), "square_queries": 20, "agreement_targets": 2, "vlm_variants": {}},
                True, [ws], [plan])
    store = Store("smoke")  # the store rebuilds exactly this plan from its index
    assert [j.key for j in store.datasets[0].plan.jobs()] == [j.key for j in plan.jobs()]
    out = [store.load(j, ("f", "s", "x")) for j in stages]
    y, k = ws.labels, len(ws.class_names)
    st = [status(decide(o["f"], o["s"], prof.tolerance), y, k) for o in out]
    worst = worst_case(st)
    # the stored images themselves, scored afresh by the defense: each stage's stored scores are those of its
    # stored image, and the worst case per sample is the outcome of the image that breaks (or rejects) it
    ms = MultiShield(small_classifier, stand_in_vlm, prof.tolerance)
    with torch.no_grad():
        fresh = [ms.predict(o["x"]) for o in out]
    for job, o, pred in zip(stages, out, fresh):
        assert torch.equal(pred, decide(o["f"], o["s"], prof.tolerance)), job.label
    names = {CORRECT: "correct", REJECTED: "rejected", BROKEN: "fooled"}
    assert [names[int(w)] for w in worst] == outcomes_by_hand(fresh, y, k)
    assert 0 < int((worst == BROKEN).sum()) < len(y)  # the check above saw both outcomes
    # a stage run on survivors keeps every earlier break
    for i in range(5, len(out)):
        assert bool(((worst_case(st[:i]) == BROKEN) <= (st[i] == BROKEN)).all())
    for o in out:
        assert (o["x"] - ws.images).abs().max() <= prof.eps + 1e-6
    # cached: a second run computes nothing
    again = execute(ws, jobs, progress=False)
    assert again.computed == 0 and again.reused == summary.computed


def test_bad_input_is_a_clear_error(defense, small_classifier, fashion_small):
    _, _, x, y = fashion_small
    x, y = x[:4], y[:4]
    with pytest.raises(ValueError, match="needs a rejecting model"):  # run_attack checks model.rejects first
        mslib.attack(small_classifier, x, y, "agreement", 0.1)
    with pytest.raises(ValueError, match="n_targets"):
        mslib.attack(defense, x, y, "agreement", 0.1, n_targets=10)
    with pytest.raises(ValueError, match="n_targets"):
        mslib.attack(defense, x, y, "agreement-selective", 0.1, n_targets=0)
    with pytest.raises(ValueError, match="loss"):
        mslib.attack(defense, x, y, "agreement", 0.1, loss="hinge")
    with pytest.raises(ValueError, match="n_queries"):
        mslib.attack(defense, x, y, "square-reject", 0.1, n_queries=0)
    with pytest.raises(ValueError, match="p_init"):
        mslib.attack(defense, x, y, "square-reject", 0.1, p_init=2.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mslib.attack(defense, x * 255, y, "square-reject", 0.1)
    with pytest.raises(ValueError, match="eps"):
        mslib.attack(defense, x, y, "agreement", -0.1)


def test_square_skips_only_draws_that_leave_the_point_unchanged(defense, small_classifier, fashion_small):
    """Catches a skip that drops a draw which would have moved the point (or counts a skipped query as
    made): on models scored one image at a time the skip gives the same bytes as querying every draw, with
    fewer forward passes, on the rejection-aware margin and on the plain one."""
    _, _, x, y = fashion_small
    x, y = x[:12], y[:12]
    for model, name in ((_OneByOne(defense), "square-reject"), (_OneByOne(small_classifier), "square")):
        model.rejects = name == "square-reject"
        a = run_attack(model, x, y, name, eps=0.1, n_queries=120, seed=3)
        b = run_attack(model, x, y, name, eps=0.1, n_queries=120, seed=3, skip_unmoved=False)
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
        assert a.success_curve == b.success_curve and a.loss_curve == b.loss_curve
        assert a.n_forward < b.n_forward
