"""The course: lesson sources follow the conventions, `make course` builds student and solution notebooks,
every solution notebook passes its checks on the smoke profile, every student notebook fails them cleanly,
and each checker accepts the reference and rejects typical mistakes."""
from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from mslib.course import build, check, reference
from mslib.course.check import FAIL_MARK, PASS_MARK

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "course" / "lessons").glob("[0-9]*.ipynb"))
# smoke-sized values for the lessons' parameters (each lesson gets those it declares)
SMOKE = {"profile": "smoke", "n_images": 24, "n_iter": 5, "n_attack": 6, "train_images": 1000, "epochs": 1}


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif o.get("output_type") == "error":
            parts.append(f"{o.get('ename')}: {o.get('evalue')}")
        else:
            parts.append(json.dumps(o.get("data", {})))
    return "".join(parts)


# ----------------------------------------------------------------------------------- sources and build
def test_six_lessons_with_parameters_goals_time_and_two_to_four_exercises():
    assert [p.name[:2] for p in LESSONS] == ["01", "02", "03", "04", "05", "06"]
    for path in LESSONS:
        cells = nbformat.read(path, as_version=4).cells
        assert all(not c.get("outputs") for c in cells if c.cell_type == "code"), f"{path.name} carries outputs"
        params = [c for c in cells if "parameters" in _tags(c)]
        assert len(params) == 1 and params[0].source.lstrip().startswith('profile = "tiny"'), path.name
        intro = cells[0].source
        assert "Learning goals" in intro and "Run time" in intro, path.name
        exercises = [i for i, c in enumerate(cells) if "exercise" in _tags(c)]
        checks = [i for i, c in enumerate(cells) if "check" in _tags(c)]
        assert 2 <= len(exercises) <= 4 and len(checks) == len(exercises), path.name
        for i, j in zip(exercises, checks):
            assert i < j and "check." in cells[j].source, f"{path.name}: exercise cell {i} has no check after it"
        assert any("Hint" in c.source for c in cells if c.cell_type == "markdown"), path.name


def test_build_writes_student_and_solution_versions(tmp_path):
    written = build.build(ROOT / "course" / "lessons", tmp_path, log=lambda *_: None)
    assert [p.name for p in written["student"]] == [p.name for p in LESSONS]
    for path in LESSONS:
        src = nbformat.read(path, as_version=4)
        student = nbformat.read(tmp_path / "student" / path.name, as_version=4)
        solution = nbformat.read(tmp_path / "solutions" / path.name, as_version=4)
        s_text = "\n".join(c.source for c in student.cells)
        assert build.BEGIN not in s_text and build.END not in s_text
        assert not any("solution" in _tags(c) for c in student.cells)
        assert s_text.count(build.STUB) == sum("exercise" in _tags(c) for c in src.cells)
        # no line of any solution block survives in the student version (unless the lesson shows it elsewhere)
        outside = {line for c in src.cells for line in build.strip_solution(c.source).splitlines()}
        for c in src.cells:
            lines, inside = [], False
            for line in c.source.splitlines():
                if line.strip() == build.END:
                    inside = False
                if inside and line.strip():
                    lines.append(line)
                if line.strip() == build.BEGIN:
                    inside = True
            for line in (line for line in lines if line not in outside):
                assert line not in s_text.splitlines(), f"{path.name}: solution line {line!r} left in the student copy"
        sol_text = "\n".join(c.source for c in solution.cells)
        assert build.BEGIN not in sol_text and build.STUB not in sol_text
        assert len(solution.cells) == len(src.cells) + 1  # the banner


def test_build_keeps_a_student_notebook_its_student_edited(tmp_path):
    build.build(ROOT / "course" / "lessons", tmp_path, log=lambda *_: None)
    target = tmp_path / "student" / LESSONS[0].name
    nb = nbformat.read(target, as_version=4)
    ex = next(c for c in nb.cells if "exercise" in _tags(c))
    ex.source = ex.source.replace(build.STUB, "return x_adv  # my attempt")
    nbformat.write(nb, target)
    messages = []
    build.build(ROOT / "course" / "lessons", tmp_path, log=messages.append)
    assert "my attempt" in target.read_text() and any("kept" in m for m in messages)
    build.build(ROOT / "course" / "lessons", tmp_path, force=True, log=lambda *_: None)
    assert "my attempt" not in target.read_text()


def test_build_rejects_broken_markers():
    with pytest.raises(build.CourseSourceError, match="never closed"):
        build.strip_solution("def f():\n    # BEGIN SOLUTION\n    return 1\n")
    with pytest.raises(build.CourseSourceError, match="without"):
        build.strip_solution("x = 1\n# END SOLUTION\n")
    assert build.strip_solution("def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION") == (
        f"def f():\n    # YOUR CODE HERE\n    {build.STUB}")


# ------------------------------------------------------------------------- every notebook on smoke
@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[tuple[str, str], tuple[nbformat.NotebookNode, str | None, float]]:
    """(version, lesson) -> (executed notebook, error or None, seconds), all 12 runs on the smoke profile
    (the student versions up to their last check), one after another in one kernel."""
    import papermill as pm

    from notebook_kernel import shared_kernel

    out = tmp_path_factory.mktemp("course_smoke")
    build.build(ROOT / "course" / "lessons", out, log=lambda *_: None)
    runs = {}
    with shared_kernel() as run:
        for version in build.VERSIONS:
            for path in LESSONS:
                src = out / version / path.name
                if version == "student":  # its checks only say "not filled in yet": run it up to its last check
                    nb = nbformat.read(src, as_version=4)
                    last = max(i for i, c in enumerate(nb.cells) if "check" in _tags(c))
                    nb.cells = nb.cells[:last + 1]
                    nbformat.write(nb, src)
                declared = pm.inspect_notebook(str(src))
                params = {k: v for k, v in SMOKE.items() if k in declared}
                target = out / f"{version}-{path.name}"
                error, t0 = None, time.perf_counter()
                try:
                    run(src, target, params, src.parent)
                except pm.PapermillExecutionError as e:
                    error = f"{e.ename}: {e.evalue}"
                runs[(version, path.stem)] = (nbformat.read(target, as_version=4), error, time.perf_counter() - t0)
    print("\n".join(f"{v}/{n}: {s:.1f} s" for (v, n), (_, _, s) in runs.items()))
    return runs


@pytest.mark.slow
def test_solution_notebooks_pass_every_check(executed):
    for path in LESSONS:
        nb, error, _ = executed[("solutions", path.stem)]
        assert error is None, f"solutions/{path.name} failed: {error}"
        checks = [c for c in nb.cells if "check" in _tags(c)]
        assert len(checks) >= 2
        for c in checks:
            out = _text(c)
            assert PASS_MARK in out and FAIL_MARK not in out, f"solutions/{path.name}: {c.source!r} -> {out!r}"
        assert "checks passed" in _text(nb.cells[-2]) or any("checks passed" in _text(c) for c in nb.cells)


@pytest.mark.slow
def test_student_notebooks_fail_their_checks_cleanly(executed):
    for path in LESSONS:
        nb, error, _ = executed[("student", path.stem)]
        assert error is None, f"student/{path.name} crashed outside its checks: {error}"
        for c in nb.cells:
            if c.cell_type == "code":
                assert not any(o.get("output_type") == "error" for o in c.get("outputs", [])), c.source
        for c in (c for c in nb.cells if "check" in _tags(c)):
            out = _text(c)
            assert FAIL_MARK in out and "not filled in yet" in out and PASS_MARK not in out, f"{path.name}: {out!r}"


@pytest.mark.slow
def test_outputs_are_clean_and_widgets_fall_back_to_figures(executed):
    for (version, name), (nb, _, _) in executed.items():
        every = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
        assert "IProgress not found" not in every, f"{version}/{name}"
        assert "TqdmWarning" not in every and "Traceback" not in every, f"{version}/{name}"
        explorers = [c for c in nb.cells if c.cell_type == "code" and "course.eps_explorer(" in c.source]
        for c in explorers:
            kinds = {k for o in c.get("outputs", []) for k in o.get("data", {})}
            assert "image/png" in kinds and "application/vnd.jupyter.widget-view+json" not in kinds, f"{version}/{name}"
    assert sum(1 for (v, _), (nb, _, _) in executed.items() if v == "solutions"
               and any("course.eps_explorer(" in c.source for c in nb.cells)) >= 3


# ------------------------------------------------------------------------- the checkers themselves
@pytest.fixture(scope="module")
def cnn_data(small_classifier, fashion_small):
    _, _, x, y = fashion_small
    return small_classifier, x[:64], y[:64]


@pytest.fixture(scope="module")
def shield(small_classifier, stand_in_vlm):
    import mslib

    return mslib.MultiShield(small_classifier, stand_in_vlm, tolerance=1e-3)


def _message(verdict) -> str:
    assert not verdict, f"a wrong implementation passed: {verdict}"
    return verdict.message


def test_verdicts_print_and_never_raise(capsys):
    def boom(x_adv, x, eps):
        raise ZeroDivisionError("oops")

    def todo(x_adv, x, eps):
        raise NotImplementedError

    x = torch.rand(4, 1, 28, 28)
    assert "ZeroDivisionError: oops" in _message(check.project(boom, x))
    assert "not filled in yet" in _message(check.project(todo, x))
    assert check.project(reference.project, x)
    printed = capsys.readouterr().out
    assert printed.count(FAIL_MARK) == 2 and printed.count(PASS_MARK) == 1
    with pytest.raises(check.CheckFailed):
        check.project(todo, x).require()
    assert check.mine_or_reference(boom, "project") is reference.project  # its last check failed
    assert check.mine_or_reference(reference.project, "project") is reference.project


def test_project_check(cnn_data):
    _, x, _ = cnn_data
    assert check.project(reference.project, x)
    assert "ball" in _message(check.project(lambda xa, x0, e: xa.clamp(0, 1), x))
    assert "[0, 1]" in _message(check.project(lambda xa, x0, e: torch.min(torch.max(xa, x0 - e), x0 + e), x))
    assert "in place" in _message(check.project(lambda xa, x0, e: xa.clamp_(0, 1).clamp_(x0 - e, x0 + e), x))


def test_fgsm_check(cnn_data):
    model, x, y = cnn_data

    def down(m, xb, yb, eps):
        xg = xb.clone().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(m(xg), yb), xg)
        return (xb - eps * g.sign()).clamp(0, 1)

    def unclipped(m, xb, yb, eps):
        xg = xb.clone().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(m(xg), yb), xg)
        return xb + eps * g.sign()

    assert check.fgsm(reference.fgsm, model, x, y, 0.1)
    assert "down" in _message(check.fgsm(down, model, x, y, 0.1))
    assert "leaves [0, 1]" in _message(check.fgsm(unclipped, model, x, y, 0.1))
    assert "differs" in _message(check.fgsm(lambda m, xb, yb, e: xb + 0, model, x, y, 0.1))


def test_pgd_check(cnn_data):
    model, x, y = cnn_data

    def no_start(m, xb, yb, eps, alpha, steps):
        x_adv = xb.clone()
        for _ in range(steps):
            x_adv.requires_grad_(True)
            g, = torch.autograd.grad(F.cross_entropy(m(x_adv), yb), x_adv)
            x_adv = reference.project(x_adv.detach() + alpha * g.sign(), xb, eps)
        return x_adv

    def noise_only(m, xb, yb, eps, alpha, steps):
        return reference.project(xb + (2 * torch.rand_like(xb) - 1) * eps, xb, eps)

    def too_far(m, xb, yb, eps, alpha, steps):
        return reference.pgd(m, xb, yb, 2 * eps, alpha, steps)

    assert check.pgd(reference.pgd, model, x, y)
    assert "random" in _message(check.pgd(no_start, model, x, y))
    assert "fools the model" in _message(check.pgd(noise_only, model, x, y))
    assert "more than eps" in _message(check.pgd(too_far, model, x, y))


def test_lesson2_checks(cnn_data):
    model, x, y = cnn_data
    assert check.dlr_loss(reference.dlr_loss, model, x, y)
    assert "sign" in _message(check.dlr_loss(lambda z, yy: -reference.dlr_loss(z, yy), model, x, y))
    assert "per sample" in _message(check.dlr_loss(lambda z, yy: reference.dlr_loss(z, yy).mean(), model, x, y))
    assert check.apgd_checkpoints(reference.apgd_checkpoints)
    equal = lambda n: list(range(max(int(0.22 * n), 1), n + 1, max(int(0.22 * n), 1)))  # noqa: E731
    assert "shrink" in _message(check.apgd_checkpoints(equal))
    assert check.momentum_step(reference.momentum_step, x)
    swapped = lambda xk, xp, g, x0, e, s, a=0.75: reference.momentum_step(xk, xp, g, x0, e, s, 1 - a)  # noqa: E731
    assert "swapped" in _message(check.momentum_step(swapped, x))
    plain = lambda xk, xp, g, x0, e, s, a=0.75: reference.project(xk + s * g.sign(), x0, e)  # noqa: E731
    assert "momentum" in _message(check.momentum_step(plain, x))


def test_lesson3_checks(cnn_data):
    model, x, y = cnn_data
    assert check.fgsm_rs_perturb(reference.fgsm_rs_perturb, model, x, y, 0.1)
    no_start = lambda m, xb, yb, e, a, d0: reference.fgsm(m, xb, yb, e)  # noqa: E731
    assert "random start" in _message(check.fgsm_rs_perturb(no_start, model, x, y, 0.1))
    assert check.adversarial_loss(reference.adversarial_loss, model, x, y, 0.1)
    clean = lambda m, xb, yb, e, a, g: F.cross_entropy(m(xb), yb)  # noqa: E731
    assert "clean" in _message(check.adversarial_loss(clean, model, x, y, 0.1))
    detached = lambda m, xb, yb, e, a, g: reference.adversarial_loss(m, xb, yb, e, a, g).detach()  # noqa: E731
    assert "no gradient" in _message(check.adversarial_loss(detached, model, x, y, 0.1))


def test_multishield_rule_check_covers_ties_and_the_boundary(shield, cnn_data):
    _, x, _ = cnn_data
    with torch.no_grad():
        f, s = shield.branches(x)
    assert check.multishield_decide(reference.multishield_decide, f, s, 1e-3)

    def at_or_above(ff, ss, tol):  # rejects at gap == tolerance
        y_hat = ff.argmax(1)
        gap = ss.max(1).values - ss.gather(1, y_hat[:, None]).squeeze(1)
        return torch.where(gap >= tol, torch.full_like(y_hat, ff.shape[1]), y_hat)

    def vlm_argmax(ff, ss, tol):  # compares argmaxes: wrong on VLM ties and ignores the tolerance
        a, b = ff.argmax(1), ss.argmax(1)
        return torch.where(a != b, torch.full_like(a, ff.shape[1]), a)

    def last_tie(ff, ss, tol):  # argmax taking the last of tied logits
        k = ff.shape[1]
        y_hat = k - 1 - ff.flip(1).argmax(1)
        gap = ss.max(1).values - ss.gather(1, y_hat[:, None]).squeeze(1)
        return torch.where(gap > tol, torch.full_like(y_hat, k), y_hat)

    assert "(gap 0: accept)" in _message(check.multishield_decide(at_or_above, f, s, 1e-3))
    assert "case '" in _message(check.multishield_decide(vlm_argmax, f, s, 1e-3))
    assert "tie in the classifier" in _message(check.multishield_decide(last_tie, f, s, 1e-3))


def test_tolerance_and_lesson5_checks(shield, cnn_data):
    import pandas as pd

    _, x, y = cnn_data
    with torch.no_grad():
        f, s = shield.branches(x)
    assert check.tolerance_sweep(reference.tolerance_sweep, f, s, y)

    def rejections_count(ff, ss, yy, tols):
        df = reference.tolerance_sweep(ff, ss, yy, tols)
        return df.assign(clean_acc=df.clean_acc + df.clean_reject)

    assert "error" in _message(check.tolerance_sweep(rejections_count, f, s, y))
    assert "DataFrame" in _message(check.tolerance_sweep(lambda *a: pd.Series([1.0]), f, s, y))
    assert check.reject_aware_loss(reference.reject_aware_loss, shield, x, y)
    assert "only CE" in _message(check.reject_aware_loss(lambda z, yy: F.cross_entropy(z, yy, reduction="none"),
                                                         shield, x, y))
    assert check.outcome_breakdown(reference.outcome_breakdown)
    ignore_rejects = lambda p, yy, k: {"correct": (p == yy).float().mean().item(), "rejected": 0.0,  # noqa: E731
                                       "wrong": (p != yy).float().mean().item(), "robust": (p == yy).float().mean().item()}
    assert "rejected" in _message(check.outcome_breakdown(ignore_rejects))
    assert check.agreement_loss(reference.agreement_loss, shield, x, y)
    unscaled = lambda ff, ss, t: reference.agreement_loss(ff, ss, t, scale=1.0)  # noqa: E731
    assert "100" in _message(check.agreement_loss(unscaled, shield, x, y))


# One plausible mistake per checker that the tests above do not try yet. Each entry: (checker, its reference,
# the student's mistake, what the message must name). A case catches a checker that accepts the mistake or
# answers it with a message that does not say what is wrong.
def _grad_at(m, xb, yb):
    xg = xb.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(m(xg), yb), xg)
    return g


def _fgsm_raw_gradient(m, xb, yb, eps):
    return (xb + eps * _grad_at(m, xb, yb)).clamp(0, 1)


def _pgd_without_projection(m, xb, yb, eps, alpha, steps):  # clips to [0, 1] each step, never to the ball
    x_adv = (xb + (2 * torch.rand_like(xb) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv = (x_adv + alpha * _grad_at(m, x_adv, yb).sign()).clamp(0, 1)
    return x_adv


def _pgd_gradient_once(m, xb, yb, eps, alpha, steps):  # the gradient at the random start, reused every step
    x_adv = reference.project(xb + (2 * torch.rand_like(xb) - 1) * eps, xb, eps)
    g = _grad_at(m, x_adv, yb).sign()
    for _ in range(steps):
        x_adv = reference.project(x_adv + alpha * g, xb, eps)
    return x_adv


def _dlr_second_largest(z, yy):  # denominator z_π1 − z_π2 (sorted index 1 instead of 2)
    zs = z.sort(1, descending=True).values
    z_y = z.gather(1, yy[:, None]).squeeze(1)
    return -(z_y - z.scatter(1, yy[:, None], float("-inf")).max(1).values) / (zs[:, 0] - zs[:, 1] + 1e-12)


def _dlr_max_with_y(z, yy):  # numerator z_y − max_j z_j, y included
    zs = z.sort(1, descending=True).values
    return -(z.gather(1, yy[:, None]).squeeze(1) - zs[:, 0]) / (zs[:, 0] - zs[:, 2] + 1e-12)


def _momentum_unprojected_z(xk, xp, g, x0, e, s, a=0.75):
    z = xk + s * g.sign()
    return reference.project(xk + a * (z - xk) + (1 - a) * (xk - xp), x0, e)


def _momentum_backwards(xk, xp, g, x0, e, s, a=0.75):
    z = reference.project(xk + s * g.sign(), x0, e)
    return reference.project(xk + a * (z - xk) + (1 - a) * (xp - xk), x0, e)


def _rs_unclipped_start(m, xb, yb, e, a, d0):
    x0 = xb + d0
    return reference.project(x0 + a * _grad_at(m, x0, yb).sign(), xb, e)


def _rs_ball_around_start(m, xb, yb, e, a, d0):
    x0 = (xb + d0).clamp(0, 1)
    return reference.project(x0 + a * _grad_at(m, x0, yb).sign(), x0, e)


def _adv_loss_global_rng(m, xb, yb, e, a, generator):
    d0 = (torch.rand(xb.shape) * 2 - 1) * e
    return F.cross_entropy(m(reference.fgsm_rs_perturb(m, xb, yb, e, a, d0)), yb)


def _reject_index_zero(z, yy):
    return F.cross_entropy(z, yy, reduction="none") + F.cross_entropy(z, torch.zeros_like(yy), reduction="none")


def _sweep_errors_as_rejections(ff, ss, yy, tols):
    df = reference.tolerance_sweep(ff, ss, yy, tols)
    return df.assign(clean_reject=1 - df.clean_acc)


def _breakdown_robust_is_correct(p, yy, k):
    out = reference.outcome_breakdown(p, yy, k)
    return {**out, "robust": out["correct"]}


MISTAKES = {  # id: (checker, arguments from (model, x, y, shield, f, s), reference, mistake, named in the message)
    "fgsm-raw-gradient": (check.fgsm, lambda m, x, y, sh, f, s: (m, x, y, 0.1), reference.fgsm,
                          _fgsm_raw_gradient, "raw gradient"),
    "pgd-no-projection": (check.pgd, lambda m, x, y, sh, f, s: (m, x, y), reference.pgd,
                          _pgd_without_projection, "project back onto the L∞ ball"),
    "pgd-gradient-once": (check.pgd, lambda m, x, y, sh, f, s: (m, x, y), reference.pgd, _pgd_gradient_once,
                          "recompute the gradient at the new point every step"),
    "dlr-second-largest": (check.dlr_loss, lambda m, x, y, sh, f, s: (m, x, y), reference.dlr_loss,
                           _dlr_second_largest, "*third*-largest"),
    "dlr-max-with-y": (check.dlr_loss, lambda m, x, y, sh, f, s: (m, x, y), reference.dlr_loss,
                       _dlr_max_with_y, "y included"),
    "checkpoints-off-by-one": (check.apgd_checkpoints, lambda *a: (), reference.apgd_checkpoints,
                               lambda n: [t - 1 for t in reference.apgd_checkpoints(n)], "off by one"),
    "momentum-z-unprojected": (check.momentum_step, lambda m, x, y, sh, f, s: (x,), reference.momentum_step,
                               _momentum_unprojected_z, "project twice"),
    "momentum-backwards": (check.momentum_step, lambda m, x, y, sh, f, s: (x,), reference.momentum_step,
                           _momentum_backwards, "points backwards"),
    "rs-unclipped-start": (check.fgsm_rs_perturb, lambda m, x, y, sh, f, s: (m, x, y, 0.1), reference.fgsm_rs_perturb,
                           _rs_unclipped_start, "leaves [0, 1]: clip it"),
    "rs-ball-around-start": (check.fgsm_rs_perturb, lambda m, x, y, sh, f, s: (m, x, y, 0.1),
                             reference.fgsm_rs_perturb, _rs_ball_around_start, "around the start x0"),
    "adv-loss-global-rng": (check.adversarial_loss, lambda m, x, y, sh, f, s: (m, x, y, 0.1),
                            reference.adversarial_loss, _adv_loss_global_rng, "same generator"),
    "reject-index-zero": (check.reject_aware_loss, lambda m, x, y, sh, f, s: (sh, x, y), reference.reject_aware_loss,
                          _reject_index_zero, "last index"),
    "sweep-errors-as-rejections": (check.tolerance_sweep, lambda m, x, y, sh, f, s: (f, s, y),
                                   reference.tolerance_sweep, _sweep_errors_as_rejections, "rejection rate"),
    "breakdown-robust-is-correct": (check.outcome_breakdown, lambda m, x, y, sh, f, s: (), reference.outcome_breakdown,
                                    _breakdown_robust_is_correct, "'robust'"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_each_checker_names_a_typical_mistake(case, cnn_data, shield):
    """Catches a checker that passes this mistake, or fails it with a message that does not name it; the
    reference must still pass (a checker that fails everything would otherwise look strict)."""
    checker, args, ref, mistake, named = MISTAKES[case]
    model, x, y = cnn_data
    with torch.no_grad():
        f, s = shield.branches(x)
    arguments = args(model, x, y, shield, f, s)
    assert checker(ref, *arguments)
    assert named in _message(checker(mistake, *arguments))


def test_lesson6_checks():
    assert check.worst_case(reference.worst_case)
    anyone = lambda r: torch.stack([m.bool() for m in r.values()]).any(0)  # noqa: E731
    assert "AND" in _message(check.worst_case(anyone))
    assert check.wilson_interval(reference.wilson_interval)

    def wald(c, n, z=1.959963984540054):
        p = c / n
        h = z * (p * (1 - p) / n) ** 0.5
        return p - h, p + h

    assert "Wald" in _message(check.wilson_interval(wald))
    assert check.red_flags(reference.red_flags)
    non_strict = lambda g, gf, d, h: ([reference.GRADIENT_FREE_FLAG] if gf <= g else [])  # noqa: E731
    assert "tie" in _message(check.red_flags(non_strict))


def test_class_embeddings_check_on_the_smoke_vlm():
    import mslib

    p = mslib.get_profile("smoke")
    vlm = mslib.load_vlm(p)
    _, _, names = mslib.load_eval_set(p)
    assert check.class_embeddings(reference.class_embeddings, vlm, names, p.templates)

    def no_template_norm(encode, classnames, templates):
        return torch.stack([F.normalize(encode([t.format(c) for t in templates]).float().mean(0), dim=-1)
                            for c in classnames])

    assert "before" in _message(check.class_embeddings(no_template_norm, vlm, names, p.templates))

    def average_not_normalized(encode, classnames, templates):
        return torch.stack([F.normalize(encode([t.format(c) for t in templates]).float(), dim=-1).mean(0)
                            for c in classnames])

    assert "norm 1" in _message(check.class_embeddings(average_not_normalized, vlm, names, p.templates))


# ------------------------------------------------------------------------- widgets and first-run notes
def test_eps_explorer_static_and_interactive(cnn_data, shield, monkeypatch):
    from mslib import course

    model, x, y = cnn_data
    attack = lambda xb, yb, e: reference.fgsm(model, xb, yb, e)  # noqa: E731
    monkeypatch.setenv("MSLIB_WIDGETS", "0")
    assert not course.interactive_mode()
    shown = course.eps_explorer(x[:4], y[:4], [str(i) for i in range(10)], attack, model, vlm=shield.vlm,
                                shield=shield, eps_values=(0.0, 0.05, 0.1))
    assert shown.figure is not None and not shown.interactive and len(shown.figure.axes) == 9
    text = " ".join(t.get_text() for ax in shown.figure.axes for t in ax.texts)
    assert "classifier" in text and "VLM" in text and "Multi-Shield" in text
    monkeypatch.setenv("MSLIB_WIDGETS", "1")
    assert course.interactive_mode()
    live = course.eps_explorer(x[:4], y[:4], [str(i) for i in range(10)], attack, model, eps_values=(0.0, 0.1))
    assert live.interactive
    monkeypatch.delenv("MSLIB_WIDGETS")
    assert not course.interactive_mode()  # not in a kernel started by a Jupyter server


def test_first_run_training_is_announced(tmp_path, monkeypatch):
    import mslib
    from mslib import course

    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))  # looking a model up writes its record: keep it out of the cache
    p = mslib.get_profile("smoke")
    specs = {name: {**spec, "seed": 987654} for name, spec in p.classifier_specs.items()}  # never trained
    fresh = p.replace(classifier_specs=specs)
    todo = course.untrained(fresh, ["standard", "fgsm-rs"])
    assert [m for m, _ in todo] == ["classifier 'standard'", "classifier 'fgsm-rs'"]
    assert all(s > 0 for _, s in todo) and todo[1][1] > todo[0][1]  # FGSM-RS costs about twice as much


def test_make_lab_allows_root_only_as_root():
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = Path(sys.prefix)
    stamp = venv / ".installed-stamp"
    out = subprocess.run(["make", "-n", f"VENV={venv}", "-o", str(stamp), "-o", "course", "lab"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if "jupyter lab" in ln)
    assert ("--allow-root" in line) == (os.getuid() == 0), line
