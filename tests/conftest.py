"""Shared fixtures: small real models trained in seconds on real Fashion-MNIST images."""
from __future__ import annotations

import os
from pathlib import Path

# Under pytest-xdist (``make test`` runs two workers) each worker computes with one thread, and so does every
# process it starts (papermill kernels, CLIs): two workers of two threads each on two cores would
# oversubscribe them, which slows torch several times over.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from filelock import FileLock  # noqa: E402
from torch import nn  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1 if WORKER else max(1, min(2, os.cpu_count() or 1)))


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder of this test run that every xdist worker sees (its own temp folder without workers)."""
    base = tmp_path_factory.getbasetemp()
    if not WORKER:
        return base / name
    return base.parent / f"shared-{os.environ.get('PYTEST_XDIST_TESTRUNUID', 'run')}" / name


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


def computed_once(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> Path:
    """``build(cache)`` run by the first worker that needs this run's ``name`` cache; the others wait for it
    and read it (a cache left half-built by a worker that died is built again)."""
    import shutil

    folder = shared_dir(tmp_path_factory, name)
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "cache"
    with FileLock(str(folder / ".lock")):
        if not (folder / "complete").exists():
            if cache.exists():
                shutil.rmtree(cache)
            build(cache)
            (folder / "complete").touch()
    return cache


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

    from mslib.cache import data_root

    p = get_profile("smoke", **OVERRIDES)
    data_root().mkdir(parents=True, exist_ok=True)
    with FileLock(str(data_root() / ".smoke-models.lock")):  # one worker trains, the others then load
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

    def build(cache: Path) -> None:
        fresh_cache(cache)
        with data_root_at(cache):
            summary = run_study("smoke", progress=False, overrides=OVERRIDES)
        assert summary.done and summary.computed > 0 and summary.reused == 0

    return computed_once(tmp_path_factory, "study", build)


@pytest.fixture(scope="session")
def variant_study(tmp_path_factory, smoke_study):
    """A cache holding the small study with the smoke profile's VLM variant (``results_helpers.VARIANT``): a
    copy of ``smoke_study`` (the base configuration's results) plus the variant's jobs and its rescore jobs,
    computed once per session (the FARE fine-tune lands in the session's models). Read it or copy it."""
    from mslib.cache import data_root_at
    from mslib.experiment import run_study
    from results_helpers import VARIANT, study_copy

    def build(cache: Path) -> None:
        study_copy(smoke_study, cache)
        with data_root_at(cache):
            summary = run_study("smoke", progress=False, overrides=VARIANT)
        assert summary.done and summary.computed > 0 and summary.reused > 0

    return computed_once(tmp_path_factory, "variant", build)
