"""The paper profile's loaders on small stand-ins written in the real on-disk formats (no network).

Datasets: CIFAR-10 python batches, the STL-10 binaries, the Caltech-101 / Food-101 / Oxford-IIIT Pets
folder layouts and an ImageNet ImageFolder tree. Models: RobustBench checkpoints of the real architectures
(random weights) in RobustBench's model_dir layout, a tiny Hugging Face CLIP ``save_pretrained`` pair, a tiny
open_clip hub-layout folder with a BERT-style tokenizer like CLIPA's, the ResNet-18 fine-tuning recipe.
Everything goes through the functions the paper profile calls.
"""
from __future__ import annotations

import importlib.util
import os
import random
import pickle

import numpy as np
import pytest
import torch

from mslib import get_profile, load_classifier, load_vlm
from mslib import paper_data as pdata
from mslib.data import load_split
from mslib.fetch import mark_complete
from mslib.standins import (CIFAR10_NAMES, write_caltech101, write_cifar10, write_food101, write_imagenet,
                            write_oxford_pets, write_stl10)

HAS_ROBUSTBENCH = importlib.util.find_spec("robustbench") is not None
needs_robustbench = pytest.mark.skipif(not HAS_ROBUSTBENCH, reason="robustbench model zoo not installed "
                                       "(pip install --no-deps robustbench==1.1.1; see docs/robustbench.md)")
CIFAR_NAMES = list(CIFAR10_NAMES)


@pytest.fixture()
def roots(tmp_path, monkeypatch, no_paper_env):
    """A fresh data root; the paper datasets under data/datasets, ImageNet under data/imagenet/val."""
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path / "data"))
    (tmp_path / "data" / "datasets").mkdir(parents=True)
    return tmp_path / "data"


# ------------------------------------------------------------------------------------------- datasets
def test_cifar10_batches_read_with_the_right_layout(roots):
    data, labels = write_cifar10(roots)
    x, y, names = load_split("cifar10", "test", {"image_size": 32})
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert names == CIFAR_NAMES and y.tolist() == labels
    # row layout: 1024 red values, then green, then blue, each row-major 32x32
    assert torch.equal((x[3] * 255).round().to(torch.uint8), torch.from_numpy(data[3].reshape(3, 32, 32)))
    xt, yt, _ = pdata.load_cifar10("train", {})
    assert xt.shape[0] == 50 and yt.shape[0] == 50
    # decode only chosen indices; labels without decoding
    xs, ys, _ = pdata.load_cifar10("test", {"indices": [5, 2]})
    assert torch.equal(xs, x[[5, 2]]) and ys.tolist() == [labels[5], labels[2]]
    assert torch.equal(pdata.load_labels("cifar10", "test")[0], y)


def test_cifar_unpickler_refuses_code(roots, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil_batch"
    bad.write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        pdata.read_cifar_batch(bad)


def test_stl10_binary_orientation_and_resize(roots):
    x_raw, y_raw = write_stl10(roots)
    x, y, names = pdata.load_stl10("test", {"image_size": 96})
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(x_raw))
    assert y.tolist() == (y_raw.astype(int) - 1).tolist() and names[7] == "monkey"
    x224, _, _ = load_split("stl10", "test", {"image_size": 224})
    assert x224.shape == (12, 3, 224, 224) and 0 <= x224.min() and x224.max() <= 1


def test_caltech101_split_is_fixed_disjoint_and_complete(roots):
    cats = write_caltech101(roots, ("Faces", "accordion", "car_side"), per_class=5)
    opts = {"image_size": 48, "split_seed": 1233, "test_fraction": 0.2}
    xt, yt, names = pdata.load_caltech101("test", opts)
    xr, yr, _ = pdata.load_caltech101("train", opts)
    assert xt.shape == (3, 3, 48, 48) and xr.shape == (12, 3, 48, 48)  # 15 images, 20% test, background excluded
    assert names == ["face", "accordion", "side of a car"] and len(names) == len(cats)
    assert sorted(yt.tolist() + yr.tolist()) == sorted([k for k in range(3) for _ in range(5)])
    test_paths, _, _ = pdata._caltech101_items("test", pdata._options(pdata.CALTECH101, "test", opts))
    train_paths, _, _ = pdata._caltech101_items("train", pdata._options(pdata.CALTECH101, "train", opts))
    assert not set(test_paths) & set(train_paths)
    again = pdata.load_caltech101("test", opts)
    assert torch.equal(again[0], xt) and torch.equal(again[1], yt)
    other = pdata._caltech101_items("test", pdata._options(pdata.CALTECH101, "test", {**opts, "split_seed": 0}))[0]
    assert other != test_paths  # the split depends on the seed (and only on it)


def test_food101_and_oxford_pets_layouts(roots):
    write_food101(roots, ("apple_pie", "baby_back_ribs"), per_class=6, test_per_class=2)
    x, y, names = load_split("food101", "test", {"image_size": 64})
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0, 0, 1, 1] and names == ["apple pie", "baby back ribs"]
    assert float(x[2, 0].mean()) > 0.7 and float(x[0, 0].mean()) < 0.1  # class 1 is red, class 0 is not
    assert pdata.load_food101("train", {"image_size": 32})[0].shape == (8, 3, 32, 32)
    write_oxford_pets(roots, ("Abyssinian", "american_bulldog", "great_pyrenees"), per_breed=3, test_per_breed=1)
    x, y, names = load_split("oxford_pets", "test", {"image_size": 32})
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [0, 1, 2]
    assert names == ["Abyssinian", "American Bulldog", "Great Pyrenees"]
    assert len(pdata.PaperImageDataset("oxford_pets", "train", {"image_size": 32})) == 6


def test_imagenet_imagefolder_with_curated_names(roots, monkeypatch):
    d = write_imagenet(roots)
    x, y, names = load_split("imagenet", "test", {"image_size": 224, "resize_mode": "squash"})
    assert x.shape == (6, 3, 224, 224) and y.tolist() == [0, 0, 1, 1, 999, 999]
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet paper"
    xc, _, _ = load_split("imagenet", "test", {"image_size": 224, "resize_mode": "shortest_crop"})
    assert xc.shape == x.shape
    monkeypatch.setenv("MSLIB_IMAGENET", str(d))  # named by path
    assert pdata.load_imagenet("test", {"image_size": 32, "indices": [4]})[1].tolist() == [999]
    (d / "not_a_synset").mkdir()
    with pytest.raises(ValueError, match="not ImageNet-1k synsets"):
        pdata.load_imagenet("test", {})


def test_loader_errors_name_the_problem(roots):
    with pytest.raises(FileNotFoundError, match="mslib.fetch"):
        pdata.load_food101("test", {})
    write_cifar10(roots)
    with pytest.raises(ValueError, match="unknown cifar10 options"):
        pdata.load_cifar10("test", {"imge_size": 32})
    with pytest.raises(ValueError, match="split"):
        pdata.load_cifar10("val", {})
    with pytest.raises(ValueError, match="outside the split"):
        pdata.load_cifar10("test", {"indices": [10 ** 6]})


# --------------------------------------------------------------------------------------------- models
def _paper(dataset, **kw):
    return get_profile("paper", dataset, device="cpu", **kw)


@needs_robustbench
def test_robustbench_cifar10_checkpoint_in_model_dir_layout(roots):
    from mslib.models import paper as P
    from mslib.standins import write_robustbench

    name = "Addepalli2022Efficient_RN18"
    # saved as RobustBench's training scripts do: a dict with a DataParallel ('module.') state dict
    (path,) = write_robustbench(name, "cifar10", seed=3)
    assert path == roots / "models" / "robustbench" / "cifar10" / "Linf" / f"{name}.pt"
    assert all(k.startswith("module.") for k in torch.load(path, weights_only=True)["state_dict"])
    torch.manual_seed(3)
    ref = P.build_robustbench_architecture(name, "cifar10", "Linf").eval()
    with pytest.raises(ValueError, match="no recorded SHA-256"):  # checkpoints load only when recorded
        load_classifier(_paper("cifar10"), name)
    mark_complete(path, "test stand-in")
    model = load_classifier(_paper("cifar10"), name)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 10)  # other sizes resized inside forward


@needs_robustbench
def test_robustbench_imagenet_timm_checkpoint(roots):
    from mslib.models import paper as P
    from mslib.standins import write_robustbench

    name = "Debenedetti2022Light_XCiT-S12"
    (path,) = write_robustbench(name, "imagenet", seed=4)  # RobustBench's release format (timm 'model' key)
    mark_complete(path, "test stand-in")
    torch.manual_seed(4)
    ref = P.build_robustbench_architecture(name, "imagenet", "Linf").eval()
    model = load_classifier(_paper("imagenet"), name)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000) and torch.allclose(out, ref(x), atol=1e-4)


def test_checkpoint_guard_rejects_html_and_pickled_code(tmp_path):
    from mslib.models.paper import check_checkpoint_file, load_checkpoint

    html = tmp_path / "Standard.pt"
    html.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
    with pytest.raises(ValueError, match="HTML page"):
        check_checkpoint_file(html)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}, "hook": Evil()}, bad)
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(bad)
    import argparse

    ok = tmp_path / "ok.pt"  # plain data beside the weights is accepted
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1), "acc": np.float64(0.5)}, ok)
    assert torch.equal(load_checkpoint(ok)["state_dict"]["w"], torch.ones(2))


def test_hf_clip_vision_from_one_folder_text_from_another(roots):
    from transformers import CLIPModel, CLIPVisionModel

    from mslib.standins import write_hf_clip

    write_cifar10(roots)
    text_dir, vision_dir = write_hf_clip()
    assert text_dir == roots / "models" / "hf" / "openai--clip-vit-base-patch32"
    assert vision_dir == roots / "models" / "hf" / "tanganke--clip-vit-base-patch32_cifar10"
    vlm = load_vlm(_paper("cifar10"))
    assert vlm.num_classes == 10
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        sims = vlm(x)
        assert sims.shape == (4, 10) and sims.abs().max() <= 1 + 1e-5
        # the vision tower is the fine-tuned one, the projection the text folder's CLIP
        clip = CLIPModel.from_pretrained(str(text_dir))
        vision = CLIPVisionModel.from_pretrained(str(vision_dir))
        clip.vision_model.load_state_dict({k.removeprefix("vision_model."): v for k, v in vision.state_dict().items()})
        pix = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        pix = (pix - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / torch.tensor(
            [0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        feats = clip.get_image_features(pixel_values=pix)
        feats = feats if isinstance(feats, torch.Tensor) else feats.pooler_output
        assert torch.allclose(vlm.encode_image(x), torch.nn.functional.normalize(feats, dim=-1), atol=1e-5)


def test_open_clip_hub_folder_with_bert_tokenizer_like_clipa(roots):
    import open_clip

    from mslib.models.openclip_factory import read_open_clip_config
    from mslib.models.paper import CLIP_MEAN, CLIP_STD
    from mslib.standins import write_open_clip_clipa

    write_food101(roots, ("apple_pie", "baby_back_ribs"), per_class=6, test_per_class=2)
    folder = write_open_clip_clipa(seed=0)
    assert folder == roots / "models" / "open_clip" / "UCSC-VLAA--ViT-L-14-CLIPA-datacomp1B"
    assert (folder / "open_clip_pytorch_model.bin").is_file()  # the hub repo's file name and format
    ref = open_clip.model.CLIP(**read_open_clip_config(folder)["model_cfg"]).eval()
    ref.load_state_dict(torch.load(folder / "open_clip_pytorch_model.bin", weights_only=True))

    profile = _paper("food101", data_options={"image_size": 64, "resize_mode": "squash"})
    vlm = load_vlm(profile)
    x = pdata.load_food101("test", {"image_size": 64})[0]
    with torch.no_grad():
        sims = vlm(x)
        assert sims.shape == (4, 2)
        emb = ref.encode_image(vlm.preprocess(x))
        assert torch.allclose(vlm.encode_image(x), torch.nn.functional.normalize(emb, dim=-1), atol=1e-5)
    assert vlm.preprocess.size == (224, 224)
    # the paper profile feeds CLIPA OpenAI-CLIP mean/std, as the original code; "config" uses the folder's
    assert torch.allclose(vlm.preprocess.mean.flatten(), torch.tensor(CLIP_MEAN))
    assert torch.allclose(vlm.preprocess.std.flatten(), torch.tensor(CLIP_STD))
    cfg_vlm = load_vlm(profile.replace(vlm_spec={**profile.vlm_spec, "input_norm": "config"}))
    assert torch.allclose(cfg_vlm.preprocess.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    with pytest.raises(ValueError, match="input_norm"):
        load_vlm(profile.replace(vlm_spec={**profile.vlm_spec, "input_norm": "imagenet"}))


def test_resnet18_finetune_recipe_trains_once_and_caches(roots):
    import torchvision

    from mslib.models.paper import torchvision_weights_path

    write_food101(roots, ("apple_pie", "baby_back_ribs"), per_class=6, test_per_class=2)
    wpath, _ = torchvision_weights_path("resnet18", "IMAGENET1K_V1")
    wpath.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), wpath)  # torchvision's format: a plain state dict
    prof = _paper("food101", data_options={"image_size": 32, "resize_mode": "squash"})
    spec = {**prof.classifier_specs["resnet18-ft"], "epochs": 1, "batch_size": 4, "image_size": 32, "num_workers": 0}
    prof = prof.replace(classifier_specs={"resnet18-ft": spec})
    model = load_classifier(prof, "resnet18-ft")
    ckpt = model.checkpoint_path
    mtime = os.path.getmtime(ckpt)
    x = pdata.load_food101("test", {"image_size": 32})[0]
    with torch.no_grad():
        assert model(x).shape == (4, 2)
    again = load_classifier(prof, "resnet18-ft")
    assert again.checkpoint_path == ckpt and os.path.getmtime(ckpt) == mtime  # loaded, not retrained
    changed = prof.replace(classifier_specs={"resnet18-ft": {**spec, "lr": 1e-2}})
    assert load_classifier(changed, "resnet18-ft").checkpoint_path != ckpt  # a changed recipe retrains


# ------------------------------------------------------------------------------------- missing assets
def test_missing_assets_lists_exactly_what_is_missing(roots, monkeypatch):
    from mslib.fetch import MissingAssetsError, missing_assets, profile_assets, require_assets

    require_assets("tiny")  # nothing external
    assert missing_assets("smoke") == []
    everything = profile_assets("paper")
    before = missing_assets("paper")
    assert len(before) == len(everything)
    kinds = {a.kind for a in before}
    assert {"dataset", "hf", "open_clip", "torchvision"} <= kinds
    assert ("robustbench" in kinds) or ("package" in kinds)
    # provide three of them: a dataset, an HF folder and (named by path) ImageNet
    write_cifar10(roots)
    hf = roots / "models" / "hf" / "openai--clip-vit-base-patch32"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"x")
    monkeypatch.setenv("MSLIB_IMAGENET", str(write_imagenet(roots)))
    # files on disk count only once marked complete (a fetch killed half-way leaves them unmarked)
    assert len(missing_assets("paper")) == len(before) - 1  # ImageNet is named by path, not fetched
    mark_complete(roots / "datasets" / "cifar-10-batches-py", "test stand-in")
    mark_complete(hf, "test")
    after = missing_assets("paper")
    gone = {str(a.path) for a in before} - {str(a.path) for a in after}
    assert gone == {str(pdata.dataset_path("cifar10")), str(hf), str(roots / "imagenet" / "val")}
    with pytest.raises(MissingAssetsError) as err:
        require_assets("paper")
    msg = str(err.value)
    assert f"needs {len(after)} asset(s)" in msg and "python -m mslib.fetch --profile paper" in msg
    for a in after:
        assert str(a.path) in msg
    assert "cifar-10-batches-py" not in msg and "openai--clip-vit-base-patch32" not in msg
    # fetched files' hashes come from data/manifest.json, per dataset, for result records
    from mslib.fetch import asset_hashes

    hashes = asset_hashes("paper", "cifar10")
    assert set(hashes) == {"models/hf/openai--clip-vit-base-patch32/config.json",
                           "models/hf/openai--clip-vit-base-patch32/model.safetensors",
                           "datasets/cifar-10-batches-py/test_batch"}  # the asset's file: the test split
    assert asset_hashes("paper", "imagenet") == {}


def test_eval_set_decodes_only_the_drawn_subset(roots, monkeypatch):
    """load_eval_set draws indices from the labels, then decodes just those images (no full split in RAM)."""
    import dataclasses

    from mslib.data import DATASETS, load_eval_set, stratified_indices

    data, labels = write_cifar10(roots, n_test=40)
    seen = []
    real = DATASETS["cifar10"].load

    def spy(split, options):
        seen.append(options.get("indices"))
        return real(split, options)

    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(DATASETS["cifar10"], load=spy))
    x, y, names, idx = load_eval_set(_paper("cifar10", n_samples=10), with_indices=True)
    assert seen and seen[0] is not None and len(seen[0]) == 10
    random.seed(1233)  # the paper profile draws the original code's subset
    assert idx.tolist() == random.sample(range(40), 10)
    strat = _paper("cifar10", n_samples=10, data_options={"image_size": 32})  # the stratified sampler
    assert load_eval_set(strat, with_indices=True)[3].tolist() == stratified_indices(torch.tensor(labels), 10, 0).tolist()
    assert x.shape == (10, 3, 32, 32) and y.tolist() == [labels[i] for i in idx.tolist()]
    first = torch.tensor(data[idx[0]].reshape(3, 32, 32), dtype=torch.float32) / 255
    assert torch.allclose(x[0], first, atol=1e-6)
    assert names == CIFAR_NAMES
