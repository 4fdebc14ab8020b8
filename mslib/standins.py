"""Stand-in assets for the paper profile: tiny files in the real on-disk formats, for a dry run offline.

``python -m mslib.standins DIR`` writes, under the data root ``DIR`` (use it as ``MSLIB_CACHE``):

- datasets in torchvision's layouts (``DIR/datasets``): CIFAR-10 python batches (protocol-2 pickles with
  bytes keys), the STL-10 binaries (column-major 96×96), Caltech-101's category folders (grayscale images
  included, ``BACKGROUND_Google`` excluded by the loader), Food-101's ``images/`` + ``meta/*.json``,
  Oxford-IIIT Pets' ``images/`` + ``annotations/*.txt``; an ImageNet ImageFolder tree (``DIR/imagenet/val``);
- RobustBench checkpoints of the real architectures (``robustbench.model_zoo``, random weights) in
  RobustBench's ``model_dir`` layout and the formats its loader reads (a ``module.``-prefixed ``state_dict``;
  ImageNet zoo models without the normalization wrapper's ``model.`` prefix; timm models under ``model``;
  ensembles as ``<name>.pt_m<i>.pt``);
- the Hugging Face CLIP pair (a tiny ``CLIPModel`` with its tokenizer, and a ``CLIPVisionModel``, both by
  ``save_pretrained``), an open_clip hub-layout folder for CLIPA (a tiny config of CLIPA's architecture with a
  BERT-style WordPiece tokenizer, since bert-base-uncased's files are not available offline), torchvision's
  ResNet-18 ImageNet weights file (a plain state dict under its published file name);

and records every file's SHA-256 in ``DIR/manifest.json`` and marks it complete (:func:`mslib.integrity.mark_complete`), so
``mslib.fetch.missing_assets("paper")`` is empty for the assets written. All weights are random and all
images synthetic: the numbers a run on them produces are meaningless; the plumbing is what is exercised.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import paper_data
from .cache import data_root_at
from .datasets import DatasetSpec

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
# At least 4 classes each: DLR needs 3 logits and the agreement attack up to 3 wrong-class targets.
CALTECH101_CATEGORIES = ("Faces", "Faces_easy", "accordion", "car_side")  # real folder names (upper case sorts first)
FOOD101_CLASSES = ("apple_pie", "baby_back_ribs", "beignets", "cheese_plate")
PETS_BREEDS = ("Abyssinian", "american_bulldog", "Bengal", "great_pyrenees")  # cats capitalized, dogs not, as the real ids
IMAGENET_WNIDS = ("n01440764", "n01443537", "n15075141")  # classes 0, 1 and 999
SOURCE = "mslib.standins (synthetic images / random weights)"

# Sizes for a dry run of the paper profile on CPU: a few images, a few iterations, one eps besides 0.
DRY_RUN_OVERRIDES: dict[str, Any] = {"n_samples": 4, "n_iter": 2, "square_queries": 4, "batch_size": 4,
                                     "device": "cpu", "eps_grid": (0.0, 4 / 255), "tolerance_grid": (0.0, 1e-3)}


def _image(path: Path, size: tuple[int, int], color: tuple[int, int, int], mode: str = "RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(path, quality=95)


# ============================================================================================== datasets
def _folder(spec: DatasetSpec, root: str | os.PathLike) -> Path:
    """Where ``spec``'s loader looks for it under the data root ``root`` (its layout, no variable overriding)."""
    with data_root_at(root):
        return spec.directory()


def write_cifar10(root: str | os.PathLike, n_test: int = 20, n_train: int = 10) -> tuple[np.ndarray, list[int]]:
    """``root/datasets/cifar-10-batches-py``: test_batch, data_batch_1..5 (n_train each), batches.meta.
    Returns the test batch's (data N×3072 uint8, labels)."""
    d = _folder(paper_data.CIFAR10, root)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def batch(n: int, name: str) -> tuple[np.ndarray, list[int]]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(n)]
        with open(d / name, "wb") as f:  # the real files: protocol-2 pickles with bytes keys
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f, protocol=2)
        return data, labels

    test = batch(n_test, "test_batch")
    for i in range(1, 6):
        batch(n_train, f"data_batch_{i}")
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": 10000,
                     b"num_vis": 3072}, f, protocol=2)
    return test


def write_stl10(root: str | os.PathLike, n: int = 12, n_train: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``root/datasets/stl10_binary``: {test,train}_{X,y}.bin (column-major 3×96×96, 1-based labels) and
    class_names.txt. Returns the test split's (images N×3×96×96 as stored after transposing, labels)."""
    d = _folder(paper_data.STL10, root)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = None
    for split, count in (("test", n), ("train", n_train)):
        x = rng.integers(0, 256, size=(count, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
        y = np.array([i % 10 + 1 for i in range(count)], dtype=np.uint8)  # 1-based labels
        x.transpose(0, 1, 3, 2).tofile(d / f"{split}_X.bin")  # stored column-major per channel
        y.tofile(d / f"{split}_y.bin")
        out = (x, y) if out is None else out
    (d / "class_names.txt").write_text("\n".join(STL10_NAMES) + "\n")
    return out


def write_caltech101(root: str | os.PathLike, categories: Sequence[str] = CALTECH101_CATEGORIES,
                     per_class: int = 7) -> list[str]:
    """``root/datasets/caltech101/101_ObjectCategories/<category>/image_NNNN.jpg`` (first image of each
    category grayscale, as Caltech-101 has), plus a ``BACKGROUND_Google`` folder the loader must skip."""
    d = _folder(paper_data.CALTECH101, root) / "101_ObjectCategories"
    for k, c in enumerate(categories):
        for i in range(per_class):
            mode = "L" if i == 0 else "RGB"
            _image(d / c / f"image_{i + 1:04d}.jpg", (60 + 10 * i, 40 + 5 * k), (40 * k, 100, 200), mode)
    _image(d / "BACKGROUND_Google" / "image_0001.jpg", (50, 50), (0, 0, 0))
    return list(categories)


def write_food101(root: str | os.PathLike, classes: Sequence[str] = FOOD101_CLASSES, per_class: int = 7,
                  test_per_class: int = 3) -> list[str]:
    """``root/datasets/food-101``: images/<class>/<id>.jpg, meta/{classes.txt, train.json, test.json}."""
    d = _folder(paper_data.FOOD101, root)
    meta: dict[str, dict[str, list[str]]] = {"train": {c: [] for c in classes}, "test": {c: [] for c in classes}}
    for k, c in enumerate(classes):
        for i in range(per_class):
            split = "test" if i < test_per_class else "train"
            _image(d / "images" / c / f"{100 + i}.jpg", (80, 60 + i), (200 * k % 256, 50, 50))
            meta[split][c].append(f"{c}/{100 + i}")
    (d / "meta").mkdir(parents=True, exist_ok=True)
    (d / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    for split in ("train", "test"):
        (d / "meta" / f"{split}.json").write_text(json.dumps(meta[split]))
    return list(classes)


def write_oxford_pets(root: str | os.PathLike, breeds: Sequence[str] = PETS_BREEDS, per_breed: int = 4,
                      test_per_breed: int = 2) -> None:
    """``root/datasets/oxford-iiit-pet``: images/<breed>_<n>.jpg, annotations/{test,trainval}.txt
    (``<id> <class 1..K> <species> <breed id>``); the first ``test_per_breed`` images of each breed are test."""
    d = _folder(paper_data.OXFORD_PETS, root)
    (d / "annotations").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {"test": [], "trainval": []}
    for k, breed in enumerate(breeds):
        for i in range(per_breed):
            image_id = f"{breed}_{i + 1}"
            _image(d / "images" / f"{image_id}.jpg", (70, 90), (30 * k, 30, 30))
            rows["test" if i < test_per_breed else "trainval"].append(f"{image_id} {k + 1} {1 if k == 0 else 2} {k + 1}")
    for split, lines in rows.items():
        (d / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


def write_imagenet(root: str | os.PathLike, wnids: Sequence[str] = IMAGENET_WNIDS, per_class: int = 2) -> Path:
    """``root/imagenet/val/<wnid>/ILSVRC2012_val_NNNNNNNN.JPEG`` (300×200 images, squashed or cropped at load)."""
    d = _folder(paper_data.IMAGENET, root)
    for k, w in enumerate(wnids):
        for i in range(per_class):
            _image(d / w / f"ILSVRC2012_val_{k * per_class + i:08d}.JPEG", (300, 200), (250, 10 * k, 10))
    return d


# ================================================================================================ models
def robustbench_state(name: str, dataset: str, model: torch.nn.Module) -> dict[str, Any]:
    """The state of ``model`` as RobustBench's checkpoint of ``name`` stores it (what its loader expects):
    a ``module.``-prefixed ``state_dict``; ImageNet zoo models without the ``model.`` prefix of the
    normalization wrapper (whose buffers the real checkpoints lack)."""
    from .models.paper import robustbench_adds_model_prefix

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if robustbench_adds_model_prefix(name, dataset):
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return {"state_dict": {"module." + k: v for k, v in state.items()}}


def write_robustbench(name: str, dataset: str, threat_model: str = "Linf", seed: int = 0) -> list[Path]:
    """Random-weight checkpoint(s) of RobustBench's architecture for ``name`` under :func:`robustbench_dir`."""
    from .models import paper as P

    entry = P.robustbench_entry(name, dataset, threat_model)
    paths = P.robustbench_checkpoint_paths(name, dataset, threat_model, n_files=entry["n_files"])
    torch.manual_seed(seed)
    model = P.build_robustbench_architecture(name, dataset, threat_model)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    if entry["kind"] == "timm":
        torch.save({"model": model.state_dict()}, paths[0])  # RobustBench's GitHub release format (timm)
    elif not entry["ensemble"]:
        torch.save(robustbench_state(name, dataset, model), paths[0])
    else:
        for member, path in zip(model.models, paths):
            torch.save({"state_dict": {"module." + k: v for k, v in member.state_dict().items()}}, path)
    return paths


def _clip_tokenizer_files(folder: Path) -> int:
    """A byte-level-BPE vocabulary of single letters (no merges) in CLIP's tokenizer format."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for t in letters + [c + "</w>" for c in letters]:
        vocab[t] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


def write_hf_clip(vision_repo: str = "tanganke/clip-vit-base-patch32_cifar10",
                  text_repo: str = "openai/clip-vit-base-patch32", seed: int = 0) -> list[Path]:
    """The original code's CLIP pair as ``save_pretrained`` folders: a full tiny ``CLIPModel`` with its
    tokenizer (``text_repo``) and a ``CLIPVisionModel`` of the same config (``vision_repo``)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, CLIPVisionModel

    from .models.paper import hf_folder

    text_dir, vision_dir = hf_folder(text_repo), hf_folder(vision_repo)
    vocab_size = _clip_tokenizer_files(text_dir)
    CLIPTokenizer(str(text_dir / "vocab.json"), str(text_dir / "merges.txt")).save_pretrained(str(text_dir))
    cfg = CLIPConfig(text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 37,
                                  "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 77,
                                  "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
                     vision_config={"image_size": 224, "patch_size": 32, "hidden_size": 32, "intermediate_size": 37,
                                    "num_hidden_layers": 1, "num_attention_heads": 2},
                     projection_dim=16)
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(str(text_dir))
    torch.manual_seed(seed + 1)
    CLIPVisionModel(cfg.vision_config).save_pretrained(str(vision_dir))
    return [text_dir, vision_dir]


# CLIPA-v2 ViT-L/14's open_clip config (open_clip's model_configs/ViT-L-14-CLIPA.json), shrunk.
_TINY_CLIPA_VISION = {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32,
                      "no_ln_pre": True, "pool_type": "avg", "final_ln_after_pool": True}
_TINY_CLIPA_TEXT = {"context_length": 32, "hf_tokenizer_name": "bert-base-uncased",
                    "tokenizer_kwargs": {"strip_sep_token": True}, "width": 32, "heads": 2, "layers": 1,
                    "pool_type": "last", "no_causal_mask": True}
# CLIPA's preprocess_cfg as open_clip's pretrained table gives it (_apcfg): ImageNet mean/std, bilinear.
CLIPA_PREPROCESS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bilinear",
                    "resize_mode": "squash"}


def _bert_tokenizer_files(folder: Path) -> int:
    """A WordPiece vocabulary of letters and digits (any word splits into pieces) in bert-base-uncased's
    file layout: tokenizer.json, vocab.txt, tokenizer_config.json, config.json."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(i) for i in range(10)]
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + chars + ["##" + c for c in chars]
    vocab = {w: i for i, w in enumerate(words)}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    folder.mkdir(parents=True, exist_ok=True)
    tk.save(str(folder / "tokenizer.json"))
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    # bert-base-uncased's own files: no tokenizer_class in tokenizer_config.json, model_type in config.json
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": len(words)}))
    return len(words)


def write_open_clip_clipa(repo: str = "hf-hub:UCSC-VLAA/ViT-L-14-CLIPA-datacomp1B", seed: int = 0) -> Path:
    """An open_clip hub-layout folder (open_clip_config.json + open_clip_pytorch_model.bin, the hub repo's
    names) holding a tiny model of CLIPA's architecture, with the BERT-style tokenizer files beside it."""
    from .models.paper import open_clip_folder

    folder = open_clip_folder(repo)
    vocab_size = _bert_tokenizer_files(folder)
    model_cfg = {"embed_dim": 16, "vision_cfg": dict(_TINY_CLIPA_VISION),
                 "text_cfg": {**_TINY_CLIPA_TEXT, "vocab_size": vocab_size}}
    return _open_clip_hub_folder(folder, model_cfg, CLIPA_PREPROCESS, seed)


# OpenAI CLIP ViT-L/14's open_clip config (model_configs/ViT-L-14-quickgelu.json: the architecture of the
# FARE/TeCoA robust CLIP checkpoints), shrunk; open_clip's own BPE tokenizer, OpenAI mean/std.
_TINY_OPENAI_VIT = {"embed_dim": 16, "quick_gelu": True,
                    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
                    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
OPENAI_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                     "interpolation": "bicubic", "resize_mode": "shortest"}


def write_open_clip_vit(repo: str = "hf-hub:chs20/fare4-clip", seed: int = 0) -> Path:
    """An open_clip hub-layout folder holding a tiny model of OpenAI CLIP ViT-L/14's architecture (the robust
    FARE/TeCoA checkpoints' layout: open_clip_config.json + open_clip_pytorch_model.bin, open_clip's tokenizer)."""
    from .models.paper import open_clip_folder

    folder = open_clip_folder(repo)
    folder.mkdir(parents=True, exist_ok=True)
    return _open_clip_hub_folder(folder, _TINY_OPENAI_VIT, OPENAI_PREPROCESS, seed)


def _open_clip_hub_folder(folder: Path, model_cfg: dict, preprocess_cfg: dict, seed: int) -> Path:
    """open_clip's hub layout in ``folder``: its config and a random-weight ``CLIP(**model_cfg)`` state dict."""
    import open_clip

    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                              "preprocess_cfg": preprocess_cfg}))
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**model_cfg).eval()
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def write_torchvision_weights(arch: str = "resnet18", weights: str = "IMAGENET1K_V1", seed: int = 0) -> Path:
    """torchvision's ImageNet weights file for ``arch`` (random weights, a plain state dict as torchvision
    publishes them) under its published file name in ``data/models/torchvision``."""
    import torchvision

    from .models.paper import torchvision_weights_path

    path, _ = torchvision_weights_path(arch, weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(torchvision.models.get_model(arch, weights=None).state_dict(), path)
    return path


# ============================================================================================ everything
# Stand-in writers of the model sources (mslib.models.SOURCES): a spec in, the paths written out.
def standin_robustbench(spec: dict[str, Any]) -> list[Path]:
    return write_robustbench(spec["model"], spec["dataset"], spec.get("threat_model", "Linf"))


def standin_torchvision(spec: dict[str, Any]) -> list[Path]:
    return [write_torchvision_weights(spec.get("arch", "resnet18"), spec["weights"])]


def standin_hf_clip(spec: dict[str, Any]) -> list[Path]:
    return write_hf_clip(spec["vision"], spec["text"])


# The hub checkpoints whose stand-in needs another architecture than an OpenAI-style ViT: CLIPA's text tower
# is BERT-tokenized, which the loader must meet in the stand-in too.
OPEN_CLIP_STANDIN_WRITERS = {"hf-hub:UCSC-VLAA/ViT-L-14-CLIPA-datacomp1B": write_open_clip_clipa}


def standin_open_clip(spec: dict[str, Any]) -> list[Path]:
    return [OPEN_CLIP_STANDIN_WRITERS.get(spec["model"], write_open_clip_vit)(spec["model"])]


def subset_profile(profile: str = "paper", datasets: Sequence[str] | None = None,
                   classifiers: dict[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """A copy of ``PROFILES[profile]`` keeping only ``datasets`` and, per dataset, the ``classifiers`` named
    (for a dry run that skips the heaviest real architectures: install it in place of the profile, e.g.
    ``monkeypatch.setitem(PROFILES, "paper", subset_profile(...))``; the code path stays the paper's)."""
    import copy

    from .profiles import PROFILES

    spec = copy.deepcopy(PROFILES[profile])
    keep = list(spec["datasets"]) if datasets is None else list(datasets)
    spec["datasets"] = {ds: spec["datasets"][ds] for ds in keep}
    for ds, names in (classifiers or {}).items():
        clfs = spec["datasets"][ds]["classifiers"]
        spec["datasets"][ds]["classifiers"] = {n: clfs[n] for n in names}
    return spec


def write_standins(root: str | os.PathLike, datasets: Sequence[str] | None = None,
                   classifiers: dict[str, Sequence[str]] | None = None, profile: str = "paper",
                   progress: bool = False) -> list[Path]:
    """Write the stand-in assets of ``profile``'s ``datasets`` (default: all) under the data root ``root``
    and record their hashes in ``root/manifest.json``. ``classifiers`` (dataset → names) restricts which
    classifiers get checkpoints (default: every classifier of each dataset). Returns the paths written."""
    from .data import DATASETS
    from .integrity import mark_complete
    from .profiles import PROFILES, get_profile

    root = Path(root)
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    names = list(PROFILES[profile]["datasets"]) if datasets is None else list(datasets)
    unknown = [d for d in names if d not in DATASETS or DATASETS[d].standin is None
               or d not in PROFILES[profile]["datasets"]]
    if unknown:
        raise ValueError(f"no stand-in for datasets {unknown}; profile {profile!r} has {list(PROFILES[profile]['datasets'])}")
    if root.exists() and not root.is_dir():
        raise ValueError(f"root {root} is a file, not a folder: pass the data root folder to write into")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"root {root} cannot be created ({e.strerror}): pass a writable folder") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ValueError(f"root {root} is not writable: pass a folder you can write into")
    written: list[Path] = []
    done: set[tuple] = set()

    def once(key: tuple, fn, *args) -> None:
        if key not in done:
            done.add(key)
            if progress:
                print(f"[stand-in] {' '.join(map(str, key))}", file=sys.stderr)
            out = fn(*args)
            written.extend(out if isinstance(out, list) else [out])

    with data_root_at(root):
        for ds in names:
            DATASETS[ds].write_standin(root)
            # a dataset is complete as a whole folder (what an extraction renames into place)
            written.append(DATASETS[ds].directory())
            p = get_profile(profile, ds)
            chosen = p.classifiers if classifiers is None or ds not in classifiers else tuple(classifiers[ds])
            from .models import source_spec
            from .plan import vlm_variants

            # the chosen classifiers, the profile's VLM and its enabled variants
            for spec in [p.classifier_specs[c] for c in chosen] + [p.vlm_spec, *vlm_variants(p).values()]:
                source = source_spec(spec["source"])
                if source.standin is not None:
                    # what the spec needs from outside names what its stand-in writes (written once)
                    places = tuple(str(a.path) for a in source.function("assets")(spec, ""))
                    if places:
                        once((source.name, *places), source.function("standin"), spec)
        for path in written:  # hashes recorded, then marked complete: what a finished fetch leaves
            mark_complete(path, SOURCE)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mslib.standins", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="data root to write into (then run with MSLIB_CACHE set to it)")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--datasets", nargs="*", default=None, help="default: all of the profile's")
    ap.add_argument("--classifier", action="append", default=[], metavar="DATASET=NAME[,NAME]",
                    help="write checkpoints only for these classifiers of DATASET (repeatable); default: all")
    args = ap.parse_args(argv)
    classifiers: dict[str, list[str]] = {}
    for item in args.classifier:
        ds, _, names = item.partition("=")
        if not names:
            ap.error(f"--classifier needs DATASET=NAME[,NAME], got {item!r}")
        classifiers[ds] = [n for n in names.split(",") if n]
    try:
        written = write_standins(args.root, args.datasets, classifiers or None, args.profile, progress=True)
    except ValueError as e:  # bad root, profile or dataset: one line, exit 2
        print(f"{ap.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    from .fetch import missing_assets

    with data_root_at(args.root):
        missing = missing_assets(args.profile)
    print(f"wrote {len(written)} stand-in assets under {args.root}; "
          f"{len(missing)} asset(s) of profile {args.profile!r} still missing"
          + "".join(f"\n  - {a}" for a in missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
