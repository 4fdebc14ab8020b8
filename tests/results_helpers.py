"""Shared pieces of the results-layer tests: a small smoke study and caches that share its trained models."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from mslib.cache import REPO_ROOT, data_root, load_tensors
from mslib.profiles import get_profile

# 2 batches, few iterations, a light worst-case ensemble (1 agreement target, 8 Square queries), no VLM variant
# (the beyond tests add smoke's). The smoke profile's own templates: its LiT is trained for them, so the study,
# the notebooks and the FARE variant's base share the session's one trained VLM.
OVERRIDES = {"n_samples": 10, "batch_size": 5, "n_iter": 2, "eps_grid": (0.0, 0.05, 0.1),
             "square_queries": 8, "agreement_targets": 1, "vlm_variants": {}}
# the same small study with the smoke profile's VLM variant (a FARE-tuned LiT): its own jobs and the rescore jobs
# that score the base configuration's examples with it
VARIANT = {**OVERRIDES, "vlm_variants": get_profile("smoke").vlm_variants}
# the data root the session started with (<repo>/data, or $MSLIB_CACHE when set): where the session's models are
# trained, and what every fresh cache links to (read once: tests point MSLIB_CACHE elsewhere as they run)
SESSION_DATA = data_root()


def fresh_cache(root: Path, copy_models: bool = False) -> Path:
    """A results cache without results that shares the session's trained models and datasets (linked, or
    copied with ``copy_models`` so a test may damage them)."""
    root.mkdir(parents=True)
    real = SESSION_DATA
    for entry in real.iterdir() if real.exists() else []:
        if entry.name in ("results", "submitit", "stamps"):
            continue
        if copy_models and entry.name == "models":
            shutil.copytree(entry, root / entry.name, symlinks=False)
        else:
            (root / entry.name).symlink_to(entry.resolve())
    return root


def study_copy(study: Path, root: Path, copy_models: bool = False) -> Path:
    """A :func:`fresh_cache` holding a copy of the results of the session's small study (the
    ``smoke_study`` fixture), for a test that changes or extends them."""
    fresh_cache(root, copy_models=copy_models)
    shutil.copytree(study / "results", root / "results")
    return root


def batch_files(cache: Path) -> dict[str, dict]:
    """Every cached batch file (results/<key>/batch_*.pt and .x.pt) of a cache, without its timing."""
    out = {}
    for f in sorted((cache / "results").glob("*/batch_*.pt")):
        d = load_tensors(f)
        d.pop("seconds", None)
        out[f"{f.parent.name}/{f.name}"] = d
    return out


class TopTwo(torch.nn.Module):
    """K+1 = 4 logits from a linear map where, for every input in [0, 1], class 0 and the rejection logit
    are the two largest: under the paper's DLR-reject loss a sample labelled 0 has zero gradient everywhere
    (a fixed point of APGD), one labelled 1 does not."""

    rejects = True

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(4, 4)
        with torch.no_grad():
            self.w.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0.1, 0, 0], [0, 0, 0.1, 0], [1.0, 0, 0, 0]]))
            self.w.bias.copy_(torch.tensor([10.0, 0, 0, 5.0]))

    def forward(self, x):
        return self.w(x.flatten(1)[:, :4])


def assert_same_results(a: Path, b: Path) -> None:
    """The two caches hold the same result entries and batches, tensor by tensor (dtype included)."""
    files_a, files_b = batch_files(a), batch_files(b)
    assert files_a.keys() == files_b.keys() and len(files_b) > 20
    for name, d in files_b.items():
        assert d.keys() == files_a[name].keys()
        for k in d:
            x, y = d[k], files_a[name][k]
            assert (torch.equal(x, y) and x.dtype == y.dtype) if isinstance(x, torch.Tensor) else x == y, (name, k)


# ---- per-sample outcomes by hand: a plain loop over samples, independent of mslib.tables' status/worst_case ----
def outcomes_by_hand(preds: list[torch.Tensor], labels: torch.Tensor, reject_label: int | None = None) -> list[str]:
    """Per sample, over the predictions of several attacks: "fooled" if any is a wrong class that is not the
    reject label, else "rejected" if any is the reject label, else "correct"."""
    out = []
    for i, y in enumerate(labels.tolist()):
        p = [int(q[i]) for q in preds]
        out.append("fooled" if any(v != y and v != reject_label for v in p) else
                   "rejected" if reject_label is not None and reject_label in p else "correct")
    return out


def share(outcomes: list[str], *which: str) -> float:
    """The fraction of samples whose outcome is one of ``which``."""
    return sum(o in which for o in outcomes) / len(outcomes)


# ---- a training killed with SIGKILL, in a cache whose other models are the repo's trained ones ----------------
def linked_models_but(cache: Path, skip: Path) -> None:
    """``cache/models`` as a folder of links to the session's trained models, except ``skip`` (to be trained)."""
    real = (SESSION_DATA / "models").resolve()
    (cache / "models").unlink()
    (cache / "models").mkdir()
    for entry in real.iterdir():
        if entry.name != skip.name:
            (cache / "models" / entry.name).symlink_to(entry)


def kill_during_training(cache: Path, code: str, after: float = 0.5) -> None:
    """Run ``code`` in a fresh Python with the data root at ``cache`` and SIGKILL it ``after`` seconds into
    its first training loop (once a progress bar says "epoch")."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = f"import torch; torch.set_num_threads({torch.get_num_threads()}); {code}"
    env = {**os.environ, "MSLIB_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    seen = ""
    while proc.poll() is None and "epoch" not in seen:
        seen += proc.stderr.read(1)
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
