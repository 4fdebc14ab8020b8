"""Released weights: the shipped tiny models load, are the released ones (their accuracy reproduces to the
image), are refused by name when modified, and a release exported from trained models loads back as them."""
from __future__ import annotations

import os
import shutil
import stat

import pytest
import torch

import mslib
from mslib import data
from mslib.cache import DamagedFileError
from mslib.models import local, release_tool, released


@pytest.fixture(scope="module")
def fashion_test():
    try:
        x, y, _ = data.load_split("fashion_mnist", "test", {"download": False})
    except FileNotFoundError as e:  # pragma: no cover
        pytest.skip(str(e))
    return x, y


def _entry(profile, name):
    kind = "cnn" if name in profile.classifiers else "lit"
    spec = profile.classifier_specs[name] if kind == "cnn" else profile.vlm_spec
    entry = released.released_entry(kind, profile, spec, local.CODE_VERSION)
    assert entry is not None, f"no released weights for tiny/{name}"
    return entry


@pytest.mark.parametrize("name", ["standard", "fgsm-rs", "lit-vit-s"])
def test_released_tiny_models_reproduce_their_published_test_accuracy(fashion_test, monkeypatch, tmp_path, name):
    """Catches a release that is not what its manifest says (a swapped file, a wrong architecture, the LiT text
    tower taken from elsewhere than its wheel, the wrong preprocessing): the model's accuracy on all 10,000
    test images must equal, to the image, the accuracy measured when it was trained."""
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))  # nothing cached: the release is the only source
    profile = mslib.get_profile("tiny")
    entry = _entry(profile, name)
    model = mslib.load_vlm(profile) if name == profile.vlm else mslib.load_classifier(profile, name)
    assert model.identity["sha256"][0] == entry["sha256"]
    assert not any(tmp_path.rglob("*.safetensors")) and not any(tmp_path.rglob("model.pt"))  # nothing trained
    x, y = fashion_test
    key = "test_accuracy" if name in profile.classifiers else "zero_shot_test_accuracy"
    correct = round(local.evaluate(model, x, y, batch_size=500) * len(y))
    assert correct == round(entry["train_info"][key] * entry["train_info"]["n_test"])


def test_a_modified_released_file_is_refused_by_name(monkeypatch, tmp_path):
    """Catches a loader that uses a released file without checking its pinned SHA-256."""
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "weights"
    shutil.copytree(released.RELEASE_DIR, root)
    profile = mslib.get_profile("tiny")
    target = root / _entry(profile, "standard")["file"]
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 1  # one bit of one weight
    target.write_bytes(bytes(raw))
    monkeypatch.setattr(released, "RELEASE_DIR", root)
    with pytest.raises(DamagedFileError, match=target.name):
        mslib.load_classifier(profile, "standard")
    target.unlink()
    with pytest.raises(DamagedFileError, match=f"{target.name}.*missing"):
        mslib.load_classifier(profile, "standard")
    mslib.load_classifier(profile, "fgsm-rs")  # its neighbour is intact and still loads


def test_an_exported_release_loads_back_as_the_trained_models_and_train_mode_ignores_it(monkeypatch, tmp_path):
    """Catches an export that drops trained tensors (e.g. the logit scale or a layer) or a loader that builds
    the released model differently from the trained one; and `weights="train"` silently using a release."""
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "weights"
    monkeypatch.setattr(released, "RELEASE_DIR", root)
    smoke = mslib.get_profile("smoke")
    spec = {**smoke.classifier_specs["standard"], "train_subset": 500}
    vlm_spec = {**smoke.vlm_spec, "train_subset": 500}
    small = smoke.replace(classifiers=("standard",), classifier_specs={"standard": spec}, vlm_spec=vlm_spec,
                          vlm_variants={}, weights="train")
    monkeypatch.setattr(release_tool, "_profile_models", lambda name: [("cnn", "standard", small, spec),
                                                                   ("lit", small.vlm, small, vlm_spec)])
    written = release_tool.export(["smoke-small"])
    assert [e["kind"] for e in written] == ["cnn", "lit"]
    x = data.load_split("fashion_mnist", "test")[0][:64]
    use = small.replace(weights="released")
    for trained, shipped in ((mslib.load_classifier(small, "standard"), mslib.load_classifier(use, "standard")),
                             (mslib.load_vlm(small), mslib.load_vlm(use))):
        assert shipped.identity["sha256"][0] != trained.identity["sha256"][0]  # keyed by the released file
        assert shipped.identity["sha256"][0] in {e["sha256"] for e in written}
        with torch.no_grad():
            assert torch.equal(shipped(x), trained(x))
    assert release_tool.export(["smoke-small"]) == []  # already released: nothing rewritten
    lines = release_tool.retrain(["smoke-small"])
    # each scored on the test images its recipe names: the CNN on all 10,000, the smoke LiT on its n_test
    n_vlm = small.vlm_spec.get("n_test", 10000)
    assert len(lines) == 2 and "+0.00 points, +0 of 10000 test images" in lines[0], lines
    assert f"+0.00 points, +0 of {n_vlm} test images" in lines[1], lines


def test_files_written_by_the_cache_and_the_reports_follow_the_umask(tmp_path):
    """Catches files created with mkstemp's 0600 (a class's shared cache unreadable by the class)."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mslib import report
    from mslib.cache import save_tensors, write_json

    old = os.umask(0o022)
    try:
        written = [save_tensors({"a": torch.zeros(2)}, tmp_path / "t.pt"), write_json({"a": 1}, tmp_path / "r.json")]
        written += report.save_table(pd.DataFrame({"a": [0.5]}), tmp_path / "table")
        fig, _ = plt.subplots()
        written += report.save_figure(fig, tmp_path / "figure", data=pd.DataFrame({"a": [1]}))
    finally:
        os.umask(old)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
