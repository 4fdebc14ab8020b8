"""Beyond the paper: the confidence rejector (a baseline without a VLM), the attack-health flags, the robust
(FARE-fine-tuned) VLM as a configuration of the study, and the tables that compare them."""
from __future__ import annotations

import math

import pytest
import torch

from mslib.attacks import losses, run_attack
from mslib.attacks.apgd import apgd, zero_gradient
from mslib.cache import data_root_at
from mslib.defense import (ConfidenceRejector, confidence_decide, confidence_logits, decide, log_confidence,
                           matched_threshold, threshold_for_rate, threshold_for_rejections)

from results_helpers import VARIANT, TopTwo, fresh_cache, outcomes_by_hand, share


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


def test_apgd_records_the_zero_gradient_share_at_its_start():
    model = TopTwo().eval()
    x = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(6, dtype=torch.long)
    res = run_attack(model, x, y, "apgd-dlr-reject", 0.1, n_iter=3)
    assert res.zero_grad is not None and (res.zero_grad == 1).all() and not res.success.any()
    res = run_attack(model, x, y, "apgd-ce-reject", 0.1, n_iter=3)
    assert (res.zero_grad == 0).all()
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    direct = apgd(model, x, y, 0.1, losses.dlr_reject_loss_paper, losses.misclassified_not_rejected, noise, n_iter=2)
    assert (direct.zero_grad == 1).all()


# ---- the paper profile's robust CLIP VLMs, offline on stand-ins -----------------------------------------
def test_paper_robust_clip_vlms_are_optional_assets_that_load_offline_on_stand_ins(tmp_path, monkeypatch,
                                                                                  no_paper_env):
    from mslib import get_profile, load_vlm
    from mslib.fetch import missing_assets
    from mslib.plan import variant_profile, vlm_variants
    from mslib.profiles import PROFILES
    from mslib.standins import subset_profile, write_standins

    sub = {"food101": ["resnet18-ft"]}
    monkeypatch.setitem(PROFILES, "paper-robust", subset_profile("paper-robust", list(sub), sub))
    monkeypatch.setitem(PROFILES, "paper", subset_profile("paper", list(sub), sub))
    robust = [a.name for a in missing_assets("paper-robust") if "chs20" in a.name]
    assert sorted(robust) == ["hf-hub:chs20/fare4-clip", "hf-hub:chs20/tecoa4-clip"]
    assert not any("chs20" in a.name for a in missing_assets("paper"))  # optional: only where enabled
    write_standins(tmp_path, list(sub), sub, profile="paper-robust")
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    assert missing_assets("paper-robust") == []
    p = get_profile("paper-robust", "food101", device="cpu", n_samples=4)
    assert set(vlm_variants(p)) == {"fare4-clip-vit-l14", "tecoa4-clip-vit-l14"}
    x = torch.rand(2, 3, 224, 224)
    for name in vlm_variants(p):
        vlm = load_vlm(variant_profile(p, name))  # the same open_clip path as CLIPA
        assert vlm.identity["source"] == "open_clip" and len(vlm.identity["sha256"]) >= 1
        with torch.no_grad():
            sims = vlm(x)
        assert sims.shape == (2, vlm.num_classes) and sims.abs().max() <= 1 + 1e-5


# ---- the study: the baseline, the health flags and the robust-VLM configuration, end to end --------------
@pytest.fixture(scope="module")
def beyond_run(variant_study):
    from mslib.store import Store

    with data_root_at(variant_study):
        yield variant_study, Store("smoke")


def _in(cache, fn, *args):
    with data_root_at(cache):
        return fn(*args)


def test_the_plan_holds_the_baseline_the_vlm_attack_and_the_variant(beyond_run):
    cache, store = beyond_run
    d = store.datasets[0]
    plan = d.plan
    (name,) = plan.variants
    v = plan.variants[name]
    assert v.profile.vlm == name and v.profile.vlm_spec["source"] == "lit-fare"
    assert set(plan.baseline) == set(d.profile.classifiers) and len(plan.baseline["standard"]) == 8
    assert [j.target for j in plan.baseline["standard"][2:]] == ["conf"] * 6
    assert all(j.defense == "conf" for j in plan.baseline["standard"][2:])
    keys = {j.key for j in plan.jobs()}
    assert keys == set(store.index["jobs"])  # the store's index covers every job, the variant's included
    assert {j.key for j in v.jobs()} <= keys and not {j.key for j in v.jobs()} & {j.key for j in plan.clean.values()}
    # the variant's own jobs differ from the base plan's (the VLM identity is in the context)
    assert "vlm:" + name in store.index["datasets"]["fashion_mnist"]["models"]


def test_the_rejector_is_attacked_at_the_threshold_matched_to_multi_shield(beyond_run):
    from mslib import beyond

    cache, store = beyond_run
    d = store.datasets[0]
    k = d.num_classes
    for plan in beyond.configs(d).values():
        for clf in d.profile.classifiers:
            clean = store.outputs(plan.clean[clf])
            thr = _in(cache, store.threshold, plan, clf)  # also checks the recorded thresholds
            n_ms = int((clean.ms_pred(plan.profile.tolerance) == k).sum())
            assert int((confidence_decide(clean.f, thr) == k).sum()) == n_ms
            job = plan.baseline[clf][2]
            assert {float(t) for t in store.load(job, ("threshold",))["threshold"]} == {thr}


def test_tables_show_both_vlm_configurations_the_baseline_and_the_health_flags(beyond_run):
    from mslib import beyond

    cache, store = beyond_run
    df = _in(cache, beyond.beyond_table, "smoke")
    vlms = set(df.vlm) - {""}
    assert len(vlms) == 2
    for clf in ("standard", "fgsm-rs"):
        rows = df[df.classifier == clf]
        assert sorted(rows.defense) == sorted(["classifier alone"] + ["Multi-Shield", "confidence rejector"] * 2)
        conf = rows[rows.defense == "confidence rejector"]
        ms = rows[rows.defense == "Multi-Shield"].set_index("vlm")
        for r in conf.itertuples():  # equal clean cost by construction
            assert r.clean_reject == pytest.approx(ms.loc[r.vlm, "clean_reject"])
    d = store.datasets[0]
    y, k = d.labels, d.num_classes
    for vlm, plan in beyond.configs(d).items():  # Multi-Shield's worst case over its own ensemble, by hand
        for clf in d.profile.classifiers:
            hand = outcomes_by_hand([store.outputs(j).ms_pred(plan.profile.tolerance) for j in plan.ensemble[clf]], y, k)
            row = df[(df.classifier == clf) & (df.vlm == vlm) & (df.defense == "Multi-Shield")].iloc[0]
            assert row.robust_acc_worst == pytest.approx(share(hand, "correct", "rejected")), (clf, vlm)
    health = _in(cache, beyond.attack_health, "smoke")
    paper_dlr = health[health.attack.isin(["apgd-dlr-reject@ms", "apgd-dlr-reject@conf"])]
    excl = health[health.attack.isin(["apgd-dlr-reject-excl@ms", "apgd-dlr-reject-excl@conf"])]
    # the paper's DLR loss cancels where y and the rejection logit are the top two, but as the original code
    # computes it (two divisions) its gradient on Multi-Shield there is mostly a rounding residual, not an exact
    # zero: the attack moves (with the two terms over one division every cancelling sample would be stuck)
    on_ms = paper_dlr[paper_dlr.attack == "apgd-dlr-reject@ms"]
    assert len(on_ms) and (on_ms.n_measured > 0).all()
    assert (on_ms.n_zero_grad < on_ms.n_measured / 2).all()
    assert excl.n_zero_grad.sum() < paper_dlr.n_zero_grad.sum()
    assert (health[health.gradient_free].n_measured == 0).all()
    cmp = _in(cache, beyond.comparisons, "smoke")
    assert "robust VLM vs clean VLM in Multi-Shield" in set(cmp.question)
    # the paired counts by hand (the interval itself: test_metrics' hand-computed Newcombe cases)
    for r in cmp[cmp.question == "Multi-Shield vs its classifier alone"].itertuples():
        plan = beyond.configs(d)[r.a.split("[")[-1].rstrip("]")]
        every = [store.outputs(j) for j in (plan.clean[r.classifier], *plan.ensemble[r.classifier],
                                             *plan.baseline[r.classifier], *plan.transfer.get(r.classifier, ()))]
        ms = outcomes_by_hand([o.ms_pred(plan.profile.tolerance) for o in every], y, k)
        every_clf = [store.outputs(j) for pl in beyond.configs(d).values() for j in (
            pl.clean[r.classifier], *pl.ensemble[r.classifier], *pl.baseline[r.classifier],
            *pl.transfer.get(r.classifier, ()))]
        alone = outcomes_by_hand([o.clf_pred() for o in every_clf], y)
        only_a = sum(a != "fooled" and b == "fooled" for a, b in zip(ms, alone))
        only_b = sum(a == "fooled" and b != "fooled" for a, b in zip(ms, alone))
        assert (r.only_a, r.only_b, r.n) == (only_a, only_b, len(y)), r
        assert r.difference == pytest.approx((only_a - only_b) / len(y))
    assert len(beyond.conclusions(cmp)) == len(cmp)
    rc = _in(cache, beyond.risk_coverage, "smoke")
    assert rc.groupby(["classifier", "vlm", "defense"]).adaptive.sum().eq(1).all()
    vr = _in(cache, beyond.vlm_robustness, "smoke")
    assert len(vr) == 2 and vr.robust_zero_shot_acc.notna().all()


def test_multi_shield_is_scored_only_with_its_own_vlm_scores(beyond_run):
    """A stored example carries the scores of the VLM it was made with: Multi-Shield with the robust VLM must
    not be scored on the clean-VLM configuration's examples (their ``s`` is the other VLM's), while the
    confidence rejector and the classifier (logits only) may use every configuration's."""
    from mslib import beyond

    cache, store = beyond_run
    d = store.datasets[0]
    y, k = d.labels, d.num_classes
    cfg = beyond.configs(d)
    base, variant = list(cfg)
    df = _in(cache, beyond.beyond_table, "smoke").set_index(["classifier", "vlm", "defense"])
    cmp = _in(cache, beyond.comparisons, "smoke")
    for clf in d.profile.classifiers:
        assert not torch.equal(store.outputs(cfg[base].clean[clf]).s, store.outputs(cfg[variant].clean[clf]).s)
        for vlm, plan in cfg.items():
            own = [plan.clean[clf], *plan.ensemble[clf], *plan.baseline[clf], *plan.transfer.get(clf, ())]
            by_hand = outcomes_by_hand([store.outputs(j).ms_pred(plan.profile.tolerance) for j in own], y, k)
            assert df.loc[(clf, vlm, "Multi-Shield"), "robust_acc_every"] == pytest.approx(
                share(by_hand, "correct", "rejected"))
        row = cmp[(cmp.classifier == clf) & (cmp.question == "robust VLM vs clean VLM in Multi-Shield")].iloc[0]
        assert row.robust_acc_a == pytest.approx(df.loc[(clf, variant, "Multi-Shield"), "robust_acc_every"])
        assert row.robust_acc_b == pytest.approx(df.loc[(clf, base, "Multi-Shield"), "robust_acc_every"])
        # the classifier alone: every configuration's examples (the classifier is the same in both)
        every = [store.outputs(j) for plan in cfg.values() for j in (plan.clean[clf], *plan.ensemble[clf],
                                                                      *plan.baseline[clf], *plan.transfer.get(clf, ()))]
        assert df.loc[(clf, "", "classifier alone"), "robust_acc_every"] == pytest.approx(
            share(outcomes_by_hand([o.clf_pred() for o in every], y), "correct"))


def test_the_clean_vlm_configurations_examples_are_rescored_with_the_robust_vlm(beyond_run):
    """Every attack on the clean-VLM Multi-Shield, VLM and rejector is a transfer attack on the robust-VLM
    configuration: its images, rescored with that configuration's models (same classifier: identical logits;
    another VLM: other scores), keyed by the source job and by the variant's models."""
    cache, store = beyond_run
    d = store.datasets[0]
    (variant,) = d.plan.variants.values()
    for clf in d.profile.classifiers:
        sources = [j for j in (*d.plan.ensemble[clf], *d.plan.baseline[clf]) if j.target != "clf"]
        rescored = variant.transfer[clf]
        assert [j.after for j in rescored] == [(j,) for j in sources] and {j.kind for j in rescored} == {"rescore"}
        assert all(j.context == variant.clean[clf].context for j in rescored)
        for src, job in zip(sources, rescored):
            a, b = store.outputs(src), store.outputs(job)
            assert torch.allclose(a.f, b.f, atol=1e-4), job.label  # the classifier on the very same images
            assert not torch.allclose(a.s, b.s), job.label  # scored by the robust VLM, not the clean one
        assert not any(store.load(j, ("x",)).get("x", torch.empty(0)).numel() for j in rescored)  # no copies


def test_a_job_runs_only_in_a_workspace_holding_the_models_its_key_names(beyond_run):
    """A variant's plan reaches the base configuration's jobs (its rescore jobs build on them); running one
    of those in the variant's workspace would store the robust VLM's outputs under the clean VLM's key."""
    from mslib.experiment import Workspace, execute
    from mslib.profiles import get_profile

    cache, store = beyond_run
    d = store.datasets[0]
    (name,) = d.plan.variants
    with data_root_at(cache):
        ws = Workspace(get_profile("smoke", d.profile.dataset, **VARIANT))
        base_job = d.plan.ensemble["standard"][2]
        assert execute(ws, [base_job], progress=False).computed == 0  # its own workspace: done, reused
        with pytest.raises(ValueError, match="not the model the job's key names"):
            execute(ws.variant(name), [base_job], progress=False)
        execute(ws.variant(name), list(d.plan.variants[name].transfer["standard"]), progress=False)


def test_the_robust_vlm_is_cached_and_keyed(beyond_run):
    from mslib.cache import file_sha256, read_json
    from mslib.models import load_vlm
    from mslib.models.local import model_dir
    from mslib.models.openclip_factory import WEIGHTS_NAME
    from mslib.cache import record_key
    from mslib.models.robust import fare_dir, fare_record
    from mslib.plan import variant_profile
    from mslib.profiles import get_profile

    cache, store = beyond_run
    p = get_profile("smoke", **VARIANT)
    (name,) = p.vlm_variants
    vp = variant_profile(p, name)
    spec = {**vp.vlm_spec, "base": {"source": "lit", **vp.vlm_spec["base"]}}
    with data_root_at(cache):
        folder = fare_dir(vp, spec)
        info = read_json(folder / "train_info.json")
        mtime = (folder / WEIGHTS_NAME).stat().st_mtime_ns
        vlm = load_vlm(vp)  # from the cache: no retraining
        assert (folder / WEIGHTS_NAME).stat().st_mtime_ns == mtime
        record = read_json(folder / "record.json")
        base = model_dir("lit", vp, spec["base"])
        assert record["base_sha256"] == file_sha256(base / WEIGHTS_NAME)  # another base model retrains
        key = record_key(fare_record(vp, spec))
        assert folder.name == key
        assert record_key(fare_record(vp, {**spec, "eps": 0.05})) != key
        assert record_key(fare_record(vp, {**spec, "seed": 1})) != key
    assert vlm.identity["source"] == "lit-fare" and vlm.identity["sha256"][1] == file_sha256(folder / WEIGHTS_NAME)
    for key in ("train_seconds", "base_zero_shot_test_accuracy", "fare_zero_shot_test_accuracy",
                "base_zero_shot_pgd_accuracy", "fare_zero_shot_pgd_accuracy"):
        assert key in info


def test_kill_9_during_the_fare_fine_tune_then_a_rerun_gives_the_same_tables(beyond_run, tmp_path):
    """Catches: a FARE folder that a killed fine-tune leaves looking finished (weights but no train_info, or
    a half-written file), so the rerun scores with a half-tuned VLM, or the robustness table reads nothing."""
    import shutil

    from mslib import beyond
    from mslib.experiment import run_study
    from mslib.models.robust import fare_dir
    from mslib.plan import variant_profile
    from mslib.profiles import get_profile

    from results_helpers import kill_during_training, linked_models_but

    src, store = beyond_run
    p = get_profile("smoke", **VARIANT)
    (name,) = p.vlm_variants
    vp = variant_profile(p, name)
    spec = {**vp.vlm_spec, "base": {"source": "lit", **vp.vlm_spec["base"]}}
    cache = fresh_cache(tmp_path / "killed-fare")
    shutil.copytree(src / "results", cache / "results")
    with data_root_at(cache):
        folder = fare_dir(vp, spec)
    linked_models_but(cache, folder)
    kill_during_training(cache, "from mslib.models import load_vlm; from mslib.plan import variant_profile; "
                         "from mslib.profiles import get_profile; "
                         f"load_vlm(variant_profile(get_profile('smoke', **{VARIANT!r}), {name!r}))")
    assert (folder / "record.json").is_file() and not (folder / "train_info.json").exists(), "killed too late"
    tables = (beyond.beyond_table, beyond.comparisons, beyond.vlm_robustness)
    before = [_in(src, fn, "smoke").to_csv(index=False) for fn in tables]
    with data_root_at(cache):
        summary = run_study("smoke", progress=False, overrides=VARIANT)
    assert summary.done and summary.computed == 0  # fine-tuned again whole: the same weights, the same keys
    assert [_in(cache, fn, "smoke").to_csv(index=False) for fn in tables] == before
