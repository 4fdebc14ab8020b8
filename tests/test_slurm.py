"""The sharded study on a real Slurm scheduler: a one-node cluster on this machine (scripts/slurm-local.sh).

As root (CI) the script installs Slurm and munge where missing and starts the cluster; elsewhere these tests
run against a cluster someone started with ``sudo scripts/slurm-local.sh up``, and are skipped without one.
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from mslib.cache import REPO_ROOT
from mslib.experiment import run_study

from results_helpers import OVERRIDES, assert_same_results, fresh_cache

SCRIPT = REPO_ROOT / "scripts" / "slurm-local.sh"
PARTITION = "local"
# smaller than OVERRIDES (one classifier, one attack eps), in 2 batches: one per shard and per result, so
# shard 1 is still busy when it is cancelled after its first result (the cluster kills a job 5 s after
# scancel's SIGTERM) and few batches keep the per-batch costs (zero-shot text embeddings) down
SLURM_OVERRIDES = {**OVERRIDES, "n_samples": 8, "batch_size": 4, "n_iter": 1, "eps_grid": (0.0, 0.1),
                   "classifiers": ("standard",)}


def _script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_conf():
    """SLURM_CONF of a running one-node cluster: started here (and stopped after) where root may, else one
    that is already up."""
    was_up = _script("status", timeout=60).returncode == 0
    if not was_up and os.geteuid() != 0:
        pytest.skip("no local Slurm cluster: starting one needs root (sudo scripts/slurm-local.sh up)")
    if not was_up:
        up = _script("up")
        assert up.returncode == 0, f"scripts/slurm-local.sh up failed:\n{up.stderr}"
    conf = _script("env").stdout.strip().split("=", 1)[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", conf)
        yield conf
    if not was_up:
        _script("down", timeout=120)


@functools.lru_cache(maxsize=1)
def _whole_results() -> frozenset[str]:
    """Keys of the results any shard computes in full (the clean outputs the confidence rejector's threshold
    is chosen on), so their odd batches say nothing about shard 1."""
    from mslib.experiment import Workspace
    from mslib.profiles import get_profile

    return frozenset(j.key for j in Workspace(get_profile("smoke", **SLURM_OVERRIDES)).plan().clean.values())


def _shard1_batches(cache: Path, batch_size: int) -> dict[Path, int]:
    """Shard 1/2's batch files (odd batch numbers, results computed by shard) -> their modification time in ns."""
    out = {}
    whole = _whole_results()
    for f in (cache / "results").glob("*/batch_*.pt"):
        if f.parent.name in whole:
            continue
        start = int(re.fullmatch(r"batch_(\d+)(\.x)?\.pt", f.name).group(1))
        if (start // batch_size) % 2 == 1:
            out[f] = f.stat().st_mtime_ns
    return out


def _job_ids(folder: Path) -> list[str]:
    """The Slurm job ids submitit has submitted from ``folder``, in submission order."""
    return sorted((p.name.split("_")[0] for p in folder.glob("*_submitted.pkl")), key=int)


def _completion_states(ids: list[str], wait: float = 60.0) -> dict[str, str]:
    """Job id -> final state from the cluster's job completion log, read by ``sacct -c`` (no slurmdbd here).

    The executor sees a job finished from its result file, which the job writes before slurmctld logs its
    completion, so the last job's line can arrive a moment later: wait up to ``wait`` seconds for every id."""
    deadline = time.monotonic() + wait
    while True:
        out = subprocess.run(["sacct", "-c", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        states = dict(line.split("|")[:2] for line in out.splitlines() if line.strip())
        if set(ids) <= set(states) or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(subprocess.run(["sacct", "-c", "-j", ",".join(ids)], capture_output=True, text=True, timeout=30).stdout)
    return states


@pytest.mark.slow
def test_slurm_shards_one_cancelled_and_resubmitted_merge_into_the_unsharded_result(
        slurm_conf, tmp_path, monkeypatch, smoke_models, request):
    from mslib import tables
    from mslib.launch import LaunchError, run_sharded

    sharded, jobs = fresh_cache(tmp_path / "sharded"), tmp_path / "jobs"
    monkeypatch.setenv("MSLIB_CACHE", str(sharded))
    # two threads, as a plain pytest run has (a test worker has one): at one thread a shard finishes within
    # moments of its first batch, before the cancel below can reach it
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    bs = SLURM_OVERRIDES["batch_size"]
    # the shards use this process's thread count (the last bits of CPU results depend on it); one CPU each
    # from Slurm, so both run side by side on a 2-CPU node
    args = dict(executor="slurm", folder=jobs, overrides=SLURM_OVERRIDES, threads=torch.get_num_threads(),
                slurm_partition=PARTITION, cpus_per_task=1, timeout_min=20, grace_s=5)

    # 1. the models job, then 2 shards; shard 1 is cancelled once it has written a batch, and the driver
    # says so instead of waiting forever for a result that will not come (a daemon thread, so that a driver
    # that does hang fails the test instead of blocking it)
    outcome: dict[str, BaseException] = {}

    def drive() -> None:
        try:
            run_sharded("smoke", 2, **args)
        except BaseException as e:  # noqa: BLE001 - handed to the test below
            outcome["error"] = e

    _whole_results()  # built before the shards start, so the watch below reacts within one poll
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    deadline = time.monotonic() + 600
    while not (len(_job_ids(jobs)) == 3 and _shard1_batches(sharded, bs)):
        assert time.monotonic() < deadline and driver.is_alive(), f"shard 1 never started writing: {outcome}"
        time.sleep(0.05)
    first_ids = _job_ids(jobs)
    subprocess.run(["scancel", first_ids[2]], check=True, timeout=30)
    driver.join(timeout=300)
    assert not driver.is_alive(), "the driver still waits for the cancelled shard"
    assert isinstance(outcome.get("error"), LaunchError), outcome
    assert re.search(rf"shard 1/2 ended without a result \(Slurm job {first_ids[2]}: CANCELLED\).*"
                     r"rerun the same command", str(outcome["error"])), outcome["error"]
    kept = _shard1_batches(sharded, bs)

    # 2. the same call again: shard 0 finds its batches done, shard 1 resumes from the ones it had kept
    assert run_sharded("smoke", 2, **args) is True
    ids = _job_ids(jobs)
    assert len(ids) == 6
    final = _shard1_batches(sharded, bs)
    assert kept.items() <= final.items(), "a batch finished before the cancel was lost or computed again"
    assert len(kept) < len(final), "shard 1 had finished before it was cancelled: nothing was resumed"

    # 3. the scheduler ran every job: the models job and both shards twice, shard 1 cancelled the first time
    states = _completion_states(ids)
    assert [states.get(i) for i in ids] == ["COMPLETED", "COMPLETED", "CANCELLED",
                                            "COMPLETED", "COMPLETED", "COMPLETED"], states

    # 4. exactly the unsharded result, batch by batch and table by table
    main, attacks = tables.main_table("smoke").to_csv(), tables.attacks_table("smoke").to_csv()
    plain = fresh_cache(tmp_path / "plain")
    monkeypatch.setenv("MSLIB_CACHE", str(plain))
    assert run_study("smoke", progress=False, overrides=SLURM_OVERRIDES).done is True
    assert_same_results(sharded, plain)
    assert tables.main_table("smoke").to_csv() == main
    assert tables.attacks_table("smoke").to_csv() == attacks


def test_a_wrong_partition_is_one_line_before_any_job(slurm_conf, tmp_path, monkeypatch, capsys):
    from mslib import launch

    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    t0 = time.monotonic()
    assert launch.main(["--profile", "smoke", "--shards", "2", "--executor", "slurm",
                        "--folder", str(tmp_path / "jobs"), "--param", "slurm_partition=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m mslib.launch: error: Slurm has no partition 'nope'; it has {PARTITION}"]
    assert time.monotonic() - t0 < 60 and not (tmp_path / "jobs").exists()


def test_an_unreachable_controller_is_one_line_not_a_hang(slurm_conf, tmp_path, monkeypatch, capsys):
    from mslib import launch

    # a controller on a port where nothing listens
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=nowhere\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=9\n"
                    "AuthType=auth/munge\nNodeName=localhost CPUs=1\nPartitionName=p Nodes=localhost\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    t0 = time.monotonic()
    assert launch.main(["--profile", "smoke", "--shards", "2", "--executor", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Slurm controller is not reachable" in err[0] and str(conf) in err[0], err
    assert time.monotonic() - t0 < 60
