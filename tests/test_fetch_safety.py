"""Files from outside: crafted archives are refused without writing anything outside the target, and a fetch
killed half-way leaves its asset missing until the next fetch repairs it. No network: archives are built
here and ``download`` is replaced by a local copy."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from mslib import fetch, integrity
from mslib.data import DATASETS
from mslib.datasets import Archive

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ crafted archives
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(info)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


@pytest.fixture()
def box(tmp_path):
    """(target folder, a sibling 'outside' folder that must stay empty)."""
    (tmp_path / "outside").mkdir()
    return tmp_path / "target", tmp_path / "outside"


def _nothing_outside(outside: Path) -> None:
    assert list(outside.iterdir()) == []


def test_plain_archive_extracts_files_and_folders(tmp_path, box):
    target, _ = box
    arch = _tar(tmp_path / "ok.tar.gz", [(_info("d", tarfile.DIRTYPE), None), (_info("d/a.txt"), b"A"),
                                         (_info("./d/sub/b.bin"), b"\x00\x01"), (_info("d/a.txt"), b"A2")])
    fetch.safe_extract(arch, target)
    assert (target / "d" / "a.txt").read_bytes() == b"A2"  # a later member of the same name wins, as in tar
    assert (target / "d" / "sub" / "b.bin").read_bytes() == b"\x00\x01"


@pytest.mark.parametrize("member, what", [
    ((lambda out: _info("evil", tarfile.SYMTYPE, str(out))), "symbolic link"),
    ((lambda out: _info("evil", tarfile.LNKTYPE, str(out / "x"))), "hard link"),
    ((lambda out: _info("evil", tarfile.CHRTYPE)), "device"),
    ((lambda out: _info("evil", tarfile.FIFOTYPE)), "fifo"),
])
def test_links_and_special_members_are_refused(tmp_path, box, member, what):
    target, outside = box
    arch = _tar(tmp_path / "bad.tar.gz", [(member(outside), None), (_info("evil/pwned"), b"x")])
    with pytest.raises(ValueError, match=f"member 'evil' is a {what}"):
        fetch.safe_extract(arch, target)
    _nothing_outside(outside)
    assert not (target / "evil").exists()


@pytest.mark.parametrize("name", ["../outside/pwned", "d/../../outside/pwned", "/tmp/mslib-abs-pwned"])
def test_absolute_and_dotdot_paths_are_refused(tmp_path, box, name):
    target, outside = box
    arch = _tar(tmp_path / "bad.tar.gz", [(_info(name), b"x")])
    with pytest.raises(ValueError, match="absolute or '..' path"):
        fetch.safe_extract(arch, target)
    _nothing_outside(outside)
    assert not Path("/tmp/mslib-abs-pwned").exists()


def test_cve_2025_4517_symlink_chain_writes_nothing_outside(tmp_path, box):
    """The published chain: deep folders with long names, each shadowed by a one-letter symlink, so that
    os.path.realpath gives up past PATH_MAX and the 'data' filter approves a link that climbs out."""
    target, outside = box
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    path = ""
    for step in steps:
        members.append((_info(os.path.join(path, comp), tarfile.DIRTYPE), None))
        members.append((_info(os.path.join(path, step), tarfile.SYMTYPE, comp), None))
        path = os.path.join(path, comp)
    linkpath = os.path.join("/".join(steps), "l" * 254)
    members.append((_info(linkpath, tarfile.SYMTYPE, "../" * len(steps)), None))
    # linkpath resolves to the extraction folder itself, so escape -> <folder>/../outside
    members.append((_info("escape", tarfile.SYMTYPE, linkpath + "/../" + outside.name), None))
    members.append((_info("escape/pwned"), b"written outside"))
    arch = _tar(tmp_path / "chain.tar.gz", members)
    with pytest.raises(ValueError, match="is a symbolic link"):
        fetch.safe_extract(arch, target)
    _nothing_outside(outside)
    if (3, 11, 4) <= sys.version_info[:3] < (3, 11, 13):  # a real exploit here: the stdlib filter lets it out
        other = tmp_path / "stdlib"
        other.mkdir()
        with tarfile.open(arch) as t:
            t.extractall(other, filter="data")
        assert list(outside.iterdir()) == [outside / "pwned"]


def test_existing_link_in_target_is_not_followed(tmp_path, box):
    target, outside = box
    target.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)
    arch = _tar(tmp_path / "ok.tar.gz", [(_info("sub/pwned"), b"x")])
    with pytest.raises(ValueError, match="not a plain folder"):
        fetch.safe_extract(arch, target)
    _nothing_outside(outside)


def test_zip_links_and_dotdot_are_refused(tmp_path, box):
    target, outside = box
    link = zipfile.ZipInfo("evil")
    link.external_attr = (0o120777 << 16)  # S_IFLNK: how zip stores a symlink
    for name, setup, match in [("link.zip", lambda z: z.writestr(link, str(outside)), "link or special file"),
                               ("dotdot.zip", lambda z: z.writestr("../outside/pwned", "x"), "'..' path")]:
        arch = tmp_path / name
        with zipfile.ZipFile(arch, "w") as z:
            setup(z)
        with pytest.raises(ValueError, match=match):
            fetch.safe_extract(arch, target)
        _nothing_outside(outside)
    not_an_archive = tmp_path / "page.tar.gz"
    not_an_archive.write_text("<html>quota exceeded</html>")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        fetch.safe_extract(not_an_archive, target)


# ----------------------------------------------------------------------------- interrupted fetches
def _cifar_archive(path: Path, n_files: int = 6) -> tuple[Path, str]:
    """A stand-in cifar-10-python.tar.gz: the real top folder and file names, tiny content."""
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [(_info("cifar-10-batches-py", tarfile.DIRTYPE), None)]
    for i in range(1, n_files):
        members.append((_info(f"cifar-10-batches-py/data_batch_{i}"), pickle.dumps({"i": i})))
    members.append((_info("cifar-10-batches-py/test_batch"), pickle.dumps({"test": True})))
    _tar(path, members)
    return path, hashlib.md5(path.read_bytes()).hexdigest()


PATCH = """
import shutil, sys
from pathlib import Path
import dataclasses
from mslib import data, fetch
from mslib.datasets import Archive
SOURCE, MD5 = sys.argv[1], sys.argv[2]
data.DATASETS["cifar10"] = dataclasses.replace(
    data.DATASETS["cifar10"], archives=(Archive("https://example.invalid/cifar-10-python.tar.gz", MD5),))

def local_download(url, dest, md5=None, sha256_prefix=None, progress=True):
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE, dest)
    return dest

fetch.download = local_download
"""


def _run_child(roots: Path, source: Path, md5: str, body: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MSLIB_CACHE": str(roots), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("MSLIB_PAPER_DATA", None)
    code = PATCH + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, str(source), md5], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture()
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path / "data"))
    monkeypatch.delenv("MSLIB_PAPER_DATA", raising=False)
    return tmp_path / "data"


def _cifar_asset() -> integrity.Asset:
    from mslib import paper_data

    return integrity.Asset("dataset", "cifar10", paper_data.dataset_path("cifar10"), "fetch",
                       {"dataset": "cifar10", "check": fetch._dataset_complete("cifar10")})


def _cifar_missing() -> bool:
    return any(a.kind == "dataset" and a.params.get("dataset") == "cifar10" for a in fetch.missing_assets("paper"))


@pytest.mark.parametrize("kill_in", ["_write_member", "mark_complete"])
def test_fetch_killed_mid_way_is_missing_and_the_next_fetch_repairs_it(tmp_path, roots, monkeypatch, kill_in):
    """kill -9 during extraction (or after the rename, before the completion mark): the dataset is reported
    missing, and fetching again gives the complete dataset."""
    source, md5 = _cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    proc = _run_child(roots, source, md5, f"""
        import os, signal
        real = fetch.{kill_in}
        calls = []
        def dying(*a, **k):
            calls.append(1)
            if len(calls) == 3 or "{kill_in}" == "mark_complete":
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup handler runs, as with kill -9
            return real(*a, **k)
        fetch.{kill_in} = dying
        fetch.fetch_dataset("cifar10")
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    folder = roots / "datasets" / "cifar-10-batches-py"
    if kill_in == "mark_complete":  # everything was extracted and renamed, but never marked complete
        assert (folder / "test_batch").is_file()
    assert not _cifar_asset().present()
    assert _cifar_missing()
    # the next fetch (here through fetch_profile, as `make fetch` runs it) repairs it and cleans up
    proc = _run_child(roots, source, md5, """
        left = fetch.fetch_profile("paper", only=lambda a: a.kind == "dataset" and a.params.get("dataset") == "cifar10")
        assert not any(a.kind == "dataset" and a.params.get("dataset") == "cifar10" for a in left)
    """)
    assert proc.returncode == 0, proc.stderr
    assert _cifar_asset().present() and not _cifar_missing()
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    assert pickle.loads((folder / "test_batch").read_bytes()) == {"test": True}
    assert not list((roots / "datasets").glob(".*"))  # no temporary folder left behind


def test_interrupted_extraction_in_process_leaves_nothing_half_present(tmp_path, roots, monkeypatch):
    source, md5 = _cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(
        DATASETS["cifar10"], archives=(Archive("https://example.invalid/c.tar.gz", md5),)))
    monkeypatch.setattr(fetch, "download", lambda url, dest, **kw: (dest.parent.mkdir(parents=True, exist_ok=True),
                                                                    shutil.copyfile(source, dest), dest)[-1])
    real, calls = fetch._write_member, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fetch, "_write_member", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch_dataset("cifar10")
    assert not (roots / "datasets" / "cifar-10-batches-py").exists() and not _cifar_asset().present()
    assert not list((roots / "datasets").glob(".*"))
    monkeypatch.setattr(fetch, "_write_member", real)
    fetch.fetch_dataset("cifar10")
    assert _cifar_asset().present()
    # damage after the fact (a file cut short) makes it missing again
    (roots / "datasets" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    assert not _cifar_asset().present()


# ---------------------------------------------------------------------------- recorded hashes, marks
def test_mark_complete_needs_recorded_files(roots):
    f = roots / "models" / "x.pt"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"PK\x03\x04 weights")
    with pytest.raises(ValueError, match="not recorded"):
        integrity.mark_complete(f)
    assert not integrity.is_complete(f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        integrity.mark_complete(roots / "nope.pt", "x")
    integrity.record_files([f], "test")
    integrity.mark_complete(f)
    assert integrity.is_complete(f)
    assert integrity.verify_file(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    f.write_bytes(b"PK\x03\x04 tampered")  # same size, other bytes: only the hash check sees it
    with pytest.raises(ValueError) as err:
        integrity.verify_file(f, "RobustBench checkpoint")
    msg = str(err.value)
    assert str(f) in msg and hashlib.sha256(f.read_bytes()).hexdigest() in msg and "expected" in msg


def test_robustbench_checkpoint_is_verified_on_every_load(roots):
    pytest.importorskip("robustbench")
    from mslib.models.paper import load_robustbench_model, robustbench_checkpoint_paths

    path = robustbench_checkpoint_paths("Standard", "cifar10", "Linf")[0]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 not really weights")
    with pytest.raises(ValueError, match=r"no recorded SHA-256.*--record"):
        load_robustbench_model("Standard", "cifar10", "Linf")
    integrity.mark_complete(path, "test")
    path.write_bytes(b"PK\x03\x04 swapped weights!!")
    with pytest.raises(ValueError, match=r"RobustBench checkpoint of Standard .*Standard\.pt is not the recorded file"):
        load_robustbench_model("Standard", "cifar10", "Linf")


# ------------------------------------------------------------------------------------------ the CLI
def test_fetch_cli_bad_input_is_one_line_and_exit_2(roots, capsys):
    assert fetch.main(["--profile", "no-such-profile", "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m mslib.fetch: error:") and "no-such-profile" in err[0]
    assert fetch.main(["--record", str(roots / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pt" in err[0]
    with pytest.raises(SystemExit) as e:
        fetch.main(["--no-such-flag"])
    assert e.value.code == 2
    f = roots / "mine.bin"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"provided by hand")
    assert fetch.main(["--record", str(f)]) == 0 and integrity.is_complete(f)


def test_launch_cli_bad_input_is_one_line_and_exit_2(capsys):
    from mslib import launch

    assert launch.main(["--profile", "no-such-profile", "--shards", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m mslib.launch: error:") and "no-such-profile" in err[0]
    assert launch.main(["--profile", "tiny", "--shards", "0"]) == 2
    assert "n_shards" in capsys.readouterr().err
    assert launch.main(["--profile", "tiny", "--shards", "1", "--param", "oops"]) == 2
    assert "--param" in capsys.readouterr().err


def test_a_damaged_manifest_is_named_and_its_assets_recorded_again(roots, capfd):
    """Catches: a garbled ``manifest.json`` crashing every fetch and verify with a bare JSONDecodeError, or
    its assets still counted complete, instead of being named and the assets fetched (recorded) again."""
    f = roots / "models" / "x.pt"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"PK\x03\x04 weights")
    integrity.mark_complete(f, "test")
    assert integrity.is_complete(f)
    manifest = roots / "manifest.json"
    manifest.write_text(manifest.read_text()[:30])
    capfd.readouterr()
    assert not integrity.is_complete(f)
    err = capfd.readouterr().err
    assert f"damaged cache file {manifest}: unreadable JSON" in err and "fetch again" in err
    with pytest.raises(ValueError, match="no recorded SHA-256"):
        integrity.verify_file(f)
    integrity.mark_complete(f, "test")  # fetched (here: recorded) again: the manifest is whole once more
    assert integrity.is_complete(f) and integrity.verify_file(f) == hashlib.sha256(f.read_bytes()).hexdigest()
