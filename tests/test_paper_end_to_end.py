"""The paper profile end to end on stand-ins: every result computed, then the tables read, on CPU with a
size override (a few images, two iterations). The numbers are meaningless; the plumbing is what is checked:
the paper's loaders, the real (small) architectures, the attacks, the results store and the tables.

CIFAR-10 runs a real RobustBench ResNet-18 with the Hugging Face CLIP pair; Food-101 the ResNet-18
fine-tuning recipe with CLIPA's open_clip folder. ``subset_profile`` trims the paper profile to these (the
heaviest architectures are left out for CI; `python -m mslib.standins DIR` writes them all).
"""
from __future__ import annotations

import importlib.util

import pytest

from mslib.profiles import PROFILES
from mslib.standins import DRY_RUN_OVERRIDES, subset_profile, write_standins

CLASSIFIERS = {"cifar10": ["Addepalli2022Efficient_RN18"], "food101": ["resnet18-ft"]}
# the CLI's dry run, smaller still: the plumbing needs two images and one agreement target, not four and three
OVERRIDES = {**DRY_RUN_OVERRIDES, "n_samples": 2, "batch_size": 2, "agreement_targets": 1}


@pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="robustbench model zoo not installed")
def test_paper_profile_runs_end_to_end_on_standins(tmp_path, monkeypatch, no_paper_env):
    from mslib import experiment, tables
    from mslib.fetch import missing_assets

    write_standins(tmp_path, list(CLASSIFIERS), CLASSIFIERS)
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    monkeypatch.setitem(PROFILES, "paper", subset_profile("paper", list(CLASSIFIERS), CLASSIFIERS))
    assert missing_assets("paper") == []

    assert experiment.run_study("paper", overrides=dict(OVERRIDES), progress=False).done
    main = tables.main_table("paper")  # the store remembers the overrides of the run
    assert set(main["dataset"]) == set(CLASSIFIERS) and (main["n"] == OVERRIDES["n_samples"]).all()
    attacks = tables.attacks_table("paper")
    assert {"apgd-dlr-reject@ms", "apgd-dlr-reject-excl@ms"} <= set(attacks["attack"])
    for name in ("security_curves", "tolerance_tradeoff", "zero_shot_table", "eps_half_check", "attack_curves"):
        assert len(getattr(tables, name)("paper")), name
    df, clean, adv, _ = tables.gallery("paper", n=2)
    assert clean.shape == adv.shape and clean.shape[-1] == 32  # CIFAR-10 at its own size; models resize inside
    # the sample indices are the original code's draw (random.sample after seeding 1233), recorded per result
    import random

    from mslib.paper_data import load_labels
    from mslib.store import Store

    d = {r.profile.dataset: r for r in Store("paper").datasets}
    random.seed(1233)
    n_test = len(load_labels("cifar10", "test")[0])
    assert d["cifar10"].indices.tolist() == random.sample(range(n_test), OVERRIDES["n_samples"])
