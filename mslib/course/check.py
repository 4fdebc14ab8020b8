"""Automatic checks of the course's exercises, run on real images and the profile's real models.

Each ``check.<exercise>(student_function, ...)`` calls the student's function, compares what it returns with
the formula (:mod:`mslib.course.reference`, or the library's own implementation where there is one), prints
one line — ``✅ correct — …`` or ``❌ not yet — …`` with what is wrong — and returns a :class:`Verdict`, which
is truthy exactly when the check passed. A check never raises because of the student's code: an unfilled
exercise (``raise NotImplementedError``), an exception or a wrong result all end in a printed verdict, so a
notebook runs on past its check cells. ``verdict.require()`` raises :class:`CheckFailed` (an
``AssertionError``) for scripts that want a hard failure.

:func:`mine_or_reference` hands later cells the student's function once its check passed, else the
reference one (saying so), so a lesson runs top to bottom before its exercises are done.
"""
from __future__ import annotations

import math
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import reference

PASS_MARK = "✅ correct"
FAIL_MARK = "❌ not yet"


class CheckFailed(AssertionError):
    """Raised by :meth:`Verdict.require` when a check did not pass."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: truthy when it passed; ``message`` says what was checked or what is wrong."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{PASS_MARK if self.passed else FAIL_MARK} — {self.name}: {self.message}"

    def _ipython_display_(self) -> None:  # the check already printed it; don't show it twice in a notebook
        pass

    def require(self) -> "Verdict":
        if not self.passed:
            raise CheckFailed(str(self))
        return self


class _Wrong(Exception):
    """A specific, explainable mistake in the student's result."""


# name -> latest Verdict in this Python session (read by mine_or_reference and summary)
RESULTS: dict[str, Verdict] = {}


def _run(name: str, body: Callable[[], str]) -> Verdict:
    try:
        with torch.random.fork_rng(devices=[]):  # checks seed the global RNG; leave the student's alone
            verdict = Verdict(name, True, body())
    except NotImplementedError:
        verdict = Verdict(name, False, "the exercise is not filled in yet (its cell still raises "
                                       "NotImplementedError): replace that line with your code, run the cell, "
                                       "then this check again.")
    except _Wrong as e:
        verdict = Verdict(name, False, str(e))
    except Exception as e:  # the student's code crashed: say where, briefly
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "mslib" not in (f.filename or "")]
        where = f" (at `{frames[-1].line}`)" if frames and frames[-1].line else ""
        verdict = Verdict(name, False, f"your function raised {type(e).__name__}: {e}{where}")
    RESULTS[name] = verdict
    print(verdict)
    return verdict


def _tensor(out: Any, what: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if out is None:
        raise _Wrong(f"{what} returned None: did you forget `return`?")
    if not isinstance(out, torch.Tensor):
        raise _Wrong(f"{what} must return a torch.Tensor, got {type(out).__name__}")
    if shape is not None and tuple(out.shape) != tuple(shape):
        raise _Wrong(f"{what} returned shape {tuple(out.shape)}, expected {tuple(shape)}")
    return out.detach()


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), atol=atol, rtol=0))


def _differ(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> str:
    d = (a.float() - b.float()).abs()
    return f"{100 * (d > atol).float().mean().item():.1f}% of the values differ (largest difference {d.max().item():.3g})"


def _linf(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() if a.numel() else 0.0


def _in_box(out: torch.Tensor, x: torch.Tensor, eps: float, what: str, slack: float = 1e-6) -> None:
    if torch.isnan(out).any():
        raise _Wrong(f"{what} contains NaN values")
    if out.min() < -slack or out.max() > 1 + slack:
        raise _Wrong(f"{what} leaves [0, 1] (range [{out.min().item():.3f}, {out.max().item():.3f}]): clip "
                     "the adversarial image to valid pixel values")
    if _linf(out, x) > eps + slack:
        raise _Wrong(f"{what} moves a pixel by {_linf(out, x):.4f}, more than eps = {eps:g}: project back "
                     "onto the L∞ ball")


def _unchanged(before: torch.Tensor, after: torch.Tensor, name: str) -> None:
    if not torch.equal(before, after):
        raise _Wrong(f"your function changed its input `{name}` in place; work on a copy (e.g. `{name}.clone()`)")


def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def mine_or_reference(fn: Callable, name: str) -> Callable:
    """``fn`` if its check (``name``) passed in this session, else the reference solution (with a note)."""
    v = RESULTS.get(name)
    if v is not None and v.passed:
        return fn
    print(f"ℹ using the reference `{name}` below, until yours passes its check")
    return getattr(reference, name)


def summary(names: list[str] | None = None) -> None:
    """Print one line per check run in this session (or per name given; unrun ones are listed as such)."""
    names = list(RESULTS) if names is None else names
    lines = [str(RESULTS[n]) if n in RESULTS else f"{FAIL_MARK} — {n}: not run yet" for n in names]
    done = sum(1 for n in names if n in RESULTS and RESULTS[n].passed)
    print("\n".join(lines + [f"{done} of {len(names)} checks passed"]))


# ================================================================================== lesson 1
def project(fn: Callable, x: torch.Tensor, eps: float = 0.1) -> Verdict:
    """``fn(x_adv, x, eps)``: the closest point of the eps-ball around x that is an image in [0, 1]."""
    def body() -> str:
        g = torch.Generator().manual_seed(0)
        x0 = x[:16].clone()
        inside = x0 + (2 * torch.rand(x0.shape, generator=g) - 1) * eps * 0.5
        inside = inside.clamp(0, 1)
        far = x0 + (2 * torch.rand(x0.shape, generator=g) - 1) * 4 * eps
        for name, cand in (("a point already inside the ball", inside), ("a point outside the ball and [0, 1]", far)):
            before = cand.clone()
            out = _tensor(fn(cand, x0, eps), "project", x0.shape)
            _unchanged(before, cand, "x_adv")
            _in_box(out, x0, eps, f"project(...) of {name}")
            want = reference.project(cand, x0, eps)
            if not _close(out, want):
                if name.startswith("a point already") and not _close(out, cand):
                    raise _Wrong("a point that is already inside the ball (and in [0, 1]) must come back unchanged")
                raise _Wrong(f"for {name} the result is not the closest point of the ball ∩ [0, 1]: "
                             f"{_differ(out, want)}. Clamp each pixel to [x − eps, x + eps], then to [0, 1].")
        return "points inside come back unchanged, others land on the closest point of the ball ∩ [0, 1]"

    return _run("project", body)


def fgsm(fn: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> Verdict:
    """``fn(model, x, y, eps)`` equals x + eps · sign(∇x CE) clipped to [0, 1] on a batch of real images."""
    def body() -> str:
        xb, yb = x[:32].clone(), y[:32]
        before = xb.clone()
        out = _tensor(fn(model, xb, yb, eps), "fgsm", xb.shape)
        _unchanged(before, xb, "x")
        xg = xb.clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(xg), yb), xg)
        want = (xb + eps * grad.sign()).clamp(0, 1)
        if _close(out, want):
            return (f"matches x + ε·sign(∇ₓ loss) clipped to [0, 1] on {len(yb)} images; accuracy "
                    f"{_accuracy(model, xb, yb):.0%} → {_accuracy(model, out, yb):.0%}")
        if _close(out, (xb - eps * grad.sign()).clamp(0, 1)):
            raise _Wrong("you step down the loss (x − ε·sign(∇)); the attacker goes *up* the loss: x + ε·sign(∇)")
        if _close(out, (xb + eps * grad).clamp(0, 1)) or _close(out, xb + eps * grad):
            raise _Wrong("you step along the raw gradient; FGSM uses its sign: x + ε·sign(∇ₓ loss)")
        if _close(out, xb + eps * grad.sign()):
            raise _Wrong("the step is right but the result leaves [0, 1]: clip it with .clamp(0, 1)")
        _in_box(out, xb, eps, "fgsm(...)")
        raise _Wrong(f"the result differs from x + ε·sign(∇ₓ CE(model(x), y)) clipped to [0, 1]: {_differ(out, want)}")

    return _run("fgsm", body)


def pgd(fn: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.05,
        steps: int = 10) -> Verdict:
    """``fn(model, x, y, eps, alpha, steps)`` stays in the ball and [0, 1], starts at random, and fools the model
    at least about as often as the reference PGD (and more often than FGSM) on real images."""
    def body() -> str:
        xb, yb = x[:64].clone(), y[:64]
        alpha = eps / 4
        before = xb.clone()
        torch.manual_seed(1)
        out = _tensor(fn(model, xb, yb, eps, alpha, steps), "pgd", xb.shape)
        _unchanged(before, xb, "x")
        _in_box(out, xb, eps, "pgd(...)")
        torch.manual_seed(2)
        again = _tensor(fn(model, xb, yb, eps, alpha, steps), "pgd", xb.shape)
        torch.manual_seed(1)
        mine = 1 - _accuracy(model, out, yb)
        ref_x, fgsm_x = reference.pgd(model, xb, yb, eps, alpha, steps), reference.fgsm(model, xb, yb, eps)
        ref, one_step = 1 - _accuracy(model, ref_x, yb), 1 - _accuracy(model, fgsm_x, yb)
        slack = max(0.1, 2 / len(yb))
        if mine < ref - slack:
            raise _Wrong(f"your PGD fools the model on {mine:.0%} of {len(yb)} images at eps = {eps:g}, the reference "
                         f"on {ref:.0%} (FGSM: {one_step:.0%}): take `steps` steps of size alpha along the gradient's "
                         "sign, projecting after each one, and recompute the gradient at the new point every step")
        # the fooling rate can tie with the reference's (it did for a gradient taken once, at the start, on the
        # course's CNN), but the loss it reaches cannot: the reference climbs well above FGSM's, and a PGD that
        # stops short of halfway between them did not keep following the gradient
        loss = [_mean_loss(model, a, yb) for a in (out, ref_x, fgsm_x)]
        if loss[0] < (loss[1] + loss[2]) / 2:
            raise _Wrong(f"your PGD reaches a mean cross-entropy of {loss[0]:.3f}, the reference {loss[1]:.3f} and "
                         f"one FGSM step {loss[2]:.3f}: recompute the gradient at the new point every step (a "
                         "gradient taken once and reused is FGSM in small steps)")
        if torch.equal(out, again):
            raise _Wrong("two runs with different seeds gave identical images: PGD starts at a uniformly random "
                         "point of the ball (x + U(−eps, eps), projected)")
        return (f"stays within eps = {eps:g} and [0, 1], starts at random, fools the model on {mine:.0%} of "
                f"{len(yb)} images (reference PGD {ref:.0%}, FGSM {one_step:.0%})")

    return _run("pgd", body)


# ================================================================================== lesson 2
def dlr_loss(fn: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Verdict:
    """``fn(z, y)`` equals the DLR loss per sample on real logits and hand-built ones, and is shift/scale invariant."""
    from ..attacks.losses import dlr_loss as lib_dlr

    def body() -> str:
        with torch.no_grad():
            z_real = model(x[:64]).float()
        y_real = y[:64]
        z_hand = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 5.0], [1.0, 1.0, 0.5, 0.0]])
        y_hand = torch.tensor([0, 1, 1])  # top class is y / another class is top / a tie at the top
        for what, z, yy in (("hand-built logits", z_hand, y_hand), ("the model's logits", z_real, y_real)):
            out = _tensor(fn(z.clone(), yy), "dlr_loss")
            if out.dim() == 0 or out.shape != (z.shape[0],):
                raise _Wrong(f"return one loss per sample (shape ({z.shape[0]},)), got shape {tuple(out.shape)}: "
                             "don't average over the batch")
            want = lib_dlr(z, yy)
            if not _close(out, want, atol=1e-5):
                if _close(out, -want, atol=1e-5):
                    raise _Wrong("the sign is flipped: the attacker maximizes −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3)")
                z_sorted = z.sort(dim=1, descending=True).values
                margin = z.gather(1, yy[:, None]).squeeze(1) - z.scatter(1, yy[:, None], float("-inf")).max(1).values
                if _close(out, -margin / (z_sorted[:, 0] - z_sorted[:, 1] + 1e-12), atol=1e-5):
                    raise _Wrong("the denominator uses the second-largest logit: it is the largest minus the "
                                 "*third*-largest, z_π1 − z_π3 (sorted descending, index 2)")
                if _close(out, -(z.gather(1, yy[:, None]).squeeze(1) - z_sorted[:, 0])
                          / (z_sorted[:, 0] - z_sorted[:, 2]), atol=1e-5):
                    raise _Wrong("the numerator compares z_y with the largest logit of all classes, y included: "
                                 "take the largest *other* logit, max_{j≠y} z_j")
                raise _Wrong(f"on {what}: {_differ(out, want, 1e-5)}. Numerator: z_y minus the largest *other* "
                             "logit; denominator: largest minus third-largest logit (over all classes)")
        out1 = _tensor(fn(z_real, y_real), "dlr_loss")
        out2 = _tensor(fn(7.0 * z_real - 3.0, y_real), "dlr_loss")
        if not _close(out1, out2, atol=1e-4):
            raise _Wrong("DLR must not change when the logits are scaled and shifted (7·z − 3)")
        return f"matches AutoAttack's DLR on {z_real.shape[0]} real and 3 hand-built logit vectors; shift/scale invariant"

    return _run("dlr_loss", body)


def apgd_checkpoints(fn: Callable) -> Verdict:
    """``fn(n_iter)`` lists the iterations at which APGD may halve its step size, as AutoAttack does."""
    from ..attacks.apgd import n_iter_checkpoints

    def body() -> str:
        for n in (10, 20, 30, 100, 1000):
            out = fn(n)
            if out is None:
                raise _Wrong("apgd_checkpoints returned None: did you forget `return`?")
            try:
                got = [int(v) for v in out]
            except TypeError:
                raise _Wrong(f"return a list of ints, got {type(out).__name__}") from None
            want = n_iter_checkpoints(n)
            if got != want:
                equal = list(range(want[0], n + 1, want[0]))
                off = {g - w for g, w in zip(got, want)}
                hint = (" The intervals must shrink: each is ⌊0.03·N⌋ shorter than the previous, but at least ⌊0.06·N⌋."
                        if got == equal else
                        " Every checkpoint is off by one: they count iterations from 1, the first is ⌊0.22·N⌋."
                        if len(got) == len(want) and len(off) == 1 and off <= {-1, 1} else "")
                raise _Wrong(f"for n_iter = {n} expected {want}, got {got}.{hint}")
        return f"the checkpoints match APGD's for 10 to 1000 iterations (N = 100: {n_iter_checkpoints(100)})"

    return _run("apgd_checkpoints", body)


def momentum_step(fn: Callable, x: torch.Tensor, eps: float = 0.1) -> Verdict:
    """``fn(x_k, x_prev, grad, x, eps, step, alpha)`` is APGD's momentum update on real images."""
    def body() -> str:
        g = torch.Generator().manual_seed(0)
        x0 = x[:16].clone()
        x_prev = reference.project(x0 + (2 * torch.rand(x0.shape, generator=g) - 1) * eps, x0, eps)
        x_k = reference.project(x0 + (2 * torch.rand(x0.shape, generator=g) - 1) * eps, x0, eps)
        grad = torch.randn(x0.shape, generator=g)
        step, alpha = 2 * eps, 0.75
        args = [t.clone() for t in (x_k, x_prev, grad, x0)]
        out = _tensor(fn(*args, eps, step, alpha), "momentum_step", x0.shape)
        for a, b, n in zip(args, (x_k, x_prev, grad, x0), ("x_k", "x_prev", "grad", "x")):
            _unchanged(b, a, n)
        want = reference.momentum_step(x_k, x_prev, grad, x0, eps, step, alpha)
        if _close(out, want):
            return "matches z = P(x_k + η·sign(∇)), x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1}))"
        if _close(out, reference.momentum_step(x_k, x_prev, grad, x0, eps, step, 1 - alpha)):
            raise _Wrong("alpha and 1 − alpha are swapped: alpha weighs the new step (z − x_k), 1 − alpha the momentum")
        if _close(out, reference.project(x_k + step * grad.sign(), x0, eps)):
            raise _Wrong("that is a plain PGD step: add the momentum term (1 − alpha)(x_k − x_prev)")
        z = reference.project(x_k + step * grad.sign(), x0, eps)
        if _close(out, reference.project(x_k + alpha * (z - x_k) + (1 - alpha) * (x_prev - x_k), x0, eps)):
            raise _Wrong("the momentum points backwards: it is (1 − alpha)(x_k − x_prev), the direction of the last "
                         "step, not (x_prev − x_k)")
        _in_box(out, x0, eps, "momentum_step(...)")
        raise _Wrong(f"{_differ(out, want)}: project twice, z = P(x_k + step·sign(grad)) first, then the combination")

    return _run("momentum_step", body)


# ================================================================================== lesson 3
def fgsm_rs_perturb(fn: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> Verdict:
    """``fn(model, x, y, eps, alpha, delta0)`` is FGSM from the random start x + delta0 (Wong et al. 2020)."""
    def body() -> str:
        xb, yb = x[:32].clone(), y[:32]
        g = torch.Generator().manual_seed(0)
        delta0 = (torch.rand(xb.shape, generator=g) * 2 - 1) * eps
        alpha = 1.25 * eps
        before, d_before = xb.clone(), delta0.clone()
        out = _tensor(fn(model, xb, yb, eps, alpha, delta0), "fgsm_rs_perturb", xb.shape)
        _unchanged(before, xb, "x")
        _unchanged(d_before, delta0, "delta0")
        want = reference.fgsm_rs_perturb(model, xb, yb, eps, alpha, delta0)
        if _close(out, want):
            return "matches P(clip(x + δ₀) + α·sign(∇ loss there)) on 32 images"
        if _close(out, reference.fgsm(model, xb, yb, eps)) or _close(out, reference.project(
                reference.fgsm(model, xb, yb, alpha), xb, eps)):
            raise _Wrong("the random start is missing: take the gradient at x0 = clip(x + delta0), not at x")

        def step_from(start: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
            start = start.clone().requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(model(start), yb), start)
            return reference.project(start.detach() + alpha * grad.sign(), centre, eps)

        x0 = (xb + delta0).clamp(0, 1)
        if _close(out, step_from(x0, x0)):
            raise _Wrong("you project onto the eps-ball around the start x0: project onto the ball around the "
                         "clean image x")
        if _close(out, step_from(xb + delta0, xb)):
            raise _Wrong("the start x + delta0 leaves [0, 1]: clip it, x0 = clip(x + delta0, 0, 1), before taking "
                         "the gradient there")
        _in_box(out, xb, eps, "fgsm_rs_perturb(...)")
        raise _Wrong(f"{_differ(out, want)}. From x0 = clip(x + delta0, 0, 1): one step of size alpha along "
                     "sign(∇ CE) at x0, then project onto the eps-ball around x (not x0) and [0, 1]")

    return _run("fgsm_rs_perturb", body)


def adversarial_loss(fn: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> Verdict:
    """``fn(model, x, y, eps, alpha, generator)`` is the differentiable FGSM-RS training loss of a batch."""
    def body() -> str:
        xb, yb = x[:32].clone(), y[:32]
        alpha = 1.25 * eps
        params = [p for p in model.parameters()]
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        try:
            loss = fn(model, xb, yb, eps, alpha, torch.Generator().manual_seed(0))
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise _Wrong("return the batch loss as a scalar tensor (the mean cross-entropy)")
            if not loss.requires_grad:
                raise _Wrong("the loss carries no gradient for the model's weights: don't compute it under "
                             "torch.no_grad() or .detach() it; only the adversarial images should be detached")
            again = fn(model, xb, yb, eps, alpha, torch.Generator().manual_seed(0))
            if isinstance(again, torch.Tensor) and not torch.equal(loss.detach(), again.detach()):
                raise _Wrong("two calls with the same generator gave different losses: draw the random start from "
                             "it, torch.rand(x.shape, generator=generator), not from the global random state")
            want = reference.adversarial_loss(model, xb, yb, eps, alpha, torch.Generator().manual_seed(0))
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)
        with torch.no_grad():
            clean = F.cross_entropy(model(xb), yb)
        got = float(loss.detach())
        want = float(want.detach())
        if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5):
            return f"FGSM-RS loss {got:.4f} (clean loss {clean.item():.4f}) matches the reference on 32 images"
        if math.isclose(got, clean.item(), rel_tol=1e-4, abs_tol=1e-5):
            raise _Wrong("that is the loss on the clean images: train on the FGSM-RS examples instead")
        raise _Wrong(f"loss {got:.4f}, expected {want:.4f}: draw delta0 = (torch.rand(x.shape, "
                     "generator=generator) * 2 - 1) * eps first, then x_adv = fgsm_rs_perturb(...), then CE on x_adv")

    return _run("adversarial_loss", body)


# ================================================================================== lesson 4
def class_embeddings(fn: Callable, vlm: nn.Module, classnames, templates) -> Verdict:
    """``fn(encode_text, classnames, templates)`` averages normalized template embeddings per class, as CLIP."""
    from ..models.zeroshot import build_text_embeddings

    def body() -> str:
        text = getattr(vlm, "text_tower", None)
        if text is None:
            raise _Wrong("this VLM carries no text tower (load it with mslib.load_vlm)")
        model, tokenizer = text
        with torch.no_grad():
            def encode_text(texts):
                return model.encode_text(tokenizer(list(texts)))

            out = _tensor(fn(encode_text, list(classnames), list(templates)), "class_embeddings")
            want = build_text_embeddings(model, tokenizer, list(classnames), list(templates))
            if out.shape != want.shape:
                raise _Wrong(f"expected one row per class, shape {tuple(want.shape)}, got {tuple(out.shape)}")
            if _close(out, want, atol=1e-5):
                return (f"{len(classnames)} class embeddings averaged over {len(templates)} templates match "
                        "open_clip's zero-shot recipe")
            if not torch.allclose(out.float().norm(dim=1), torch.ones(out.shape[0]), atol=1e-4):
                raise _Wrong("each class embedding must have norm 1: normalize the average")
            raw = torch.stack([F.normalize(encode_text([t.format(c) for t in templates]).float().mean(0), dim=-1)
                               for c in classnames])
            if _close(out, raw, atol=1e-5):
                raise _Wrong("normalize each template's embedding *before* averaging (then normalize the average)")
            raise _Wrong(f"{_differ(out, want, 1e-5)}: per class, format every template with the class name")

    return _run("class_embeddings", body)


# (description, classifier logits f, VLM similarities s, tolerance): the tricky cases of the rule
RULE_CASES = [
    ("both models agree", [[0.1, 2.0, 0.3]], [[0.20, 0.30, 0.10]], 1e-3),
    ("the VLM prefers another class by more than the tolerance", [[0.1, 2.0, 0.3]], [[0.40, 0.30, 0.10]], 1e-3),
    ("a tie in the classifier's top logits (argmax takes the first)", [[1.0, 3.0, 3.0]], [[0.1, 0.5, 0.2]], 0.25),
    ("a tie at the VLM's top between ŷ and another class (gap 0: accept)", [[5.0, 1.0, 0.0]], [[0.5, 0.5, 0.1]], 0.0),
    ("a gap exactly equal to the tolerance (accept: reject only above it)", [[0.0, 1.0, 0.0]], [[0.5, 0.25, 0.0]], 0.25),
    ("a gap just above the tolerance (reject)", [[0.0, 1.0, 0.0]], [[0.5, 0.2421875, 0.0]], 0.25),
    ("tolerance 0 and a tiny gap (reject)", [[0.0, 1.0]], [[0.0009765625, 0.0]], 0.0),
    ("negative similarities", [[0.0, 0.0, 1.0]], [[-0.2, -0.5, -0.3]], 0.05),
]


def multishield_decide(fn: Callable, f: torch.Tensor | None = None, s: torch.Tensor | None = None,
                     tolerance: float = 1e-3) -> Verdict:
    """``fn(f, s, tolerance)`` matches :func:`mslib.defense.decide` on hand-built cases and on real outputs."""
    from ..defense import decide

    def body() -> str:
        cases = [(d, torch.tensor(a), torch.tensor(b), t) for d, a, b, t in RULE_CASES]
        if f is not None and s is not None:
            cases.append(("the models' outputs on real images", f.detach(), s.detach(), tolerance))
        for desc, ff, ss, tol in cases:
            out = _tensor(fn(ff.clone(), ss.clone(), tol), "multishield_decide")
            want = decide(ff, ss, tol)
            if out.shape != want.shape:
                raise _Wrong(f"return one label per input, shape {tuple(want.shape)}; got {tuple(out.shape)}")
            if out.is_floating_point():
                raise _Wrong("return integer labels (0..K−1 for a class, K for rejected)")
            if not torch.equal(out.long(), want):
                bad = (out.long() != want).nonzero().flatten()[0].item()
                k = ff.shape[1]
                show = lambda v: "rejected (K)" if v == k else f"class {v}"  # noqa: E731
                raise _Wrong(f"case '{desc}': expected {show(want[bad].item())}, got {show(out[bad].item())}"
                             + (f" (f = {ff[bad].tolist()}, s = {ss[bad].tolist()}, tolerance = {tol:g})"
                                if ff.shape[0] == 1 else f" on {int((out.long() != want).sum())} of {len(want)} images"))
        extra = " and on the models' outputs" if f is not None else ""
        return f"agrees with mslib.defense.decide on {len(RULE_CASES)} hand-built cases (ties, the tolerance boundary){extra}"

    return _run("multishield_decide", body)


def tolerance_sweep(fn: Callable, f: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> Verdict:
    """``fn(f, s, y, tolerances)`` → DataFrame (tolerance, clean_acc, clean_reject) as the library computes them."""
    from .. import metrics
    from ..defense import decide

    def body() -> str:
        tols = [0.0, 1e-3, 1e-2, 5e-2, 0.2]
        df = fn(f.detach(), s.detach(), y, tols)
        cols = ["tolerance", "clean_acc", "clean_reject"]
        if df is None or not hasattr(df, "columns") or any(c not in df.columns for c in cols):
            raise _Wrong(f"return a pandas DataFrame with columns {cols}")
        if len(df) != len(tols):
            raise _Wrong(f"one row per tolerance: expected {len(tols)} rows, got {len(df)}")
        for row, tol in zip(df.itertuples(), tols):
            pred = decide(f, s, tol)
            acc = metrics.clean_accuracy(pred, y).value
            rej = metrics.rejection_rate(pred, f.shape[1]).value
            if not math.isclose(float(row.tolerance), tol, abs_tol=1e-12):
                raise _Wrong(f"rows must follow the tolerances in order; row has tolerance {row.tolerance}, expected {tol}")
            if not math.isclose(float(row.clean_reject), rej, abs_tol=1e-6):
                raise _Wrong(f"at tolerance {tol:g}: rejection rate {float(row.clean_reject):.3f}, expected {rej:.3f}")
            if not math.isclose(float(row.clean_acc), acc, abs_tol=1e-6):
                both = metrics.rate((pred == y) | (pred == f.shape[1])).value
                hint = (" — on clean inputs a rejection counts as an error, not as correct"
                        if math.isclose(float(row.clean_acc), both, abs_tol=1e-6) else "")
                raise _Wrong(f"at tolerance {tol:g}: clean accuracy {float(row.clean_acc):.3f}, expected {acc:.3f}{hint}")
        return f"clean accuracy and rejection match the library at {len(tols)} tolerances on {len(y)} images"

    return _run("tolerance_sweep", body)


# ================================================================================== lesson 5
def reject_aware_loss(fn: Callable, shield: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Verdict:
    """``fn(z, y)`` on Multi-Shield's K+1 logits equals the paper's adaptive loss CE(z, y) + CE(z, K)."""
    from ..attacks.losses import ce_reject_loss

    def body() -> str:
        with torch.no_grad():
            z = shield(x[:32]).float()
        yb = y[:32]
        out = _tensor(fn(z.clone(), yb), "reject_aware_loss")
        if out.shape != (z.shape[0],):
            raise _Wrong(f"return one loss per sample (shape ({z.shape[0]},)), got {tuple(out.shape)}: use "
                         "reduction='none'")
        want = ce_reject_loss(z, yb)
        if _close(out, want, atol=1e-4):
            return f"matches CE(z, y) + CE(z, K) on Multi-Shield's logits for {z.shape[0]} images"
        if _close(out, F.cross_entropy(z, yb, reduction="none"), atol=1e-4):
            raise _Wrong("that is only CE(z, y): add the cross-entropy towards the rejection class K (the last logit)")
        raise _Wrong(f"{_differ(out, want, 1e-4)}: the rejection class is the last index, z.shape[1] − 1")

    return _run("reject_aware_loss", body)


def outcome_breakdown(fn: Callable, shield_pred: torch.Tensor | None = None, y: torch.Tensor | None = None,
                      reject_label: int = 10) -> Verdict:
    """``fn(pred, y, reject_label)`` → dict of fractions correct / rejected / wrong / robust."""
    def body() -> str:
        cases = [(torch.tensor([0, 1, 10, 3, 10, 5, 6, 2]), torch.tensor([0, 1, 2, 4, 4, 5, 7, 2]), 10)]
        if shield_pred is not None and y is not None:
            cases.append((shield_pred, y, reject_label))
        for pred, yy, k in cases:
            out = fn(pred.clone(), yy.clone(), k)
            if not isinstance(out, dict):
                raise _Wrong(f"return a dict with keys correct, rejected, wrong, robust; got {type(out).__name__}")
            want = reference.outcome_breakdown(pred, yy, k)
            missing = [key for key in want if key not in out]
            if missing:
                raise _Wrong(f"the dict lacks keys {missing}")
            for key, v in want.items():
                if not math.isclose(float(out[key]), v, abs_tol=1e-6):
                    raise _Wrong(f"'{key}' is {float(out[key]):.3f}, expected {v:.3f} (pred = {pred.tolist()[:8]}…, "
                                 f"y = {yy.tolist()[:8]}…, reject label {k})")
        return "correct + rejected + wrong = 1 and robust = correct + rejected, on hand-built and real predictions"

    return _run("outcome_breakdown", body)


def agreement_loss(fn: Callable, shield: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Verdict:
    """``fn(f, s, target)`` equals log p_f(t) + log p_s(t) (the agreement attack's joint loss) on real outputs."""
    from ..attacks.agreement import joint_loss

    def body() -> str:
        with torch.no_grad():
            f, s = shield.branches(x[:32])
        f, s = f.float(), s.float()
        n, k = f.shape
        target = (y[:n] + 1 + torch.arange(n) % (k - 1)) % k  # a wrong class for every image
        out = _tensor(fn(f.clone(), s.clone(), target), "agreement_loss")
        if out.shape != (f.shape[0],):
            raise _Wrong(f"return one value per sample (shape ({f.shape[0]},)), got {tuple(out.shape)}")
        want = joint_loss(torch.cat([f, s], dim=1), torch.stack([y[:n], target], dim=1))  # yt = (y, t) pairs
        if _close(out, want, atol=1e-4):
            return f"matches log softmax(f)_t + log softmax(100·s)_t on {f.shape[0]} images"
        if _close(out, F.log_softmax(f, 1).gather(1, target[:, None]).squeeze(1)
                  + F.log_softmax(s, 1).gather(1, target[:, None]).squeeze(1), atol=1e-4):
            raise _Wrong("scale the VLM's similarities by 100 (CLIP's logit scale) before the softmax")
        raise _Wrong(f"{_differ(out, want, 1e-4)}: log-probability of the target under each branch, summed")

    return _run("agreement_loss", body)


# ================================================================================== lesson 6
def worst_case(fn: Callable, robust: dict[str, torch.Tensor] | None = None) -> Verdict:
    """``fn({attack: robust mask})`` → per-sample mask robust under every attack."""
    def body() -> str:
        hand = {"a": torch.tensor([True, True, False, True, False]),
                "b": torch.tensor([True, False, True, True, False]),
                "c": torch.tensor([True, True, True, False, False])}
        cases = [hand, {"only": torch.tensor([True, False, True])}]
        if robust is not None:
            cases.append(robust)
        for masks in cases:
            copies = {k: v.clone() for k, v in masks.items()}
            out = _tensor(fn(copies), "worst_case", next(iter(masks.values())).shape)
            for k in masks:
                _unchanged(masks[k], copies[k], f"robust['{k}']")
            want = reference.worst_case(masks)
            if not torch.equal(out.bool(), want):
                anyone = torch.stack([m.bool() for m in masks.values()]).any(0)
                hint = (" — robust in the worst case means robust under *every* attack (AND), not under any (OR)"
                        if torch.equal(out.bool(), anyone) else "")
                raise _Wrong(f"for {len(masks)} attacks expected {want.tolist()}, got {out.bool().tolist()}{hint}")
        return "a sample counts as robust only when every attack failed on it"

    return _run("worst_case", body)


def wilson_interval(fn: Callable) -> Verdict:
    """``fn(count, n)`` is the 95% Wilson score interval, also at 0 and n."""
    from ..metrics import wilson_interval as lib_wilson

    def body() -> str:
        for count, n in ((0, 10), (10, 10), (5, 10), (37, 40), (150, 300), (1, 1000)):
            out = fn(count, n)
            try:
                lo, hi = (float(v) for v in out)
            except (TypeError, ValueError):
                raise _Wrong(f"return a pair (low, high), got {out!r}") from None
            want = lib_wilson(count, n)
            if not (math.isclose(lo, want[0], abs_tol=1e-6) and math.isclose(hi, want[1], abs_tol=1e-6)):
                p, z = count / n, 1.959963984540054
                wald = (p - z * math.sqrt(p * (1 - p) / n), p + z * math.sqrt(p * (1 - p) / n))
                hint = (" — that is the normal (Wald) interval, which collapses to a point at 0 and n; use Wilson's"
                        if math.isclose(lo, wald[0], abs_tol=1e-4) and math.isclose(hi, wald[1], abs_tol=1e-4) else "")
                raise _Wrong(f"for {count}/{n} expected [{want[0]:.4f}, {want[1]:.4f}], got [{lo:.4f}, {hi:.4f}]{hint}")
        return "matches the Wilson interval of mslib.metrics for 6 cases, 0/10 and 10/10 included"

    return _run("wilson_interval", body)


def red_flags(fn: Callable) -> Verdict:
    """``fn(gradient_acc, gradient_free_acc, defense_acc, clf_acc_half_eps)`` → the list of flags raised."""
    g, e = reference.GRADIENT_FREE_FLAG, reference.EPS_HALF_FLAG

    def body() -> str:
        cases = [((0.40, 0.45, 0.40, 0.50), []), ((0.40, 0.30, 0.30, 0.50), [g]), ((0.40, 0.45, 0.60, 0.50), [e]),
                 ((0.40, 0.20, 0.60, 0.50), [g, e]), ((0.40, 0.40, 0.50, 0.50), [])]
        for args, want in cases:
            out = fn(*args)
            if not isinstance(out, (list, tuple)):
                raise _Wrong(f"return a list of flag strings, got {type(out).__name__}")
            if sorted(out) != sorted(want):
                raise _Wrong(f"for gradient_acc, gradient_free_acc, defense_acc, clf_acc_half_eps = {args} expected "
                             f"{want}, got {list(out)} (a tie raises no flag)")
        return "raises each flag exactly when its condition holds (ties raise none)"

    return _run("red_flags", body)


__all__ = ["CheckFailed", "FAIL_MARK", "PASS_MARK", "RESULTS", "RULE_CASES", "Verdict", "adversarial_loss",
           "agreement_loss", "apgd_checkpoints", "class_embeddings", "dlr_loss", "fgsm", "fgsm_rs_perturb",
           "mine_or_reference", "momentum_step", "multishield_decide", "outcome_breakdown", "pgd", "project",
           "red_flags", "reject_aware_loss", "summary", "tolerance_sweep", "wilson_interval", "worst_case"]
