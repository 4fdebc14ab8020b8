"""mslib.data: the Fashion-MNIST search order and its error, the idx reader, the stratified sampler."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import mslib
from mslib import data


def _write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _fake_fashion(folder: Path, n: int, fill: int, gz: bool = True) -> None:
    """Write fake test/train idx files of ``n`` images whose pixels all equal ``fill``."""
    for split in ("train", "test"):
        img, lab = data.FASHION_MNIST_FILES[split]
        _write_idx(folder / img, np.full((n, 28, 28), fill, dtype=np.uint8), gz=gz)
        _write_idx(folder / lab, np.arange(n) % 10, gz=gz)


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """No $MSLIB_DATA, an empty cache, no Debian folder and a download that fails (no network)."""
    monkeypatch.delenv("MSLIB_DATA", raising=False)
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")

    def offline(root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_download_fashion_mnist", offline)
    return tmp_path


def test_search_order(monkeypatch, tmp_path):
    monkeypatch.setenv("MSLIB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path / "cache"))
    assert data.fashion_mnist_search_dirs() == [
        tmp_path / "env", tmp_path / "cache" / "fashion_mnist", Path("/usr/share/datasets/fashion-mnist")]
    monkeypatch.delenv("MSLIB_DATA")
    assert data.fashion_mnist_search_dirs()[0] == tmp_path / "cache" / "fashion_mnist"


def test_env_var_first_then_data_dir_then_debian(no_system_data, monkeypatch):
    tmp = no_system_data
    _fake_fashion(tmp / "no-debian", 30, 0)  # stands in for the Debian package's folder
    _fake_fashion(tmp / "cache" / "fashion_mnist", 20, 255, gz=False)  # data/, plain idx files
    _fake_fashion(tmp / "env", 10, 51)
    monkeypatch.setenv("MSLIB_DATA", str(tmp / "env"))
    x, y, names = data.load_split("fashion_mnist", "test")
    assert x.shape == (10, 1, 28, 28) and torch.allclose(x, torch.full_like(x, 0.2))
    assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(10)]
    assert len(names) == 10
    monkeypatch.delenv("MSLIB_DATA")
    x, _, _ = data.load_split("fashion_mnist", "train")
    assert x.shape[0] == 20 and x.max() == 1.0
    for f in (tmp / "cache" / "fashion_mnist").iterdir():
        f.unlink()
    x, _, _ = data.load_split("fashion_mnist", "test")
    assert x.shape[0] == 30 and x.max() == 0.0


def test_clear_error_without_data_or_network(no_system_data):
    with pytest.raises(FileNotFoundError) as err:
        data.load_fashion_mnist("test")
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "MSLIB_DATA" in msg
    assert "network is unreachable" in msg
    for d in data.fashion_mnist_search_dirs():
        assert str(d) in msg


def test_no_download_option(no_system_data, monkeypatch):
    def must_not_download(root):
        raise AssertionError("download attempted")

    monkeypatch.setattr(data, "_download_fashion_mnist", must_not_download)
    with pytest.raises(FileNotFoundError):
        data.load_fashion_mnist("test", {"download": False})


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_split("mnist-typo", "test")
    with pytest.raises(ValueError, match="split"):
        data.load_split("fashion_mnist", "validation")
    with pytest.raises(ValueError, match="options"):
        data.load_fashion_mnist("test", {"colour": True})
    with pytest.raises(TypeError, match="options"):
        data.load_split("fashion_mnist", "test", options=["download"])


def test_read_idx_rejects_garbage(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(b"<html>not an idx file</html>")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(p)


@pytest.fixture(scope="module")
def fashion_test():
    try:
        return data.load_split("fashion_mnist", "test", {"download": False})
    except FileNotFoundError as e:  # pragma: no cover - machines without the Debian package
        pytest.skip(str(e))


def test_real_fashion_mnist(fashion_test):
    x, y, names = fashion_test
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert y.dtype == torch.int64 and torch.bincount(y).tolist() == [1000] * 10
    assert names[0] == "t-shirt" and names[9] == "ankle boot" and names[1] == "pair of trousers"
    assert all(n == n.lower() and "/" not in n for n in names)


def test_stratified_sampler(fashion_test):
    _, y, _ = fashion_test
    a = data.stratified_indices(y, 50, seed=3)
    assert a.dtype == torch.int64 and torch.equal(a, torch.sort(a).values)
    assert len(torch.unique(a)) == 50
    assert torch.bincount(y[a], minlength=10).tolist() == [5] * 10
    assert torch.equal(a, data.stratified_indices(y, 50, seed=3))
    assert not torch.equal(a, data.stratified_indices(y, 50, seed=4))
    # global RNG state neither used nor disturbed
    torch.manual_seed(0)
    state = torch.get_rng_state()
    data.stratified_indices(y, 50, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    b = data.stratified_indices(y, 47, seed=0)
    counts = torch.bincount(y[b], minlength=10)
    assert counts.sum() == 47 and counts.max() - counts.min() <= 1


def test_stratified_sampler_uneven_classes():
    y = torch.tensor([0] * 2 + [1] * 50 + [2] * 50)
    idx = data.stratified_indices(y, 30, seed=0)
    assert torch.bincount(y[idx]).tolist() == [2, 14, 14]
    assert data.stratified_indices(y, 102, seed=1).tolist() == list(range(102))


def test_stratified_sampler_errors():
    y = torch.arange(10) % 2
    for n in (0, -1, 11, 2.5, True):
        with pytest.raises(ValueError):
            data.stratified_indices(y, n, seed=0)
    with pytest.raises(ValueError):
        data.stratified_indices(y.float(), 2, seed=0)
    with pytest.raises(ValueError):
        data.stratified_indices(y, 2, seed="0")


def test_load_eval_set(fashion_test):
    x_all, y_all, _ = fashion_test
    p = mslib.get_profile("smoke")
    x, y, names, idx = mslib.load_eval_set(p, with_indices=True)
    assert x.shape == (p.n_samples, 1, 28, 28) and y.shape == (p.n_samples,)
    assert torch.bincount(y, minlength=10).tolist() == [p.n_samples // 10] * 10
    assert torch.equal(x, x_all[idx]) and torch.equal(y, y_all[idx])
    assert names == list(data.FASHION_MNIST_CLASSES)
    x2, y2, _ = data.load_eval_set(p)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    _, _, _, idx_other = data.load_eval_set(p.replace(seed=1), with_indices=True)
    assert not torch.equal(idx, idx_other)
