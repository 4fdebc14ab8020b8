"""The budget-convergence check on a real (small) study: what it computes, at which budget, and its table."""
from __future__ import annotations

import pytest

from mslib import beyond
from mslib.cache import data_root_at
from mslib.experiment import run_study
from mslib.plan import CONVERGENCE_RESTARTS, CONVERGENCE_SCALE
from mslib.store import Store
from results_helpers import OVERRIDES, study_copy

CHECKED = {**OVERRIDES, "convergence": True}


@pytest.fixture(scope="module")
def checked_study(smoke_study, tmp_path_factory):
    cache = study_copy(smoke_study, tmp_path_factory.mktemp("conv") / "data")
    with data_root_at(cache):
        summary = run_study("smoke", progress=False, overrides=CHECKED)
        store = Store("smoke")
        jobs = [j for d in store.datasets for plan in beyond.configs(d).values()
                for stage in plan.convergence.values() for j in stage]
        return cache, store, summary, jobs


@pytest.mark.slow
def test_the_check_adds_only_its_own_jobs_at_four_times_the_budget(checked_study):
    """Catches a check that recomputes the study's ensemble (turning it on must not change any other job's
    key) or runs at another budget than the one its table is read as."""
    cache, store, summary, jobs = checked_study
    assert summary.done and jobs
    batches = sum(len(store.folder(j).starts()) for j in jobs)
    assert summary.computed == batches  # every other batch came from the study without the check
    assert {(j.classifier, j.target) for j in jobs} == {(c, t) for c in ("standard", "fgsm-rs") for t in ("ms", "conf")}
    for j in jobs:
        opts = dict(j.options)
        if j.attack.startswith("square"):
            assert opts["n_queries"] == CONVERGENCE_SCALE * OVERRIDES["square_queries"]
        else:
            assert opts["n_restarts"] == CONVERGENCE_RESTARTS
        if j.attack.startswith("apgd"):
            assert opts["n_iter"] == CONVERGENCE_SCALE * OVERRIDES["n_iter"]


@pytest.mark.slow
def test_the_table_starts_from_the_worst_case_the_study_tables_and_counts_each_new_break_once(checked_study):
    """Catches a convergence table whose starting point is not the worst case the beyond table prints for the
    same defense, or whose moved samples and their attribution disagree with the rates it reports."""
    cache, store, summary, jobs = checked_study
    with data_root_at(cache):
        conv = beyond.convergence_table(store)
        worst = beyond.beyond_table(store).set_index(["classifier", "vlm", "defense"])["robust_acc_worst"]
    assert sorted(zip(conv.classifier, conv.defense)) == sorted(
        (c, d) for c in ("standard", "fgsm-rs") for d in ("Multi-Shield", "confidence rejector"))
    for r in conv.itertuples():
        assert r.robust_acc_base == pytest.approx(worst[r.classifier, r.vlm, r.defense])
        assert r.moved_samples == round((r.robust_acc_base - r.robust_acc_stronger) * r.n)
        found = 0 if r.found_by == "none" else sum(int(p.rsplit(": ", 1)[1]) for p in r.found_by.split("; "))
        assert found == r.moved_samples
