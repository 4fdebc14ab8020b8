"""Datasets: a registry of loaders, the offline Fashion-MNIST loader, and seeded stratified subsets.

Every loader has the signature ``loader(split, options) -> (images, labels, class_names)`` with images a
float32 tensor N×C×H×W in [0, 1], labels an int64 vector and class names usable in prompts
("a photo of a {}."). ``DATASETS`` maps a dataset name to its :class:`~mslib.datasets.DatasetSpec` (declared
beside its loader: Fashion-MNIST here, the paper's datasets in :mod:`mslib.paper_data`), so a new dataset is
one spec plus one entry here.

Fashion-MNIST is read from the idx files (gzipped or plain), searched in this order: ``$MSLIB_DATA``,
``data/fashion_mnist`` (:func:`mslib.cache.data_root`), the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``); if none has them, torchvision downloads them into ``data/`` when the
network allows, else a ``FileNotFoundError`` says where it looked and how to provide them.
"""
from __future__ import annotations

import gzip
import os
import random
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import paper_data
from .cache import data_root
from .datasets import DatasetSpec, lookup

SPLITS = ("train", "test")

# data_options keys that choose the evaluation subset (read by load_eval_set, never passed to a loader).
SAMPLERS = ("stratified", "original")
SAMPLER_KEYS = frozenset({"sampler", "sample_seed", "sample_start"})
# The original code's draw (ingredients/dataset.py): random.seed(1233), then random.sample over
# range(start, len(test split)), start being the spec's sample_start (1 for Food-101 and Pets); a spec with
# sample_first_n (Caltech-101) takes the first n images of its seeded split's test list instead.
ORIGINAL_SAMPLE_SEED = 1233

# Prompt-friendly names (lower case, usable in "a photo of a {}.") for the official class order.
FASHION_MNIST_OFFICIAL_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_CLASSES = (
    "t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)

FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------------------------- registry
def dataset_spec(dataset: str) -> DatasetSpec:
    """The registered :class:`~mslib.datasets.DatasetSpec` of ``dataset`` (``ValueError`` listing the
    registered names otherwise)."""
    return lookup(DATASETS, dataset)


def get_loader(dataset: str) -> Callable[[str, dict[str, Any]], tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """The loader function registered for ``dataset``."""
    return dataset_spec(dataset).load


def load_labels(dataset: str, split: str = "test", options: dict[str, Any] | None = None
                ) -> tuple[torch.Tensor, list[str]]:
    """``(labels, class_names)`` of one split, read without decoding images where the dataset's spec has a
    label reader (else the split is loaded)."""
    spec = dataset_spec(dataset)
    options = {k: v for k, v in (options or {}).items() if k not in SAMPLER_KEYS}
    if spec.labels is None:
        _, labels, names = load_split(dataset, split, options)
        return labels, names
    return spec.labels(split, options)


def load_split(dataset: str, split: str, options: dict[str, Any] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(images, labels, class_names)`` of one split of a registered dataset.

    ``options`` (a dict, e.g. ``profile.data_options``) is passed to the loader unchanged.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    options = {k: v for k, v in options.items() if k not in SAMPLER_KEYS}  # subset choice, not loading
    images, labels, names = get_loader(dataset)(split, options)
    return images, labels, list(names)


# ---------------------------------------------------------------------------------------- Fashion-MNIST
def fashion_mnist_search_dirs() -> list[Path]:
    """Folders searched for the Fashion-MNIST idx files, in order."""
    dirs: list[Path] = []
    env = os.environ.get("MSLIB_DATA")
    if env:
        dirs.append(Path(env))
    dirs.append(data_root() / "fashion_mnist")
    dirs.append(DEBIAN_FASHION_MNIST_DIR)
    return dirs


def _find_file(folder: Path, stem: str) -> Path | None:
    # Accept the files directly in the folder or in torchvision's <folder>/FashionMNIST/raw layout.
    for sub in (folder, folder / "fashion_mnist", folder / "fashion-mnist", folder / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            p = sub / name
            if p.is_file():
                return p
    return None


def _find_split(split: str) -> tuple[Path, Path] | None:
    img_stem, lab_stem = FASHION_MNIST_FILES[split]
    for folder in fashion_mnist_search_dirs():
        img, lab = _find_file(folder, img_stem), _find_file(folder, lab_stem)
        if img is not None and lab is not None:
            return img, lab
        if (img is None) != (lab is None):  # half a pair: do not fall through silently to another copy
            have = img or lab
            raise FileNotFoundError(f"Fashion-MNIST {split!r}: found {have} but not its partner "
                                    f"{lab_stem if lab is None else img_stem}(.gz) beside it in {have.parent}")
    return None


def _download_fashion_mnist(root: Path) -> None:
    """Download the idx files into ``root`` with torchvision (raises when the network does not allow)."""
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), train=True, download=True)
    FashionMNIST(str(root), train=False, download=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (``.gz`` or plain) of unsigned bytes into a numpy array.

    A damaged file (not gzip, truncated, bad header, wrong length) raises ``ValueError`` naming it.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut gzip stream is EOFError
        raise ValueError(f"{path} cannot be read as a{' gzip-compressed' if opener is gzip.open else 'n'} idx file "
                         f"({type(e).__name__}: {e}); the file is damaged or truncated, replace it") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (bad magic number)")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if ndim == 0 or len(data) < offset:
        raise ValueError(f"{path}: idx header declares {ndim} dimensions but the file is {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values for shape {shape}, found {arr.size} "
                         "(truncated or damaged file)")
    return arr.reshape(shape)


def _check_fashion_mnist(images: np.ndarray, labels: np.ndarray, img_path: Path, lab_path: Path) -> None:
    """Raise ``ValueError`` naming the file unless the arrays are 28×28 images and labels in 0..9 that pair up."""
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.shape[0] == 0:
        raise ValueError(f"{img_path}: expected Fashion-MNIST images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{lab_path}: expected a vector of labels, got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"inconsistent Fashion-MNIST files: {img_path} holds {images.shape[0]} images but "
                         f"{lab_path} {labels.shape[0]} labels")
    k = len(FASHION_MNIST_CLASSES)
    if labels.size and labels.max() >= k:
        raise ValueError(f"{lab_path}: Fashion-MNIST labels must lie in 0..{k - 1}, found {int(labels.max())}")


def load_fashion_mnist(split: str = "test", options: dict[str, Any] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Fashion-MNIST ``split`` as float images (N, 1, 28, 28) in [0, 1], int64 labels, prompt class names.

    ``options``: ``download`` (default True) allows the torchvision download as a last resort.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    options = dict(options or {})
    unknown = set(options) - {"download"}
    if unknown:
        raise ValueError(f"unknown Fashion-MNIST options {sorted(unknown)}; known: ['download']")
    found = _find_split(split)
    if found is None:
        searched = fashion_mnist_search_dirs()
        error: Exception | None = None
        if options.get("download", True):
            target = data_root() / "fashion_mnist"
            try:
                _download_fashion_mnist(target)
            except Exception as e:  # no network, proxy, ...
                error = e
            found = _find_split(split)
        if found is None:
            where = "\n".join(f"  - {d}" for d in searched)
            why = f"\nThe download through torchvision failed: {error}" if error is not None else ""
            raise FileNotFoundError(
                f"Fashion-MNIST {split!r} idx files ({', '.join(FASHION_MNIST_FILES[split])}, .gz or plain) "
                f"were not found in:\n{where}{why}\n"
                "Provide them by one of: `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
                "setting MSLIB_DATA to a folder holding the idx files, or copying them into "
                f"{data_root() / 'fashion_mnist'}."
            )
    img_path, lab_path = found
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    _check_fashion_mnist(images, labels, img_path, lab_path)
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y, list(FASHION_MNIST_CLASSES)


# ---------------------------------------------------------------------------------------------- subsets
def stratified_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` sorted indices into ``labels``, drawn without replacement, balanced across classes.

    Each class gets ``n // K`` samples, and the remaining ``n % K`` go to classes picked at random (a class
    with too few samples gives its share to the others). The draw uses a ``torch.Generator`` seeded with
    ``seed``, so it is reproducible and independent of the global RNG.
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("labels must be a 1-D integer tensor")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if n > labels.numel():
        raise ValueError(f"n={n} exceeds the number of available samples ({labels.numel()})")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)
    pools = [torch.nonzero(labels == c).flatten() for c in classes.tolist()]
    pools = [p[torch.randperm(p.numel(), generator=g)] for p in pools]
    sizes = [p.numel() for p in pools]
    take = [0] * len(pools)
    remaining = n
    # Fill level by level: every class with samples left gets an equal share; ties at the top broken at random.
    while remaining > 0:
        open_ = [i for i in range(len(pools)) if take[i] < sizes[i]]
        share = max(remaining // len(open_), 1)
        if remaining >= len(open_):
            for i in open_:
                add = min(share, sizes[i] - take[i])
                take[i] += add
                remaining -= add
        else:
            order = torch.randperm(len(open_), generator=g).tolist()
            for j in order[:remaining]:
                take[open_[j]] += 1
            remaining = 0
    idx = torch.cat([p[:t] for p, t in zip(pools, take)])
    return torch.sort(idx).values.long()


def original_indices(n_total: int, n: int, seed: int = ORIGINAL_SAMPLE_SEED, start: int = 0) -> torch.Tensor:
    """The original Multi-Shield code's evaluation subset: ``random.seed(seed)`` then
    ``random.sample(range(start, n_total), n)``, in the order drawn (not sorted).

    Drawn from a private ``random.Random(seed)``, whose sequence is that of the global generator after
    ``random.seed(seed)``, so the global RNG is left alone.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"sample_start must be a non-negative int, got {start!r}")
    if n > n_total - start:
        raise ValueError(f"n={n} exceeds the {n_total - start} samples in range({start}, {n_total})")
    return torch.tensor(random.Random(seed).sample(range(start, n_total), n), dtype=torch.long)


def eval_indices(dataset: str, labels: torch.Tensor, n: int, seed: int, options: dict[str, Any]) -> torch.Tensor:
    """Indices into the test split chosen by ``options['sampler']``.

    ``stratified`` (default): :func:`stratified_indices` with the profile's ``seed``. ``original``: the
    original code's draw, :func:`original_indices` with ``sample_seed`` (default 1233) and ``sample_start``
    (default: the dataset spec's ``sample_start``); a spec with ``sample_first_n`` takes the first n of the
    split's test list.
    """
    sampler = options.get("sampler", "stratified")
    if sampler not in SAMPLERS:
        raise ValueError(f"data_options['sampler'] must be one of {SAMPLERS}, got {sampler!r}")
    if sampler == "stratified":
        return stratified_indices(labels, n, seed)
    spec = dataset_spec(dataset)
    if spec.sample_first_n:
        if n > labels.numel():
            raise ValueError(f"n={n} exceeds the number of available samples ({labels.numel()})")
        return torch.arange(n)
    return original_indices(labels.numel(), n, int(options.get("sample_seed", ORIGINAL_SAMPLE_SEED)),
                            int(options.get("sample_start", spec.sample_start)))


def load_eval_set(profile: Any, with_indices: bool = False):
    """The profile's evaluation subset of its dataset's test split.

    Returns ``(images, labels, class_names)``, or ``(images, labels, class_names, indices)`` with
    ``with_indices=True`` (the indices into the test split). ``profile.n_samples`` samples are drawn by
    :func:`eval_indices` (``data_options['sampler']``: stratified with ``profile.seed`` by default, or the
    original code's draw); the other ``profile.data_options`` go to the loader.
    """
    from .profiles import get_profile

    profile = get_profile(profile)
    options = {k: v for k, v in profile.data_options.items() if k not in SAMPLER_KEYS}
    if dataset_spec(profile.dataset).labels is not None:  # draw the subset from the labels, then decode only it
        labels, names = load_labels(profile.dataset, "test", dict(options))
        idx = eval_indices(profile.dataset, labels, int(profile.n_samples), int(profile.seed), profile.data_options)
        images, sub_labels, names = load_split(profile.dataset, "test", {**options, "indices": idx.tolist()})
        if not torch.equal(sub_labels, labels[idx]):
            raise RuntimeError(f"{profile.dataset}: labels of the decoded subset differ from the label file")
        out = (images.contiguous(), sub_labels.contiguous(), names)
    else:
        images, labels, names = load_split(profile.dataset, "test", options)
        idx = eval_indices(profile.dataset, labels, int(profile.n_samples), int(profile.seed), profile.data_options)
        out = (images[idx].contiguous(), labels[idx].contiguous(), names)
    return (*out, idx) if with_indices else out


def load_train_set(profile: Any) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The full training split of the profile's dataset (for training the local models)."""
    from .profiles import get_profile

    profile = get_profile(profile)
    return load_split(profile.dataset, "train", profile.data_options)


FASHION_MNIST = DatasetSpec("fashion_mnist", "Fashion-MNIST", load_fashion_mnist)
# Every dataset the package can run on; each consumer (loading, fetch, stand-ins, labels) loops over these.
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (FASHION_MNIST, *paper_data.SPECS.values())}


__all__ = [
    "DATASETS",
    "FASHION_MNIST",
    "dataset_spec",
    "load_labels",
    "FASHION_MNIST_CLASSES",
    "SAMPLERS",
    "eval_indices",
    "fashion_mnist_search_dirs",
    "get_loader",
    "load_eval_set",
    "load_fashion_mnist",
    "load_split",
    "load_train_set",
    "original_indices",
    "read_idx",
    "stratified_indices",
]
