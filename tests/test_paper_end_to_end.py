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


@pytest.mark.skip(reason="needs the new results layer (tables read the plan run_study ran; today they rebuild runners without its overrides)")
@pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="robustbench model zoo not installed")
def test_paper_profile_runs_end_to_end_on_standins(tmp_path, monkeypatch):
    from mslib import experiment, tables
    from mslib.fetch import missing_assets

    for var in ("MSLIB_PAPER_DATA", "MSLIB_IMAGENET", "MSLIB_ROBUSTBENCH_DIR"):
        monkeypatch.delenv(var, raising=False)
    write_standins(tmp_path, list(CLASSIFIERS), CLASSIFIERS)
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    monkeypatch.setitem(PROFILES, "paper", subset_profile("paper", list(CLASSIFIERS), CLASSIFIERS))
    assert missing_assets("paper") == []

    assert experiment.run_study("paper", overrides=dict(DRY_RUN_OVERRIDES), progress=False)
    main = tables.main_table("paper")
    assert set(main["dataset"]) == set(CLASSIFIERS)
    attacks = tables.attacks_table("paper")
    assert {"apgd-dlr-reject", "apgd-dlr-reject-excl"} <= set(attacks["attack"])
    assert len(tables.security_curves("paper")) and len(tables.tolerance_tradeoff("paper"))
