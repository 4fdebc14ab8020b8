"""The paper's adaptive evaluation, mslib against the original authors' code, on the same models and images.

One process runs one side of one configuration and prints its robust accuracy and the attack chain's wall
time; time whole processes of the two sides alternately (e.g. ``/usr/bin/time -v``, or any benchmark runner
that alternates two commands) and compare the best of each:

    git clone https://github.com/FrancescoVillani/Multi-Shield /tmp/multishield-original
    python benchmarks/vs_original.py --side original --original /tmp/multishield-original --classifier standard
    python benchmarks/vs_original.py --side mslib --classifier standard

The chain is the original's ``AutoAttack(version="custom", attacks_to_run=["apgd-ce-rejection",
"apgd-dlr-rejection"])`` from ``modified_autoattack.py`` (APGD CE-rejection on every sample, then
DLR-rejection on those CE left robust; one restart, seed 0) around its ``models/MultiShield.py``; mslib runs
``apgd-ce-reject`` then ``apgd-dlr-reject`` on the survivors around :class:`mslib.MultiShield`. Both wrap the
profile's classifier and VLM (the original's CLIP wrapper is given the VLM's image embeddings and class
embeddings), process the first ``--n`` evaluation images in batches of the profile's batch size and count a
sample as broken when Multi-Shield outputs a wrong class that is not "rejected".
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mslib import MultiShield, get_profile  # noqa: E402
from mslib.attacks import run_attack  # noqa: E402
from mslib.data import load_eval_set  # noqa: E402
from mslib.models import load_classifier, load_vlm  # noqa: E402


class OriginalClipShim:
    """What the original ``models/MultiShield.py`` calls on its CLIP wrapper, backed by mslib's VLM."""

    def __init__(self, vlm) -> None:
        self.vlm = vlm
        self.label_emb = vlm.text_embeddings

    def create_img_emb(self, x: torch.Tensor) -> torch.Tensor:
        return self.vlm.encode_image(x)

    def cosine_similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # as models/CLIP.py
        a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
        return a @ b.t()


def original_chain(path: Path, clf, vlm, x, y, eps: float, n_iter: int, bs: int, tolerance: float):
    """x_adv of the original code's adaptive chain and its Multi-Shield module."""
    import pyautoattack  # AutoAttack, installed as pyautoattack; the original imports it as autoattack

    sys.modules.setdefault("autoattack", pyautoattack)
    for sub in ("checks", "state", "other_utils", "fab_pt", "square"):
        __import__(f"pyautoattack.{sub}")
        sys.modules.setdefault(f"autoattack.{sub}", sys.modules[f"pyautoattack.{sub}"])
    sys.path.insert(0, str(path))
    from models.MultiShield import MultiShield as OriginalMultiShield
    from modified_autoattack import AutoAttack
    from modified_autopgd_base import APGDAttack

    ms = OriginalMultiShield(clf, OriginalClipShim(vlm), tolerance=tolerance).eval()
    k = vlm.num_classes
    adversary = AutoAttack(ms, rejection_class_index=k, norm="Linf", eps=eps, seed=0, version="custom",
                           attacks_to_run=["apgd-ce-rejection", "apgd-dlr-rejection"], verbose=False, device="cpu")
    # the schedule's checkpoints are set from n_iter when APGD is built: build it at this budget, one restart
    adversary.apgd = APGDAttack(ms, rejection_class_index=k, n_restarts=1, n_iter=n_iter, verbose=False, eps=eps,
                                norm="Linf", eot_iter=1, rho=.75, seed=0, device="cpu", logger=adversary.logger)
    return adversary.run_standard_evaluation(x, y, bs=bs), ms


# the parts timed_parts clocks, and how the report names them
PARTS = {"classifier_forward": "classifier forward", "vlm_forward": "VLM forward",
         "classifier_backward": "classifier backward and dloss/ds", "vlm_backward": "VLM backward",
         "vlm_backward_idle": "of which on rows with a zero VLM gradient"}


@contextlib.contextmanager
def timed_parts(clf, vlm) -> Iterator[dict[str, float]]:
    """Seconds spent in each model's forward pass and in each backward pass of mslib's chain, while inside.

    The VLM's backward pass is the ``torch.autograd.grad`` call that is handed output gradients (dloss/ds,
    one row per image); its ``vlm_backward_idle`` is each such pass's time times the share of its rows whose
    output gradient is exactly zero: what those passes would cost less if a row whose VLM gradient is zero
    cost nothing, the most that leaving out work that cannot change a result could still save.
    """
    t = dict.fromkeys(PARTS, 0.0)

    def clock(name: str, fn):
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                t[name] += time.perf_counter() - t0
        return run

    grad = torch.autograd.grad

    def timed_grad(outputs, inputs, grad_outputs=None, *a, **k):
        t0 = time.perf_counter()
        out = grad(outputs, inputs, grad_outputs, *a, **k)
        dt = time.perf_counter() - t0
        if grad_outputs is None:  # the loss's gradient: the classifier's backward pass and dloss/ds
            t["classifier_backward"] += dt
        else:
            t["vlm_backward"] += dt
            t["vlm_backward_idle"] += dt * (grad_outputs == 0).all(dim=1).float().mean().item()
        return out

    clf.forward, vlm.forward = clock("classifier_forward", clf.forward), clock("vlm_forward", vlm.forward)
    torch.autograd.grad = timed_grad
    try:
        yield t
    finally:
        torch.autograd.grad = grad
        del clf.forward, vlm.forward  # the instance attributes set above; the class's methods again


def mslib_chain(clf, vlm, x, y, eps: float, n_iter: int, bs: int, tolerance: float, seed: int, skip: bool):
    ms = MultiShield(clf, vlm, tolerance=tolerance).eval()
    kw = dict(n_iter=n_iter, seed=seed, batch_size=bs, skip_fixed_points=skip, skip_idle_branches=skip)
    ce = run_attack(ms, x, y, "apgd-ce-reject", eps, **kw)
    x_adv = ce.x_adv.clone()
    left = (~ce.success).nonzero().squeeze(1)
    runs = [("CE", ce)]
    if left.numel():
        dlr = run_attack(ms, x[left], y[left], "apgd-dlr-reject", eps, indices=left, **kw)
        x_adv[left] = dlr.x_adv
        runs.append(("DLR", dlr))
    for stage, r in runs:  # the pass accounting: sample-steps, and the VLM's share of their backward passes
        print(f"  {stage}: {r.n_backward} sample-steps with a gradient (nominal {len(r.success) * (n_iter + 1)}); "
              f"VLM backward left out on {r.n_branch_skipped} rows, run idle on {r.n_branch_idle} (other rows of their "
              f"batch needed it), run alone on {r.n_branch_recomputed} (their VLM forward recomputed)")
    return x_adv, ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", required=True, choices=["mslib", "original"])
    ap.add_argument("--original", type=Path, help="a checkout of FrancescoVillani/Multi-Shield (--side original)")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--classifier", default="standard")
    ap.add_argument("--n", type=int, default=300, help="the first n evaluation images")
    ap.add_argument("--n-iter", type=int, default=30)
    ap.add_argument("--no-skip", action="store_true",
                    help="mslib without its exact skips (fixed points, the VLM backward where it adds only zeros)")
    ap.add_argument("--parts", action="store_true",
                    help="mslib: also print the seconds of each model's forward and backward passes and the chain's "
                         "floor, its time less the VLM backward on rows whose VLM gradient is exactly zero")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.side == "original" and not (args.original and (args.original / "modified_autoattack.py").is_file()):
        ap.error("--side original needs --original PATH, a checkout of FrancescoVillani/Multi-Shield")
    if args.threads:
        torch.set_num_threads(args.threads)
    p = get_profile(args.profile)
    x, y, _ = load_eval_set(p)
    x, y = x[:args.n], y[:args.n]
    clf, vlm = load_classifier(p, args.classifier).eval(), load_vlm(p).eval()
    for m in (clf, vlm):
        m.requires_grad_(False)
    parts = timed_parts(clf, vlm) if args.parts and args.side == "mslib" else contextlib.nullcontext()
    with parts as t:
        t0 = time.perf_counter()
        if args.side == "original":
            x_adv, ms = original_chain(args.original, clf, vlm, x, y, p.eps, args.n_iter, p.batch_size,
                                       p.tolerance)
        else:
            x_adv, ms = mslib_chain(clf, vlm, x, y, p.eps, args.n_iter, p.batch_size, p.tolerance, p.seed,
                                    not args.no_skip)
        seconds = time.perf_counter() - t0
    if t:
        rest = seconds - sum(v for k, v in t.items() if k != "vlm_backward_idle")
        print("  parts: " + ", ".join(f"{PARTS[k]} {v:.1f} s" for k, v in t.items())
              + f", the rest {rest:.1f} s; floor {seconds - t['vlm_backward_idle']:.1f} s "
              f"({seconds / (seconds - t['vlm_backward_idle']):.2f}x under the chain)")
    with torch.no_grad():
        pred = torch.cat([ms(x_adv[i:i + p.batch_size]).argmax(1) for i in range(0, len(y), p.batch_size)])
    k = vlm.num_classes
    robust = 1 - ((pred != y) & (pred != k)).float().mean().item()
    inside = bool(((x_adv - x).abs().amax() <= p.eps + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1)
    print(f"{args.side}{' no-skip' if args.no_skip else ''}: {args.classifier}, {len(y)} images, {args.n_iter} "
          f"iterations: robust accuracy {robust:.4f}, attack chain {seconds:.1f} s, in the eps-ball {inside}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
