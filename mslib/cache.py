"""Results cache: files under ``data/`` keyed by a hash of the record that produced them.

Every cached artefact is identified by a JSON-able *record* (profile values, checkpoint hashes, attack name
and parameters, eps, seed, sample indices, code version). Its key is the SHA-256 of the canonical JSON;
the record is written beside the artefact so a person can read what a file is. Writes go to a temporary
file in the same folder and are renamed into place, so a crash never leaves a half-written file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The folder that holds datasets, checkpoints and results (``$MSLIB_CACHE`` or ``<repo>/data``)."""
    return Path(os.environ.get("MSLIB_CACHE", REPO_ROOT / "data"))


def canonical_json(record: Any) -> str:
    """Deterministic JSON for hashing (sorted keys, no whitespace, tuples as lists)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    raise TypeError(f"cannot put {type(obj).__name__} into a cache record")


def record_key(record: Any, length: int = 16) -> str:
    """Short SHA-256 hex key of a record."""
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()[:length]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_tensors(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically ``torch.save`` a dict of tensors / plain values."""
    return atomic_write(path, lambda p: torch.save(obj, p))


def load_tensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a file written by :func:`save_tensors` safely (``weights_only=True``)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically write readable JSON."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    return atomic_write(path, lambda p: p.write_text(text + "\n"))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def entry_dir(kind: str, record: Any) -> Path:
    """Folder ``data/<kind>/<key>/`` for a record, with ``record.json`` written beside the artefacts."""
    d = data_root() / kind / record_key(record)
    rec = d / "record.json"
    if not rec.exists():
        write_json(record, rec)
    return d
