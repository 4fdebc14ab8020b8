"""Work that cannot change a result is not done: a finished study reruns without loading a model or reading
an image, model identities come from the checkpoint files alone, class prompts are encoded in batches, and
Multi-Shield's VLM backward pass is left out where it can only add zeros."""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mslib.cache
import mslib.models
from mslib.attacks import frozen, losses
from mslib.attacks.apgd import apgd
from mslib.cache import data_root_at
from mslib.defense import MultiShield
from mslib.experiment import run_study

from results_helpers import OVERRIDES, study_copy


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` (through the linked model folders) -> (mtime in ns, SHA-256)."""
    out = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        out[str(f.relative_to(root))] = (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
    for link in (p for p in root.iterdir() if p.is_symlink() and p.is_dir()):
        out |= {f"{link.name}/{k}": v for k, v in _snapshot(link.resolve()).items()}
    return out


def test_a_finished_study_reruns_without_loading_a_model_reading_an_image_or_writing(smoke_study, tmp_path,
                                                                                      monkeypatch):
    cache = study_copy(smoke_study, tmp_path / "cache")
    loads, reads = [], []
    real_load, real_read = mslib.models._load, mslib.cache._verified_bytes
    monkeypatch.setattr(mslib.models, "_load", lambda *a, **k: loads.append(a[2]) or real_load(*a, **k))
    monkeypatch.setattr(mslib.cache, "_verified_bytes", lambda p: reads.append(Path(p).name) or real_read(p))
    before = _snapshot(cache)
    with data_root_at(cache):
        summary = run_study("smoke", progress=False, overrides=OVERRIDES)
    assert summary.done and summary.computed == 0 and summary.recomputed == 0 and summary.reused > 0
    assert loads == []  # every identity came from the checkpoint files
    assert reads and not [n for n in reads if n.endswith(".x.pt")]  # outputs verified, images only by header
    assert _snapshot(cache) == before  # not a byte written, not a file touched


def test_located_identities_are_the_loaded_models_identities(smoke_models, tmp_path):
    from mslib.models import classifier_identity, load_classifier, load_vlm, vlm_identity

    p = smoke_models  # trained in the repository's cache
    for name in p.classifiers:
        located = classifier_identity(p, name)
        assert located is not None and located == load_classifier(p, name).identity
    located = vlm_identity(p)
    assert located is not None and located == load_vlm(p).identity
    empty = tmp_path / "empty"
    empty.mkdir()
    with data_root_at(empty):  # nothing trained here: no identity, and locating writes nothing
        assert classifier_identity(p, p.classifiers[0]) is None and vlm_identity(p) is None
    assert list(empty.iterdir()) == []


def test_located_identities_of_the_released_tiny_models_are_the_loaded_ones():
    """Catches a locator that looks in the cache where the loader uses a released file (or names the files in
    another order): a no-op run would then key every job by another identity than the one that computed it."""
    import mslib
    from mslib.models import classifier_identity, vlm_identity

    tiny = mslib.get_profile("tiny")
    for name in tiny.classifiers:
        assert classifier_identity(tiny, name) == mslib.load_classifier(tiny, name).identity, name
    assert vlm_identity(tiny) == mslib.load_vlm(tiny).identity


class _Plain(torch.nn.Module):
    """Multi-Shield seen only through ``forward``: the attack's generic autograd path."""

    rejects = True

    def __init__(self, ms: MultiShield) -> None:
        super().__init__()
        self.ms = ms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ms(x)


@pytest.mark.parametrize("loss", [losses.dlr_reject_loss_paper, losses.ce_reject_loss], ids=["paper-dlr", "ce"])
def test_leaving_out_the_idle_vlm_backward_returns_the_same_bytes(loss, smoke_models):
    """Catches a skipped VLM backward pass whose gradient was not exactly zero (x_adv moves elsewhere), a split
    of the two branches' gradients that sums them differently from autograd, a VLM backward on the rows that
    need it alone that puts their gradients on other rows, and counters that do not add up."""
    from mslib.data import load_eval_set
    from mslib.models import load_classifier, load_vlm

    p = smoke_models
    x, y, _ = load_eval_set(p)  # real Fashion-MNIST test images, the smoke LiT (a ViT) and both CNNs
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    vlm, skipped, alone = load_vlm(p), 0, 0
    # the whole set as one batch gives mixed batches (idle rows beside rows that need the VLM); one image per
    # batch makes every idle row a whole batch, so the skip itself runs on any machine's trajectories
    batches = [torch.arange(len(y))] + [torch.tensor([i]) for i in range(len(y))]
    for name in p.classifiers:
        ms = MultiShield(load_classifier(p, name), vlm, p.tolerance).eval()
        for rows in batches:
            with frozen(ms):
                runs = [apgd(m, x[rows], y[rows], 0.1, loss, losses.misclassified_not_rejected, noise[rows],
                             n_iter=10, **kw)
                        for m, kw in ((_Plain(ms), {}), (ms, {"skip_idle_branches": False}), (ms, {}))]
            plain, full, skip = runs
            for r in (full, skip):
                assert torch.equal(r.x_adv, plain.x_adv) and torch.equal(r.success, plain.success)
                assert torch.equal(r.loss_best, plain.loss_best) and r.success_curve == plain.success_curve
                assert r.n_backward == plain.n_backward  # the same samples and steps (the VLM's share aside)
            assert plain.n_branch_skipped == plain.n_branch_idle == 0 and full.n_branch_skipped == 0
            assert plain.n_branch_recomputed == full.n_branch_recomputed == 0
            # every row the skip left out was a row the full run computed with a zero output gradient, and every
            # row it ran alone was one with a nonzero output gradient
            assert full.n_branch_idle == skip.n_branch_idle + skip.n_branch_skipped
            assert skip.n_branch_recomputed <= skip.n_backward - full.n_branch_idle
            skipped, alone = skipped + skip.n_branch_skipped, alone + skip.n_branch_recomputed
    # both kinds of skip occurred: whole batches left out, and mixed batches whose few rows that need the VLM's
    # backward pass had it alone (whether a mixed batch where most rows need it occurs depends on the machine)
    assert skipped > 0 and alone > 0


def test_the_vlm_backward_runs_on_the_rows_that_need_it_alone_only_where_they_are_at_most_half(smoke_models):
    """Catches a VLM gradient put on other rows (or on idle ones), counters that miscount the rows run alone,
    and a subset pass where most rows need the VLM (it would cost more than the whole batch's pass)."""
    from mslib.data import load_eval_set
    from mslib.defense import SUBSET_SHARE
    from mslib.models import load_classifier, load_vlm

    p = smoke_models
    x, y, _ = load_eval_set(p)
    # the test images and noisy copies of them, on which the two models disagree more often
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    x, y = torch.cat([x, (x + 0.3 * noise).clamp(0, 1)]), torch.cat([y, y])
    ms = MultiShield(load_classifier(p, p.classifiers[0]), load_vlm(p), p.tolerance).eval()
    with frozen(ms), torch.no_grad():
        f, s = ms.branches(x)
    # dloss/ds is exactly zero where the two top classes coincide, nonzero (here) where they differ
    agrees = f.argmax(1) == s.argmax(1)
    agree, differ = agrees.nonzero().squeeze(1), (~agrees).nonzero().squeeze(1)
    assert len(agree) >= 4 and len(differ) >= 4
    few = torch.cat([agree[:3], differ[:1], agree[3:4], differ[1:2]])  # 2 of 6 rows need the VLM's backward pass
    most = torch.cat([agree[:1], differ[:4]])  # 4 of 5 do
    assert 2 <= SUBSET_SHARE * 6 and 4 > SUBSET_SHARE * 5
    for rows, alone in ((few, 2), (most, 0)):
        with frozen(ms):
            full = ms.loss_and_grad(x[rows], y[rows], losses.ce_reject_loss, skip_idle=False)
            skip = ms.loss_and_grad(x[rows], y[rows], losses.ce_reject_loss)
        idle = agrees[rows]
        n_idle = int(idle.sum())
        assert (full[3].idle, full[3].recomputed) == (n_idle, 0)
        assert (skip[3].skipped, skip[3].recomputed, skip[3].idle) == ((n_idle, alone, 0) if alone else (0, 0, n_idle))
        assert torch.equal(skip[0], full[0]) and torch.equal(skip[1], full[1])  # logits and loss: one forward pass
        assert torch.equal(skip[2][idle], full[2][idle])  # the classifier's part alone, where the VLM adds zeros
        # rows run alone: other matrix kernels, so the same gradient up to its last bits, and the same signs
        assert torch.allclose(skip[2][~idle], full[2][~idle], rtol=1e-4, atol=1e-7)
        assert torch.equal(skip[2][~idle].sign(), full[2][~idle].sign())


def test_class_prompts_are_encoded_many_classes_per_pass(smoke_models):
    """Catches a builder that encodes one class per forward pass again (1,000 passes for ImageNet), batches that
    mix up classes and templates, and a change of how prompts are encoded that leaves the open_clip and Hugging
    Face VLMs' identities (so the keys of their results) as they were."""
    from mslib.models import SOURCES, _identity, load_vlm
    from mslib.models.zeroshot import build_text_embeddings

    model, tokenizer = load_vlm(smoke_models).text_tower  # the smoke LiT's MiniLM text tower
    calls = []

    class Counted(torch.nn.Module):
        def encode_text(self, tokens):
            calls.append(len(tokens["input_ids"] if isinstance(tokens, dict) else tokens))
            return model.encode_text(tokens)

    names = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
    templates = ["a photo of a {}.", "a picture of a {}.", "this is a {}"]
    for norm in ("standard", "original"):
        calls.clear()
        one = build_text_embeddings(Counted(), tokenizer, names, templates, text_norm=norm, max_texts=1)
        assert calls == [3] * 10  # the old way: a pass per class
        calls.clear()
        many = build_text_embeddings(Counted(), tokenizer, names, templates, text_norm=norm, max_texts=12)
        assert calls == [12, 12, 6]  # 4 whole classes per pass
        assert many.shape == one.shape == (10, one.shape[1]) and torch.allclose(many, one, atol=1e-6)
    calls.clear()

    class Hashing(torch.nn.Module):  # ImageNet's size: a feature per caption that names its class and template
        def encode_text(self, tokens):
            calls.append(len(tokens))
            return torch.stack([torch.tensor([float(zlib.crc32(t.encode()) % 997), 1.0 + len(t)]) for t in tokens])

    imagenet = [f"class {i}" for i in range(1000)]
    emb = build_text_embeddings(Hashing(), lambda texts: texts, imagenet, ["a photo of a {}."])
    assert calls == [256, 256, 256, 232]
    feats = torch.tensor([[float(zlib.crc32(f"a photo of a {c}.".encode()) % 997), 1.0 + len(f"a photo of a {c}.")]
                          for c in imagenet])
    # one template: normalized, averaged (over one), normalized, and normalized once more as the whole matrix
    want = F.normalize(F.normalize(F.normalize(feats, dim=-1), dim=-1), dim=-1)
    assert torch.equal(emb, want)  # row i is class i's caption
    for source in ("open_clip", "hf-clip"):
        assert _identity(source, {}, SOURCES[source].function("load"), ["0"])["source_version"] == 2
    assert "source_version" not in _identity("lit", {}, SOURCES["lit"].function("load"), ["0"])
