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
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

EXECUTORS = ("local", "slurm", "debug")


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
    from .models import load_classifier, load_vlm
    from .plan import variant_profile, vlm_variants
    from .profiles import get_profile

    loaded = []
    for ds in get_profile(profile_name).datasets:
        p = get_profile(profile_name, ds, **(overrides or {}))
        for name in p.classifiers:
            load_classifier(p, name)
            loaded.append(f"{ds}/{name}")
        load_vlm(p)
        loaded.append(f"{ds}/{p.vlm}")
        for variant in vlm_variants(p):  # e.g. a FARE fine-tune: trained once here, not once per shard
            load_vlm(variant_profile(p, variant))
            loaded.append(f"{ds}/{variant}")
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


def run_sharded(profile_name: str, n_shards: int, executor: str = "local", folder: str | os.PathLike | None = None,
                overrides: dict[str, Any] | None = None, threads: int | None = None, wait: bool = True,
                merge: bool = True, progress: bool = False, prepare: bool = True, **params: Any) -> bool | list:
    """Run ``profile_name``'s study as ``n_shards`` submitit jobs, wait, then merge the cached shards.

    ``params`` go to submitit's ``update_parameters`` (e.g. ``slurm_partition``, ``gpus_per_node``,
    ``cpus_per_task``, ``timeout_min``, ``slurm_array_parallelism``). With the local executor each job gets
    ``threads`` torch threads (default: the cores divided among the shards) and, where GPUs are visible, its
    own GPU (round-robin). ``prepare`` first runs one job that loads (trains once) every model, so the shards
    only read checkpoints. ``wait=False`` returns the submitted shard jobs at once. Returns True when the merged
    study is complete.
    """
    from .cache import data_root
    from .profiles import get_profile

    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ValueError(f"n_shards must be an integer >= 1, got {n_shards!r}")
    get_profile(profile_name, **(overrides or {}))  # fail here, not in n jobs, on a bad name or override
    cache = str(data_root().resolve())
    folder = Path(folder) if folder is not None else Path(cache) / "submitit" / profile_name
    ex = make_executor(executor, folder, **params)
    if executor == "local" and threads is None:
        threads = max(1, (os.cpu_count() or 1) // n_shards)
    n_gpus = 0
    if executor == "local" and "gpus_per_node" not in params:
        try:
            import torch

            n_gpus = torch.cuda.device_count()
        except Exception:  # noqa: BLE001 - no torch CUDA: CPU shards
            n_gpus = 0
    if prepare:
        job = ex.submit(prepare_job, profile_name, overrides, cache)
        print(f"models of profile {profile_name}: job {job.job_id}", flush=True)
        job.result()
    jobs = []
    for i in range(n_shards):
        if n_gpus:
            ex.update_parameters(gpus_per_node=1, visible_gpus=[i % n_gpus])
        jobs.append(ex.submit(shard_job, profile_name, (i, n_shards), overrides, threads, cache))
    print(f"submitted {n_shards} shard(s) of profile {profile_name} to {executor} ({folder}): "
          f"{', '.join(str(j.job_id) for j in jobs)}", flush=True)
    if not wait:
        return jobs
    t0 = time.perf_counter()
    for i, job in enumerate(jobs):
        job.result()  # raises submitit's FailedJobError with the shard's traceback if it failed
        print(f"shard {i}/{n_shards} done ({time.perf_counter() - t0:.0f} s)", flush=True)
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
    ap.add_argument("--no-wait", action="store_true", help="submit and return; merge later with --shards 1")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        done = run_sharded(args.profile, args.shards, args.executor, folder=args.folder, threads=args.threads,
                           wait=not args.no_wait, **_parse_params(args.param))
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:  # bad arguments or data: one line, exit 2
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"{ap.prog}: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 2
    if args.no_wait:
        print("submitted; when the jobs are done, merge with: python -m mslib.experiment --profile " + args.profile)
        return 0
    print(f"{'complete' if done else 'incomplete'}: profile {args.profile}, {args.shards} shard(s), "
          f"{time.perf_counter() - t0:.0f} s")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
