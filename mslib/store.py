"""The read-only results store: what tables and notebooks read. It never computes.

``Store(profile)`` opens the index that the last complete run of the profile's study wrote
(``data/results/plans/<profile>.json``: overrides, samples, labels, model identities, job keys) and rebuilds
the plan from it with :func:`mslib.plan.dataset_plan` — the same pure function the executor used, so
every job has the key its result was stored under. ``load(job, fields)`` concatenates the requested
per-sample fields over the job's batches, verifying each file's checksum; the adversarial images are read
only when ``x`` is asked for. A missing index, a job the index does not hold, or a missing or damaged
batch raises :class:`ResultsNotReadyError` naming the job and the batches, with the command that computes
them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .cache import DamagedFileError, data_root, load_tensors, read_json, record_key
from .defense import decide
from .plan import DatasetPlan, Job, dataset_plan
from .profiles import PROFILES, get_profile, profile_names

OUTPUT_FIELDS = ("f", "s", "success", "reused", "zero_grad")
# per-batch values; "threshold": the confidence rejector's (attacks on it only)
BOOKKEEPING = ("success_curve", "loss_curve", "n_forward", "seconds", "threshold")


class ResultsNotReadyError(LookupError):
    """A result the tables need is not in the store (not computed, incomplete or damaged)."""


@dataclass
class Outputs:
    """Classifier logits and VLM similarities on some inputs (N×K each), with an attack's bookkeeping."""

    f: torch.Tensor
    s: torch.Tensor
    success: torch.Tensor | None = None
    success_curve: list[float] | None = None
    loss_curve: list[float] | None = None
    n_forward: int = 0
    seconds: float = 0.0

    def clf_pred(self) -> torch.Tensor:
        return self.f.argmax(dim=1)

    def vlm_pred(self) -> torch.Tensor:
        return self.s.argmax(dim=1)

    def ms_pred(self, tolerance: float) -> torch.Tensor:
        return decide(self.f, self.s, tolerance)


@dataclass(frozen=True)
class DatasetResults:
    """One dataset of a stored study: its plan, labels, class names and sample indices."""

    plan: DatasetPlan
    labels: torch.Tensor
    class_names: tuple[str, ...]
    indices: torch.Tensor

    @property
    def profile(self):
        return self.plan.profile

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _command(profile_name: str) -> str:
    return f"`make results PROFILE={profile_name}` (or `python -m mslib.experiment --profile {profile_name}`)"


class Store:
    """Read-only access to the cached results of a profile's last complete study run."""

    def __init__(self, profile_name: str, root: str | Path | None = None) -> None:
        if not isinstance(profile_name, str) or profile_name not in PROFILES:
            raise ValueError(f"unknown profile {profile_name!r}; choose one of {profile_names()}")
        root = Path(root) if root is not None else data_root()
        self.profile_name = profile_name
        self.root = root / "results"
        path = self.root / "plans" / f"{profile_name}.json"
        try:
            index = read_json(path)
        except FileNotFoundError:
            raise ResultsNotReadyError(f"no results for profile {profile_name!r} ({path} does not exist): "
                                       f"compute them with {_command(profile_name)}") from None
        except ValueError as e:
            raise ResultsNotReadyError(f"the results index {path} is damaged ({e}): rerun "
                                       f"{_command(profile_name)}") from None
        self.index = index
        self._keys = set(index["jobs"])
        # read-only results: a table build asks for the same job's outputs many times, read each once
        self._outputs: dict[tuple[str, bool], Outputs] = {}
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in index["overrides"].items()}
        self.datasets: list[DatasetResults] = []
        for ds, entry in index["datasets"].items():
            p = get_profile(profile_name, ds, **overrides)
            plan = dataset_plan(p, entry["indices"], entry["models"], entry["speed"], compact=index["compact"],
                                ensemble=index.get("ensemble", True))
            self.datasets.append(DatasetResults(plan, torch.tensor(entry["labels"]), tuple(entry["class_names"]),
                                                torch.tensor(entry["indices"])))

    def folder(self, job: Job) -> Path:
        return self.root / record_key(job.record())

    def _not_ready(self, job: Job, why: str) -> ResultsNotReadyError:
        return ResultsNotReadyError(f"result {job.label!r} (key {job.key}) {why}: compute it with "
                                    f"{_command(self.profile_name)}")

    def load(self, job: Job, fields: Sequence[str] = ("f", "s", "success")) -> dict[str, Any]:
        """The job's per-sample ``fields`` over all samples (``x``: the adversarial images; bookkeeping
        fields ``success_curve``, ``loss_curve``, ``n_forward``, ``seconds`` as per-batch lists)."""
        if job.key not in self._keys:
            raise self._not_ready(job, "is not in the study index (the plan changed since the last run)")
        folder = self.folder(job)
        n, bs = len(job.record()["context"]["indices"]), job.record()["context"]["batch_size"]
        starts = list(range(0, n, bs))
        parts, bad = [], []
        want_x = "x" in fields
        for b in starts:
            try:
                part = load_tensors(folder / f"batch_{b:07d}.pt")
                if want_x:
                    part["x"] = load_tensors(folder / f"batch_{b:07d}.x.pt")["x"]
                parts.append({k: part[k] for k in fields if k in part})
            except FileNotFoundError:
                bad.append(f"batch {b} missing")
            except DamagedFileError as e:
                bad.append(f"batch {b} damaged ({e.reason})")
        if bad:
            raise self._not_ready(job, f"is incomplete in {folder}: {', '.join(bad)}")
        out: dict[str, Any] = {}
        for k in fields:
            if k in BOOKKEEPING:
                out[k] = [pt.get(k) for pt in parts]
            elif all(k in pt for pt in parts):
                out[k] = torch.cat([pt[k] for pt in parts])
        return out

    def outputs(self, job: Job, curves: bool = False) -> Outputs:
        """``f``, ``s`` (and success) of a job; with ``curves`` also its summed success/loss curves and cost.
        Read once per store (the same object is returned again: do not modify it)."""
        memo = self._outputs.get((job.key, curves))
        if memo is not None:
            return memo
        fields = ("f", "s", "success", *(BOOKKEEPING if curves else ()))
        d = self.load(job, fields)
        out = Outputs(d["f"], d["s"], d.get("success"))
        if curves:
            sizes = [len(x) for x in torch.split(d["f"], job.record()["context"]["batch_size"])]
            out.success_curve = _sum_curves(d["success_curve"])
            out.loss_curve = [v / max(sum(sizes), 1) for v in
                              _sum_curves([torch.as_tensor(c, dtype=torch.float32) * w
                                           for c, w in zip(d["loss_curve"], sizes)])]
            out.n_forward = int(sum(d["n_forward"]))
            out.seconds = float(sum(d["seconds"]))
        self._outputs[job.key, curves] = out
        return out


def _sum_curves(curves: list) -> list[float]:
    n = max(len(c) for c in curves)
    out = torch.zeros(n)
    for c in curves:
        c = torch.as_tensor(c, dtype=torch.float32)
        out += torch.cat([c, c[-1:].expand(n - len(c))]) if len(c) < n else c
    return out.tolist()


__all__ = ["DatasetResults", "Outputs", "ResultsNotReadyError", "Store"]
