"""Sharded runs: two shards through submitit's local executor merge into exactly the unsharded result."""
from __future__ import annotations

import pytest
import torch

from mslib.experiment import run_study
from mslib.store import ResultsNotReadyError, Store

from results_helpers import OVERRIDES, batch_files, fresh_cache


def test_two_submitit_shards_merge_into_the_unsharded_result(tmp_path, monkeypatch, smoke_models):
    pytest.importorskip("submitit")
    from mslib.launch import run_sharded

    sharded = fresh_cache(tmp_path / "sharded")
    monkeypatch.setenv("MSLIB_CACHE", str(sharded))
    # one shard alone computes its batches but is not a result yet: no index, and the store says so
    assert run_study("smoke", shard=(0, 2), progress=False, overrides=OVERRIDES).done is False
    with pytest.raises(ResultsNotReadyError, match="no results for profile 'smoke'"):
        Store("smoke")
    # both shards through submitit's local executor (shard 0 resumes from its cached batches), then merge
    # (the jobs use this process's thread count: CPU kernels' summation order, and so the last bits of the
    # logits, depend on it)
    assert run_sharded("smoke", 2, executor="local", folder=tmp_path / "jobs", overrides=OVERRIDES,
                       threads=torch.get_num_threads(), timeout_min=10) is True

    plain = fresh_cache(tmp_path / "plain")
    monkeypatch.setenv("MSLIB_CACHE", str(plain))
    assert run_study("smoke", progress=False, overrides=OVERRIDES).done is True

    # file by file: the same result entries, the same batches, identical tensors
    files_sharded, files_plain = batch_files(sharded), batch_files(plain)
    assert files_sharded.keys() == files_plain.keys() and len(files_plain) > 20
    for name, d in files_plain.items():
        assert d.keys() == files_sharded[name].keys()
        for k in d:
            a, b = d[k], files_sharded[name][k]
            assert (torch.equal(a, b) and a.dtype == b.dtype) if isinstance(a, torch.Tensor) else a == b, (name, k)


def test_run_sharded_checks_its_arguments(tmp_path):
    from mslib.launch import make_executor, run_sharded

    with pytest.raises(ValueError, match="n_shards"):
        run_sharded("smoke", 0, folder=tmp_path)
    with pytest.raises(ValueError, match="unknown profile"):
        run_sharded("no-such-profile", 2, folder=tmp_path)
    with pytest.raises(ValueError, match="executor"):
        make_executor("kubernetes", tmp_path)
