"""Fidelity to the original Multi-Shield code (FrancescoVillani/Multi-Shield): the paper's losses and
sampler, checked against values computed by hand from the original definitions (docs/fidelity.md).

The original (``modified_autopgd_base.py``): ``dlr_loss(x, y) = -(x[y] - x_sorted[-2] * [top is y]
- x_sorted[-1] * [top is not y]) / (x_sorted[-1] - x_sorted[-3] + 1e-12)`` and
``rejection_dlr(z, y) = dlr_loss(z, y) + dlr_loss(z, K)``; a sample counts as robust when its
prediction is y or K. The sampler (``ingredients/dataset.py``): ``random.seed(1233)`` then
``random.sample(range(len(test_set)), n)`` (``range(1, len)`` for Food-101 and Pets).
"""
from __future__ import annotations

import random

import pytest
import torch

from mslib.attacks import ATTACKS, REJECT_AWARE, losses

EPS = 1e-12  # the DLR denominator's guard, as in AutoAttack


def _z(*rows):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=True)


# --------------------------------------------------------------------------------------------- losses
# Four logits, the last (index 3) is the rejection class; y = 1 throughout.
CASES = {
    # y and the rejection class are the two largest: sorted 0.5, 1, 3, 4 -> denominator 4 - 1 = 3
    "cancelling": ([1.0, 3.0, 0.5, 4.0], 1 / 3 - 1 / 3, -(3 - 1) / 3 - (4 - 1) / 3),
    # y on top, rejection last: sorted 1, 2, 4, 5 -> denominator 5 - 2 = 3
    "y_top": ([2.0, 5.0, 4.0, 1.0], -(5 - 4) / 3 - (1 - 5) / 3, -(5 - 4) / 3 - (1 - 4) / 3),
    # another class on top (the attack's goal): sorted 1, 2, 3, 6 -> denominator 6 - 2 = 4
    "broken": ([6.0, 2.0, 1.0, 3.0], -(2 - 6) / 4 - (3 - 6) / 4, -(2 - 6) / 4 - (3 - 6) / 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dlr_reject_losses_match_hand_computed_values(case):
    row, paper, excl = CASES[case]
    z, y = _z(row), torch.tensor([1])
    assert losses.dlr_reject_loss_paper(z, y).item() == pytest.approx(paper, abs=1e-9)
    assert losses.dlr_reject_loss_excl(z, y).item() == pytest.approx(excl, abs=1e-9)


def test_paper_dlr_loss_cancels_when_y_and_reject_are_the_top_two():
    """The loss is exactly 0; its gradient is what the original's two divisions leave: exactly 0 on the first
    row, a rounding residual on the second (2.5 - 2.4 is not exact in float32), which APGD's sign step follows
    as the original code does. Catches the terms summed before one division (the residual would vanish)."""
    z = torch.tensor([[1.0, 3.0, 0.5, 4.0], [0.2, 2.5, -1.0, 2.4]], requires_grad=True)  # float32, as attacked
    y = torch.tensor([1, 1])
    loss = losses.dlr_reject_loss_paper(z, y)
    assert torch.equal(loss, torch.zeros(2))  # exactly zero, not just small
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert torch.equal(grad[0], torch.zeros_like(grad[0]))
    assert 0 < grad[1].abs().max() < 1e-6
    excl = losses.dlr_reject_loss_excl(z, y)
    (grad_excl,) = torch.autograd.grad(excl.sum(), z)
    assert (excl != 0).all() and (grad_excl.abs().sum(dim=1) > 0).all()


def test_paper_dlr_loss_is_the_sum_of_two_plain_autoattack_dlr_terms():
    torch.manual_seed(0)
    z, y = torch.randn(50, 11, dtype=torch.float64), torch.randint(0, 10, (50,))
    u = torch.arange(50)

    def plain_dlr(z, c):  # AutoAttack's APGDAttack.dlr_loss, written out
        zs, ind = z.sort(dim=1)
        top_is_c = (ind[:, -1] == c).double()
        return -(z[u, c] - zs[:, -2] * top_is_c - zs[:, -1] * (1 - top_is_c)) / (zs[:, -1] - zs[:, -3] + EPS)

    expected = plain_dlr(z, y) + plain_dlr(z, torch.full_like(y, 10))
    assert torch.allclose(losses.dlr_reject_loss_paper(z, y), expected, atol=1e-12)
    assert torch.allclose(losses.dlr_loss(z, y), plain_dlr(z, y), atol=1e-12)


def test_ce_reject_loss_and_success_rule_are_the_originals():
    z, y = _z([1.0, 3.0, 0.5, 4.0], [6.0, 2.0, 1.0, 3.0]), torch.tensor([1, 1])
    lse = torch.logsumexp(z, dim=1)
    expected = (lse - z[:, 1]) + (lse - z[:, 3])  # CE(z, y) + CE(z, K)
    assert torch.allclose(losses.ce_reject_loss(z, y), expected)
    # robust (not a success) when the prediction is y or K: row 0 predicts K, row 1 predicts class 0
    assert losses.misclassified_not_rejected(z, y).tolist() == [False, True]


def test_attack_names_say_which_dlr_loss():
    assert ATTACKS["apgd-dlr-reject"].__doc__.startswith("APGD maximizing dlr_reject_loss_paper")
    assert ATTACKS["apgd-dlr-reject-excl"].__doc__.startswith("APGD maximizing dlr_reject_loss_excl")
    assert {"apgd-ce-reject", "apgd-dlr-reject", "apgd-dlr-reject-excl"} <= REJECT_AWARE
    assert not hasattr(losses, "dlr_reject_loss")  # no name shared by the two meanings


# -------------------------------------------------------------------------------------------- sampler
def _by_hand(n_total, n, start=0):
    random.seed(1233)  # ingredients/dataset.py: set_seed(1233) in get_dataset_loaders, then random.sample
    return random.sample(range(start, n_total), n)


@pytest.mark.parametrize("dataset,n_total,start", [("cifar10", 10000, 0), ("imagenet", 50000, 0),
                                                   ("stl10", 8000, 0), ("food101", 25250, 1),
                                                   ("oxford_pets", 3669, 1)])
def test_original_sampler_reproduces_the_original_random_calls(dataset, n_total, start):
    from mslib.data import eval_indices

    labels = torch.zeros(n_total, dtype=torch.long)
    state = random.getstate()
    idx = eval_indices(dataset, labels, 7, seed=0, options={"sampler": "original"})
    assert random.getstate() == state  # a private generator: the global one is left alone
    assert idx.tolist() == _by_hand(n_total, 7, start)  # in the order drawn, not sorted
    assert eval_indices(dataset, labels, 7, 0, {"sampler": "original", "sample_start": 0}).tolist() == _by_hand(n_total, 7)


def test_caltech_original_sampler_is_the_first_n_of_the_split_and_the_split_is_the_originals(tmp_path, monkeypatch):
    from mslib import paper_data as pdata
    from mslib.data import eval_indices
    from mslib.standins import write_caltech101

    assert eval_indices("caltech101", torch.zeros(30, dtype=torch.long), 4, 0, {"sampler": "original"}).tolist() == [0, 1, 2, 3]
    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    monkeypatch.delenv("MSLIB_PAPER_DATA", raising=False)
    write_caltech101(tmp_path, ("Faces", "accordion", "car_side"), per_class=5)  # 15 images, file order = category order then image number
    opts = pdata._options(pdata.CALTECH101, "test", {"split_seed": 1233, "test_fraction": 0.2, "split_rule": "original"})
    test_paths, _, _ = pdata._caltech101_items("test", opts)
    train_paths, _, _ = pdata._caltech101_items("train", {**opts})
    all_paths = sorted(p for p in (tmp_path / "datasets" / "caltech101" / "101_ObjectCategories").rglob("*.jpg")
                       if p.parent.name != "BACKGROUND_Google")
    torch.manual_seed(1233)  # create_caltech101_split.ipynb: set_seed(1233); torch.randperm(len(dataset))
    perm = torch.randperm(15).tolist()
    assert train_paths == [all_paths[i] for i in perm[:12]] and test_paths == [all_paths[i] for i in perm[12:]]
    names = pdata._caltech101_items("test", {**opts, "class_names": "original"})[2]
    assert names == ["Faces", "accordion", "car_side"]  # the raw folder names the original prompts with
    assert pdata._caltech101_items("test", opts)[2] == ["face", "accordion", "side of a car"]


def test_stratified_stays_the_default_and_the_paper_profile_uses_the_original_sampler():
    from mslib.data import eval_indices, stratified_indices
    from mslib.profiles import PROFILES, get_profile

    labels = torch.arange(100) % 10
    assert torch.equal(eval_indices("fashion_mnist", labels, 20, 3, {}), stratified_indices(labels, 20, 3))
    for name in ("smoke", "tiny"):
        for ds in PROFILES[name]["datasets"]:
            assert get_profile(name, ds).data_options.get("sampler", "stratified") == "stratified"
    for ds in PROFILES["paper"]["datasets"]:
        p = get_profile("paper", ds)
        assert p.data_options["sampler"] == "original" and p.data_options["class_names"] == "original"
        assert p.templates == (("this is a photo of a {}",) if ds == "cifar10" else ("photo of  a {}",))
    assert get_profile("paper", "caltech101").data_options["split_rule"] == "original"
    with pytest.raises(ValueError, match="sampler"):
        eval_indices("cifar10", labels, 5, 0, {"sampler": "random"})


# ------------------------------------------------------------------------------------ text embeddings
def test_original_text_norm_is_the_original_clip_code():
    from mslib.models.zeroshot import build_text_embeddings

    raw = torch.tensor([[3.0, 0.0, 4.0], [1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])  # rows of different norms

    class Fake:
        def encode_text(self, tokens):
            return raw[tokens]

    def tok(texts):
        return torch.tensor([int(t) for t in texts])

    emb = build_text_embeddings(Fake(), tok, ["0", "1", "2"], ["{}"], text_norm="original")
    # models/CLIP.py: label_emb = get_text_features(...); label_emb /= torch.norm(label_emb, dim=0); then
    # cosine_similarity normalizes each row (F.normalize(b, p=2, dim=1))
    expected = raw / torch.norm(raw, dim=0)
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert torch.allclose(emb, expected, atol=1e-6)
    standard = build_text_embeddings(Fake(), tok, ["0", "1", "2"], ["{}"], text_norm="standard")
    assert torch.allclose(standard, raw / raw.norm(dim=1, keepdim=True), atol=1e-6)
    assert not torch.allclose(emb, standard, atol=1e-3)
