"""Fetch a profile's external assets into ``data/`` (on a machine with internet) and check for them offline.

``python -m mslib.fetch --profile paper`` downloads every dataset and checkpoint the profile names, over
HTTPS with certificate verification, checks each archive's published MD5 (torchvision's values) or the
file's own hash prefix, writes files to a temporary name and renames them into place, and records the
SHA-256 of every file in ``data/manifest.json``. Nothing downloaded is executed: archives are extracted with
the ``data`` filter (no links out of the folder, no special files), checkpoints are checked to be PyTorch
files (not HTML pages) and are only ever read with ``weights_only=True`` / safetensors.

Offline, :func:`missing_assets` lists what a profile lacks and :func:`require_assets` raises one error that
names every missing item and the command that fetches it, before any computation. ImageNet cannot be
downloaded (its licence needs a login): it is named by path (``MSLIB_IMAGENET`` or ``data/imagenet/val``).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import ssl
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .cache import data_root, file_sha256, read_json, write_json

FETCH_COMMAND = "python -m mslib.fetch --profile {profile}"
ROBUSTBENCH_INSTALL = "pip install --no-deps robustbench==1.1.1 && pip install geotorch torchdiffeq pyyaml"

# https URLs and torchvision's published MD5s of the dataset archives, and where each is extracted.
DATASET_ARCHIVES: dict[str, list[tuple[str, str, str]]] = {
    "cifar10": [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "")],
    "stl10": [("https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb", "")],
    "food101": [("https://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "85eeb15f3717b99a5da872d97d918f87", "")],
    "oxford_pets": [
        ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c",
         "oxford-iiit-pet"),
        ("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f",
         "oxford-iiit-pet"),
    ],
    "caltech101": [("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
                    "3138e1922a9193bfa496528edbbc45d0", "caltech101")],
}
GDRIVE_URL = "https://drive.usercontent.google.com/download?id={id}&export=download&confirm=t"
# The BERT tokenizer CLIPA's text tower names (hf_tokenizer_name), stored inside the CLIPA folder.
OPEN_CLIP_TOKENIZERS = {"bert-base-uncased": ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "config.json"]}


@dataclass(frozen=True)
class Asset:
    """One thing a profile needs from outside: what it is, where it must be, how to get it."""

    kind: str  # dataset | robustbench | hf | open_clip | torchvision | package
    name: str
    path: Path
    how: str  # the command (or manual step) that provides it
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def present(self) -> bool:
        check = self.params.get("check")
        return bool(check(self.path)) if check is not None else self.path.exists()

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.path}"


# ------------------------------------------------------------------------------------------ asset lists
def _hf_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"))


def _open_clip_complete(folder: Path) -> bool:
    from open_clip.factory import _find_checkpoint_in_dir

    return (folder / "open_clip_config.json").is_file() and _find_checkpoint_in_dir(folder) is not None


def profile_assets(profile_name: str) -> list[Asset]:
    """Every external asset of every dataset of a profile (locally trained models are not assets)."""
    from . import paper_data
    from .models.paper import hub_folder, robustbench_checkpoint_paths, robustbench_dir, torchvision_weights_path
    from .profiles import PROFILES, get_profile

    if profile_name not in PROFILES:
        raise ValueError(f"unknown profile {profile_name!r}; choose one of {list(PROFILES)}")
    cmd = FETCH_COMMAND.format(profile=profile_name)
    assets: dict[tuple[str, str], Asset] = {}

    def add(a: Asset) -> None:
        assets.setdefault((a.kind, str(a.path)), a)

    for ds in PROFILES[profile_name]["datasets"]:
        p = get_profile(profile_name, ds)
        if ds == "imagenet":
            add(Asset("dataset", "ImageNet validation split (ImageFolder <wnid>/*.JPEG)",
                      paper_data.dataset_path("imagenet", p.data_options),
                      "ImageNet needs a login at image-net.org: download ILSVRC2012_img_val.tar, sort it into "
                      "<wnid>/ folders (valprep.sh), then set MSLIB_IMAGENET=/path/to/val or put it at "
                      "data/imagenet/val", {"check": lambda q: q.is_dir() and any(q.iterdir())}))
        elif ds in DATASET_ARCHIVES:
            add(Asset("dataset", ds, paper_data.dataset_path(ds, p.data_options), cmd, {"dataset": ds}))
        specs = list(p.classifier_specs.items()) + [(p.vlm, p.vlm_spec)]
        for name, spec in specs:
            src = spec.get("source")
            if src == "robustbench":
                if importlib.util.find_spec("robustbench") is None:
                    add(Asset("package", "robustbench (model zoo only)", Path("robustbench"), ROBUSTBENCH_INSTALL,
                              {"check": lambda q: importlib.util.find_spec("robustbench") is not None}))
                    paths = [robustbench_dir() / spec["dataset"] / spec["threat_model"] / f"{spec['model']}.pt"]
                else:
                    paths = robustbench_checkpoint_paths(spec["model"], spec["dataset"], spec["threat_model"])
                for i, path in enumerate(paths):
                    label = spec["model"] + (f" (member {i})" if len(paths) > 1 else "")
                    add(Asset("robustbench", label, path, cmd, {"model": spec["model"], "dataset": spec["dataset"],
                                                                "threat_model": spec["threat_model"], "member": i}))
            elif src == "hf-clip":
                for repo in (spec["vision"], spec["text"]):
                    if not Path(repo).is_dir():
                        add(Asset("hf", repo, hub_folder("hf", repo), cmd, {"repo": repo, "check": _hf_complete}))
            elif src == "open_clip":
                if not Path(spec["model"]).is_dir():
                    add(Asset("open_clip", spec["model"], hub_folder("open_clip", spec["model"]), cmd,
                              {"repo": spec["model"], "check": _open_clip_complete}))
            elif src == "torchvision-ft" and spec.get("weights"):
                path, url = torchvision_weights_path(spec.get("arch", "resnet18"), spec["weights"])
                add(Asset("torchvision", f"{spec.get('arch', 'resnet18')} {spec['weights']}", path, cmd, {"url": url}))
    return list(assets.values())


def missing_assets(profile_name: str) -> list[Asset]:
    """The assets of ``profile_name`` that are not on disk (empty when the profile can run offline)."""
    return [a for a in profile_assets(profile_name) if not a.present()]


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


def require_assets(profile_name: str) -> None:
    """Raise :class:`MissingAssetsError` listing every missing asset of the profile, or return quietly."""
    missing = missing_assets(profile_name)
    if missing:
        raise MissingAssetsError(profile_name, missing)


def asset_hashes(profile_name: str, dataset: str | None = None) -> dict[str, str]:
    """``{path relative to data/: sha256}`` of the fetched files behind a profile's assets (one dataset's, or
    all), read from ``data/manifest.json`` (no hashing here): for result records, so a result names the exact
    checkpoints and data it came from. Files not in the manifest (e.g. ImageNet, named by path) are left out."""
    from .profiles import get_profile

    manifest = read_json(_manifest_path()) if _manifest_path().is_file() else {}
    root = data_root().resolve()
    wanted: list[str] = []
    for a in profile_assets(profile_name):
        if dataset is not None and not _asset_of_dataset(a, get_profile(profile_name, dataset)):
            continue
        p = a.path.resolve()
        wanted.append(str(p.relative_to(root)) if p.is_relative_to(root) else str(p))
    return {k: v["sha256"] for k, v in sorted(manifest.items())
            if any(k == w or k.startswith(w.rstrip("/") + "/") for w in wanted)}


def _asset_of_dataset(asset: Asset, profile: Any) -> bool:
    from .models.paper import hub_folder

    if asset.kind == "dataset":
        return asset.params.get("dataset", "imagenet") == profile.dataset
    specs = list(profile.classifier_specs.values()) + [profile.vlm_spec]
    if asset.kind == "robustbench":
        return any(s.get("source") == "robustbench" and s.get("model") == asset.params["model"]
                   and s.get("dataset") == asset.params["dataset"] for s in specs)
    if asset.kind in ("hf", "open_clip"):
        refs = [s.get(k) for s in specs for k in ("vision", "text", "model") if isinstance(s.get(k), str)]
        return any(hub_folder(asset.kind, r) == asset.path for r in refs)
    return asset.kind == "torchvision" and any(s.get("source") == "torchvision-ft" for s in specs)


# ----------------------------------------------------------------------------------------- downloading
def _manifest_path() -> Path:
    return data_root() / "manifest.json"


def record_files(paths: list[Path], source: str) -> None:
    """Add the SHA-256 and size of ``paths`` (files, or every file under folders) to ``data/manifest.json``."""
    manifest = read_json(_manifest_path()) if _manifest_path().is_file() else {}
    root = data_root().resolve()
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            f = f.resolve()
            key = str(f.relative_to(root)) if f.is_relative_to(root) else str(f)
            manifest[key] = {"sha256": file_sha256(f), "bytes": f.stat().st_size, "source": source}
    write_json(manifest, _manifest_path())


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
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
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


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar/zip archive into ``target`` refusing absolute paths, ``..`` and links (tar 'data' filter)."""
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            root = target.resolve()
            for member in z.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise ValueError(f"{archive}: member {member!r} would be written outside {target}")
            z.extractall(target)
        return
    with tarfile.open(archive) as t:
        t.extractall(target, filter="data")


def fetch_dataset(name: str, root: Path | None = None) -> Path:
    """Download and extract a torchvision-layout dataset under ``root`` (default ``data/datasets``)."""
    from . import paper_data

    root = root or paper_data.paper_data_root()
    with tempfile.TemporaryDirectory(dir=root.parent if root.parent.exists() else None) as tmp:
        for url, md5, sub in DATASET_ARCHIVES[name]:
            arch = download(url, Path(tmp) / url.rsplit("/", 1)[-1], md5=md5)
            safe_extract(arch, root / sub)
            arch.unlink()
    if name == "caltech101":  # the zip holds caltech-101/101_ObjectCategories.tar.gz (torchvision's handling)
        inner = root / "caltech101" / "caltech-101"
        for gz in inner.glob("*.tar.gz"):
            safe_extract(gz, root / "caltech101")
        shutil.rmtree(inner, ignore_errors=True)
    folder = root / paper_data.LAYOUT[name][0]
    record_files([folder], f"{name}: {', '.join(u for u, _, _ in DATASET_ARCHIVES[name])}")
    return folder


def fetch_robustbench(model: str, dataset: str, threat_model: str) -> list[Path]:
    """Download a RobustBench checkpoint (Google Drive or RobustBench's GitHub release) in its layout."""
    import timm

    from .models.paper import (_rb_enums, _timm_name, check_checkpoint_file, robustbench_checkpoint_paths,
                               robustbench_zoo)

    paths = robustbench_checkpoint_paths(model, dataset, threat_model)
    tname = _timm_name(model, dataset, threat_model)
    if timm.is_model(tname):
        urls = [timm.create_model(tname, pretrained=False).default_cfg["url"]]
    else:
        ds, tm = _rb_enums(dataset, threat_model)
        gid = robustbench_zoo().model_dicts[ds][tm][model]["gdrive_id"]
        urls = [GDRIVE_URL.format(id=g) for g in (gid if isinstance(gid, list) else [gid])]
    for url, path in zip(urls, paths):
        if path.is_file():
            continue
        download(url, path)
        try:
            check_checkpoint_file(path)
        except ValueError:
            path.unlink()
            raise
        record_files([path], url)
    return paths


def fetch_hf(repo: str, folder: Path, extra: dict[str, list[str]] | None = None) -> Path:
    """Download a hub repository's config, tokenizer and weights (safetensors when published) into ``folder``."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    repo = repo.removeprefix("hf-hub:").strip("/")
    files = HfApi().list_repo_files(repo)
    has_st = any(f.endswith(".safetensors") for f in files)
    patterns = ["*.json", "*.txt", "*.safetensors"] + ([] if has_st else ["*.bin"])
    snapshot_download(repo, local_dir=str(folder), allow_patterns=patterns)
    for other, names in (extra or {}).items():
        for n in names:
            if not (folder / n).exists():
                hf_hub_download(other, n, local_dir=str(folder))
    record_files([folder], f"https://huggingface.co/{repo}")
    return folder


def fetch_asset(asset: Asset) -> None:
    """Fetch one asset (raises for those that cannot be downloaded, e.g. ImageNet)."""
    if asset.kind == "dataset" and "dataset" in asset.params:
        fetch_dataset(asset.params["dataset"])
    elif asset.kind == "robustbench":
        fetch_robustbench(asset.params["model"], asset.params["dataset"], asset.params["threat_model"])
    elif asset.kind == "hf":
        fetch_hf(asset.params["repo"], asset.path)
    elif asset.kind == "open_clip":
        from .models.openclip_factory import read_open_clip_config

        fetch_hf(asset.params["repo"], asset.path)
        tok = read_open_clip_config(asset.path)["model_cfg"]["text_cfg"].get("hf_tokenizer_name")
        if tok:
            fetch_hf_tokenizer(tok, asset.path)
    elif asset.kind == "torchvision":
        url = asset.params["url"]
        # torchvision's file names end in the first hex digits of the file's SHA-256
        prefix = url.rsplit("-", 1)[-1].split(".")[0]
        download(url, asset.path, sha256_prefix=prefix)
        record_files([asset.path], url)
    else:
        raise RuntimeError(f"cannot fetch {asset}; {asset.how}")


def fetch_hf_tokenizer(repo: str, folder: Path) -> None:
    """Put a text tower's Hugging Face tokenizer files next to an open_clip checkpoint (read offline there)."""
    from huggingface_hub import hf_hub_download

    for n in OPEN_CLIP_TOKENIZERS.get(repo, ["tokenizer.json", "tokenizer_config.json"]):
        if not (folder / n).exists():
            hf_hub_download(repo, n, local_dir=str(folder))
    record_files([folder], f"https://huggingface.co/{repo} (tokenizer)")


def fetch_profile(profile_name: str, only: Callable[[Asset], bool] | None = None) -> list[Asset]:
    """Fetch every missing asset of a profile; returns what is still missing afterwards (e.g. ImageNet)."""
    for asset in missing_assets(profile_name):
        if only is not None and not only(asset):
            continue
        if asset.kind == "package" or (asset.kind == "dataset" and "dataset" not in asset.params):
            print(f"[manual] {asset}\n         {asset.how}", file=sys.stderr)
            continue
        print(f"[fetch] {asset}", file=sys.stderr)
        fetch_asset(asset)
    return missing_assets(profile_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mslib.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--check", action="store_true", help="list what is missing and exit (no download)")
    args = parser.parse_args(argv)
    if args.check:
        missing = missing_assets(args.profile)
        for a in missing:
            print(f"missing: {a}")
        print(f"{len(missing)} missing asset(s) for profile {args.profile!r}")
        return 1 if missing else 0
    still = fetch_profile(args.profile)
    for a in still:
        print(f"still missing: {a}\n  {a.how}", file=sys.stderr)
    return 1 if still else 0


if __name__ == "__main__":
    sys.exit(main())
