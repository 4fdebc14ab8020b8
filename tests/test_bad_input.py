"""Bad input at every public entry point is refused with an error that names the argument, never answered
with a silently wrong result: attacks, Multi-Shield, profiles and the Fashion-MNIST files.

Models here are tiny and untrained (the checks do not care how good a model is), so the module runs in
seconds. Archive extraction, interrupted fetches, checkpoint hashes and the CLIs: tests/test_fetch_safety.py.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mslib
from mslib import MultiShield, data, get_profile
from mslib.attacks import run_attack


def _clf(with_num_classes: bool = True) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
    if with_num_classes:
        m.num_classes = 4
    return m


def _vlm() -> nn.Module:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.Tanh()).eval()
    m.num_classes = 4
    return m


class Const(nn.Module):
    """Returns ``value`` for every sample and class (e.g. NaN), keeping the graph to ``x``."""

    def __init__(self, value: float, k: int = 4) -> None:
        super().__init__()
        self.value, self.num_classes = value, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], self.num_classes), self.value) + 0 * x.sum()


@pytest.fixture()
def xy():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 4, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])


def _attack(model, x, y, name="apgd-ce", eps=0.1, **kw):
    return run_attack(model, x, y, name, eps, n_iter=2, **kw)


# --------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("with_num_classes", [True, False])  # K from num_classes, or from one forward pass
def test_labels_outside_the_models_classes_are_refused(xy, with_num_classes):
    x, y = xy
    model = _clf(with_num_classes)
    for bad in (y + 4, y - 1):
        with pytest.raises(ValueError, match=r"labels must lie in 0\.\.3"):
            _attack(model, x, bad)


def test_label_of_the_reject_class_is_refused_for_multishield(xy):
    x, y = xy
    ms = MultiShield(_clf(), _vlm())
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.3"):
        _attack(ms, x, y.clone().fill_(4), "apgd-ce-reject")


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32])
def test_any_integer_label_dtype_is_cast_to_int64(xy, dtype):
    x, y = xy
    ref = _attack(_clf(), x, y)
    res = _attack(_clf(), x, y.to(dtype))
    assert torch.equal(res.x_adv, ref.x_adv) and torch.equal(res.success, ref.success)


@pytest.mark.parametrize("labels", [lambda y: y.float(), lambda y: y.bool(), lambda y: y.tolist()])
def test_float_bool_and_non_tensor_labels_are_type_errors(xy, labels):
    x, y = xy
    with pytest.raises(TypeError, match="labels"):
        _attack(_clf(), x, labels(y))


def test_label_shape_must_match_the_batch(xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\)"):
        _attack(_clf(), x, y[:, None])


# ----------------------------------------------------------------------------------- rejecting models
@pytest.mark.parametrize("name", sorted(mslib.attacks.REJECT_AWARE))
def test_reject_aware_attack_needs_a_rejecting_model(xy, name):
    x, y = xy
    with pytest.raises(ValueError, match=r"needs a rejecting model \(K\+1 logits, last = reject\): model must"):
        mslib.attack(_clf(), x, y, name, 0.1, n_iter=2)


def test_models_say_whether_they_reject(xy):
    x, y = xy
    assert MultiShield.rejects is True and not hasattr(_clf(), "rejects")

    class Pretends(nn.Module):  # declares rejects but is not a Multi-Shield: the agreement attack still refuses
        rejects = True

        def forward(self, x):
            return torch.zeros(x.shape[0], 5) + 0 * x.sum()

    with pytest.raises(TypeError, match="Multi-Shield"):
        mslib.attack(Pretends(), x, y, "agreement", 0.1, n_iter=2)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        mslib.attack(lambda t: t, x, y, "apgd-ce", 0.1)


# ------------------------------------------------------------------------------------------------ eps
@pytest.mark.parametrize("eps, err, match", [
    (8, ValueError, r"eps must be < 1 .*8/255 = 0\.0313725"),
    (1.0, ValueError, "eps must be < 1"),
    (float("nan"), ValueError, "eps must be a finite number > 0"),
    (float("inf"), ValueError, "eps must be a finite number > 0"),
    (0.0, ValueError, "eps must be a finite number > 0"),
    (True, TypeError, "eps must be a number"),
    ("8/255", TypeError, "eps must be a number"),
])
def test_eps_out_of_image_units_is_refused(xy, eps, err, match):
    x, y = xy
    with pytest.raises(err, match=match):
        _attack(_clf(), x, y, eps=eps)


# --------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("images, err, match", [
    (lambda x: x * 255, ValueError, r"images must lie in \[0, 1\].*scale to \[0, 1\], e\.g\. x / 255"),
    (lambda x: x * 1.2 - 0.1, ValueError, r"images must lie in \[0, 1\], got range"),
    (lambda x: x.masked_fill(x > 0.5, float("nan")), ValueError, "images contains NaN"),
    (lambda x: x.masked_fill(x > 0.5, float("inf")), ValueError, "images contains infinite"),
    (lambda x: x[:0], ValueError, "images is empty"),
    (lambda x: (x * 255).to(torch.uint8), TypeError, r"images must be a float tensor.*x\.float\(\) / 255"),
    (lambda x: x.numpy(), TypeError, "images must be a torch.Tensor"),
    (lambda x: x[0], ValueError, "images must have rank 4"),
    (lambda x: x.repeat(1, 2, 1, 1), ValueError, "images must have 1 or 3 channels"),
])
def test_bad_images_are_refused(xy, images, err, match):
    x, y = xy
    bad = images(x)
    labels = y[:0] if isinstance(bad, torch.Tensor) and bad.dim() == 4 and bad.shape[0] == 0 else y
    with pytest.raises(err, match=match):
        _attack(_clf(), bad, labels)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_images_are_cast_to_float32(xy, dtype):
    x, y = xy
    x = x.to(dtype)
    res = _attack(_clf(), x, y)
    ref = _attack(_clf(), x.float(), y)
    assert res.x_adv.dtype == torch.float32 and torch.equal(res.x_adv, ref.x_adv)


@pytest.mark.parametrize("kw, err, match", [
    ({"n_iter": 0}, ValueError, "n_iter must be an integer >= 1"),
    ({"n_iter": 2.5}, TypeError, "n_iter must be an integer"),
    ({"n_restarts": 0}, ValueError, "n_restarts"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
    ({"indices": torch.arange(5)}, ValueError, r"indices must have shape \(6,\)"),
])
def test_bad_attack_settings_are_refused(xy, kw, err, match):
    x, y = xy
    with pytest.raises(err, match=match):
        run_attack(_clf(), x, y, "apgd-ce", 0.1, **{"n_iter": 2, **kw})


def test_unknown_attack_lists_the_known_ones(xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"unknown attack 'fgsm'.*apgd-ce"):
        mslib.attack(_clf(), x, y, "fgsm", 0.1)


# --------------------------------------------------------------------------------------- Multi-Shield
@pytest.mark.parametrize("tol, err", [(float("nan"), ValueError), (float("inf"), ValueError), (-1e-3, ValueError),
                                      ("0.01", TypeError), (True, TypeError), (None, TypeError)])
def test_multishield_tolerance_must_be_finite_and_non_negative(tol, err):
    with pytest.raises(err, match="tolerance"):
        MultiShield(_clf(), _vlm(), tolerance=tol)
    ms = MultiShield(_clf(), _vlm())
    with pytest.raises(err, match="tolerance"):
        ms.tolerance = tol
    assert ms.tolerance == 1e-3


def test_multishield_branches_must_be_modules():
    with pytest.raises(TypeError, match="vlm must be a torch.nn.Module"):
        MultiShield(_clf(), "clip")


@pytest.mark.parametrize("images, match", [
    (lambda x: x * 255, r"x must lie in \[0, 1\].*x / 255"),
    (lambda x: x.masked_fill(x > 0.5, float("nan")), "x contains NaN"),
    (lambda x: x[0], r"x must be a tensor of shape \(N, C, H, W\)"),
])
def test_multishield_refuses_bad_images_in_forward_and_predict(xy, images, match):
    x, _ = xy
    ms = MultiShield(_clf(), _vlm())
    for call in (ms, ms.predict):
        with pytest.raises(ValueError, match=match):
            call(images(x))


@pytest.mark.parametrize("branch, which", [("vlm", "VLM branch"), ("classifier", "classifier branch")])
def test_nan_branch_output_is_an_error_in_forward_and_predict_alike(xy, branch, which):
    x, _ = xy
    parts = {"classifier": _clf(), "vlm": _vlm(), branch: Const(float("nan"))}
    ms = MultiShield(parts["classifier"], parts["vlm"])
    for call in (ms, ms.predict):
        with pytest.raises(ValueError, match=f"the {which} of MultiShield returned non-finite"):
            call(x)


def test_multishield_checks_keep_gradients(xy):
    x, _ = xy
    ms = MultiShield(_clf(), _vlm())
    x = x.clone().requires_grad_(True)
    ms(x)[:, -1].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- profiles
@pytest.mark.parametrize("override, err, match", [
    ({"batch_size": 0}, ValueError, "profile batch_size must be an integer >= 1"),
    ({"n_samples": -5}, ValueError, "profile n_samples"),
    ({"n_samples": 10.0}, TypeError, "profile n_samples must be an integer"),
    ({"n_iter": 0}, ValueError, "profile n_iter"),
    ({"n_restarts": 0}, ValueError, "profile n_restarts"),
    ({"seed": -1}, ValueError, "profile seed"),
    ({"seed": True}, TypeError, "profile seed"),
    ({"device": "gpu"}, ValueError, r"profile device must be 'cpu', 'cuda', 'cuda:<index>' or 'mps'"),
    ({"device": "cuda:x"}, ValueError, "profile device"),
    ({"device": 0}, TypeError, "profile device"),
    ({"eps": 8}, ValueError, r"profile eps must be < 1.*8/255"),
    ({"eps": float("nan")}, ValueError, "profile eps"),
    ({"eps": 0}, ValueError, "profile eps"),
    ({"eps_grid": (0.0, 8.0)}, ValueError, r"profile eps_grid values must be finite and in \[0, 1\)"),
    ({"eps_grid": (0.0, float("nan"))}, ValueError, "profile eps_grid"),
    ({"eps_grid": 0.1}, TypeError, "profile eps_grid must be a tuple"),
    ({"tolerance": float("nan")}, ValueError, "profile tolerance must be a finite number >= 0"),
    ({"tolerance": -1.0}, ValueError, "profile tolerance"),
    ({"tolerance_grid": (0.0, float("inf"))}, ValueError, "profile tolerance_grid"),
    ({"tolerance_grid": (-0.1,)}, ValueError, "profile tolerance_grid"),
    ({"precision": "fp16"}, ValueError, "profile precision must be one of"),
    ({"channels_last": "yes"}, TypeError, "profile channels_last"),
    ({"templates": ("a photo",)}, ValueError, r"profile templates .*'\{\}'"),
    ({"classifiers": ("standard", "nope")}, ValueError, r"profile classifiers \['nope'\] have no spec"),
    ({"data_options": None}, TypeError, "profile data_options must be a dict"),
    ({"dataset": "cifar10"}, ValueError, "dataset 'cifar10'"),
    ({"n_sample": 10}, ValueError, r"unknown profile fields: \['n_sample'\]"),
    ({"extra": {"agreement_targets": 2}}, ValueError, r"unknown profile fields: \['extra'\]"),  # now typed fields
    ({"agreement_targets": 0}, ValueError, "profile agreement_targets must be an integer >= 1, got 0"),
    ({"selective_iters": -1}, ValueError, "profile selective_iters must be an integer >= 0"),
    ({"agreement_iters": 2.5}, TypeError, "profile agreement_iters must be an integer"),
    ({"results_of": "tinyy"}, ValueError, r"profile results_of must be '' or the name of a profile"),
    ({"vlm_variants": {"fare": "lit"}}, TypeError, "profile vlm_variants must map names to VLM spec dicts"),
    ({"vlm_variants": {"lit-vit-xs": {}}}, ValueError, "'lit-vit-xs' is the name of the profile's own VLM"),
])
def test_profile_fields_are_checked_where_a_profile_is_made(override, err, match):
    with pytest.raises(err, match=match):
        get_profile("smoke", **override)
    with pytest.raises(err, match=match):
        get_profile("smoke").replace(**override)


def test_profile_accepts_free_form_dicts_and_valid_values():
    p = get_profile("smoke", device="cuda:0", precision="bf16", eps=8 / 255, tolerance=0,
                    data_options={"sampler": "original", "anything": [1, 2]}, results_of="tiny", agreement_iters=0,
                    vlm_spec={**get_profile("smoke").vlm_spec, "new_key": 3})
    assert p.data_options["sampler"] == "original" and p.vlm_spec["new_key"] == 3
    for name in mslib.profiles.profile_names():
        for ds in mslib.profiles.PROFILES[name]["datasets"]:
            get_profile(name, ds)  # every shipped profile passes its own checks


# -------------------------------------------------------------------------------- Fashion-MNIST files
def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape) + arr.tobytes()


def _write(folder: Path, images: bytes, labels: bytes, gz: bool = True) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    img_stem, lab_stem = data.FASHION_MNIST_FILES["test"]
    out = []
    for stem, payload in ((img_stem, images), (lab_stem, labels)):
        p = folder / (stem + (".gz" if gz else ""))
        p.write_bytes(gzip.compress(payload) if gz else payload)
        out.append(p)
    return out[0], out[1]


@pytest.fixture()
def env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MSLIB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    return tmp_path / "env"


GOOD_IMAGES = _idx(np.zeros((3, 28, 28), np.uint8))
GOOD_LABELS = _idx(np.array([0, 1, 9], np.uint8))


def test_good_stand_in_files_load(env_dir):
    _write(env_dir, GOOD_IMAGES, GOOD_LABELS)
    x, y, _ = data.load_fashion_mnist("test")
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [0, 1, 9]


@pytest.mark.parametrize("case, which, match", [
    ("not gzip", "images", "cannot be read as a gzip-compressed idx file"),
    ("truncated gzip", "images", "damaged or truncated"),
    ("truncated payload", "images", r"expected 2352 values .* found 2000"),
    ("short header", "labels", "idx header declares 1 dimensions"),
    ("labels >= 10", "labels", r"labels must lie in 0\.\.9, found 12"),
    ("32x32 images", "images", r"shape \(N, 28, 28\), got \(3, 32, 32\)"),
    ("count mismatch", "images", "holds 3 images but"),
])
def test_damaged_fashion_mnist_files_fail_naming_the_file(env_dir, case, which, match):
    images, labels, raw = GOOD_IMAGES, GOOD_LABELS, {}
    if case == "not gzip":
        raw["images"] = b"<html>this is not gzip</html>"
    elif case == "truncated gzip":
        raw["images"] = gzip.compress(GOOD_IMAGES)[:-12]  # the stream cut before its end
    elif case == "truncated payload":
        images = GOOD_IMAGES[:16 + 2000]
    elif case == "short header":
        labels = bytes([0, 0, 0x08, 1, 0])
    elif case == "labels >= 10":
        labels = _idx(np.array([0, 12, 3], np.uint8))
    elif case == "32x32 images":
        images = _idx(np.zeros((3, 32, 32), np.uint8))
    elif case == "count mismatch":
        labels = _idx(np.array([0, 1], np.uint8))
    img, lab = _write(env_dir, images, labels)
    for key, path in (("images", img), ("labels", lab)):
        if key in raw:
            path.write_bytes(raw[key])
    with pytest.raises(ValueError, match=match) as err:
        data.load_fashion_mnist("test", {"download": False})
    assert str(img if which == "images" else lab) in str(err.value)


def test_half_a_pair_does_not_fall_through_to_another_copy(env_dir, tmp_path):
    img, lab = _write(env_dir, GOOD_IMAGES, GOOD_LABELS)
    _write(tmp_path / "cache" / "fashion_mnist", GOOD_IMAGES, GOOD_LABELS)  # a second, complete copy
    lab.unlink()
    with pytest.raises(FileNotFoundError, match=f"found {img} but not its partner t10k-labels-idx1-ubyte"):
        data.load_fashion_mnist("test", {"download": False})


# ---- `--set FIELD=VALUE` (make results SET=...): a malformed literal is an error, never a silent string ----
@pytest.mark.parametrize("item, expected", [
    ("device=cpu", {"device": "cpu"}), ("n_samples=4", {"n_samples": 4}), ("vlm=lit-vit-s", {"vlm": "lit-vit-s"}),
    ("datasets=('cifar10','food101')", {"datasets": ("cifar10", "food101")}),
    ("eps_grid=[0.0,0.0157]", {"eps_grid": (0.0, 0.0157)}),
    ('vlm_variants={"fare":{"source":"lit-fare"}}', {"vlm_variants": {"fare": {"source": "lit-fare"}}}),
])
def test_set_overrides_parse_literals_and_bare_words(item, expected):
    from mslib.experiment import parse_overrides

    assert parse_overrides([item]) == expected


@pytest.mark.parametrize("item, match", [
    ("vlm_variants={fare:{}}", "neither a Python literal"),  # what a shell that ate the quotes passes
    ("datasets=(cifar10,food101)", "neither a Python literal"),
    ("eps_grid=(0.0,4/255)", "neither a Python literal"),
    ("n_sample=4", "unknown profile field"), ("n_samples", "key=value"),
])
def test_set_overrides_refuse_malformed_values(item, match):
    from mslib.experiment import main, parse_overrides

    with pytest.raises(ValueError, match=match):
        parse_overrides([item])
    assert main(["--profile", "smoke", "--set", item]) == 2  # one line on stderr, exit 2, nothing computed


# ---- the rest of the public surface: each bad input refused at the boundary with one clear line ------------
class Returns(nn.Module):
    """A model whose forward returns ``wrap(scores)``: a tuple, a dict or a tensor of the wrong shape."""

    def __init__(self, wrap, k: int = 4) -> None:
        super().__init__()
        self.lin, self.wrap, self.num_classes = nn.Linear(16, k), wrap, k

    def forward(self, x):
        return self.wrap(self.lin(x.flatten(1)))


@pytest.mark.parametrize("wrap, err, match", [
    (lambda s: (s, s), TypeError, r"must return one tensor of scores \(N, K\), got tuple"),
    (lambda s: {"scores": s}, TypeError, "must return one tensor of scores .*got dict"),
    (lambda s: s[:, 0], ValueError, r"must return scores of shape \(6, K\), one row per image, got \(6,\)"),
    (lambda s: s[:, :, None], ValueError, r"must return scores of shape \(6, K\).*got \(6, 4, 1\)"),
    (lambda s: s[:1], ValueError, r"must return scores of shape \(6, K\).*got \(1, 4\)"),
])
def test_malformed_model_outputs_are_named_not_crashed_on(xy, wrap, err, match):
    """Catches: a VLM (or classifier) returning a tuple, a dict or scores of the wrong rank reaching
    ``.detach()``/``.max(dim=1)`` inside the checks (an AttributeError or a silently broadcast decision)."""
    from mslib.defense import ConfidenceRejector

    x, _ = xy
    for ms, which in ((MultiShield(_clf(), Returns(wrap)), "the VLM branch of MultiShield"),
                      (MultiShield(Returns(wrap), _vlm()), "the classifier branch of MultiShield"),
                      (ConfidenceRejector(Returns(wrap), 0.5), "the classifier of ConfidenceRejector")):
        for call in (ms, ms.predict):
            with pytest.raises(err, match=f"{which} {match}"):
                call(x)


def test_confidence_threshold_above_one_is_refused_but_the_all_reject_cut_is_not():
    """Catches: ``ConfidenceRejector(clf, 1.5)`` accepted (it rejects every input, a defense that says
    nothing), and a bound so tight that the cut which rejects saturated confidences is refused."""
    from mslib.defense import MAX_THRESHOLD, ConfidenceRejector, confidence_decide, threshold_for_rejections

    for thr in (1.5, 2, MAX_THRESHOLD * 1.0001):
        with pytest.raises(ValueError, match=r"threshold must be a probability in \[0, 1\]"):
            ConfidenceRejector(_clf(), thr)
    f = torch.tensor([[100.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0]])  # p_max rounds to 1
    thr = threshold_for_rejections(f, 2)
    assert 1 < thr <= MAX_THRESHOLD and (confidence_decide(f, thr) == 4).all()
    assert ConfidenceRejector(_clf(), thr).threshold == thr and ConfidenceRejector(_clf(), 1.0).threshold == 1.0


@pytest.mark.parametrize("name", sorted(set(mslib.attacks.ATTACKS) - mslib.attacks.REJECT_AWARE))
def test_plain_attack_on_a_rejecting_model_is_refused(xy, name):
    """Catches: ``square`` (or APGD-CE) run on Multi-Shield, counting a rejection as a break (the issue's
    36/64 "successes" of which 16 were wrong-and-accepted)."""
    from mslib.defense import ConfidenceRejector

    x, y = xy
    for model in (MultiShield(_clf(), _vlm()), ConfidenceRejector(_clf(), 0.5)):
        with pytest.raises(ValueError, match=f"attack '{name}' counts a rejection as a success.*square-reject"):
            mslib.attack(model, x, y, name, 0.1, n_iter=2)


def test_the_reject_option_cannot_turn_a_plain_attack_rejection_aware(xy):
    """Catches: ``square`` with ``reject=True`` on a plain classifier, reading class K−1 as "rejected"
    and slipping past the rejecting-model check that the attack's name triggers."""
    x, y = xy
    for model, name in ((_clf(), "square"), (MultiShield(_clf(), _vlm()), "square-reject")):
        with pytest.raises(ValueError, match="no option 'reject': choose the rejection-aware attack by name"):
            mslib.attack(model, x, y, name, 0.1, n_iter=2, reject=True)


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: ") and "Traceback" not in err[0], err
    return err[0]


def test_standins_cli_refuses_a_file_an_uncreatable_folder_and_unknown_names(tmp_path, capsys):
    """Catches: ``python -m mslib.standins`` on a regular file, an uncreatable path or ``--datasets nope``
    dying with a traceback (NotADirectoryError from mkdir, a bare ValueError) or writing half a root."""
    from mslib.standins import main

    f = tmp_path / "a-file"
    f.write_text("not a folder")
    cases = [([str(f)], "is a file, not a folder"), ([str(f / "sub")], "cannot be created"),
             ([str(tmp_path / "r"), "--datasets", "nope"], r"no stand-in for datasets \['nope'\]"),
             ([str(tmp_path / "r"), "--profile", "nope"], "unknown profile 'nope'")]
    for argv, match in cases:
        assert main(argv) == 2, argv
        assert re.search(match, _one_error_line(capsys, "python -m mslib.standins")), argv
    assert not (tmp_path / "r").exists()  # refused before anything was written
    assert f.read_text() == "not a folder"


def test_standins_cli_refuses_a_folder_it_cannot_write_into(tmp_path, capsys, monkeypatch):
    """Catches: a read-only data root accepted, the run then dying with a PermissionError traceback from the
    first file written (after the profile and datasets were checked)."""
    import os

    from mslib.datasets import DatasetSpec
    from mslib.standins import main

    locked = tmp_path / "read-only"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes anywhere: show the checks and the writer what another user would meet
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real(p, mode, **kw))

    def denied(self, root):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(DatasetSpec, "write_standin", denied)
    assert main([str(locked), "--datasets", "cifar10"]) == 2
    assert "is not writable" in _one_error_line(capsys, "python -m mslib.standins")
    assert not any(locked.iterdir())


def test_fetch_record_refuses_a_file_outside_the_data_root(tmp_path, capsys, no_paper_env):
    """Catches: ``fetch --record`` of a file no loader reads (outside the data root) recorded under its
    absolute path and marked complete."""
    from mslib import fetch
    from mslib.cache import data_root_at

    root, outside = tmp_path / "data", tmp_path / "elsewhere.pt"
    root.mkdir()
    outside.write_bytes(b"weights")
    inside = root / "models" / "mine.pt"
    inside.parent.mkdir()
    inside.write_bytes(b"weights")
    with data_root_at(root):
        assert fetch.main(["--record", str(inside), str(outside)]) == 2  # all checked before any is recorded
        assert "outside the data root" in _one_error_line(capsys, "python -m mslib.fetch")
        assert not (root / "manifest.json").exists() and not fetch.is_complete(outside)
        assert fetch.main(["--record", str(inside)]) == 0 and fetch.is_complete(inside)


@pytest.mark.parametrize("item, match", [("name=paper", "the profile is chosen with --profile"),
                                         ("dataset=cifar10", "choose them with --set datasets")])
def test_set_refuses_the_profiles_identity(item, match, capsys):
    """Catches: ``--set name=paper`` refused with Python's internal "got multiple values for argument 'name'"
    (or, worse, accepted and run under another profile's name)."""
    from mslib.experiment import main, parse_overrides

    with pytest.raises(ValueError, match=match):
        parse_overrides([item])
    assert main(["--profile", "smoke", "--set", item]) == 2
    err = capsys.readouterr().err
    assert match.split()[-1] in err and "multiple values" not in err


def test_store_names_an_unknown_profile(tmp_path):
    """Catches: ``Store("no-such-profile")`` saying "no results" (as if a run would fix it)."""
    from mslib.store import ResultsNotReadyError, Store

    with pytest.raises(ValueError, match=r"unknown profile 'no-such-profile'; choose one of \[.*'smoke'"):
        Store("no-such-profile", root=tmp_path)
    with pytest.raises(ResultsNotReadyError, match="no results for profile 'smoke'"):  # a known one: not computed
        Store("smoke", root=tmp_path)
