"""Fetch a profile's external assets into ``data/`` (on a machine with internet) and check for them offline.

``python -m mslib.fetch --profile paper`` downloads every dataset and checkpoint the profile names, over
HTTPS with certificate verification, checks each archive's published MD5 (torchvision's values) or the
file's own hash prefix, writes files to a temporary name and renames them into place, and records the
SHA-256 of every file in ``data/manifest.json``. Nothing downloaded is executed: archives are extracted by
:func:`safe_extract` (regular files and folders only, every path checked to stay inside the target; no
links of any kind), checkpoints are checked to be PyTorch files (not HTML pages) and are only ever read
with ``weights_only=True`` / safetensors; RobustBench checkpoints are verified against their recorded
SHA-256 on every load.

Fetching is crash-safe: datasets are extracted into a temporary folder beside their destination and
renamed into place, and an asset counts as present only once :func:`mark_complete` has recorded it in
``data/complete.json``, after its files' hashes are in the manifest. A fetch killed half-way leaves the
asset missing, and the next fetch repairs it.

Offline, :func:`missing_assets` lists what a profile lacks and :func:`require_assets` raises one error that
names every missing item and the command that fetches it, before any computation. ImageNet cannot be
downloaded (its licence needs a login): it is named by path (``MSLIB_IMAGENET`` or ``data/imagenet/val``).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import stat
import ssl
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .cache import data_root
from .integrity import FETCH_COMMAND, Asset, is_complete, mark_complete, read_manifest, record_files, unmark_complete

if TYPE_CHECKING:
    from .profiles import Profile

PARTIAL = ".partial-"  # infix of the temporary folders datasets are extracted into


# The BERT tokenizer CLIPA's text tower names (hf_tokenizer_name), stored inside the CLIPA folder.
OPEN_CLIP_TOKENIZERS = {"bert-base-uncased": ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "config.json"]}


# ------------------------------------------------------------------------------------------ asset lists
def _dataset_complete(name: str, root: Path | None = None) -> Callable[[Path], bool]:
    """Present = the layout's marker file exists and its folder was marked complete (not half-extracted)."""
    from .data import dataset_spec

    folder = dataset_spec(name).directory({"root": root} if root is not None else None)

    def check(marker: Path) -> bool:
        return marker.exists() and is_complete(folder)

    return check


def _dataset_asset(ds: str, options: dict[str, Any], cmd: str) -> Asset | None:
    """The asset of a dataset: downloadable when its spec lists archives, provided by hand when it says how,
    none when neither (e.g. a system package)."""
    from .data import dataset_spec

    spec = dataset_spec(ds)
    if spec.archives:
        root = Path(options["root"]) if options.get("root") else None
        return Asset("dataset", ds, spec.path(options), cmd, {"dataset": ds, "check": _dataset_complete(ds, root),
                                                              "fetch": lambda a: fetch_dataset(a.params["dataset"])})
    if spec.manual is not None:
        return Asset("dataset", f"{spec.display} (provided by hand)", spec.path(options), spec.manual,
                     {"dataset": ds, "manual": True, "check": lambda q: q.is_dir() and any(q.iterdir())})
    return None


def profile_assets(profile_name: str, profiles: Sequence[Profile] | None = None) -> list[Asset]:
    """Every external asset of every dataset of a profile (locally trained models are not assets); with
    ``profiles`` (per-dataset profiles, overrides applied, e.g. ``datasets``/``classifiers`` narrowed for a
    dry run), only theirs."""
    from .models import source_spec
    from .plan import vlm_variants
    from .profiles import PROFILES, get_profile

    if profile_name not in PROFILES:
        raise ValueError(f"unknown profile {profile_name!r}; choose one of {list(PROFILES)}")
    cmd = FETCH_COMMAND.format(profile=profile_name)
    assets: dict[tuple[str, str], Asset] = {}

    def add(a: Asset) -> None:
        assets.setdefault((a.kind, str(a.path)), a)

    if profiles is None:
        profiles = [get_profile(profile_name, ds) for ds in PROFILES[profile_name]["datasets"]]
    for p in profiles:
        dataset_asset = _dataset_asset(p.dataset, p.data_options, cmd)
        if dataset_asset is not None:
            add(dataset_asset)
        # the profile's VLM variants are assets only where the profile enables them (e.g. paper-robust)
        specs = list(p.classifier_specs.items()) + [(p.vlm, p.vlm_spec)] + list(vlm_variants(p).items())
        for _, spec in specs:
            source = source_spec(spec.get("source"))
            if source.assets is not None:
                for a in source.function("assets")(spec, cmd):
                    add(a)
    return list(assets.values())


def missing_assets(profile_name: str, profiles: Sequence[Profile] | None = None) -> list[Asset]:
    """The assets of ``profile_name`` (or of just ``profiles``) that are not on disk (empty when it can run
    offline)."""
    return [a for a in profile_assets(profile_name, profiles) if not a.present()]


class MissingAssetsError(FileNotFoundError):
    """Raised by :func:`require_assets`; ``.missing`` holds the :class:`Asset` list."""

    def __init__(self, profile_name: str, missing: list[Asset]) -> None:
        self.missing = missing
        lines = [f"profile {profile_name!r} needs {len(missing)} asset(s) that are not on this machine:"]
        lines += [f"  - {a.kind} {a.name}: expected at {a.path}" for a in missing]
        hows: dict[str, None] = {}
        for a in missing:
            hows.setdefault(a.how, None)
        lines.append("Get them with:")
        lines += [f"  {h}" for h in hows]
        lines.append("(the fetch command needs internet; run it on another machine and copy data/ here if need be)")
        super().__init__("\n".join(lines))


def require_assets(profile_name: str, profiles: Sequence[Profile] | None = None) -> None:
    """Raise :class:`MissingAssetsError` listing every missing asset of the profile (or of just ``profiles``),
    or return quietly."""
    missing = missing_assets(profile_name, profiles)
    if missing:
        raise MissingAssetsError(profile_name, missing)


def asset_hashes(profile_name: str, dataset: str | None = None) -> dict[str, str]:
    """``{path relative to data/: sha256}`` of the fetched files behind a profile's assets (one dataset's, or
    all), read from ``data/manifest.json`` (no hashing here): for result records, so a result names the exact
    checkpoints and data it came from. Files not in the manifest (e.g. ImageNet, named by path) are left out."""
    from .profiles import get_profile

    manifest = read_manifest()
    root = data_root().resolve()
    wanted: list[str] = []
    for a in profile_assets(profile_name, None if dataset is None else [get_profile(profile_name, dataset)]):
        p = a.path.resolve()
        wanted.append(str(p.relative_to(root)) if p.is_relative_to(root) else str(p))
    return {k: v["sha256"] for k, v in sorted(manifest.items())
            if any(k == w or k.startswith(w.rstrip("/") + "/") for w in wanted)}


# ----------------------------------------------------------------------------------------- downloading
HF_HOST = "huggingface.co"


@contextlib.contextmanager
def naming_host(host: str, what: str):
    """Re-raise a network or disk error (``OSError``) inside with the host it could not reach in front:
    a failed fetch says where it went, not only what the socket said."""
    try:
        yield
    except OSError as e:
        if host in str(e):
            raise
        raise OSError(f"could not fetch {what} from {host}: {e}") from e


def download(url: str, dest: Path, md5: str | None = None, sha256_prefix: str | None = None,
             progress: bool = True) -> Path:
    """Download ``url`` (HTTPS only, certificate verified) to ``dest`` via a temporary file; check hashes."""
    if not url.startswith("https://"):
        raise ValueError(f"refusing a non-HTTPS download: {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    ctx = ssl.create_default_context()
    req = urllib.request.Request(url, headers={"User-Agent": "mslib-fetch"})
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    md5_h, sha_h = hashlib.md5(), hashlib.sha256()
    try:
        with naming_host(urllib.parse.urlsplit(url).netloc, url), os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            from tqdm.auto import tqdm

            with tqdm(total=total or None, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    md5_h.update(chunk)
                    sha_h.update(chunk)
                    bar.update(len(chunk))
        if md5 and md5_h.hexdigest() != md5:
            raise ValueError(f"{url}: MD5 {md5_h.hexdigest()} does not match the published {md5}")
        if sha256_prefix and not sha_h.hexdigest().startswith(sha256_prefix):
            raise ValueError(f"{url}: SHA-256 {sha_h.hexdigest()} does not start with {sha256_prefix}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _member_path(root: Path, name: str, archive: Path) -> Path | None:
    """``root / name`` for an archive member, or raise if the name is absolute or climbs out with ``..``."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts or "\x00" in name:
        raise ValueError(f"{archive}: member {name!r} has an absolute or '..' path; refusing to extract it")
    parts = [q for q in parts if q not in ("", ".")]
    return root.joinpath(*parts) if parts else None


def _make_dirs(root: Path, target: Path, archive: Path, name: str) -> None:
    """Create the folders from ``root`` down to ``target``, refusing any existing link or non-folder."""
    cur = root
    for part in target.relative_to(root).parts:
        cur = cur / part
        if cur.is_symlink() or (cur.exists() and not cur.is_dir()):
            raise ValueError(f"{archive}: member {name!r} goes through {cur}, which is not a plain folder")
        if not cur.exists():
            cur.mkdir(mode=0o755)


def _write_member(root: Path, target: Path, data: Any, archive: Path, name: str) -> None:
    """Write one regular file from the readable ``data`` at ``target`` (never following a link)."""
    _make_dirs(root, target.parent, archive, name)
    if not os.path.realpath(target).startswith(os.path.realpath(root) + os.sep):
        raise ValueError(f"{archive}: member {name!r} would be written outside {root}")
    if target.is_symlink() or target.is_dir():
        raise ValueError(f"{archive}: member {name!r} would replace the link or folder {target}")
    target.unlink(missing_ok=True)  # a later member of the same name wins, as with tar
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(data, out, 1 << 20)


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar/zip archive into ``target``: regular files and folders only, each inside ``target``.

    Links of any kind (symbolic or hard), devices and fifos are refused with a ``ValueError`` naming the
    member, as are absolute and ``..`` paths; nothing is written through an existing link. tarfile's
    ``data`` filter is not relied on: on the Python this environment pins (3.11.7) a symlink chain defeats
    it (CVE-2025-4517, fixed in 3.11.13 / 3.12.11 / 3.13.4). Permissions are plain (0644 / 0755).
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                mode = info.external_attr >> 16
                is_dir = info.is_dir()
                # Unix type bits, when the creator stored them (0 = plain permissions only: a regular file)
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise ValueError(f"{archive}: member {info.filename!r} is a link or special file "
                                     f"(mode {stat.filemode(mode)}); only regular files and folders are extracted")
                dest = _member_path(root, info.filename, archive)
                if dest is None:
                    continue
                if is_dir or stat.S_ISDIR(mode):
                    _make_dirs(root, dest, archive, info.filename)
                else:
                    with z.open(info) as data:
                        _write_member(root, dest, data, archive, info.filename)
        return
    try:
        t = tarfile.open(archive)
    except tarfile.TarError as e:
        raise ValueError(f"{archive} is neither a zip nor a tar archive ({e})") from e
    with t:
        for m in t:
            if not (m.isreg() or m.isdir()):
                kind = ("symbolic link" if m.issym() else "hard link" if m.islnk() else "fifo" if m.isfifo()
                        else "device" if m.isdev() else f"member of type {m.type!r}")
                raise ValueError(f"{archive}: member {m.name!r} is a {kind}; only regular files and folders "
                                 "are extracted")
            dest = _member_path(root, m.name, archive)
            if dest is None:
                continue
            if m.isdir():
                _make_dirs(root, dest, archive, m.name)
            else:
                data = t.extractfile(m)
                assert data is not None  # regular members always have data
                _write_member(root, dest, data, archive, m.name)


def _remove_partials(root: Path, name: str) -> None:
    # left by a fetch that was killed (kill -9 skips every cleanup handler)
    for stale in root.glob(f".{name}{PARTIAL}*"):
        shutil.rmtree(stale, ignore_errors=True)


def fetch_dataset(name: str, root: Path | None = None) -> Path:
    """Download and extract a dataset whose spec lists archives, under ``root`` (default: the spec's root).

    Archives are extracted into a temporary folder beside the destination, which is renamed into place;
    the files' hashes are then recorded and the folder marked complete, so a crash at any point leaves
    the dataset missing (never half-present) and the next fetch starts it again.
    """
    from .data import DATASETS, dataset_spec

    spec = dataset_spec(name)
    if not spec.archives:
        raise ValueError(f"dataset must be one of {sorted(n for n, s in DATASETS.items() if s.archives)} "
                         f"(those with archives to download), got {name!r}")
    options = {"root": root} if root is not None else None
    root = spec.base(options)
    root.mkdir(parents=True, exist_ok=True)
    _remove_partials(root, name)
    final = spec.directory(options)
    stage = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}{PARTIAL}"))
    try:
        tree = stage / "tree"
        for a in spec.archives:
            arch = download(a.url, stage / "archives" / a.url.rsplit("/", 1)[-1], md5=a.md5)
            safe_extract(arch, tree / a.into)
            arch.unlink()
        if spec.unpack is not None:
            spec.unpack(tree, safe_extract)
        built = tree / spec.folder
        if not built.is_dir():
            raise ValueError(f"{name}: the archives did not contain the folder {built.name}/")
        unmark_complete(final)  # from here on a crash leaves the dataset missing, not stale-but-present
        if final.exists():
            shutil.rmtree(final)
        os.replace(built, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    mark_complete(final, f"{name}: {', '.join(a.url for a in spec.archives)}")
    return final


def fetch_hf(repo: str, folder: Path, extra: dict[str, list[str]] | None = None) -> Path:
    """Download a hub repository's config, tokenizer and weights (safetensors when published) into ``folder``."""
    repo = repo.removeprefix("hf-hub:").strip("/")
    with naming_host(HF_HOST, repo):
        _fetch_hf(repo, folder, extra)
    record_files([folder], f"https://huggingface.co/{repo}")
    return folder


def _fetch_hf(repo: str, folder: Path, extra: dict[str, list[str]] | None) -> None:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    files = HfApi().list_repo_files(repo)
    has_st = any(f.endswith(".safetensors") for f in files)
    patterns = ["*.json", "*.txt", "*.safetensors"] + ([] if has_st else ["*.bin"])
    unmark_complete(folder)
    snapshot_download(repo, local_dir=str(folder), allow_patterns=patterns)
    for other, names in (extra or {}).items():
        for n in names:
            if not (folder / n).exists():
                hf_hub_download(other, n, local_dir=str(folder))


def fetch_asset(asset: Asset) -> None:
    """Fetch one asset with the function it carries (raises for those provided by hand, e.g. ImageNet)."""
    fetch = asset.params.get("fetch")
    if fetch is None or asset.params.get("manual"):
        raise RuntimeError(f"cannot fetch {asset}; {asset.how}")
    fetch(asset)


def fetch_hf_tokenizer(repo: str, folder: Path) -> None:
    """Put a text tower's Hugging Face tokenizer files next to an open_clip checkpoint (read offline there)."""
    from huggingface_hub import hf_hub_download

    for n in OPEN_CLIP_TOKENIZERS.get(repo, ["tokenizer.json", "tokenizer_config.json"]):
        if not (folder / n).exists():
            with naming_host(HF_HOST, f"{repo} ({n})"):
                hf_hub_download(repo, n, local_dir=str(folder))
    record_files([folder], f"https://huggingface.co/{repo} (tokenizer)")


def fetch_profile(profile_name: str, only: Callable[[Asset], bool] | None = None) -> list[Asset]:
    """Fetch every missing asset of a profile; returns what is still missing afterwards (e.g. ImageNet)."""
    for asset in missing_assets(profile_name):
        if only is not None and not only(asset):
            continue
        if asset.params.get("manual"):
            print(f"[manual] {asset}\n         {asset.how}", file=sys.stderr)
            continue
        print(f"[fetch] {asset}", file=sys.stderr)
        fetch_asset(asset)
    return missing_assets(profile_name)


def main(argv: list[str] | None = None) -> int:
    """The command line; bad arguments or data end with one ``error:`` line and exit code 2."""
    prog = "python -m mslib.fetch"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--check", action="store_true", help="list what is missing and exit (no download)")
    parser.add_argument("--record", nargs="+", metavar="PATH", default=None,
                        help="record the hashes of files/folders you provided yourself and mark them complete")
    args = parser.parse_args(argv)
    try:
        if args.record:
            for path in args.record:
                _check_recordable(Path(path))
            for path in args.record:
                mark_complete(Path(path), f"provided by hand: {path}")
                print(f"recorded and marked complete: {path}")
            return 0
        if args.check:
            missing = missing_assets(args.profile)
            for a in missing:
                print(f"missing: {a}")
            print(f"{len(missing)} missing asset(s) for profile {args.profile!r}")
            return 1 if missing else 0
        still = fetch_profile(args.profile)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # network or disk trouble: not the user's input, but still one line
        print(f"{prog}: error: {_one_line(e)} (network or disk problem; run the command again to resume)",
              file=sys.stderr)
        return 1
    for a in still:
        print(f"still missing: {a}\n  {a.how}", file=sys.stderr)
    return 1 if still else 0


def _check_recordable(path: Path) -> None:
    """Refuse a hand-provided file that no loader would read: it must lie under the data root or under a
    folder that one of :data:`mslib.cache.PAPER_DATA_VARS` points the loaders at."""
    from .cache import PAPER_DATA_VARS

    p = path.resolve()
    roots = [data_root().resolve()] + [Path(os.environ[v]).resolve() for v in PAPER_DATA_VARS if os.environ.get(v)]
    if not any(p.is_relative_to(r) for r in roots):
        where = " or ".join(f"${v}" for v in PAPER_DATA_VARS)
        raise ValueError(f"--record {path}: it lies outside the data root {roots[0]} (and outside {where}), "
                         f"where no loader reads it; move it under the data root first")


def _one_line(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(str(msg).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
