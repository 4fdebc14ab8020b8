"""Shared fixtures: small real models trained in seconds on real Fashion-MNIST images."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class TinyCNN(nn.Module):
    """A 2-conv CNN for 28×28 grayscale images in [0, 1] (normalizes inside forward)."""

    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 49, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 0.286) / 0.353)


@pytest.fixture()
def no_paper_env(monkeypatch):
    """None of the variables that point the paper loaders elsewhere: they look only under the data root."""
    from mslib.cache import PAPER_DATA_VARS

    for var in PAPER_DATA_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def fashion_small() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, held-out images, held-out labels): 5000 + 300 real Fashion-MNIST images."""
    from mslib.data import load_split

    x, y, _ = load_split("fashion_mnist", "train")
    return x[:5000], y[:5000], x[-300:], y[-300:]


@pytest.fixture(scope="session")
def small_classifier(fashion_small) -> nn.Module:
    """A TinyCNN trained for 2 epochs on 5000 images (a few seconds on 2 cores), in eval mode."""
    x, y, _, _ = fashion_small
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(2):
        for i in range(0, x.shape[0], 100):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def stand_in_vlm(fashion_small) -> nn.Module:
    """A linear model squashed to [-1, 1] (like cosine similarities): an attackable stand-in VLM."""
    x, y, _, _ = fashion_small
    torch.manual_seed(1)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = torch.optim.Adam(lin.parameters(), 1e-2)
    for _ in range(3):
        for i in range(0, 5000, 250):
            opt.zero_grad()
            F.cross_entropy(lin(x[i:i + 250]), y[i:i + 250]).backward()
            opt.step()
    vlm = nn.Sequential(lin, nn.Tanh()).eval()
    vlm.num_classes = 10
    return vlm


@pytest.fixture(scope="session")
def smoke_models():
    """Load (training once if needed) the smoke models in the repo cache, so later runs only read them."""
    from mslib.models import load_classifier, load_vlm
    from mslib.profiles import get_profile
    from results_helpers import OVERRIDES

    p = get_profile("smoke", **OVERRIDES)
    for name in p.classifiers:
        load_classifier(p, name)
    load_vlm(p)
    return p


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory, smoke_models):
    """A cache holding the complete small study (``results_helpers.OVERRIDES``, models linked in), computed
    once per session; read it, or take a copy (``results_helpers.study_copy``) to change it."""
    from mslib.cache import data_root_at
    from mslib.experiment import run_study
    from results_helpers import OVERRIDES, fresh_cache

    cache = fresh_cache(tmp_path_factory.mktemp("study") / "cache")
    with data_root_at(cache):
        summary = run_study("smoke", progress=False, overrides=OVERRIDES)
    assert summary.done and summary.computed > 0 and summary.reused == 0
    return cache


@pytest.fixture(scope="session")
def variant_study(tmp_path_factory, smoke_study):
    """A cache holding the small study with the smoke profile's VLM variant (``results_helpers.VARIANT``): a
    copy of ``smoke_study`` (the base configuration's results) plus the variant's jobs and its rescore jobs,
    computed once per session (the FARE fine-tune lands in the session's models). Read it or copy it."""
    from mslib.cache import data_root_at
    from mslib.experiment import run_study
    from results_helpers import VARIANT, study_copy

    cache = study_copy(smoke_study, tmp_path_factory.mktemp("variant") / "cache")
    with data_root_at(cache):
        summary = run_study("smoke", progress=False, overrides=VARIANT)
    assert summary.done and summary.computed > 0 and summary.reused > 0
    return cache
