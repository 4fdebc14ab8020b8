"""One result on disk: the folder ``data/results/<key>/`` of a job, which the executor writes and the store reads.

A result is split into batches of the job's ``batch_size`` over its samples, each stored as two files:
``batch_<start>.pt`` (per-sample outputs and bookkeeping) and ``batch_<start>.x.pt`` (the images, read
only when asked for), each behind a checksum (:func:`mslib.cache.save_tensors`). ``record.json`` beside
them says what produced the result. The naming, the batch starts and the done check live here only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .cache import DamagedFileError, data_root, load_tensors, report_damaged, save_tensors, saved_file_complete, \
    verify_saved, write_json_if_changed
from .plan import Job


@dataclass(frozen=True)
class ResultFolder:
    """The batch files of one job's result under ``root`` (default ``data/results``)."""

    job: Job
    path: Path
    n: int  # samples
    batch_size: int

    @classmethod
    def of(cls, job: Job, root: Path | None = None) -> "ResultFolder":
        ctx = json.loads(job.context)
        root = root if root is not None else data_root() / "results"
        return cls(job, root / job.key, len(ctx["indices"]), int(ctx["batch_size"]))

    def starts(self, shard: tuple[int, int] | None = None) -> list[int]:
        """The first sample of every batch (of shard i of n: batches i, i+n, ...)."""
        starts = list(range(0, self.n, self.batch_size))
        return starts if shard is None else starts[shard[0]::shard[1]]

    def files(self, start: int) -> tuple[Path, Path]:
        """(outputs file, images file) of the batch starting at sample ``start``."""
        return self.path / f"batch_{start:07d}.pt", self.path / f"batch_{start:07d}.x.pt"

    def state(self, start: int) -> str:
        """``done``, ``missing`` or ``damaged`` (reported on stderr, then to be recomputed). The outputs file
        (small) is checked against its checksum; the images file, the bulk of a result, only by its header and
        zip end record (complete, not zeroed or truncated): its content is verified whenever it is read."""
        out, xf = self.files(start)
        if not out.exists() and not xf.exists():
            return "missing"
        try:
            verify_saved(out)
            if not xf.exists():
                return "missing"
            if not saved_file_complete(xf):
                raise DamagedFileError(xf, "no checksum header or incomplete (truncated, zeroed or not an mslib file)")
        except FileNotFoundError:
            return "missing"
        except DamagedFileError as e:
            report_damaged(e)
            return "damaged"
        return "done"

    def read(self, start: int, images: bool = False) -> dict[str, Any]:
        """One batch's outputs (with ``images`` also its ``x``), verified; FileNotFoundError or
        DamagedFileError when it is not there whole."""
        out_file, x_file = self.files(start)
        part = load_tensors(out_file)
        if images:
            part["x"] = load_tensors(x_file)["x"]
        return part

    def read_images(self, start: int) -> torch.Tensor:
        return load_tensors(self.files(start)[1])["x"]

    def write(self, start: int, out: dict[str, Any]) -> None:
        """Store one batch: the images first, so an outputs file marks a batch whose images are there."""
        out = dict(out)
        out_file, x_file = self.files(start)
        save_tensors({"x": out.pop("x")}, x_file)
        save_tensors(out, out_file)

    def write_record(self) -> None:
        """(Re)write ``record.json`` when it is missing or does not read back as the job's record."""
        write_json_if_changed(self.job.record(), self.path / "record.json")

    def concat(self, fields: Sequence[str]) -> dict[str, torch.Tensor]:
        """Per-sample ``fields`` over every batch, concatenated (each file verified)."""
        parts = [self.read(b) for b in self.starts()]
        return {k: torch.cat([p[k] for p in parts]) for k in fields}


__all__ = ["ResultFolder"]
