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

from .cache import DamagedFileError, data_root, read_json
from .defense import decide, matched_threshold
from .plan import DatasetPlan, Job, dataset_plan
from .profiles import PROFILES, get_profile, profile_names
from .results import ResultFolder

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
        self._read: dict[str, dict[str, Any]] = {}  # job key -> its fields (Store._fields)
        self._outputs: dict[tuple[str, bool], Outputs] = {}
        self._thresholds: dict[tuple[str, str], float] = {}
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in index["overrides"].items()}
        self.datasets: list[DatasetResults] = []
        for ds, entry in index["datasets"].items():
            p = get_profile(profile_name, ds, **overrides)
            plan = dataset_plan(p, entry["indices"], entry["models"], entry["speed"], compact=index["compact"],
                                ensemble=index.get("ensemble", True))
            self.datasets.append(DatasetResults(plan, torch.tensor(entry["labels"]), tuple(entry["class_names"]),
                                                torch.tensor(entry["indices"])))

    @classmethod
    def open(cls, source: "Store | str") -> "Store":
        """``source`` itself when it is a store, else the store of the profile it names."""
        return source if isinstance(source, Store) else cls(source)

    def folder(self, job: Job) -> ResultFolder:
        return ResultFolder.of(job, self.root)

    def _not_ready(self, job: Job, why: str) -> ResultsNotReadyError:
        return ResultsNotReadyError(f"result {job.label!r} (key {job.key}) {why}: compute it with "
                                    f"{_command(self.profile_name)}")

    def _batches(self, job: Job, read) -> list[Any]:
        """``read(folder, start)`` of every batch of a job, or the error naming what is missing or damaged."""
        if job.key not in self._keys:
            raise self._not_ready(job, "is not in the study index (the plan changed since the last run)")
        folder = self.folder(job)
        parts, bad = [], []
        for b in folder.starts():
            try:
                parts.append(read(folder, b))
            except FileNotFoundError:
                bad.append(f"batch {b} missing")
            except DamagedFileError as e:
                bad.append(f"batch {b} damaged ({e.reason})")
        if bad:
            raise self._not_ready(job, f"is incomplete in {folder.path}: {', '.join(bad)}")
        return parts

    def _fields(self, job: Job) -> dict[str, Any]:
        """Every field of a job's outputs files (not its images) over its batches: per-sample ones concatenated,
        bookkeeping as per-batch lists. Read once per store: every table of a build shares the read."""
        memo = self._read.get(job.key)
        if memo is None:
            parts = self._batches(job, lambda folder, b: folder.read(b))
            memo = {k: [pt.get(k) for pt in parts] for k in BOOKKEEPING}
            for k in dict.fromkeys(k for pt in parts for k in pt):
                if k not in BOOKKEEPING and all(k in pt for pt in parts):
                    memo[k] = torch.cat([pt[k] for pt in parts])
            self._read[job.key] = memo
        return memo

    def load(self, job: Job, fields: Sequence[str] = ("f", "s", "success")) -> dict[str, Any]:
        """The job's per-sample ``fields`` over all samples (``x``: the adversarial images, read from disk on
        every call; bookkeeping fields ``success_curve``, ``loss_curve``, ``n_forward``, ``seconds``,
        ``threshold`` as per-batch lists). The tensors are shared with later calls: do not modify them."""
        d = self._fields(job)
        out = {k: d[k] for k in fields if k in d}
        if "x" in fields:
            out["x"] = torch.cat(self._batches(job, lambda folder, b: folder.read_images(b)))
        return {k: out[k] for k in fields if k in out}

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

    def threshold(self, plan: DatasetPlan, clf: str) -> float:
        """The confidence rejector's threshold of classifier ``clf`` in a configuration's plan: matched to
        Multi-Shield's clean rejections on the stored clean outputs, as the executor attacked at it (checked
        against the thresholds the attacks on it recorded). Computed once per store."""
        memo_key = (plan.clean[clf].key, clf)
        if memo_key not in self._thresholds:
            clean = self.outputs(plan.clean[clf])
            thr = matched_threshold(clean.f, clean.s, plan.profile.tolerance)
            for job in plan.baseline.get(clf, ()):
                if job.defense == "conf":
                    recorded = {float(t) for t in self.load(job, ("threshold",))["threshold"] if t is not None}
                    if recorded and recorded != {thr}:
                        raise ValueError(f"{job.label}: attacked at threshold {sorted(recorded)}, but the stored "
                                         f"clean outputs give {thr}; the results are inconsistent (recompute them)")
            self._thresholds[memo_key] = thr
        return self._thresholds[memo_key]

def _sum_curves(curves: list) -> list[float]:
    n = max(len(c) for c in curves)
    out = torch.zeros(n)
    for c in curves:
        c = torch.as_tensor(c, dtype=torch.float32)
        out += torch.cat([c, c[-1:].expand(n - len(c))]) if len(c) < n else c
    return out.tolist()


__all__ = ["DatasetResults", "Outputs", "ResultsNotReadyError", "Store"]
