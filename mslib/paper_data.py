"""The paper's datasets, read offline from their standard on-disk layouts.

Every loader has the registry signature ``loader(split, options) -> (images, labels, class_names)``
(:mod:`mslib.data`): images float32 N×3×H×W in [0, 1], labels int64, class names usable in prompts.

Where the files live (``options["root"]`` overrides all of these):

========== ======================================================================== ====================
dataset    layout (torchvision's, under the root)                                   root
========== ======================================================================== ====================
cifar10    ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` (pickle) ``$MSLIB_PAPER_DATA``
stl10      ``stl10_binary/{train,test}_{X,y}.bin``, ``class_names.txt``               or ``data/datasets``
caltech101 ``caltech101/101_ObjectCategories/<category>/image_*.jpg``                 (same)
food101    ``food-101/{images/<class>/<id>.jpg, meta/{train,test}.json, classes.txt}`` (same)
oxford_pets ``oxford-iiit-pet/{images/<id>.jpg, annotations/{trainval,test}.txt}``     (same)
imagenet   an ImageFolder tree ``<wnid>/*.JPEG`` of the validation split               ``$MSLIB_IMAGENET`` or
                                                                                     ``data/imagenet/val``
========== ======================================================================== ====================

Images of varying size are decoded with PIL, converted to RGB and resized at load to the dataset's stored
resolution ``options["image_size"]`` with ``options["resize_mode"]``: ``squash`` (straight to a square, as
the original Multi-Shield code does) or ``shortest_crop`` (shorter side to ``image_size / crop_pct``, then a
center crop, as RobustBench's ImageNet preprocessing does). Both are recorded in the profile's
``data_options`` and so in every result record.

Two options keep the big test splits cheap: ``indices`` (a list of positions in the split: only those
samples are decoded, in that order) and :func:`load_labels` (labels and class names without decoding any
image), so a caller can draw its subset first and decode only that.

CIFAR-10's python batches are pickles; they are read with a restricted unpickler that only accepts the
numpy array reconstruction the files use, so no code in a file can run.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .cache import data_root
from .datasets import Archive, DatasetSpec, lookup

SPLITS = ("train", "test")
RESIZE_MODES = ("squash", "shortest_crop")
ASSETS = Path(__file__).resolve().parent / "assets"

_COMMON_KEYS = {"root", "indices", "image_size", "resize_mode", "num_workers", "class_names"}
# Keys that choose the evaluation subset (mslib.data.load_eval_set); accepted here and ignored.
_SAMPLER_KEYS = {"sampler", "sample_seed", "sample_start"}
# class_names: "prompt" (default: prompt-friendly names) or "original" (the original code's strings:
# Caltech-101's raw folder names, Food-101's capitalized names; the other datasets' are the same either way).
CLASS_NAME_MODES = ("prompt", "original")
CALTECH_SPLIT_RULES = ("original", "sorted")

# ------------------------------------------------------------------------------------------------ roots
def paper_data_root() -> Path:
    """Root of the torchvision-layout datasets: ``$MSLIB_PAPER_DATA`` or ``data/datasets``."""
    env = os.environ.get("MSLIB_PAPER_DATA")
    return Path(env) if env else data_root() / "datasets"


def imagenet_root() -> Path:
    """The ImageNet validation ImageFolder: ``$MSLIB_IMAGENET`` or ``data/imagenet/val``."""
    env = os.environ.get("MSLIB_IMAGENET")
    return Path(env) if env else data_root() / "imagenet" / "val"


def dataset_path(name: str, options: dict[str, Any] | None = None) -> Path:
    """The file or folder whose presence means ``name`` is available (used by :mod:`mslib.fetch`)."""
    return lookup(SPECS, name).path(options)


def _root(spec: DatasetSpec, options: dict[str, Any]) -> Path:
    if not spec.path(options).exists() and spec.manual is None:
        raise FileNotFoundError(
            f"{spec.name} not found: expected {spec.path(options)} (torchvision's layout under "
            f"{spec.base(options)}). Fetch it on a machine with internet with `python -m mslib.fetch --profile "
            f"paper`, or set MSLIB_PAPER_DATA (or options['root']) to the folder that holds {spec.folder}/."
        )
    return spec.directory(options)


# ---------------------------------------------------------------------------------------------- options
def _options(spec: DatasetSpec, split: str, options: dict[str, Any] | None) -> dict[str, Any]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    options = {k: v for k, v in (options or {}).items() if k not in _SAMPLER_KEYS}
    unknown = set(options) - _COMMON_KEYS - spec.option_keys
    if unknown:
        raise ValueError(f"unknown {spec.name} options {sorted(unknown)}; known: "
                         f"{sorted(_COMMON_KEYS | spec.option_keys)}")
    merged = {**spec.defaults, **options}
    size = merged.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"options['image_size'] must be a positive int, got {size!r}")
    if merged.get("class_names", "prompt") not in CLASS_NAME_MODES:
        raise ValueError(f"options['class_names'] must be one of {CLASS_NAME_MODES}, got {merged['class_names']!r}")
    if merged.get("split_rule", "original") not in CALTECH_SPLIT_RULES:
        raise ValueError(f"options['split_rule'] must be one of {CALTECH_SPLIT_RULES}, got {merged['split_rule']!r}")
    if merged.get("resize_mode", "squash") not in RESIZE_MODES:
        raise ValueError(f"options['resize_mode'] must be one of {RESIZE_MODES}, got {merged['resize_mode']!r}")
    idx = merged.get("indices")
    if idx is not None:
        if isinstance(idx, torch.Tensor):
            idx = idx.tolist()
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in idx):
            raise ValueError("options['indices'] must be a list of ints")
        merged["indices"] = [int(i) for i in idx]
    return merged


def _select(n: int, options: dict[str, Any]) -> list[int]:
    idx = options.get("indices")
    if idx is None:
        return list(range(n))
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ValueError(f"options['indices'] has positions outside the split of {n} samples: {bad[:5]}")
    return idx


# ------------------------------------------------------------------------------------------------ images
def _resize_pil(img, size: int, mode: str, crop_pct: float = 0.875, interpolation: str = "bilinear"):
    from PIL import Image

    resample = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    if mode == "squash":
        return img.resize((size, size), resample) if img.size != (size, size) else img
    # shortest_crop: shorter side to size / crop_pct (RobustBench: 256 for 224), then a center crop.
    scale = int(size / crop_pct)
    w, h = img.size
    if w <= h:
        nw, nh = scale, max(scale, round(h * scale / w))
    else:
        nw, nh = max(scale, round(w * scale / h)), scale
    img = img.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _decode(path: Path, size: int, mode: str, crop_pct: float, interpolation: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        img = _resize_pil(im.convert("RGB"), size, mode, crop_pct, interpolation)
        return np.asarray(img, dtype=np.uint8).copy()


def load_image_files(paths: Sequence[Path], options: dict[str, Any], interpolation: str = "bilinear") -> torch.Tensor:
    """Decode image files to a float32 N×3×S×S tensor in [0, 1] (S = ``options['image_size']``)."""
    size, mode = int(options["image_size"]), options.get("resize_mode", "squash")
    crop_pct = float(options.get("crop_pct", 0.875))
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    workers = int(options.get("num_workers", min(16, os.cpu_count() or 1)))

    def work(i: int) -> None:
        out[i] = torch.from_numpy(_decode(Path(paths[i]), size, mode, crop_pct, interpolation)).permute(2, 0, 1)

    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(len(paths))))
    else:
        for i in range(len(paths)):
            work(i)
    return out.float().div_(255.0)


def _resize_tensor(x: torch.Tensor, options: dict[str, Any]) -> torch.Tensor:
    """uint8 N×3×H×W → float [0, 1] at the stored resolution (PIL-equivalent bilinear with antialias)."""
    size = int(options["image_size"])
    xf = x.float().div_(255.0)
    if tuple(xf.shape[-2:]) == (size, size):
        return xf
    if options.get("resize_mode", "squash") != "squash":
        raise ValueError("in-memory datasets (cifar10, stl10) support resize_mode 'squash' only")
    down = xf.shape[-1] > size
    return torch.nn.functional.interpolate(xf, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=down).clamp_(0, 1)


# --------------------------------------------------------------------------------------------- CIFAR-10
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (what CIFAR's python batches hold); anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
        ("__builtin__", "object"), ("builtins", "object"), ("_codecs", "encode"),  # bytes in protocol-2 pickles
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def read_cifar_batch(path: str | os.PathLike) -> dict[str, Any]:
    """A CIFAR python batch (pickle) as a dict with str keys, read without running code from the file."""
    with open(path, "rb") as f:
        raw = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a CIFAR batch (expected a dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def load_cifar10(split: str = "test", options: dict[str, Any] | None = None):
    """CIFAR-10 from ``cifar-10-batches-py``: images (N, 3, 32, 32), labels, the 10 class names."""
    options = _options(CIFAR10, split, options)
    folder = _root(CIFAR10, options)
    xs, ys = [], []
    for fname in _cifar10_files(split):
        batch = read_cifar_batch(folder / fname)
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch["labels"], dtype=np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    sel = _select(len(y), options)
    x_t = _resize_tensor(torch.from_numpy(x[sel]), options)
    return x_t, torch.from_numpy(y[sel]), _cifar10_names(folder)


def _cifar10_files(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _cifar10_names(folder: Path) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n)
            for n in read_cifar_batch(folder / "batches.meta")["label_names"]]


def _label_options(spec: DatasetSpec, split: str, options: dict[str, Any] | None) -> dict[str, Any]:
    return _options(spec, split, {k: v for k, v in (options or {}).items() if k != "indices"})


def _cifar10_labels(split: str, options: dict[str, Any] | None) -> tuple[torch.Tensor, list[str]]:
    folder = _root(CIFAR10, _label_options(CIFAR10, split, options))
    y = np.concatenate([np.asarray(read_cifar_batch(folder / f)["labels"], dtype=np.int64)
                        for f in _cifar10_files(split)])
    return torch.from_numpy(y), _cifar10_names(folder)


# ------------------------------------------------------------------------------------------------ STL-10
def load_stl10(split: str = "test", options: dict[str, Any] | None = None):
    """STL-10 from ``stl10_binary`` (96×96 stored column-major), resized to ``image_size`` (224: the paper)."""
    options = _options(STL10, split, options)
    folder = _root(STL10, options)
    y, names = _stl10_labels(split, options)
    y = y.numpy()
    x = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8)
    if x.size != y.size * 3 * 96 * 96:
        raise ValueError(f"{folder}/{split}_X.bin holds {x.size} bytes, expected {y.size} images of 3×96×96")
    x = x.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # the binary stores each channel column-major
    sel = _select(len(y), options)
    return _resize_tensor(torch.from_numpy(np.ascontiguousarray(x[sel])), options), torch.from_numpy(y[sel]), names


# -------------------------------------------------------------------------------------- file-based sets
def _stl10_labels(split: str, options: dict[str, Any] | None) -> tuple[torch.Tensor, list[str]]:
    folder = _root(STL10, _label_options(STL10, split, options))
    y = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
    names = [l.strip() for l in (folder / "class_names.txt").read_text().splitlines() if l.strip()]
    return torch.from_numpy(y), names


def _caltech101_items(split: str, options: dict[str, Any]) -> tuple[list[Path], list[int], list[str]]:
    folder = _root(CALTECH101, options) / "101_ObjectCategories"
    categories = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name != "BACKGROUND_Google")
    paths: list[Path] = []
    labels: list[int] = []
    for k, c in enumerate(categories):
        files = sorted(p for p in (folder / c).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        paths += files
        labels += [k] * len(files)
    # The fixed 80/20 split: one seeded permutation of all images. split_rule "original" is the original
    # code's (create_caltech101_split.ipynb: torch.manual_seed(1233); perm = torch.randperm(N); train =
    # perm[:int(0.8 N)], test = the rest, kept in permutation order, so the first n test images are the
    # paper's subset); "sorted" takes the first round(0.2 N) of the permutation as test, in file order.
    g = torch.Generator().manual_seed(int(options["split_seed"]))
    perm = torch.randperm(len(paths), generator=g).tolist()
    if options.get("split_rule", "original") == "original":
        n_train = int((1 - float(options["test_fraction"])) * len(paths))
        chosen = perm[n_train:] if split == "test" else perm[:n_train]
    else:
        n_test = int(round(len(paths) * float(options["test_fraction"])))
        chosen = sorted(perm[:n_test]) if split == "test" else sorted(perm[n_test:])
    raw = options.get("class_names", "prompt") == "original"
    names = list(categories) if raw else [caltech101_prompt_name(c) for c in categories]
    return [paths[i] for i in chosen], [labels[i] for i in chosen], names


_CALTECH_NAMES = {"Faces": "face", "Faces_easy": "face close-up", "Leopards": "leopard",
                  "Motorbikes": "motorbike", "airplanes": "airplane", "car_side": "side of a car",
                  "water_lilly": "water lily", "yin_yang": "yin yang symbol", "wild_cat": "wild cat"}


def caltech101_prompt_name(category: str) -> str:
    """A prompt-friendly name for a Caltech-101 folder name (``car_side`` → ``side of a car``)."""
    return _CALTECH_NAMES.get(category, category.replace("_", " "))


def _food101_items(split: str, options: dict[str, Any]) -> tuple[list[Path], list[int], list[str]]:
    folder = _root(FOOD101, options)
    classes = [l.strip() for l in (folder / "meta" / "classes.txt").read_text().splitlines() if l.strip()]
    index = {c: k for k, c in enumerate(classes)}
    meta = json.loads((folder / "meta" / f"{split}.json").read_text())
    paths, labels = [], []
    for c in classes:
        for rel in meta.get(c, []):
            paths.append(folder / "images" / f"{rel}.jpg")
            labels.append(index[c])
    if options.get("class_names", "prompt") == "original":  # the original code's "Apple pie", ...
        return paths, labels, [c.replace("_", " ").capitalize() for c in classes]
    return paths, labels, [c.replace("_", " ") for c in classes]


def _oxford_pets_items(split: str, options: dict[str, Any]) -> tuple[list[Path], list[int], list[str]]:
    folder = _root(OXFORD_PETS, options)
    ann = "trainval.txt" if split == "train" else "test.txt"
    ids, labels = [], []
    for line in (folder / "annotations" / ann).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#"):
            ids.append(parts[0])
            labels.append(int(parts[1]) - 1)
    # torchvision's class names: the image id without its number, words title-cased.
    by_label: dict[int, str] = {}
    for i, k in zip(ids, labels):
        by_label.setdefault(k, " ".join(w.title() for w in i.rsplit("_", 1)[0].split("_")))
    names = [by_label[k] for k in sorted(by_label)]
    if sorted(by_label) != list(range(len(names))):
        raise ValueError(f"{folder}/annotations/{ann}: class ids are not 1..K")
    return [folder / "images" / f"{i}.jpg" for i in ids], labels, names


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(wnids, names)``: the 1000 ILSVRC-2012 synsets in label order and CLIP's curated class names.

    Shipped as ``mslib/assets/imagenet_classes.json`` (built from open_clip's ``IMAGENET_CLASSNAMES`` and
    timm's sorted synset list, so index i is torchvision ImageFolder's label i on the full val tree).
    """
    data = json.loads((ASSETS / "imagenet_classes.json").read_text())
    classes = data["classes"]
    return tuple(c["wnid"] for c in classes), tuple(c["name"] for c in classes)


def _imagenet_items(split: str, options: dict[str, Any]) -> tuple[list[Path], list[int], list[str]]:
    if split != "test":
        raise ValueError("imagenet has only the validation split here (use split='test')")
    folder = _root(IMAGENET, options)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"ImageNet validation folder not found: {folder}. ImageNet cannot be downloaded automatically "
            "(its licence needs a login at image-net.org): put the validation images in an ImageFolder tree "
            "<wnid>/*.JPEG (e.g. with the usual valprep.sh) and set MSLIB_IMAGENET to it, or place it at "
            f"{data_root() / 'imagenet' / 'val'}."
        )
    wnids, names = imagenet_classes()
    index = {w: k for k, w in enumerate(wnids)}
    dirs = sorted(d for d in folder.iterdir() if d.is_dir())
    unknown = [d.name for d in dirs if d.name not in index]
    if unknown:
        raise ValueError(f"{folder}: folders {unknown[:5]} are not ImageNet-1k synsets (expected n01440764, ...)")
    paths, labels = [], []
    for d in dirs:
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        paths += files
        labels += [index[d.name]] * len(files)
    return paths, labels, list(names)


_Items = Callable[[str, dict[str, Any]], tuple[list[Path], list[int], list[str]]]


def _load_files(spec: DatasetSpec, items: _Items, split: str, options: dict[str, Any] | None,
                interpolation: str = "bilinear"):
    options = _options(spec, split, options)
    paths, labels, names = items(split, options)
    sel = _select(len(labels), options)
    x = load_image_files([paths[i] for i in sel], options, interpolation=interpolation)
    return x, torch.tensor([labels[i] for i in sel], dtype=torch.int64), names


def _file_labels(spec: DatasetSpec, items: _Items, split: str, options: dict[str, Any] | None
                 ) -> tuple[torch.Tensor, list[str]]:
    """A file-based set's labels and class names from its file list (no image decoded)."""
    _, labels, names = items(split, _label_options(spec, split, options))
    return torch.tensor(labels, dtype=torch.int64), names


def _caltech101_labels(split: str, options: dict[str, Any] | None) -> tuple[torch.Tensor, list[str]]:
    return _file_labels(CALTECH101, _caltech101_items, split, options)


def _food101_labels(split: str, options: dict[str, Any] | None) -> tuple[torch.Tensor, list[str]]:
    return _file_labels(FOOD101, _food101_items, split, options)


def _oxford_pets_labels(split: str, options: dict[str, Any] | None) -> tuple[torch.Tensor, list[str]]:
    return _file_labels(OXFORD_PETS, _oxford_pets_items, split, options)


def _imagenet_labels(split: str, options: dict[str, Any] | None) -> tuple[torch.Tensor, list[str]]:
    return _file_labels(IMAGENET, _imagenet_items, split, options)


def load_caltech101(split: str = "test", options: dict[str, Any] | None = None):
    """Caltech-101 (101 categories, no background), a fixed seeded 80/20 train/test split."""
    return _load_files(CALTECH101, _caltech101_items, split, options)


def load_food101(split: str = "test", options: dict[str, Any] | None = None):
    """Food-101 with its official train/test lists (``meta/{split}.json``)."""
    return _load_files(FOOD101, _food101_items, split, options)


def load_oxford_pets(split: str = "test", options: dict[str, Any] | None = None):
    """Oxford-IIIT Pets (37 breeds): ``trainval`` as train, ``test`` as test."""
    return _load_files(OXFORD_PETS, _oxford_pets_items, split, options)


def load_imagenet(split: str = "test", options: dict[str, Any] | None = None):
    """ImageNet-1k validation images from an ImageFolder tree, labelled by synset with CLIP's class names.

    ``resize_mode='squash'`` (default) resizes straight to 224×224 as the original code;
    ``'shortest_crop'`` reproduces RobustBench's bicubic ``Resize(256) + CenterCrop(224)``.
    """
    crop = (options or {}).get("resize_mode", IMAGENET.defaults["resize_mode"]) == "shortest_crop"
    return _load_files(IMAGENET, _imagenet_items, split, options, "bicubic" if crop else "bilinear")


def _unpack_caltech101(tree: Path, safe_extract: Callable[[Path, Path], None]) -> None:
    """The Caltech-101 zip holds ``caltech-101/101_ObjectCategories.tar.gz`` (torchvision's handling)."""
    inner = tree / CALTECH101.folder / "caltech-101"
    for gz in inner.glob("*.tar.gz"):
        safe_extract(gz, tree / CALTECH101.folder)
    shutil.rmtree(inner, ignore_errors=True)


_IMAGENET_MANUAL = (
    "ImageNet needs a login at image-net.org: download ILSVRC2012_img_val.tar, sort it into <wnid>/ folders "
    "(valprep.sh), then set MSLIB_IMAGENET=/path/to/val or put it at data/imagenet/val")
_SQUASH_224 = {"image_size": 224, "resize_mode": "squash"}
_STANDINS = "mslib.standins:write_"

# The paper's datasets (registered in mslib.data.DATASETS). Folders and archives are torchvision's; the MD5s
# are its published values.
CIFAR10 = DatasetSpec(
    "cifar10", "CIFAR-10", load_cifar10, _cifar10_labels, paper_data_root, "cifar-10-batches-py",
    "cifar-10-batches-py/test_batch",
    (Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    defaults={"image_size": 32}, standin=_STANDINS + "cifar10")
STL10 = DatasetSpec(
    "stl10", "STL-10", load_stl10, _stl10_labels, paper_data_root, "stl10_binary", "stl10_binary/test_X.bin",
    (Archive("https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb"),),
    defaults=_SQUASH_224, standin=_STANDINS + "stl10")
CALTECH101 = DatasetSpec(
    "caltech101", "Caltech-101", load_caltech101, _caltech101_labels, paper_data_root, "caltech101",
    "caltech101/101_ObjectCategories",
    (Archive("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
             "3138e1922a9193bfa496528edbbc45d0", "caltech101"),), unpack=_unpack_caltech101,
    defaults={**_SQUASH_224, "split_seed": 1233, "test_fraction": 0.2, "split_rule": "original"},
    option_keys=frozenset({"split_seed", "test_fraction", "split_rule"}), sample_first_n=True,
    standin=_STANDINS + "caltech101")
FOOD101 = DatasetSpec(
    "food101", "Food-101", load_food101, _food101_labels, paper_data_root, "food-101", "food-101/meta/test.json",
    (Archive("https://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "85eeb15f3717b99a5da872d97d918f87"),),
    defaults=_SQUASH_224, sample_start=1, standin=_STANDINS + "food101")
OXFORD_PETS = DatasetSpec(
    "oxford_pets", "Oxford-IIIT Pets", load_oxford_pets, _oxford_pets_labels, paper_data_root, "oxford-iiit-pet",
    "oxford-iiit-pet/annotations/test.txt",
    (Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c",
             "oxford-iiit-pet"),
     Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
             "95a8c909bbe2e81eed6a22bccdf3f68f", "oxford-iiit-pet")),
    defaults=_SQUASH_224, sample_start=1, standin=_STANDINS + "oxford_pets")
IMAGENET = DatasetSpec(
    "imagenet", "ImageNet", load_imagenet, _imagenet_labels, imagenet_root, manual=_IMAGENET_MANUAL,
    defaults={**_SQUASH_224, "crop_pct": 0.875}, option_keys=frozenset({"crop_pct"}), standin=_STANDINS + "imagenet")

_FILE_ITEMS = {CALTECH101.name: _caltech101_items, FOOD101.name: _food101_items,
               OXFORD_PETS.name: _oxford_pets_items, IMAGENET.name: _imagenet_items}
SPECS: dict[str, DatasetSpec] = {s.name: s for s in (CIFAR10, IMAGENET, CALTECH101, STL10, FOOD101, OXFORD_PETS)}
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {n: dict(s.defaults) for n, s in SPECS.items()}


def load_labels(name: str, split: str = "test", options: dict[str, Any] | None = None
                ) -> tuple[torch.Tensor, list[str]]:
    """Labels and class names of a split without decoding images (to draw a subset before loading it)."""
    return lookup(SPECS, name).labels(split, options)


class PaperImageDataset(torch.utils.data.Dataset):
    """A split as a map-style dataset of ``(uint8 3×S×S image, label)`` decoded lazily (for training).

    The big training splits (Food-101: 75,750 images) do not fit in memory as float tensors; the
    fine-tuning recipe streams them through a ``DataLoader`` with this class instead.
    """

    def __init__(self, name: str, split: str, options: dict[str, Any] | None = None) -> None:
        spec = lookup(SPECS, name)
        self.name, self.split = name, split
        self.options = _options(spec, split, options)
        if name in _FILE_ITEMS:
            paths, labels, self.class_names = _FILE_ITEMS[name](split, self.options)
            sel = _select(len(labels), self.options)
            self.paths = [paths[i] for i in sel]
            self.labels = [labels[i] for i in sel]
            self.images = None
        else:
            x, y, self.class_names = spec.load(split, self.options)
            self.images = x.mul(255).round_().to(torch.uint8)
            self.labels = y.tolist()
            self.paths = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            return self.images[i], self.labels[i]
        size, mode = int(self.options["image_size"]), self.options.get("resize_mode", "squash")
        arr = _decode(self.paths[i], size, mode, float(self.options.get("crop_pct", 0.875)), "bilinear")
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), self.labels[i]


__all__ = [
    "DEFAULT_OPTIONS",
    "SPECS",
    "PaperImageDataset",
    "caltech101_prompt_name",
    "dataset_path",
    "imagenet_classes",
    "imagenet_root",
    "load_caltech101",
    "load_cifar10",
    "load_food101",
    "load_image_files",
    "load_imagenet",
    "load_labels",
    "load_oxford_pets",
    "load_stl10",
    "paper_data_root",
    "read_cifar_batch",
]
