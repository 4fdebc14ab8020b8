"""Speed benchmark of the attack loops: ``make bench PROFILE=tiny`` → a table and figures/<profile>/bench.json.

Side by side, on the same models, images, eps, iterations and seed:

(a) ``mslib`` APGD-CE (with and without batch compaction) against pyautoattack's ``APGDAttack`` on each
    classifier of the profile. pyautoattack is given mslib's per-sample random start (``x_init``), so both
    follow the same trajectories and must reach the same robust accuracy;
(b) the adaptive rejection-aware attack (``apgd-ce-reject``) and, where registered, the agreement attack on
    ``MultiShield(classifier, vlm)``, with and without compaction;
(c) the whole main-table workload (``run_study`` without the ensemble: the paper's attacks over the profile's eps grid)
    in a temporary ``MSLIB_CACHE`` (models linked in, results computed), with and without compaction;
(d) scaling: 1×, 2×, 4× the samples at two batch sizes.

Each row gives wall time, images × iterations per second (nominal work: images × n_iter / wall), robust
accuracy, the share of wall time spent inside the models' forward passes (forward hooks on the classifier
and the VLM) and backward passes (time inside ``torch.autograd.grad`` / ``Tensor.backward``), and peak
memory (peak RSS of the process since the row started, via ``/proc/self/clear_refs``; on CUDA also
``torch.cuda.max_memory_allocated``). Sizes default to what fits in about 10 minutes on 2 CPU cores and are
printed with the table.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mslib  # noqa: E402
from mslib import MultiShield, get_profile  # noqa: E402
from mslib.attacks import ATTACKS, frozen, run_attack, sample_noise  # noqa: E402
from mslib.attacks.apgd import linf_random_start  # noqa: E402
try:  # (absent before the CUDA speed settings existed: lets this file benchmark older trees too)
    from mslib.runtime import prepare_model, speed_settings  # noqa: E402
except ImportError:  # pragma: no cover
    def prepare_model(model, profile):
        return model.to(profile.device)

    def speed_settings(profile):
        return {}


# ---------------------------------------------------------------------------------------------- meters
class ComputeMeter:
    """Seconds inside model forward passes (hooks on attached modules) and inside autograd backward calls.

    Forward time is measured with pre/post forward hooks on the leaf models (classifier, VLM), so Multi-Shield's
    rejection score and the attack loss count as overhead; backward time is the time inside
    ``torch.autograd.grad`` and ``Tensor.backward`` (the backward of the loss and of the rejection score is a
    negligible part of it). On CUDA each boundary synchronizes.
    """

    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        self.fwd = 0.0
        self.bwd = 0.0
        self._depth = 0
        self._t0 = 0.0
        self._attached: set[int] = set()
        self._orig_grad = torch.autograd.grad
        self._orig_backward = torch.Tensor.backward

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def attach(self, module: nn.Module) -> nn.Module:
        if id(module) in self._attached:
            return module
        self._attached.add(id(module))

        def pre(mod, args):
            if self._depth == 0:
                self._sync()
                self._t0 = time.perf_counter()
            self._depth += 1

        def post(mod, args, out):
            self._depth -= 1
            if self._depth == 0:
                self._sync()
                self.fwd += time.perf_counter() - self._t0

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
        return module

    def reset(self) -> None:
        self.fwd = self.bwd = 0.0

    @contextlib.contextmanager
    def patched(self):
        meter = self

        def grad(*a, **k):
            meter._sync()
            t = time.perf_counter()
            try:
                return meter._orig_grad(*a, **k)
            finally:
                meter._sync()
                meter.bwd += time.perf_counter() - t

        def backward(self_, *a, **k):
            meter._sync()
            t = time.perf_counter()
            try:
                return meter._orig_backward(self_, *a, **k)
            finally:
                meter._sync()
                meter.bwd += time.perf_counter() - t

        torch.autograd.grad = grad
        torch.Tensor.backward = backward
        try:
            yield self
        finally:
            torch.autograd.grad = self._orig_grad
            torch.Tensor.backward = self._orig_backward


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak resident memory (MB) since ``reset``; Linux only (falls back to ru_maxrss elsewhere)."""

    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        self.linux = os.path.exists("/proc/self/clear_refs")

    def reset(self) -> None:
        gc.collect()
        if self.linux:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
            except OSError:
                self.linux = False
        self.start_mb = self.current_mb()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def current_mb(self) -> float:
        if self.linux:
            return _rss_kb("VmRSS") / 1024
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def peak_mb(self) -> float:
        if self.linux:
            return _rss_kb("VmHWM") / 1024
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def cuda_peak_mb(self) -> float | None:
        return torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None


# ------------------------------------------------------------------------------------------------ rows
class Bench:
    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.meter = ComputeMeter(self.cuda)
        self.mem = PeakMemory(self.cuda)
        self.rows: list[dict[str, Any]] = []

    def run(self, section: str, attack: str, model: str, variant: str, n_images: int, n_iter: int,
            batch_size: int, fn: Callable[[], dict[str, Any]], work: float | None = None,
            record: bool = True) -> dict[str, Any]:
        """Time ``fn()`` (which returns at least ``robust_acc``) and append a row."""
        self.mem.reset()
        self.meter.reset()
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with self.meter.patched():
            out = fn()
        if self.cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        work = n_images * n_iter if work is None else work
        row = {
            "section": section, "attack": attack, "model": model, "variant": variant, "n_images": n_images,
            "n_iter": n_iter, "batch_size": batch_size, "wall_s": wall, "img_iter_per_s": work / wall,
            "model_fwd_s": self.meter.fwd, "model_bwd_s": self.meter.bwd,
            "model_compute_share": (self.meter.fwd + self.meter.bwd) / wall,
            "peak_rss_mb": self.mem.peak_mb(), "rss_growth_mb": self.mem.peak_mb() - self.mem.start_mb,
            "cuda_peak_mb": self.mem.cuda_peak_mb(), **out,
        }
        if record:
            self.rows.append(row)
            print(_fmt_row(row), flush=True)
        return row

    def best_of(self, repeats: int, specs: list[tuple]) -> list[dict[str, Any]]:
        """Run the variants in ``specs`` (``run`` arguments) alternately ``repeats`` times; keep each one's fastest.

        Alternating puts the compared variants under the same load on a shared machine.
        """
        best: list[dict[str, Any] | None] = [None] * len(specs)
        walls: list[list[float]] = [[] for _ in specs]
        for _ in range(max(1, repeats)):
            for j, spec in enumerate(specs):
                row = self.run(*spec, record=False)
                walls[j].append(row["wall_s"])
                if best[j] is None or row["wall_s"] < best[j]["wall_s"]:
                    best[j] = row
        for j, row in enumerate(best):
            row["all_wall_s"] = walls[j]
            self.rows.append(row)
            print(_fmt_row(row), flush=True)
        return best  # type: ignore[return-value]


COLUMNS = [("section", "{}", 8), ("attack", "{}", 16), ("model", "{}", 12), ("variant", "{}", 14),
           ("n_images", "{}", 5), ("n_iter", "{}", 4), ("batch_size", "{}", 4), ("wall_s", "{:.1f}", 7),
           ("img_iter_per_s", "{:.0f}", 7), ("robust_acc", "{:.3f}", 6), ("model_compute_share", "{:.3f}", 6),
           ("peak_rss_mb", "{:.0f}", 6), ("rss_growth_mb", "{:.0f}", 6)]
HEADERS = {"n_images": "N", "n_iter": "it", "batch_size": "bs", "img_iter_per_s": "img·it/s",
           "robust_acc": "robust", "model_compute_share": "model%", "peak_rss_mb": "RSS MB",
           "rss_growth_mb": "+RSS"}


def _rows(chain: dict[str, Any], key: str) -> int:
    """A pass counter of the paper chain with the skips, summed over its CE and DLR stages."""
    return sum(stage[key] for stage in chain["passes_skip"].values())


def _fmt_row(row: dict[str, Any]) -> str:
    cells = []
    for key, fmt, w in COLUMNS:
        v = row.get(key)
        cells.append((fmt.format(v) if v is not None else "-").rjust(w) if key not in ("section", "attack", "model",
                     "variant") else str(v).ljust(w))
    return " | ".join(cells)


def _header() -> str:
    return " | ".join((HEADERS.get(k, k)).rjust(w) if k not in ("section", "attack", "model", "variant")
                      else HEADERS.get(k, k).ljust(w) for k, _, w in COLUMNS)


# -------------------------------------------------------------------------------------------- sections
def seeded_pyautoattack(model: nn.Module, eps: float, n_iter: int, seed: int, device: str):
    """pyautoattack's APGDAttack, started from a given point (mslib's per-sample random start)."""
    from pyautoattack.autopgd_base import APGDAttack

    class SeededAPGD(APGDAttack):
        x_init: torch.Tensor | None = None

        def attack_single_run(self, x, y, x_init=None):  # perturb() never forwards x_init; do it here
            return super().attack_single_run(x, y, x_init=self.x_init)

    return SeededAPGD(model, norm="Linf", eps=eps, n_iter=n_iter, seed=seed, loss="ce", device=device)


def _warm(model, x, y, attack, device) -> None:
    """One untimed iteration on a few images: first-call allocations and kernel selection stay out of the rows."""
    run_attack(model, x[:4], y[:4], attack, 0.01, n_iter=1, batch_size=4)


def _correct_subset(model, x, y, idx, n, device):
    with torch.inference_mode():
        pred = torch.cat([model(x[i:i + 500].to(device)).argmax(1).cpu() for i in range(0, len(x), 500)])
    keep = (pred == y).nonzero().squeeze(1)[:n]
    return x[keep], y[keep], idx[keep]


def section_apgd_vs_pyautoattack(b: Bench, profile, x, y, idx, n, n_iter, bs, summary, repeats=1) -> None:
    from mslib.models import load_classifier

    device, eps, seed = profile.device, profile.eps, profile.seed
    speed = {}
    for name in profile.classifiers:
        clf = prepare_model(b.meter.attach(load_classifier(profile, name).eval()), profile)
        xc, yc, ic = _correct_subset(clf, x, y, idx, n, device)
        _warm(clf, xc, yc, "apgd-ce", device)
        def ours(compact):
            r = run_attack(clf, xc, yc, "apgd-ce", eps, n_iter=n_iter, seed=seed, batch_size=bs, indices=ic,
                           compact=compact)
            return {"robust_acc": 1 - r.success.float().mean().item(), "n_forward": r.n_forward}

        def theirs():
            aa = seeded_pyautoattack(clf, eps, n_iter, seed, device)
            adv = []
            with frozen(clf):
                for s in range(0, len(xc), bs):
                    xb, yb = xc[s:s + bs].to(device), yc[s:s + bs].to(device)
                    noise = sample_noise(xb.shape, ic[s:s + bs], seed, 0, device=device, dtype=xb.dtype)
                    aa.x_init = linf_random_start(xb, eps, noise)
                    adv.append(aa.perturb(xb, yb).cpu())
            with torch.inference_mode():
                x_adv = torch.cat(adv)
                acc = (clf(x_adv.to(device)).argmax(1).cpu() == yc).float().mean().item()
            return {"robust_acc": acc}
        spec = ("a", "apgd-ce", name)
        got = b.best_of(repeats, [(*spec, "mslib compact", len(xc), n_iter, bs, lambda: ours(True)),
                                  (*spec, "mslib uncompacted", len(xc), n_iter, bs, lambda: ours(False)),
                                  (*spec, "pyautoattack", len(xc), n_iter, bs, theirs)])
        rows = dict(zip(("compact", "uncompacted", "aa"), got))
        _check_equal(summary, f"apgd-ce/{name}", [rows["compact"], rows["uncompacted"], rows["aa"]])
        speed[name] = rows["aa"]["wall_s"] / rows["compact"]["wall_s"]
        summary["speedup_vs_uncompacted"][f"apgd-ce/{name}"] = rows["uncompacted"]["wall_s"] / rows["compact"]["wall_s"]
        summary["speedup_vs_uncompacted_rows"] = summary.get("speedup_vs_uncompacted_rows", 0)
    tot_aa = sum(r["wall_s"] for r in b.rows if r["section"] == "a" and r["variant"] == "pyautoattack")
    tot_ours = sum(r["wall_s"] for r in b.rows if r["section"] == "a" and r["variant"] == "mslib compact")
    summary["speedup_vs_pyautoattack"] = {**speed, "all": tot_aa / tot_ours}


def _multishields(b: "Bench", profile):
    """(classifier name, Multi-Shield of it and the profile's VLM) per classifier, their passes metered."""
    from mslib.models import load_classifier, load_vlm

    vlm = prepare_model(b.meter.attach(load_vlm(profile).eval()), profile)
    for name in profile.classifiers:
        clf = prepare_model(b.meter.attach(load_classifier(profile, name).eval()), profile)
        yield name, MultiShield(clf, vlm, tolerance=profile.tolerance)


def section_multishield(b: Bench, profile, x, y, idx, n, n_iter, bs, summary, attacks, repeats=1) -> None:
    device = profile.device
    xs, ys, ids = x[:n], y[:n], idx[:n]
    for name, ms in _multishields(b, profile):
        for attack in attacks:
            _warm(ms, xs, ys, attack, device)
            def go(compact, attack=attack):
                r = run_attack(ms, xs, ys, attack, profile.eps, n_iter=n_iter, seed=profile.seed,
                               batch_size=bs, indices=ids, compact=compact)
                return {"robust_acc": 1 - r.success.float().mean().item(), "n_forward": r.n_forward}
            rows = b.best_of(repeats, [("b", attack, f"ms+{name}", v, len(xs), n_iter, bs, (lambda c=c: go(c)))
                                       for v, c in (("compact", True), ("uncompacted", False))])
            _check_equal(summary, f"{attack}/ms+{name}", rows)
            summary["speedup_vs_uncompacted"][f"{attack}/ms+{name}"] = rows[1]["wall_s"] / rows[0]["wall_s"]


def section_paper_chain(b: Bench, profile, x, y, idx, n, n_iter, bs, summary, repeats=1) -> None:
    """The paper's adaptive evaluation as a whole on ``MultiShield(classifier, vlm)``: APGD CE-rejection on
    every sample, then DLR-rejection on the samples CE left unbroken; with and without the exact skips
    (fixed points: samples whose loss gradient is exactly zero at their start; the VLM's backward pass in a
    batch where its output gradient is exactly zero on every row, or run on the rows that need it alone), with the
    pass accounting per stage."""
    device = profile.device
    xs, ys, ids = x[:n], y[:n], idx[:n]
    for name, ms in _multishields(b, profile):
        _warm(ms, xs, ys, "apgd-ce-reject", device)

        def go(skip: bool) -> dict[str, Any]:
            kw = dict(n_iter=n_iter, seed=profile.seed, batch_size=bs, skip_fixed_points=skip,
                      skip_idle_branches=skip)
            ce = run_attack(ms, xs, ys, "apgd-ce-reject", profile.eps, indices=ids, **kw)
            left = (~ce.success).nonzero().squeeze(1)
            dlr = run_attack(ms, xs[left], ys[left], "apgd-dlr-reject", profile.eps, indices=ids[left], **kw)
            broken = ce.success.clone()
            broken[left] = dlr.success
            zero = int((dlr.zero_grad == 1).sum()) if dlr.zero_grad is not None else -1
            return {"robust_acc": 1 - broken.float().mean().item(), "n_forward": ce.n_forward + dlr.n_forward,
                    "dlr_samples": int(left.numel()), "dlr_zero_grad": zero,
                    # sample-steps with a gradient, and the rows whose VLM backward was left out, ran idle or ran alone
                    "passes": {st: {"sample_steps": r.n_backward, "vlm_backward_skipped": r.n_branch_skipped,
                                    "vlm_backward_idle": r.n_branch_idle,
                                    "vlm_recomputed": r.n_branch_recomputed} for st, r in (("ce", ce), ("dlr", dlr))}}
        rows = b.best_of(repeats, [("f", "ce→dlr-reject", f"ms+{name}", v, n, n_iter, bs, (lambda s=s: go(s)))
                                   for v, s in (("skip", True), ("no-skip", False))])
        _check_equal(summary, f"paper-chain/ms+{name}", rows)
        summary.setdefault("paper_chain", {})[name] = {
            "skip_s": rows[0]["wall_s"], "no_skip_s": rows[1]["wall_s"], "speedup": rows[1]["wall_s"] / rows[0]["wall_s"],
            "robust_acc": rows[0]["robust_acc"], "dlr_samples": rows[0]["dlr_samples"],
            "dlr_zero_grad": rows[0]["dlr_zero_grad"], "n_forward_skip": rows[0]["n_forward"],
            "n_forward_no_skip": rows[1]["n_forward"], "passes_skip": rows[0]["passes"],
            "passes_no_skip": rows[1]["passes"]}


@contextlib.contextmanager
def temporary_cache():
    """A fresh MSLIB_CACHE whose models (and datasets) are links to the real ones, so results really compute."""
    from mslib.cache import data_root

    real = data_root()
    tmp = Path(tempfile.mkdtemp(prefix="mslib-bench-"))
    for entry in real.iterdir() if real.exists() else []:
        if entry.name != "results":
            (tmp / entry.name).symlink_to(entry.resolve())
    old = os.environ.get("MSLIB_CACHE")
    os.environ["MSLIB_CACHE"] = str(tmp)
    try:
        yield tmp
    finally:
        if old is None:
            os.environ.pop("MSLIB_CACHE", None)
        else:
            os.environ["MSLIB_CACHE"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def _hooked_loaders(meter: ComputeMeter):
    """Patch mslib.models' loaders so every model the executor loads is timed."""
    import mslib.models as models

    orig_c, orig_v = models.load_classifier, models.load_vlm
    models.load_classifier = lambda *a, **k: meter.attach(orig_c(*a, **k))
    models.load_vlm = lambda *a, **k: meter.attach(orig_v(*a, **k))
    return lambda: (setattr(models, "load_classifier", orig_c), setattr(models, "load_vlm", orig_v))


def section_workload(b: Bench, profile, n, n_iter, summary) -> None:
    from mslib.experiment import run_study
    from mslib.store import Store

    overrides = {"n_samples": n, "n_iter": n_iter, "device": profile.device, **speed_settings(profile)}
    restore = _hooked_loaders(b.meter)
    rows, accs = [], {}
    try:
        for variant, compact in (("uncompacted", False), ("compact", True)):
            with temporary_cache():
                def go(compact=compact, variant=variant):
                    # the main-table attacks (not the worst-case ensemble)
                    run_study(profile.name, progress=False, overrides=overrides, compact=compact, ensemble=False)
                    store = Store(profile.name)
                    plan = store.datasets[0].plan
                    jobs = [j for group in (*plan.nonadaptive.values(), *plan.adaptive.values()) for j in group]
                    accs[variant] = [1 - store.load(j, ("success",))["success"].float().mean().item() for j in jobs]
                    return {"robust_acc": sum(accs[variant]) / len(jobs), "jobs": len(jobs)}
                rows.append(b.run("c", "main-table", "all", variant, n, n_iter, profile.batch_size, go,
                                  work=n * n_iter))
                if compact:  # the same study again with every job done: decided from the files, no model loaded
                    t = time.perf_counter()
                    again = run_study(profile.name, progress=False, overrides=overrides, compact=True, ensemble=False)
                    summary["noop_rerun_s"] = round(time.perf_counter() - t, 3)
                    summary["checks"]["noop_rerun"] = {"computed": again.computed, "ok": again.done and again.computed == 0}
    finally:
        restore()
    diff = max(abs(u - v) for u, v in zip(accs["uncompacted"], accs["compact"]))
    summary["checks"]["workload"] = {"max_abs_robust_acc_diff": diff, "ok": diff <= 0.005}
    if diff > 0.005:
        print(f"!! main-table workload: robust accuracy differs between variants by up to {diff:.4f}")
    summary["speedup_vs_uncompacted"]["main-table"] = rows[0]["wall_s"] / rows[1]["wall_s"]


def section_scaling(b: Bench, profile, x, y, idx, n, n_iter, batch_sizes, attack, clf_name, summary,
                    repeats=1) -> None:
    from mslib.models import load_classifier, load_vlm

    device = profile.device
    clf = prepare_model(b.meter.attach(load_classifier(profile, clf_name).eval()), profile)
    model = clf
    if attack in mslib.attacks.REJECT_AWARE:
        model = MultiShield(clf, prepare_model(b.meter.attach(load_vlm(profile).eval()), profile),
                            tolerance=profile.tolerance)
    lin = {}
    _warm(model, x, y, attack, device)
    label = clf_name if model is clf else f"ms+{clf_name}"
    for bs in batch_sizes:
        def go(m, bs=bs):
            r = run_attack(model, x[:m], y[:m], attack, profile.eps, n_iter=n_iter, seed=profile.seed,
                           batch_size=bs, indices=idx[:m])
            return {"robust_acc": 1 - r.success.float().mean().item(), "n_forward": r.n_forward}
        rows = b.best_of(repeats, [("d", attack, label, f"scale {mult}x", n * mult, n_iter, bs,
                                    (lambda m=n * mult: go(m))) for mult in (1, 2, 4)])
        times = {mult: row["wall_s"] for mult, row in zip((1, 2, 4), rows)}
        lin[f"bs{bs}"] = {"seconds": times, "t4x_over_4_t1x": times[4] / (4 * times[1]),
                          "t2x_over_2_t1x": times[2] / (2 * times[1])}
    summary["linearity"] = lin


def load_baseline_apgd(rev: str):
    """mslib's ``apgd`` function as of git revision ``rev`` (for before/after rows on the same machine state)."""
    import subprocess
    import types

    src = subprocess.run(["git", "show", f"{rev}:mslib/attacks/apgd.py"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.replace("from .losses import", "from mslib.attacks.losses import")
    mod = types.ModuleType(f"mslib_bench_baseline_apgd_{abs(hash(rev))}")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, f"{rev}:mslib/attacks/apgd.py", "exec"), mod.__dict__)
    return mod.apgd


@contextlib.contextmanager
def using_apgd(fn):
    """Run the APGD-based attacks with ``fn`` as the inner APGD loop."""
    import mslib.attacks as pkg

    old = pkg.__dict__["apgd"]
    pkg.__dict__["apgd"] = fn
    try:
        yield
    finally:
        pkg.__dict__["apgd"] = old


def section_before_after(b: Bench, profile, x, y, idx, n_clf, n_ms, n_iter, bs, rev, repeats, summary) -> None:
    """The APGD loop at ``rev`` and now, alternating ``repeats`` times (best of each): a fair A/B on a noisy host."""
    from mslib.models import load_classifier, load_vlm
    from mslib.attacks.apgd import apgd as current

    baseline = load_baseline_apgd(rev)
    device = profile.device
    vlm = prepare_model(b.meter.attach(load_vlm(profile).eval()), profile)
    out = {}
    for name in profile.classifiers:
        clf = prepare_model(b.meter.attach(load_classifier(profile, name).eval()), profile)
        cases = [("apgd-ce", name, clf, n_clf), ("apgd-ce-reject", f"ms+{name}", MultiShield(clf, vlm, profile.tolerance), n_ms)]
        for attack, label, model, n in cases:
            _warm(model, x, y, attack, device)
            best: dict[str, dict] = {}
            for _ in range(repeats):
                for variant, fn in (("before", baseline), ("after", current)):
                    def go(fn=fn, model=model, attack=attack, n=n):
                        with using_apgd(fn):
                            r = run_attack(model, x[:n], y[:n], attack, profile.eps, n_iter=n_iter, seed=profile.seed,
                                           batch_size=bs, indices=idx[:n])
                        return {"robust_acc": 1 - r.success.float().mean().item(), "n_forward": r.n_forward}
                    row = b.run("e", attack, label, f"{variant} ({rev})" if variant == "before" else "after", n,
                                n_iter, bs, go)
                    if variant not in best or row["wall_s"] < best[variant]["wall_s"]:
                        best[variant] = row
            _check_equal(summary, f"before-after/{attack}/{label}", [best["before"], best["after"]])
            out[f"{attack}/{label}"] = {
                "before_s": best["before"]["wall_s"], "after_s": best["after"]["wall_s"],
                "speedup": best["before"]["wall_s"] / best["after"]["wall_s"],
                "model_share_before": best["before"]["model_compute_share"],
                "model_share_after": best["after"]["model_compute_share"]}
    summary["before_after"] = {"baseline_rev": rev, "repeats": repeats, **out}


def _check_equal(summary, label, rows) -> None:
    accs = [r["robust_acc"] for r in rows]
    diff = max(accs) - min(accs)
    summary["checks"][label] = {"robust_acc": accs, "max_abs_diff": diff, "ok": diff <= 0.005}
    if diff > 0.005:
        print(f"!! {label}: robust accuracy differs across variants: {accs}")


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--device", default=None, help="override the profile's device (cpu, cuda)")
    ap.add_argument("--sections", default="a,b,c,d,e,f",
                    help="comma-separated subset of a,b,c,d,e,f (e needs --baseline-rev)")
    ap.add_argument("--n-apgd", type=int, default=250, help="(a) clean-correct images per classifier")
    ap.add_argument("--iter-apgd", type=int, default=None, help="(a) iterations (default: the profile's)")
    ap.add_argument("--n-ms", type=int, default=32, help="(b) images per Multi-Shield attack")
    ap.add_argument("--iter-ms", type=int, default=20, help="(b) iterations")
    ap.add_argument("--n-workload", type=int, default=32, help="(c) images in the main-table workload")
    ap.add_argument("--iter-workload", type=int, default=10, help="(c) iterations")
    ap.add_argument("--n-scale", type=int, default=24, help="(d) images at 1x")
    ap.add_argument("--iter-scale", type=int, default=10, help="(d) iterations")
    ap.add_argument("--scale-attack", default="apgd-ce-reject")
    ap.add_argument("--batch-sizes", default=None, help="(d) two batch sizes, e.g. 24,48 (default n/2,n)")
    ap.add_argument("--batch-size", type=int, default=None, help="(a, b) batch size (default: the profile's)")
    ap.add_argument("--agreement", default="auto", choices=["auto", "yes", "no"],
                    help="(b) include the agreement attack when registered")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--baseline-rev", default=None,
                    help="(e) git revision whose APGD loop to compare with the current one, alternating runs")
    ap.add_argument("--repeats", type=int, default=1, help="(a, b, d, e) alternating repeats (best of each)")
    ap.add_argument("--n-ab", type=int, default=100, help="(e) images (classifier; a quarter on Multi-Shield)")
    ap.add_argument("--iter-ab", type=int, default=25, help="(e) iterations")
    ap.add_argument("--n-chain", type=int, default=100, help="(f) images in the paper's CE -> DLR chain")
    ap.add_argument("--iter-chain", type=int, default=None, help="(f) iterations (default: the profile's)")
    ap.add_argument("--precision", default=None, choices=["fp32", "bf16"], help="CUDA only: bf16 autocast")
    ap.add_argument("--channels-last", action="store_true", help="CUDA only: NHWC conv weights")
    ap.add_argument("--out", default=None, help="JSON path (default figures/<profile>/bench.json)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    if args.device:
        profile = profile.replace(device=args.device)
    device = profile.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"profile {profile.name} asks for {device}, which is not available here: benchmarking on cpu")
        profile = profile.replace(device="cpu")
        device = "cpu"
    if args.precision or args.channels_last:
        profile = profile.replace(precision=args.precision or profile.precision,
                                  channels_last=args.channels_last or profile.channels_last)
    sections = set(args.sections.split(","))
    iter_apgd = args.iter_apgd or profile.n_iter
    bs = args.batch_size or profile.batch_size
    bss = ([int(v) for v in args.batch_sizes.split(",")] if args.batch_sizes
           else [max(1, args.n_scale // 2), args.n_scale])
    ms_attacks = ["apgd-ce-reject"]
    if args.agreement == "yes" or (args.agreement == "auto" and "agreement" in ATTACKS):
        ms_attacks.append("agreement")

    from mslib.data import load_eval_set

    n_need = max(args.n_apgd * 2, args.n_ms, args.n_scale * 4, args.n_chain)
    x, y, _, idx = load_eval_set(profile.replace(n_samples=max(n_need, profile.n_samples)), with_indices=True)

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    env = {"profile": profile.name, "dataset": profile.dataset, "device": device, "gpu": gpu,
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "load_avg_start": os.getloadavg(),
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "eps": profile.eps, "seed": profile.seed,
           "speed_settings": speed_settings(profile)}
    settings = {"a": {"n": args.n_apgd, "n_iter": iter_apgd, "batch_size": bs},
                "b": {"n": args.n_ms, "n_iter": args.iter_ms, "batch_size": bs, "attacks": ms_attacks},
                "c": {"n": args.n_workload, "n_iter": args.iter_workload, "batch_size": profile.batch_size},
                "d": {"n": args.n_scale, "n_iter": args.iter_scale, "batch_sizes": bss, "attack": args.scale_attack},
                "e": {"baseline_rev": args.baseline_rev, "repeats": args.repeats, "n_clf": args.n_ab,
                      "n_ms": max(4, args.n_ab // 4), "n_iter": args.iter_ab},
                "f": {"n": args.n_chain, "n_iter": args.iter_chain or profile.n_iter, "batch_size": bs,
                      "repeats": args.repeats}}
    print(f"bench: profile {profile.name}/{profile.dataset} on {gpu or device} ({env['threads']} threads), "
          f"eps {profile.eps:g}, seed {profile.seed}, load avg {env['load_avg_start'][0]:.2f}")
    for s in sorted(sections):
        print(f"  ({s}) " + ", ".join(f"{k}={v}" for k, v in settings[s].items()))
    print(_header(), flush=True)

    b = Bench(device)
    summary: dict[str, Any] = {"checks": {}, "speedup_vs_uncompacted": {}}
    t0 = time.perf_counter()
    if "a" in sections:
        section_apgd_vs_pyautoattack(b, profile, x, y, idx, args.n_apgd, iter_apgd, bs, summary, args.repeats)
    if "b" in sections:
        section_multishield(b, profile, x, y, idx, args.n_ms, args.iter_ms, bs, summary, ms_attacks, args.repeats)
    if "c" in sections:
        section_workload(b, profile, args.n_workload, args.iter_workload, summary)
    if "e" in sections and args.baseline_rev:
        section_before_after(b, profile, x, y, idx, args.n_ab, max(4, args.n_ab // 4), args.iter_ab, bs,
                             args.baseline_rev, args.repeats, summary)
    if "f" in sections:
        section_paper_chain(b, profile, x, y, idx, args.n_chain, args.iter_chain or profile.n_iter, bs, summary,
                            args.repeats)
    if "d" in sections:
        section_scaling(b, profile, x, y, idx, args.n_scale, args.iter_scale, bss, args.scale_attack,
                        profile.classifiers[-1], summary, args.repeats)
    env["total_s"] = time.perf_counter() - t0
    env["load_avg_end"] = os.getloadavg()

    shares = {}
    for r in b.rows:
        key = f"{r['attack']} {r['variant']}"
        shares[key] = min(shares.get(key, 1.0), r["model_compute_share"])
    ips = {}
    for r in b.rows:
        ips.setdefault(f"{r['section']}:{r['attack']}:{r['model']}:{r['variant']}", r["img_iter_per_s"])
    summary.pop("speedup_vs_uncompacted_rows", None)
    result = {**env, "settings": settings, "model_compute_share": {**shares, "min": min(shares.values())},
              "speedup_vs_pyautoattack": summary.get("speedup_vs_pyautoattack"),
              "speedup_vs_uncompacted": summary["speedup_vs_uncompacted"], "img_iter_per_s": ips,
              "linearity": summary.get("linearity"), "before_after": summary.get("before_after"),
              "noop_rerun_s": summary.get("noop_rerun_s"), "paper_chain": summary.get("paper_chain"),
              "checks": summary["checks"],
              "all_checks_ok": all(c["ok"] for c in summary["checks"].values()), "rows": b.rows}
    out = Path(args.out) if args.out else REPO / "figures" / profile.name / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print()
    print("model compute share (min over rows): " + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()))
    if result["speedup_vs_pyautoattack"]:
        print("speedup vs pyautoattack: " + ", ".join(f"{k} {v:.2f}x" for k, v in result["speedup_vs_pyautoattack"].items()))
    print("speedup vs uncompacted: " + ", ".join(f"{k} {v:.2f}x" for k, v in summary["speedup_vs_uncompacted"].items()))
    if result["linearity"]:
        print("linearity (t(4x) / 4 t(1x)): " + ", ".join(f"{k} {v['t4x_over_4_t1x']:.2f}" for k, v in result["linearity"].items()))
    if result["before_after"]:
        print(f"APGD loop before ({args.baseline_rev}) / after, best of {args.repeats}: " + ", ".join(
            f"{k} {v['speedup']:.2f}x (model share {v['model_share_before']:.2f} -> {v['model_share_after']:.2f})"
            for k, v in result["before_after"].items() if isinstance(v, dict)))
    if result["paper_chain"]:
        print("paper chain (CE-reject, then DLR-reject on the survivors), no skip / skip: " + ", ".join(
            f"{k} {v['speedup']:.2f}x ({v['dlr_zero_grad']}/{v['dlr_samples']} DLR samples fixed points; VLM "
            f"backward left out on {_rows(v, 'vlm_backward_skipped')} of {_rows(v, 'sample_steps')} sample-steps, "
            f"run idle on {_rows(v, 'vlm_backward_idle')})" for k, v in result["paper_chain"].items()))
    if result["noop_rerun_s"] is not None:
        print(f"no-op rerun of the main-table workload (every job done): {result['noop_rerun_s']:.2f} s")
    print(f"robust accuracy agrees across compared variants: {result['all_checks_ok']}")
    print(f"total {env['total_s']:.0f} s, load avg {env['load_avg_start'][0]:.2f} -> {env['load_avg_end'][0]:.2f}; wrote {out}")
    return 0 if result["all_checks_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
