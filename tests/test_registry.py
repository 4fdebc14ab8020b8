"""Datasets and model sources are each one registered spec that every consumer reads; unknown names fail
with the registered ones, and a new spec is all a new dataset needs."""
from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch

from mslib import data, fetch, labels, paper_data
from mslib.datasets import Archive, DatasetSpec
from mslib.models import SOURCES, model_identity, source_spec

MSLIB = Path(__file__).resolve().parent.parent / "mslib"


def _toy_load(split, options):
    n = 12
    x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2) / (n * 4)
    return x, torch.arange(n) % 3, ["a", "b", "c"]


def _toy_labels(split, options):
    return torch.arange(12) % 3, ["a", "b", "c"]


@pytest.mark.parametrize("read", [lambda: data.load_labels("svhn"), lambda: paper_data.load_labels("svhn"),
                                  lambda: data.get_loader("svhn"), lambda: paper_data.dataset_path("svhn"),
                                  lambda: fetch.fetch_dataset("svhn")])
def test_an_unknown_dataset_is_refused_with_the_registered_names(read):
    """Catches a reader that falls back to another dataset's (load_labels read any name as CIFAR-10)."""
    with pytest.raises(ValueError, match=r"'svhn'") as e:
        read()
    assert "cifar10" in str(e.value)


def test_a_dataset_without_a_label_reader_gets_its_labels_by_loading():
    """Catches load_labels using another dataset's reader for a spec that has none (Fashion-MNIST)."""
    if data.DATASETS["fashion_mnist"].labels is not None:
        pytest.skip("Fashion-MNIST has a label reader now")
    try:
        _, y, names = data.load_split("fashion_mnist", "test", {"download": False})
    except FileNotFoundError as e:  # pragma: no cover
        pytest.skip(str(e))
    got, got_names = data.load_labels("fashion_mnist", "test", {"download": False, "sampler": "original"})
    assert torch.equal(got, y) and got_names == names


def test_a_new_dataset_is_one_registered_spec(monkeypatch, tmp_path):
    """Catches a consumer that still dispatches on dataset names: a spec registered at run time is loaded,
    sampled from its own start, fetched from its own archives and named from its display name."""
    spec = DatasetSpec("toy", "Toy set", _toy_load, _toy_labels, root=lambda: tmp_path, folder="toy",
                       marker="toy/labels.txt", archives=(Archive("https://example.invalid/toy.tar", "0" * 32),),
                       sample_start=5)
    monkeypatch.setitem(data.DATASETS, "toy", spec)
    x, y, names = data.load_split("toy", "test")
    assert x.shape == (12, 1, 2, 2) and names == ["a", "b", "c"]
    assert torch.equal(data.load_labels("toy")[0], y)
    random.seed(1233)
    expected = random.sample(range(5, 12), 4)  # the original sampler's draw from the spec's start
    assert data.eval_indices("toy", y, 4, 0, {"sampler": "original"}).tolist() == expected
    asset = fetch._dataset_asset("toy", {}, "cmd")
    assert asset is not None and asset.path == tmp_path / "toy" / "labels.txt" and not asset.present()
    calls = []
    monkeypatch.setattr(fetch, "download", lambda url, dest, md5=None, **kw: calls.append((url, md5)) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        fetch.fetch_asset(asset)
    assert calls == [("https://example.invalid/toy.tar", "0" * 32)]


def test_display_names_come_from_the_specs():
    assert labels.DATASETS == {n: s.display for n, s in data.DATASETS.items()}
    assert labels.dataset("oxford_pets") == "Oxford-IIIT Pets"


def test_every_source_names_functions_that_exist():
    """Catches a registry entry whose "module:function" does not resolve (a renamed loader or writer)."""
    for spec in SOURCES.values():
        for field in ("load", "locate", "assets", "standin"):
            if getattr(spec, field) is not None:
                assert callable(spec.function(field)), (spec.name, field)
    with pytest.raises(ValueError, match=r"unknown VLM source 'robustbench'; known: \[.*'hf-clip'"):
        source_spec("robustbench", "vlm")


def test_a_model_identity_reuses_the_hashes_its_loader_verified(tmp_path, monkeypatch):
    """Catches a checkpoint hashed a second time for the identity after the loader verified it."""
    import mslib.models as models

    f = tmp_path / "w.pt"
    f.write_bytes(b"weights")
    model = torch.nn.Linear(1, 1)
    model.checkpoint_files = [f]
    hashed = []
    monkeypatch.setattr(models, "file_sha256", lambda p: hashed.append(p) or "h" * 64)
    model.checkpoint_sha256 = ["v" * 64]
    assert model_identity(model, "local-cnn", {}, _toy_load)["sha256"] == ["v" * 64] and hashed == []
    model.checkpoint_sha256 = [None]  # a file the loader did not hash is hashed here
    assert model_identity(model, "local-cnn", {}, _toy_load)["sha256"] == ["h" * 64] and hashed == [f]
    del model.checkpoint_sha256
    assert model_identity(model, "local-cnn", {}, _toy_load)["sha256"] == ["h" * 64] and hashed == [f, f]


def _files_naming(name: str) -> list[str]:
    pattern = re.compile(r"[\"']" + re.escape(name) + r"[\"'](?!\w)")
    return sorted(str(p.relative_to(MSLIB)) for p in MSLIB.rglob("*.py") if pattern.search(p.read_text()))


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_a_dataset_name_is_written_only_in_its_spec_and_the_profiles(name):
    """Catches a new dispatch on a dataset name outside its spec. RobustBench's own dataset names (cifar10,
    imagenet), which two of ours share, belong to its loader in models/paper.py."""
    found = set(_files_naming(name)) - {"profiles.py", "models/paper.py"}
    assert len(found) == 1, found


# The local models' source names are also the release's recipe kinds (models/released.py, release_tool.py; FARE
# fine-tunes a "lit" base in models/robust.py); plan.py (results layer) tags a variant's VLM by source.
_ALSO = {"lit": {"models/released.py", "models/release_tool.py", "models/robust.py", "plan.py"},
         "lit-fare": {"models/released.py", "models/release_tool.py"},
         "open_clip": {"plan.py"}, "hf-clip": {"plan.py"}}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_a_source_name_is_written_only_in_its_module_the_registry_and_the_profiles(name):
    """Catches a new dispatch on a model source outside its module: fetch and the stand-ins read the registry."""
    module = SOURCES[name].load.split(":")[0].removeprefix("mslib.").replace(".", "/") + ".py"
    found = {f for f in _files_naming(name) if not f.startswith("course/")}
    assert found - {module, "models/__init__.py", "profiles.py"} - _ALSO.get(name, set()) == set()
