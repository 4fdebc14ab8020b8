"""Results cache: files under ``data/`` keyed by a hash of the record that produced them.

Every cached artefact is identified by a JSON-able *record* (profile values, checkpoint hashes, attack name
and parameters, eps, seed, sample indices, code version). Its key is the SHA-256 of the canonical JSON;
the record is written beside the artefact so a person can read what a file is. Writes go to a temporary
file in the same folder and are renamed into place, so a crash never leaves a half-written file.

Every tensor file the cache writes carries the SHA-256 of its payload in a one-line header, and every read
verifies it: a truncated, zeroed or garbled file raises :class:`DamagedFileError` naming the file, so it is
recomputed, never used. Folders written by other libraries (safetensors model folders) carry a
``checksums.json`` written last, checked the same way by :func:`verify_checksums`.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """The folder that holds datasets, checkpoints and results (``$MSLIB_CACHE`` or ``<repo>/data``)."""
    return Path(os.environ.get("MSLIB_CACHE", REPO_ROOT / "data"))


# where the paper profile's loaders look besides the data root (each overrides one asset's location)
PAPER_DATA_VARS = ("MSLIB_PAPER_DATA", "MSLIB_IMAGENET", "MSLIB_ROBUSTBENCH_DIR")


@contextlib.contextmanager
def data_root_at(root: str | os.PathLike) -> Iterator[Path]:
    """``MSLIB_CACHE=root`` (and no other data-location variables) for the duration, then restored."""
    keys = ("MSLIB_CACHE", *PAPER_DATA_VARS)
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys[1:]:
        os.environ.pop(k, None)
    os.environ["MSLIB_CACHE"] = str(root)
    try:
        yield Path(root)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


def _umask() -> int:
    """The process's umask (read from /proc where it can be, so the process's setting is not touched)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a class's shared cache must stay readable
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


MAGIC = b"MSLIB-SHA256 "  # header: MAGIC + 64 hex digits of the payload's SHA-256 + newline, then the payload
_HEADER_LEN = len(MAGIC) + 64 + 1


class DamagedFileError(ValueError):
    """A cache file that is unreadable, truncated or whose content does not match its checksum."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"damaged cache file {self.path}: {reason}")


def save_tensors(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically write a dict of tensors / plain values (``torch.save``) behind a checksum header."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def load_tensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_tensors`: verify its checksum, then ``torch.load(weights_only=True)``.

    Raises :class:`DamagedFileError` (naming the file) when it is missing its header, truncated, garbled or
    not loadable, and ``FileNotFoundError`` when it does not exist.
    """
    payload = memoryview(_verified_bytes(path))[_HEADER_LEN:]
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # a valid checksum over bytes torch cannot read: written by something else
        raise DamagedFileError(path, f"not loadable ({type(e).__name__}: {e})") from e


def saved_file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a whole file written by :func:`save_tensors`, after checking its payload against its header
    (one read); raises :class:`DamagedFileError` or ``FileNotFoundError`` as :func:`load_tensors` does."""
    return hashlib.sha256(_verified_bytes(path)).hexdigest()


def verify_saved(path: str | os.PathLike) -> None:
    """Check a :func:`save_tensors` file against its checksum without unpickling it (errors as
    :func:`load_tensors`)."""
    _verified_bytes(path)


def _verified_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a :func:`save_tensors` file whose payload matches its header's SHA-256."""
    data = Path(path).read_bytes()
    if len(data) < _HEADER_LEN or not data.startswith(MAGIC) or data[_HEADER_LEN - 1:_HEADER_LEN] != b"\n":
        raise DamagedFileError(path, f"no checksum header ({len(data)} bytes; truncated, zeroed or not an mslib file)")
    expected = data[len(MAGIC):_HEADER_LEN - 1].decode("ascii", "replace")
    actual = hashlib.sha256(memoryview(data)[_HEADER_LEN:]).hexdigest()
    if actual != expected:
        raise DamagedFileError(path, f"checksum mismatch (expected {expected[:16]}…, got {actual[:16]}…)")
    return data


_ZIP_END = b"PK\x05\x06"  # a zip archive's end-of-central-directory record (torch.save writes zip archives)


def saved_file_complete(path: str | os.PathLike) -> bool:
    """Whether a :func:`save_tensors` file has a well-formed header and ends with the zip archive's end
    record: reads 78 bytes at the front and 22 at the end, never the payload. It tells a complete file from
    a missing, empty, zeroed or truncated one; a payload garbled in place is found by :func:`load_tensors`
    when the file is read."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER_LEN)
            size = f.seek(0, os.SEEK_END)
            if size < _HEADER_LEN + 22:
                return False
            f.seek(size - 22)
            tail = f.read(22)
    except OSError:
        return False
    digest = head[len(MAGIC):_HEADER_LEN - 1]
    return (head.startswith(MAGIC) and head.endswith(b"\n") and len(digest) == 64
            and all(c in b"0123456789abcdef" for c in digest) and tail.startswith(_ZIP_END))


def report_damaged(err: DamagedFileError, action: str = "recomputing it") -> None:
    """Say on stderr that a damaged cache file was found and what happens instead (it is never used)."""
    print(f"mslib: {err}; {action}", file=sys.stderr, flush=True)


def write_checksums(folder: str | os.PathLike, names: list[str]) -> Path:
    """Record the SHA-256 of ``folder/<name>`` for each name in ``folder/checksums.json`` (written last)."""
    folder = Path(folder)
    return write_json({n: file_sha256(folder / n) for n in sorted(names)}, folder / "checksums.json")


def folder_intact(folder: str | os.PathLike, weights: str) -> bool:
    """Whether a model folder holds ``weights``, every file matches its ``checksums.json`` and its
    ``train_info.json`` (written after the weights: a training killed in between left none) reads back; a
    damaged folder is reported (it is never used: the caller retrains, training being deterministic)."""
    folder = Path(folder)
    if not (folder / weights).is_file():
        return False
    try:
        verify_checksums(folder)
    except DamagedFileError as e:
        report_damaged(e, "retraining the model")
        return False
    return json_intact(folder / "train_info.json", "retraining the model")


def json_intact(path: str | os.PathLike, action: str = "recomputing it") -> bool:
    """Whether the JSON file ``path`` exists and parses; one that does not parse is reported on stderr
    (naming it and ``action``) and, like a missing one, is never used."""
    try:
        read_json(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as e:
        report_damaged(DamagedFileError(path, f"unreadable JSON ({type(e).__name__})"), action)
        return False
    return True


def verify_checksums(folder: str | os.PathLike) -> None:
    """Raise :class:`DamagedFileError` unless every file listed in ``folder/checksums.json`` matches it."""
    folder = Path(folder)
    index = folder / "checksums.json"
    try:
        names = list(read_json(index))
    except (OSError, ValueError, TypeError) as e:
        raise DamagedFileError(index, f"missing or unreadable ({type(e).__name__})") from e
    manifest_sha256(folder, names)


def manifest_sha256(folder: str | os.PathLike, names: list[str]) -> list[str]:
    """The SHA-256 of ``folder/<name>`` for each name, each file hashed once and checked against the
    folder's ``checksums.json``; raises :class:`DamagedFileError` if the manifest or a file disagrees."""
    folder = Path(folder)
    index = folder / "checksums.json"
    try:
        expected = read_json(index)
    except (OSError, ValueError) as e:
        raise DamagedFileError(index, f"missing or unreadable ({type(e).__name__})") from e
    out = []
    for name in names:
        f = folder / name
        if name not in expected or not f.is_file():
            raise DamagedFileError(f, "missing (or not listed in checksums.json)")
        sha = file_sha256(f)
        if sha != expected[name]:
            raise DamagedFileError(f, "checksum mismatch against checksums.json")
        out.append(sha)
    return out


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically write readable JSON."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    return atomic_write(path, lambda p: p.write_text(text + "\n"))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def entry_dir(kind: str, record: Any) -> Path:
    """Folder ``data/<kind>/<key>/`` for a record, with ``record.json`` written beside the artefacts.

    The record is (re)written when it is missing or does not read back as the record (e.g. damaged).
    """
    d = data_root() / kind / record_key(record)
    write_json_if_changed(record, d / "record.json")
    return d


def write_json_if_changed(obj: Any, path: str | os.PathLike) -> Path:
    """:func:`write_json` unless ``path`` already reads back as ``obj`` (keeps its mtime for Make)."""
    same = json_intact(path, "rewriting it") and canonical_json(read_json(path)) == canonical_json(obj)
    return Path(path) if same else write_json(obj, path)
