"""The paper profile's assets as stand-ins (mslib.standins): written in the real on-disk formats, found by
mslib.fetch, and loaded through the paper profile's own loaders (random weights, synthetic images)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from mslib import get_profile, load_classifier, load_eval_set, load_vlm
from mslib.fetch import missing_assets
from mslib.profiles import PROFILES
from mslib.standins import subset_profile, write_standins

pytestmark = pytest.mark.skipif(importlib.util.find_spec("robustbench") is None,
                                reason="robustbench model zoo not installed (see docs/robustbench.md)")

# CIFAR-10 with two small real RobustBench architectures (a ResNet-18, and an ensemble of three ResNet-50s
# in RobustBench's <name>.pt_m<i>.pt layout); Food-101 with the ResNet-18 fine-tuning recipe and CLIPA.
CLASSIFIERS = {"cifar10": ["Addepalli2022Efficient_RN18", "Chen2020Adversarial"], "food101": ["resnet18-ft"]}


@pytest.fixture()
def standins(tmp_path, monkeypatch, no_paper_env):
    written = write_standins(tmp_path, list(CLASSIFIERS), CLASSIFIERS)
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    monkeypatch.setitem(PROFILES, "paper", subset_profile("paper", list(CLASSIFIERS), CLASSIFIERS))
    return tmp_path, written


def test_standins_are_complete_recorded_and_load_through_the_paper_profile(standins):
    import json

    root, written = standins
    assert missing_assets("paper") == []
    manifest = json.loads((root / "manifest.json").read_text())
    assert "models/robustbench/cifar10/Linf/Chen2020Adversarial.pt_m2.pt" in manifest
    assert any(k.startswith("models/open_clip/UCSC-VLAA--ViT-L-14-CLIPA-datacomp1B/") for k in manifest)
    assert all(len(v["sha256"]) == 64 for v in manifest.values())
    for ds, names in CLASSIFIERS.items():
        prof = get_profile("paper", ds, device="cpu", n_samples=4)
        if ds == "food101":  # one quick epoch of the fine-tuning recipe (the real loop and cache)
            spec = {**prof.classifier_specs["resnet18-ft"], "epochs": 1, "num_workers": 0}
            prof = prof.replace(classifier_specs={"resnet18-ft": spec})
        x, y, classes, idx = load_eval_set(prof, with_indices=True)
        k = len(classes)
        assert x.shape == (4, 3, *(2 * (32 if ds == "cifar10" else 224,))) and y.shape == (4,)
        assert 0 <= x.min() and x.max() <= 1 and idx.shape == (4,)
        models = [load_classifier(prof, name) for name in names]  # fine-tuning trains here: not under no_grad
        vlm = load_vlm(prof)
        with torch.no_grad():
            for model in models:
                assert model(x).shape == (4, k)
            sims = vlm(x)
        assert sims.shape == (4, k) and sims.abs().max() <= 1 + 1e-5


def test_standins_cli_writes_one_dataset(tmp_path, capsys):
    from mslib.standins import main

    assert main([str(tmp_path), "--datasets", "stl10", "--classifier", "stl10=resnet18-ft"]) == 0
    assert (tmp_path / "datasets" / "stl10_binary" / "train_X.bin").is_file()
    assert (tmp_path / "models" / "torchvision" / "resnet18-f37072fd.pth").is_file()
    assert "still missing" in capsys.readouterr().out  # the other datasets' assets were not asked for


def test_a_narrowed_run_needs_only_its_own_assets(tmp_path, monkeypatch, no_paper_env):
    """`--set datasets=... classifiers=...` (the documented dry run) checks the assets of what it runs, not of
    the whole profile: STL-10's stand-ins alone let an STL-10 workspace start, and the rest stays missing."""
    from mslib.experiment import Workspace
    from mslib.fetch import MissingAssetsError, missing_assets
    from mslib.profiles import get_profile
    from mslib.standins import main

    assert main([str(tmp_path), "--datasets", "stl10", "--classifier", "stl10=resnet18-ft"]) == 0
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    stl10 = get_profile("paper", "stl10", n_samples=4, device="cpu")
    assert missing_assets("paper", [stl10]) == []
    assert {a.kind for a in missing_assets("paper")} >= {"dataset", "robustbench"}  # the others' are still absent
    ws = Workspace(stl10)
    assert len(ws.labels) == 4
    with pytest.raises(MissingAssetsError, match="cifar10|robustbench"):
        Workspace(get_profile("paper", "cifar10", n_samples=4, device="cpu"))
