"""Sharded runs of a profile's study through submitit: its Slurm executor on a cluster, its local one here.

``run_sharded(profile, n_shards, executor="local"|"slurm", **params)`` submits ``run_study(profile,
shard=(i, n))`` for i = 0..n-1 as independent jobs, waits for them, then merges: it runs ``run_study``
without a shard, which finds every batch already in the results cache and only reads it. Shards split the
sample batches (i, i+n, i+2n, ...), random starts are keyed by sample index, and every batch is written to
its own file, so the merged result is exactly the unsharded one and any shard can be rerun or resumed.

All jobs must see the same results cache (``$MSLIB_CACHE`` or ``<repo>/data``): on a cluster, put it on a
shared filesystem. Command line::

    python -m mslib.launch --profile paper --shards 16 --executor slurm \
        --param slurm_partition=gpu --param gpus_per_node=1 --param timeout_min=720

With Slurm, the controller and the partition are checked before anything is submitted, and a shard that
ends without a result (cancelled, killed at its time limit, its node lost) is told apart from a running one
by ``squeue``, so neither a dead controller nor a lost shard leaves the driver waiting: it names them in one
line (:class:`LaunchError`). The batches a lost shard had finished are kept; the same command again
resumes it. ``scripts/slurm-local.sh up`` starts a one-node cluster on this machine to try it.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

EXECUTORS = ("local", "slurm", "debug")
# Slurm job states in which a job may still write its result (squeue's long names)
SLURM_ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                          "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"})


class LaunchError(RuntimeError):
    """A job of the study could not be submitted, or ended without its result; the message is one line
    naming the problem (a scheduler that does not answer, a partition it lacks, a cancelled shard)."""


def _slurm(cmd: list[str], timeout_s: float, check: bool = True) -> subprocess.CompletedProcess:
    """Run a Slurm client command, bounded by ``timeout_s``; a LaunchError naming it when it is missing,
    hangs, or (with ``check``) fails."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise LaunchError(f"{cmd[0]} not found: Slurm's client tools are not installed here "
                          f"(run on a login node of the cluster, or try scripts/slurm-local.sh up)") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"the Slurm controller did not answer within {timeout_s:.0f} s ({' '.join(cmd)}); "
                          f"check SlurmctldHost in $SLURM_CONF or /etc/slurm/slurm.conf") from None
    if check and out.returncode:
        said = " ".join((out.stderr or out.stdout).split()) or f"exit status {out.returncode}"
        raise LaunchError(f"{' '.join(cmd)} failed: {said}")
    return out


def check_slurm(partition: str | None = None, timeout_s: float = 30.0) -> None:
    """Fail fast, in one line, where Slurm could not run the shards: no client tools, a controller that does
    not answer, or a partition it does not have. Each query is bounded by ``timeout_s``."""
    if _slurm(["scontrol", "ping"], timeout_s, check=False).returncode:  # it prints "... is DOWN"
        conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
        raise LaunchError(f"the Slurm controller is not reachable (scontrol ping: DOWN; config {conf}): "
                          f"start it, or point SLURM_CONF at a running cluster")
    if partition:
        names = set(_slurm(["sinfo", "-h", "-o", "%R"], timeout_s).stdout.split())
        if partition not in names:
            raise LaunchError(f"Slurm has no partition {partition!r}; it has {', '.join(sorted(names)) or 'none'}")


def shard_job(profile_name: str, shard: tuple[int, int], overrides: dict[str, Any] | None = None,
              threads: int | None = None, cache: str | None = None) -> bool:
    """One shard of the study (what each submitted job runs). Returns whether all shards were done."""
    if cache:
        os.environ["MSLIB_CACHE"] = cache
    import torch

    if threads:
        torch.set_num_threads(threads)
    from .experiment import run_study

    return run_study(profile_name, shard=shard, progress=False, overrides=overrides).done


def prepare_job(profile_name: str, overrides: dict[str, Any] | None = None, cache: str | None = None) -> list[str]:
    """Load (training or fine-tuning once, where a profile trains its own) every model of every dataset.

    Run as one job before the shards, so n shards never train the same model side by side.
    """
    if cache:
        os.environ["MSLIB_CACHE"] = cache
    from .experiment import study_profiles
    from .models import load_classifier, load_vlm
    from .plan import variant_profile, vlm_variants

    loaded = []
    for p in study_profiles(profile_name, overrides):  # the datasets the shards will run, overrides applied
        for name in p.classifiers:
            load_classifier(p, name)
            loaded.append(f"{p.dataset}/{name}")
        load_vlm(p)
        loaded.append(f"{p.dataset}/{p.vlm}")
        for variant in vlm_variants(p):  # e.g. a FARE fine-tune: trained once here, not once per shard
            load_vlm(variant_profile(p, variant))
            loaded.append(f"{p.dataset}/{variant}")
    return loaded


def make_executor(kind: str, folder: str | os.PathLike, **params: Any):
    """A submitit executor: ``local`` (LocalExecutor), ``slurm`` (AutoExecutor on Slurm) or ``debug`` (in-process)."""
    import submitit

    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
    ex = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    params = {"timeout_min": 60 * 24, **params}
    ex.update_parameters(**params)
    return ex


def _submit(ex: Any, executor: str, label: str, fn: Any, *args: Any) -> Any:
    """``ex.submit(fn, *args)``; where sbatch refuses the job, a LaunchError with its reason in one line."""
    if executor != "slurm":
        return ex.submit(fn, *args)
    from submitit.core.utils import FailedJobError

    try:
        return ex.submit(fn, *args)
    except FailedJobError as e:  # its message is sbatch's stderr: the last "error:" line says why
        said = [ln for ln in str(e).splitlines() if "error" in ln.lower()] or str(e).splitlines() or ["no reason"]
        raise LaunchError(f"sbatch refused {label}: {said[-1].strip()}") from None


def wait_jobs(jobs: dict[str, Any], executor: str, grace_s: float = 60.0, answer_timeout_s: float = 600.0,
              poll_s: float = 2.0, on_done: Callable[[str], None] | None = None) -> None:
    """Wait until every job (label -> submitit job) is over; then raise if one failed or was lost.

    A Slurm job that ends without writing its result (cancelled, killed at its time limit, its node lost)
    is seen through ``squeue``, not ``sacct``, which needs slurmdbd and which submitit would otherwise poll
    forever; ``grace_s`` lets a result written just before the end reach a shared filesystem. A controller
    that stops answering for ``answer_timeout_s`` ends the wait (the jobs may go on: rerun to resume).
    ``on_done(label)`` is called as each job finishes. The error names every failed job in one line.
    """
    import getpass

    pending = dict(jobs)
    lost: dict[str, str] = {}
    failed: dict[str, BaseException] = {}
    ended_at: dict[str, float] = {}
    last_answer = time.monotonic()
    while pending:
        states: dict[str, str] | None = None
        if executor == "slurm":
            try:  # all of the user's jobs: squeue -j fails outright on an id the controller has forgotten
                out = _slurm(["squeue", "-h", "-t", "all", "-u", getpass.getuser(), "-o", "%i %T"], 30.0).stdout
                states = dict(ln.split(None, 1) for ln in out.splitlines() if ln.strip())
                last_answer = time.monotonic()
            except LaunchError as e:
                if time.monotonic() - last_answer > answer_timeout_s:
                    raise LaunchError(f"the Slurm controller stopped answering for {answer_timeout_s:.0f} s "
                                      f"({e}); the jobs may still run: rerun the same command to resume") from None
        for label, job in list(pending.items()):
            # a Slurm job is done once its result file exists; job.done() would also poll sacct
            finished = job.paths.result_pickle.exists() if executor == "slurm" else job.done()
            if finished:
                try:
                    job.result()
                except Exception as e:  # noqa: BLE001 - submitit's FailedJobError carries the traceback
                    failed[label] = e
                else:
                    if on_done is not None:
                        on_done(label)
                del pending[label]
            elif states is not None and states.get(str(job.job_id), "GONE") not in SLURM_ACTIVE:
                since = ended_at.setdefault(label, time.monotonic())
                if time.monotonic() - since > grace_s:
                    lost[label] = f"Slurm job {job.job_id}: {states.get(str(job.job_id), 'no longer known')}"
                    del pending[label]
        if pending:
            time.sleep(poll_s)
    if failed:
        for label, e in failed.items():
            print(f"{label} failed:\n{e}", file=sys.stderr, flush=True)
    problems = [f"{label} ended without a result ({why})" for label, why in lost.items()]
    problems += [f"{label} failed (its traceback is above)" for label in failed]
    if problems:
        raise LaunchError("; ".join(problems) + "; finished batches are kept: rerun the same command to resume")


def run_sharded(profile_name: str, n_shards: int, executor: str = "local", folder: str | os.PathLike | None = None,
                overrides: dict[str, Any] | None = None, threads: int | None = None, wait: bool = True,
                merge: bool = True, progress: bool = False, prepare: bool = True, grace_s: float = 60.0,
                **params: Any) -> bool | list:
    """Run ``profile_name``'s study as ``n_shards`` submitit jobs, wait, then merge the cached shards.

    ``params`` go to submitit's ``update_parameters`` (e.g. ``slurm_partition``, ``gpus_per_node``,
    ``cpus_per_task``, ``timeout_min``, ``slurm_array_parallelism``). Each job gets ``threads`` torch threads
    (default: with the local executor the cores divided among the shards, with Slurm ``cpus_per_task`` where
    given) and, with the local executor where GPUs are visible, its own GPU (round-robin). ``prepare`` first
    runs one job that loads (trains once) every model, so the shards only read checkpoints. ``wait=False``
    returns the submitted shard jobs at once. Returns True when the merged study is complete; raises
    :class:`LaunchError` (one line) where Slurm cannot take the jobs or a shard ends without a result
    (``grace_s``: see :func:`wait_jobs`), after the other shards are over.
    """
    from .cache import data_root
    from .profiles import get_profile

    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards must be an integer >= 1, got {n_shards!r}")
    get_profile(profile_name, **(overrides or {}))  # fail here, not in n jobs, on a bad name or override
    if executor == "slurm":
        check_slurm(params.get("slurm_partition"))  # here, in one line, not as n sbatch errors or a hang
    cache = str(data_root().resolve())
    folder = Path(folder) if folder is not None else Path(cache) / "submitit" / profile_name
    ex = make_executor(executor, folder, **params)
    if executor == "local" and threads is None:
        threads = max(1, (os.cpu_count() or 1) // n_shards)
    if executor == "slurm" and threads is None and params.get("cpus_per_task"):
        threads = int(params["cpus_per_task"])  # without CPU binding torch would take every core of the node
    n_gpus = 0
    if executor == "local" and "gpus_per_node" not in params:
        try:
            import torch

            n_gpus = torch.cuda.device_count()
        except Exception:  # noqa: BLE001 - no torch CUDA: CPU shards
            n_gpus = 0
    if prepare:
        job = _submit(ex, executor, "the models job", prepare_job, profile_name, overrides, cache)
        print(f"models of profile {profile_name}: job {job.job_id}", flush=True)
        wait_jobs({"the models job": job}, executor, grace_s=grace_s)
    jobs = []
    for i in range(n_shards):
        if n_gpus:
            ex.update_parameters(gpus_per_node=1, visible_gpus=[i % n_gpus])
        jobs.append(_submit(ex, executor, f"shard {i}/{n_shards}", shard_job, profile_name, (i, n_shards),
                            overrides, threads, cache))
    print(f"submitted {n_shards} shard(s) of profile {profile_name} to {executor} ({folder}): "
          f"{', '.join(str(j.job_id) for j in jobs)}", flush=True)
    if not wait:
        return jobs
    t0 = time.perf_counter()
    wait_jobs({f"shard {i}/{n_shards}": job for i, job in enumerate(jobs)}, executor, grace_s=grace_s,
              on_done=lambda label: print(f"{label} done ({time.perf_counter() - t0:.0f} s)", flush=True))
    if not merge:
        return True
    from .experiment import run_study

    return run_study(profile_name, progress=progress, overrides=overrides).done


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param must look like key=value, got {item!r}")
        k, v = item.split("=", 1)
        for cast in (int, float):
            try:
                out[k] = cast(v)
                break
            except ValueError:
                continue
        else:
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mslib.launch",
                                 description="Run a profile's study as submitit shards, then merge.")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--shards", type=int, required=True)
    ap.add_argument("--executor", default="local", choices=EXECUTORS)
    ap.add_argument("--folder", default=None, help="submitit logs (default <cache>/submitit/<profile>)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per local shard")
    ap.add_argument("--param", action="append", default=[], help="submitit parameter key=value (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a profile field for every dataset and every job, e.g. --set n_samples=8")
    ap.add_argument("--no-wait", action="store_true", help="submit and return; merge later with --shards 1")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        from .experiment import parse_overrides

        done = run_sharded(args.profile, args.shards, args.executor, folder=args.folder, threads=args.threads,
                           overrides=parse_overrides(args.set) or None, wait=not args.no_wait,
                           **_parse_params(args.param))
    except (ValueError, TypeError, KeyError, FileNotFoundError, LaunchError) as e:  # one line, exit 2
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"{ap.prog}: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 2
    if args.no_wait:
        sets = "".join(f" --set {shlex.quote(s)}" for s in args.set)
        print(f"submitted; when the jobs are done, merge with: "
              f"python -m mslib.experiment --profile {args.profile}{sets}")
        return 0
    print(f"{'complete' if done else 'incomplete'}: profile {args.profile}, {args.shards} shard(s), "
          f"{time.perf_counter() - t0:.0f} s")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
