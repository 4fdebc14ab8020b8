"""Work that cannot change a result is not done: a finished study reruns without loading a model or reading
an image, model identities come from the checkpoint files alone, and class prompts are encoded in batches."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

import mslib.cache
import mslib.models
from mslib.cache import data_root_at
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


def test_batched_prompt_embeddings_equal_the_prompt_by_prompt_definition(smoke_models):
    """Classes × templates per forward give each class the mean of its own templates' normalized embeddings.

    Tolerance: the two ways run the same float32 text tower on batches of different sizes, so only the
    summation order inside the matrix products differs; for unit vectors of dimension D that moves each
    component by a few ulps times sqrt(depth), far below 1e-5, while a prompt paired with the wrong class or
    template (what a batching mistake does) moves components by about 1e-1 on this tower.
    """
    from mslib.models import load_vlm
    from mslib.models.zeroshot import build_text_embeddings

    model, tokenizer = load_vlm(smoke_models).text_tower
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
    templates = ["a photo of a {}.", "a product photo of a {}.", "an image of a {}, an item of clothing."]
    with torch.no_grad():
        want = []
        for name in names:
            feats = torch.cat([model.encode_text(tokenizer([t.format(name)])).float() for t in templates])
            want.append(F.normalize(F.normalize(feats, dim=-1).mean(0), dim=-1))
        want = torch.stack(want)
    for batch_size in (1, 7, 1000):  # one class per forward (at least its templates), 2 with a rest, all
        got = build_text_embeddings(model, tokenizer, names, templates, batch_size=batch_size)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (want[0] - want[1]).abs().max() > 1e-2  # the classes' embeddings differ far beyond the tolerance
