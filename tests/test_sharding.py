"""Sharded runs: two shards through submitit's local executor merge into exactly the unsharded result."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mslib.cache import REPO_ROOT, load_tensors
from mslib.experiment import STUDY_PLAN, Runner, run_study, study_eps
from mslib.profiles import get_profile

# 2 batches (one per shard), few iterations, and a light worst-case ensemble (1 agreement target, 8 Square queries)
OVERRIDES = {"n_samples": 10, "batch_size": 5, "n_iter": 2, "extra": {"agreement_targets": 1, "square_queries": 8}}


def _cache(root: Path) -> Path:
    """A fresh results cache that shares the repo's trained models and datasets (linked, not retrained)."""
    root.mkdir(parents=True)
    real = REPO_ROOT / "data"
    for entry in real.iterdir() if real.exists() else []:
        if entry.name not in ("results", "submitit"):
            (root / entry.name).symlink_to(entry.resolve())
    return root


def _batch_files(cache: Path) -> dict[str, dict]:
    """Every cached batch (results/<key>/batch_*.pt) of a cache, without its timing."""
    out = {}
    for f in sorted((cache / "results").glob("*/batch_*.pt")):
        d = load_tensors(f)
        d.pop("seconds", None)
        out[f"{f.parent.name}/{f.name}"] = d
    return out


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


@pytest.fixture(scope="module")
def smoke_models():
    """Load (training once if needed) the smoke models in the repo cache, so shard jobs never race to train."""
    from mslib.models import load_classifier, load_vlm

    p = get_profile("smoke", **OVERRIDES)
    for name in p.classifiers:
        load_classifier(p, name)
    load_vlm(p)
    return p


def test_two_submitit_shards_merge_into_the_unsharded_result(tmp_path, monkeypatch, smoke_models):
    pytest.importorskip("submitit")
    from mslib.launch import run_sharded

    p = smoke_models
    clf, eps = p.classifiers[0], max(study_eps(p))

    sharded = _cache(tmp_path / "sharded")
    monkeypatch.setenv("MSLIB_CACHE", str(sharded))
    # one shard alone computes its batches but is not a result yet
    assert run_study("smoke", shard=(0, 2), progress=False, overrides=OVERRIDES) is False
    alone = Runner(p, shard=(0, 2), progress=False)
    assert alone.attacked(clf, "ms", "apgd-ce-reject", eps) is None
    assert alone.clean(clf) is None
    with pytest.raises(RuntimeError, match="not computed yet"):  # merging now names the missing batches
        alone._complete_or_raise(_folder(p, clf, eps), "apgd-ce-reject")
    # both shards through submitit's local executor (shard 0 resumes from its cached batches), then merge
    # (the jobs use this process's thread count: CPU kernels' summation order, and so the last bits of the
    # logits, depend on it)
    assert run_sharded("smoke", 2, executor="local", folder=tmp_path / "jobs", overrides=OVERRIDES,
                       threads=torch.get_num_threads(), timeout_min=10) is True
    merged = {key: Runner(p, progress=False).attacked(clf, t, a, e) for key, (t, a, e) in _plan(p).items()}

    plain = _cache(tmp_path / "plain")
    monkeypatch.setenv("MSLIB_CACHE", str(plain))
    assert run_study("smoke", progress=False, overrides=OVERRIDES) is True
    unsharded = {key: Runner(p, progress=False).attacked(clf, t, a, e) for key, (t, a, e) in _plan(p).items()}

    for key in merged:
        for field in ("f", "s", "x_adv", "success"):
            assert torch.equal(getattr(merged[key], field), getattr(unsharded[key], field)), (key, field)
    # and file by file: the same result entries, the same batches, identical tensors
    files_sharded, files_plain = _batch_files(sharded), _batch_files(plain)
    assert files_sharded.keys() == files_plain.keys() and files_plain
    for name, d in files_plain.items():
        assert d.keys() == files_sharded[name].keys()
        for k in d:
            assert _equal(d[k], files_sharded[name][k]), (name, k)


def _plan(p) -> dict[str, tuple[str, str, float]]:
    return {f"{t}/{a}/{e:g}": (t, a, e) for t, atts in STUDY_PLAN.items() for a in atts for e in study_eps(p)}


def _folder(p, clf, eps):
    from mslib.cache import entry_dir

    return entry_dir("results", Runner(p, progress=False).attack_record(clf, "ms", "apgd-ce-reject", eps))


def test_run_sharded_checks_its_arguments(tmp_path):
    from mslib.launch import make_executor, run_sharded

    with pytest.raises(ValueError, match="n_shards"):
        run_sharded("smoke", 0, folder=tmp_path)
    with pytest.raises(ValueError, match="unknown profile"):
        run_sharded("no-such-profile", 2, folder=tmp_path)
    with pytest.raises(ValueError, match="executor"):
        make_executor("kubernetes", tmp_path)
