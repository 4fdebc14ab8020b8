"""File integrity of fetched and hand-provided assets: the manifest of hashes, the completion marks, verification.

``data/manifest.json`` holds the SHA-256 and size of every file of an asset (:func:`record_files`), keyed by
its path relative to ``data/``; ``data/complete.json`` marks an asset (a file or a folder) complete once all
its files are recorded (:func:`mark_complete`), so a fetch killed half-way leaves the asset missing.
:func:`is_complete` checks marks and sizes (no hashing); :func:`verify_file` checks a file's hash and returns
it, so a caller that verified a file reuses that hash instead of hashing it again.

Both :mod:`mslib.fetch` (which writes assets) and :mod:`mslib.models` (which reads them) import this module;
it imports neither.
"""
from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from .cache import data_root, file_sha256, json_intact, read_json, write_json

FETCH_COMMAND = "python -m mslib.fetch --profile {profile}"


@dataclass(frozen=True)
class Asset:
    """One thing a profile needs from outside: what it is, where it must be, how to get it."""

    kind: str  # dataset | robustbench | hf | open_clip | torchvision | package
    name: str
    path: Path
    how: str  # the command (or manual step) that provides it
    # "check": Callable[[Path], bool] (present?; default: the path exists); "fetch": Callable[[Asset], None]
    # (downloads it); "manual": True when a person provides it; the rest says what it is (e.g. "dataset")
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def present(self) -> bool:
        check = self.params.get("check")
        return bool(check(self.path)) if check is not None else self.path.exists()

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.path}"



def manifest_path() -> Path:
    """``data/manifest.json``."""
    return data_root() / "manifest.json"


def _complete_path() -> Path:
    return data_root() / "complete.json"


def _read(path: Path) -> dict[str, Any]:
    # a damaged manifest (or completion list) is named and read as empty: every asset then counts as missing
    # and is fetched and recorded again, never trusted on hashes that cannot be read
    return read_json(path) if json_intact(path, "treating every asset as missing; fetch again") else {}


def manifest_key(path: str | os.PathLike) -> str:
    """A file's manifest key: its path relative to ``data/`` (absolute when it lies elsewhere)."""
    p = Path(path).resolve()
    root = data_root().resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def read_manifest() -> dict[str, Any]:
    """``{manifest key: {"sha256", "bytes", "source"}}`` (empty when there is none or it is damaged)."""
    return _read(manifest_path())


def _under(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k == key or k.startswith(key.rstrip("/") + "/")}


def asset_files(path: str | os.PathLike) -> list[Path]:
    """The files that make up the asset at ``path`` (itself, or every file under the folder, sorted): the one
    listing the manifest records and a model's identity hashes."""
    # huggingface_hub keeps download metadata and locks under <local_dir>/.cache: not part of the asset
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(q for q in path.rglob("*") if q.is_file() and ".cache" not in q.relative_to(path).parts)


def record_files(paths: list[Path], source: str) -> None:
    """Add the SHA-256 and size of ``paths`` (files, or every file under folders) to ``data/manifest.json``."""
    manifest = _read(manifest_path())
    for p in paths:
        for f in asset_files(p):
            manifest[manifest_key(f)] = {"sha256": file_sha256(f), "bytes": f.stat().st_size, "source": source}
    write_json(manifest, manifest_path())


def mark_complete(path: str | os.PathLike, source: str | None = None) -> None:
    """Mark the asset at ``path`` (a file, or a folder) complete: the last step of fetching or providing it.

    With ``source``, the files' hashes are recorded first (:func:`record_files`); without, every file
    under ``path`` must already be in the manifest with its current size. Manifest entries under ``path``
    whose files are gone are dropped. Only marked assets count as present (:func:`is_complete`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {path} does not exist; nothing to mark complete")
    if source is not None:
        record_files([path], source)
    manifest = _read(manifest_path())
    key = manifest_key(path)
    stale = [k for k in _under(manifest, key) if not (data_root() / k).is_file()]
    for k in stale:
        del manifest[k]
    unrecorded = [str(f) for f in asset_files(path)
                  if manifest.get(manifest_key(f), {}).get("bytes") != f.stat().st_size]
    if unrecorded:
        raise ValueError(f"path {path}: {len(unrecorded)} file(s) are not recorded in {manifest_path()} "
                         f"(first: {unrecorded[0]}); call record_files([path], source) or pass source=")
    if stale:
        write_json(manifest, manifest_path())
    entries = _under(manifest, key)
    done = _read(_complete_path())
    done[key] = {"files": len(entries), "bytes": sum(v["bytes"] for v in entries.values())}
    write_json(done, _complete_path())


def unmark_complete(path: str | os.PathLike) -> None:
    """Forget that the asset at ``path`` is complete (before replacing it, so a crash leaves it missing)."""
    done = _read(_complete_path())
    if done.pop(manifest_key(Path(path)), None) is not None:
        write_json(done, _complete_path())


def is_complete(path: str | os.PathLike) -> bool:
    """Whether the asset at ``path`` was marked complete and its recorded files are all there, with their
    recorded sizes (cheap: no hashing; :func:`verify_file` checks a file's hash)."""
    path = Path(path)
    if not path.exists():
        return False
    key = manifest_key(path)
    mark = _read(_complete_path()).get(key)
    if mark is None:
        return False
    entries = _under(_read(manifest_path()), key)
    if len(entries) != mark["files"]:
        return False
    for k, v in entries.items():
        f = Path(k) if Path(k).is_absolute() else data_root() / k
        try:
            if f.stat().st_size != v["bytes"]:
                return False
        except OSError:
            return False
    return True


def verify_file(path: str | os.PathLike, what: str = "file") -> str:
    """Check ``path``'s SHA-256 against ``data/manifest.json``; return it, or raise ``ValueError`` when the
    file is not recorded or differs (naming the file, the expected and the actual hash)."""
    path = Path(path)
    entry = _read(manifest_path()).get(manifest_key(path))
    if entry is None:
        raise ValueError(f"{what} {path} has no recorded SHA-256 in {manifest_path()}: fetch it with "
                         f"`{FETCH_COMMAND.format(profile='paper')}`, or, for a file you provide yourself, record "
                         f"it with `python -m mslib.fetch --record {path}`")
    actual = file_sha256(path)
    if actual != entry["sha256"]:
        raise ValueError(f"{what} {path} is not the recorded file: SHA-256 {actual}, expected {entry['sha256']} "
                         f"(from {entry.get('source', '?')}); delete it and fetch it again with "
                         f"`{FETCH_COMMAND.format(profile='paper')}`")
    return actual
