"""Sharded runs: two shards through submitit's local executor merge into exactly the unsharded result."""
from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path

import pytest
import torch

from mslib.experiment import run_study
from mslib.store import ResultsNotReadyError, Store

from results_helpers import VARIANT, assert_same_results, batch_files, fresh_cache


@pytest.mark.slow
def test_two_submitit_shards_merge_into_the_unsharded_result(tmp_path, monkeypatch, variant_study):
    """The small study with the VLM variant (a FARE-tuned LiT: its own jobs, and rescore jobs scoring the base
    configuration's examples with it) as 2 shards, then merged, holds the unsharded run's result files.

    Shard 1 is computed here; shard 0's batches are the unsharded run's first batches, copied (a shard's first
    batch is also the run's first: the shard that differs from the unsharded run in where its batches sit is
    shard 1, and computing both doubled this test's cost). Catches: shards that leave the variant's jobs, or
    only its rescore jobs, to the merge (which then computes them in one process, so the sharding silently
    stops splitting that work), a shard that runs them whole or computes another shard's batches, and a
    shard's batches that are not the unsharded run's."""
    pytest.importorskip("submitit")
    from mslib.launch import run_sharded

    store = Store("smoke", root=variant_study)  # the unsharded run (the session's), to name its jobs
    d = store.datasets[0]
    (variant,) = d.plan.variants.values()
    base = {j.key for j in dataclasses.replace(d.plan, variants={}).jobs()}
    rescore = [j for jobs in variant.transfer.values() for j in jobs]
    # the clean outputs of each configuration are computed whole by any shard: the confidence rejector's
    # threshold is matched on every sample
    whole = {store.folder(j).path.name for plan in (d.plan, variant) for j in plan.clean.values()}
    own = [j for j in variant.jobs() if j.kind != "rescore" and j.key not in base and store.folder(j).path.name not in whole]
    assert rescore and own and {j.kind for j in rescore} == {"rescore"}
    unsharded = batch_files(variant_study)
    first, second = (f"batch_{b:07d}" for b in (0, VARIANT["batch_size"]))  # every result has 2 batches

    sharded = fresh_cache(tmp_path / "sharded")
    monkeypatch.setenv("MSLIB_CACHE", str(sharded))
    # one shard alone computes its batches but is not a result yet: no index, and the store says so
    summary = run_study("smoke", shard=(1, 2), progress=False, overrides=VARIANT)
    assert summary.done is False and summary.pending > 0
    with pytest.raises(ResultsNotReadyError, match="no results for profile 'smoke'"):
        Store("smoke")
    shard1 = batch_files(sharded)
    assert shard1.keys() == {n for n in unsharded if n.split("/")[1].startswith(second) or n.split("/")[0] in whole}
    for j in (*own, *rescore):  # the variant's work: its second batch here, the first left to shard 0
        name = store.folder(j).path.name
        assert f"{name}/{second}.pt" in shard1 and f"{name}/{first}.pt" not in shard1, j.label
    for name in unsharded:  # shard 0's batches, as the unsharded run computed them
        if name not in shard1:
            (sharded / "results" / name).parent.mkdir(exist_ok=True)
            shutil.copy2(variant_study / "results" / name, sharded / "results" / name)
    # both shards through submitit's local executor: each resumes from its batches, computing nothing (no models
    # job: the session's models are trained; test_the_models_job_and_the_shards_get_every_override covers it)
    assert run_sharded("smoke", 2, executor="local", folder=tmp_path / "jobs", overrides=VARIANT,
                       threads=torch.get_num_threads(), timeout_min=10, merge=False, prepare=False) is True
    merged = run_study("smoke", progress=False, overrides=VARIANT)  # what run_sharded's merge runs
    assert merged.done and merged.computed == 0 and merged.recomputed == 0  # the shards did all the work

    # file by file: the same result entries and batches, identical tensors; the images and the index byte for
    # byte (the outputs files differ only in their timing)
    assert_same_results(sharded, variant_study)
    for name in unsharded:
        if name.endswith(".x.pt"):
            assert (sharded / "results" / name).read_bytes() == (variant_study / "results" / name).read_bytes(), name
    index = Path("results") / "plans" / "smoke.json"
    assert (sharded / index).read_bytes() == (variant_study / index).read_bytes()


def test_run_sharded_checks_its_arguments(tmp_path):
    from mslib.launch import make_executor, run_sharded

    with pytest.raises(ValueError, match="n_shards"):
        run_sharded("smoke", 0, folder=tmp_path)
    with pytest.raises(ValueError, match="unknown profile"):
        run_sharded("no-such-profile", 2, folder=tmp_path)
    with pytest.raises(ValueError, match="executor"):
        make_executor("kubernetes", tmp_path)


def test_the_models_job_and_the_shards_get_every_override(monkeypatch, tmp_path):
    from mslib import launch, models

    loaded = []
    monkeypatch.setattr(models, "load_classifier", lambda p, name: loaded.append((p.dataset, name, p.n_samples)))
    monkeypatch.setattr(models, "load_vlm", lambda p: loaded.append((p.dataset, p.vlm, p.n_samples)))
    # paper has 6 datasets: a `datasets` override loads only that one's models, with the other overrides
    names = launch.prepare_job("paper", {"datasets": ("cifar10",), "n_samples": 4,
                                         "classifiers": ("Carmon2019Unlabeled",)})
    assert loaded == [("cifar10", "Carmon2019Unlabeled", 4), ("cifar10", "clip-vit-b32-cifar10", 4)]
    assert names == ["cifar10/Carmon2019Unlabeled", "cifar10/clip-vit-b32-cifar10"]

    # `--set` reaches run_sharded (and through it every job), with or without a wait
    seen = {}
    monkeypatch.setattr(launch, "run_sharded", lambda profile, n, executor, **kw: seen.update(kw) or True)
    assert launch.main(["--profile", "smoke", "--shards", "2", "--set", "n_samples=4",
                        "--set", "datasets=('fashion_mnist',)"]) == 0
    assert seen["overrides"] == {"n_samples": 4, "datasets": ("fashion_mnist",)}


def test_make_passes_set_to_the_sharded_run():
    import shutil
    import subprocess

    from mslib.cache import REPO_ROOT

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    cmd = ["make", "-n", "-B", "results", "PROFILE=smoke", "SHARDS=2", "LAUNCHER=slurm", "SET=n_samples=4 n_iter=1",
           "VENV=.venv", "MSLIB_CACHE=/nonexistent"]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    line = next(ln for ln in out.splitlines() if "mslib.launch" in ln)
    assert "--shards 2 --executor slurm" in line and "--set 'n_samples=4' --set 'n_iter=1'" in line


def test_a_slurm_shard_that_ends_without_a_result_is_reported_not_awaited(monkeypatch, tmp_path):
    import subprocess
    from types import SimpleNamespace

    from mslib import launch

    class FakeJob:
        def __init__(self, job_id: str, finished: bool) -> None:
            self.job_id, self.paths = job_id, SimpleNamespace(result_pickle=tmp_path / f"{job_id}_result.pkl")
            if finished:
                self.paths.result_pickle.touch()

        def result(self) -> bool:
            return True

    squeue = "11 COMPLETED\n12 CANCELLED\n13 RUNNING\n"
    monkeypatch.setattr(launch, "_slurm", lambda cmd, timeout_s, check=True: subprocess.CompletedProcess(cmd, 0, squeue))
    jobs = {"shard 0/3": FakeJob("11", True), "shard 1/3": FakeJob("12", False), "shard 2/3": FakeJob("13", False)}
    # shard 2 still runs: the wait goes on until it has a result, then names the lost shard 1
    threading.Timer(0.3, jobs["shard 2/3"].paths.result_pickle.touch).start()
    done = []
    err = _raised_within(10, launch.wait_jobs, jobs, "slurm", grace_s=0, poll_s=0.01, on_done=done.append)
    assert isinstance(err, launch.LaunchError) and str(err) == (
        "shard 1/3 ended without a result (Slurm job 12: CANCELLED); finished batches are kept: rerun the same "
        "command to resume")
    assert sorted(done) == ["shard 0/3", "shard 2/3"]

    def no_answer(cmd, timeout_s, check=True):
        raise launch.LaunchError("the Slurm controller did not answer within 30 s (squeue ...)")

    monkeypatch.setattr(launch, "_slurm", no_answer)
    err = _raised_within(10, launch.wait_jobs, {"shard 1/3": FakeJob("12", False)}, "slurm", answer_timeout_s=0,
                         poll_s=0.01)
    assert isinstance(err, launch.LaunchError) and "stopped answering for 0 s" in str(err)


def _raised_within(seconds: float, fn, *args, **kwargs) -> BaseException | None:
    """What ``fn`` raised, run in a daemon thread; fails the test if it is still running after ``seconds``."""
    out: dict[str, BaseException] = {}

    def call() -> None:
        try:
            fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} still waiting after {seconds} s"
    return out.get("error")
