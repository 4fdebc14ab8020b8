"""The study's tables as DataFrames, read from the results store (:mod:`mslib.store`); nothing here computes.

Each function takes a :class:`~mslib.store.Store` (all its datasets; a profile name opens one) and returns
one tidy DataFrame; notebooks open one store and pass it to every table, so each result is read once per
build, and plot and save them. A result that is not computed raises :class:`mslib.store.ResultsNotReadyError`. Worst case over several attacks is taken per sample: a sample counts as robust only if no
attack broke it (Multi-Shield broken = a wrong class that is not "rejected").
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd
import torch

from . import metrics
from .attacks import attack_spec
from .metrics import BROKEN, CORRECT, OUTCOME_CODES, REJECTED, status, worst_case
from .plan import PAPER_ADAPTIVE, Job, study_eps
from .store import DatasetResults, Outputs, Store

def _rates(st: torch.Tensor) -> dict[str, metrics.Rate]:
    return {"robust": metrics.rate(st < BROKEN), "reject": metrics.rate(st == REJECTED)}


def _ms_status(out: Outputs, labels: torch.Tensor, tol: float, k: int) -> torch.Tensor:
    return status(out.ms_pred(tol), labels, k)


def _ms_worst(outs: Iterable[Outputs], labels: torch.Tensor, tol: float, k: int) -> torch.Tensor:
    """Multi-Shield's per-sample worst outcome over several attacks' outputs."""
    return worst_case(_ms_status(o, labels, tol, k) for o in outs)


def _outs(store: Store, jobs: Iterable[Job]) -> list[Outputs]:
    return [store.outputs(j) for j in jobs]


def _clf_worst(store: Store, d: DatasetResults, clf: str, eps: float) -> torch.Tensor:
    """The classifier's per-sample worst outcome under APGD-CE and APGD-DLR at ``eps``."""
    return worst_case(status(o.clf_pred(), d.labels) for o in _outs(store, d.plan.nonadaptive[clf, eps]))


def _main_statuses(store: Store, d: DatasetResults, clf: str) -> dict[str, torch.Tensor]:
    """Per-sample outcomes (correct / rejected / broken) of one classifier's main-table settings.

    ``clf_clean``, ``clf`` (the classifier alone, clean and under APGD-CE+DLR on it), ``ms_clean``,
    ``ms_nonadaptive`` (those examples transferred to Multi-Shield), ``ms_adaptive`` (the paper's CE then DLR
    on Multi-Shield), ``ms_worst`` (per sample over every attack of the ensemble).
    """
    p, y, k = d.profile, d.labels, d.num_classes
    clean = store.outputs(d.plan.clean[clf])
    clf_adv = _outs(store, d.plan.nonadaptive[clf, p.eps])
    return {"clf_clean": status(clean.clf_pred(), y),
            "clf": worst_case(status(o.clf_pred(), y) for o in clf_adv),
            "ms_clean": _ms_status(clean, y, p.tolerance, k),
            "ms_nonadaptive": _ms_worst(clf_adv, y, p.tolerance, k),
            "ms_adaptive": _ms_worst(_outs(store, d.plan.adaptive[clf, p.eps]), y, p.tolerance, k),
            "ms_worst": _ms_worst(_outs(store, d.plan.ensemble[clf]), y, p.tolerance, k)}


def main_table(store: Store | str) -> pd.DataFrame:
    """One row per (dataset, classifier): the paper's main results (rates as fractions) with 95% CIs.

    Non-adaptive: APGD-CE and APGD-DLR on the classifier, transferred; adaptive: the paper's rejection-aware
    CE then DLR on Multi-Shield; worst: per sample, over every attack of the ensemble. Multi-Shield's robust
    accuracy counts a sample as robust when it is correct or rejected (``ms_reject_*`` says how much of it
    is rejection); ``gain_*``: Multi-Shield's robust accuracy minus the classifier's.
    """
    store = Store.open(store)
    rows = []
    for d in store.datasets:
        p, y = d.profile, d.labels
        for clf in p.classifiers:
            st = _main_statuses(store, d, clf)
            non, ada, worst = (_rates(st[s]) for s in ("ms_nonadaptive", "ms_adaptive", "ms_worst"))
            rows.append({
                "dataset": p.dataset, "classifier": clf, "eps": p.eps, "n": len(y),
                "clf_clean_acc": metrics.rate(st["clf_clean"] == CORRECT),
                "clf_robust_acc": metrics.rate(st["clf"] == CORRECT),
                "vlm_clean_acc": metrics.clean_accuracy(store.outputs(d.plan.clean[clf]).vlm_pred(), y),
                "ms_clean_acc": metrics.rate(st["ms_clean"] == CORRECT),
                "ms_clean_reject": metrics.rate(st["ms_clean"] == REJECTED),
                "ms_robust_acc_nonadaptive": non["robust"], "ms_reject_nonadaptive": non["reject"],
                "ms_robust_acc_adaptive": ada["robust"], "ms_reject_adaptive": ada["reject"],
                "ms_robust_acc_worst": worst["robust"], "ms_reject_worst": worst["reject"],
            })
    df = _with_ci(rows)
    df["gain_adaptive"] = df["ms_robust_acc_adaptive"] - df["clf_robust_acc"]
    df["gain_nonadaptive"] = df["ms_robust_acc_nonadaptive"] - df["clf_robust_acc"]
    df["gain_worst"] = df["ms_robust_acc_worst"] - df["clf_robust_acc"]
    return df


def main_outcomes(store: Store | str) -> pd.DataFrame:
    """The main table as shares of outcomes: per (dataset, classifier, setting) the fraction of samples
    ``correct``, ``rejected`` and ``fooled`` (wrong and not rejected); the three add up to one, and robust
    accuracy is correct + rejected. Settings as in :func:`_main_statuses` (the classifier alone never rejects).
    """
    store = Store.open(store)
    rows = []
    for d in store.datasets:
        p, n = d.profile, len(d.labels)
        for clf in p.classifiers:
            for setting, st in _main_statuses(store, d, clf).items():
                for code, outcome in OUTCOME_CODES.items():
                    r = metrics.rate(st == code)
                    rows.append({"dataset": p.dataset, "classifier": clf, "eps": p.eps, "n": n, "setting": setting,
                                 "outcome": outcome, "share": r.value, "share_lo": r.low, "share_hi": r.high})
    return pd.DataFrame(rows)


def _with_ci(rows: list[dict]) -> pd.DataFrame:
    """Rates → value columns plus ``<col>_lo``/``<col>_hi`` 95% CI columns at the end."""
    flat, cis = [], []
    for row in rows:
        f, c = {}, {}
        for key, v in row.items():
            if isinstance(v, metrics.Rate):
                f[key] = v.value
                c[f"{key}_lo"], c[f"{key}_hi"] = v.low, v.high
            else:
                f[key] = v
        flat.append(f)
        cis.append(c)
    return pd.concat([pd.DataFrame(flat), pd.DataFrame(cis)], axis=1)


def headline(df: pd.DataFrame, mean: bool = True) -> pd.DataFrame:
    """Multi-Shield's robust-accuracy gain over the classifier alone, per (dataset, classifier), in the order
    worst case, adaptive, non-adaptive, beside the robust accuracies it is the difference of (with CIs); under
    the worst case also its correct answers and rejections apart (``ms_correct_worst``, ``ms_reject_worst``).

    ``mean``: add, per dataset with several classifiers, a row ``classifier = "mean"`` averaging the rows
    (the paper's summary; its CI columns are empty).
    """
    settings = ("worst", "adaptive", "nonadaptive")
    # under the worst case, what a user gets: correct answers and rejections, apart
    split = ["ms_correct_worst", "ms_reject_worst"]
    cols = ["clf_robust_acc", *split] + [c for s in settings for c in (f"ms_robust_acc_{s}", f"gain_{s}")]
    keep = ["dataset", "classifier", "eps", "n", *cols]
    df = df.assign(ms_correct_worst=df.ms_robust_acc_worst - df.ms_reject_worst)
    out = df[keep + [f"{c}_{b}" for c in cols if not c.startswith(("gain_", *split)) for b in ("lo", "hi")]].copy()
    if mean:
        means = []
        for ds, g in out.groupby("dataset", sort=False):
            if len(g) > 1:
                means.append({"dataset": ds, "classifier": "mean", "eps": g.eps.iloc[0], "n": g.n.iloc[0],
                              **{c: g[c].mean() for c in cols}})
        if means:
            out = pd.concat([out, pd.DataFrame(means)], ignore_index=True)
            order = {ds: i for i, ds in enumerate(dict.fromkeys(out.dataset))}
            out = out.sort_values("dataset", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    return out


def describe(job: Job) -> str:
    """One line on what the attack of ``job`` does."""
    return attack_spec(job.attack).describe(job.target)


def budget(job: Job) -> str:
    """The attack's budget as a reader reads it: iterations (per target), restarts or queries, step rule."""
    o = dict(job.options)
    restarts = f"{o.get('n_restarts', 1)} restart{'s' if o.get('n_restarts', 1) != 1 else ''}"
    if attack_spec(job.attack).gradient_free:
        return f"{o['n_queries']:,} queries, {restarts}, random search (p_init 0.8)"
    steps = f"{o['n_targets']} target{'s' if o['n_targets'] != 1 else ''} × {o['n_iter']} it." if "n_targets" in o \
        else f"{o['n_iter']} it."
    return f"{steps}, {restarts}, APGD step rule"


def _scope(i: int, stages: tuple[Job, ...]) -> str:
    """How stage ``i`` was run: on every sample, after every earlier stage, or reusing its own chain."""
    job = stages[i]
    if not job.after:
        return "alone"
    return "after previous" if job.after == stages[:i] else "chained (smaller ε; DLR after CE)"


def attacks_table(store: Store | str) -> pd.DataFrame:
    """One row per (dataset, classifier, attack of the worst-case ensemble), then its worst case, at the profile's eps.

    ``robust_acc``/``reject``: Multi-Shield's robust accuracy with rejection and rejection rate (95% CIs) under
    that attack's examples. ``scope`` says how they were made: ``alone`` (the attack on every sample),
    ``chained`` (the paper's adaptive attacks: samples broken at a smaller eps are kept, and DLR runs on what
    CE left unbroken) or ``after previous`` (AutoAttack's scheme:
    only the samples that every earlier attack left unbroken were attacked, the others keep the earlier
    example, so the row already is a worst case over the rows above). ``robust_acc_cumulative`` and
    ``reject_cumulative``: worst case over this row and every row above it (robust, and of it rejected). The ``worst case`` row is the ensemble's: a sample counts as robust
    only if no attack broke it.
    """
    store = Store.open(store)
    rows = []
    for d in store.datasets:
        p, y, k = d.profile, d.labels, d.num_classes
        for clf in p.classifiers:
            seen, n_fwd = [], 0
            base = {"dataset": p.dataset, "classifier": clf, "eps": p.eps, "n": len(y)}
            stages = d.plan.ensemble[clf]
            for i, job in enumerate(stages):
                out = store.outputs(job, curves=True)
                st = _ms_status(out, y, p.tolerance, k)
                seen.append(st)
                n_fwd += out.n_forward
                rates = _rates(st)
                rows.append({**base, "attack": f"{job.attack}@{job.target}",
                             "description": describe(job), "budget": budget(job),
                             "scope": _scope(i, stages), "robust_acc": rates["robust"], "reject": rates["reject"],
                             "robust_acc_cumulative": metrics.rate(worst_case(seen) < BROKEN).value,
                             "reject_cumulative": metrics.rate(worst_case(seen) == REJECTED).value,
                             "n_forward": out.n_forward})
            w = _rates(worst_case(seen))
            rows.append({**base, "attack": "worst case", "description": "no attack of the ensemble succeeds",
                         "budget": "every budget above", "scope": "ensemble", "robust_acc": w["robust"], "reject": w["reject"],
                         "robust_acc_cumulative": w["robust"].value, "reject_cumulative": w["reject"].value,
                         "n_forward": n_fwd})
    return _with_ci(rows)


def attack_curves(store: Store | str) -> pd.DataFrame:
    """Per (dataset, classifier, attack of the ensemble) and step: the fraction of samples on which the attack
    had succeeded by that step (in its own terms: a transfer counts its source model fooled; a stage run
    after previous ones starts from the samples they broke) and the mean loss (the attack's own scale).

    Steps are APGD iterations (one block per target for the agreement attacks) or Square's queries.
    ``measure`` says what ``success`` counts: for attacks on Multi-Shield (``target`` ``ms``) Multi-Shield
    broken (a wrong class, not rejected); for transfers (``clf``, ``vlm``) the source model fooled, which is
    not Multi-Shield broken.
    """
    store = Store.open(store)
    rows = []
    for d in store.datasets:
        p, n = d.profile, len(d.labels)
        for clf in p.classifiers:
            for job in d.plan.ensemble[clf]:
                out = store.outputs(job, curves=True)
                loss = list(out.loss_curve or [])
                for step, c in enumerate(out.success_curve or []):
                    rows.append({"dataset": p.dataset, "classifier": clf, "attack": f"{job.attack}@{job.target}",
                                 "target": job.target,
                                 "measure": "Multi-Shield broken" if job.target == "ms" else "source model fooled",
                                 "step": step, "success": c / n,
                                 "loss": loss[step] if step < len(loss) else float("nan")})
    return pd.DataFrame(rows)


def eps_half_check(store: Store | str) -> pd.DataFrame:
    """Tramer (2022)'s sanity check: the classifier alone at eps/2 beside Multi-Shield at eps.

    A detector that is robust at eps yields a classifier robust at eps/2 (an inefficient one), so a
    detector's claimed robust accuracy above what classifiers reach at eps/2 deserves suspicion. Columns:
    the classifier's robust accuracy at eps/2 (APGD-CE+DLR, worst case) and Multi-Shield's at eps under the
    paper's adaptive attack and under the worst-case ensemble.
    """
    store = Store.open(store)
    rows = []
    for d in store.datasets:
        p, y, k = d.profile, d.labels, d.num_classes
        for clf in p.classifiers:
            half = _clf_worst(store, d, clf, d.plan.eps_half)
            ada = _ms_worst(_outs(store, d.plan.adaptive[clf, p.eps]), y, p.tolerance, k)
            worst = _ms_worst(_outs(store, d.plan.ensemble[clf]), y, p.tolerance, k)
            rows.append({"dataset": p.dataset, "classifier": clf, "eps": p.eps, "eps_half": d.plan.eps_half,
                         "clf_robust_acc_eps_half": metrics.rate(half == CORRECT),
                         "ms_robust_acc_adaptive": metrics.rate(ada < BROKEN),
                         "ms_robust_acc_worst": metrics.rate(worst < BROKEN)})
    return _with_ci(rows)


def security_curves(store: Store | str) -> pd.DataFrame:
    """Robust accuracy vs eps (0 included) for the classifier and for Multi-Shield under each attack.

    ``model`` codes (named in :data:`mslib.labels.SETTINGS`): ``clf`` (the classifier alone under
    APGD-CE+DLR), ``ms_nonadaptive``, ``ms_adaptive`` and ``ms_worst`` (the ensemble, run at the profile's
    eps only). ``robust_acc`` counts correct or rejected (for the classifier: correct), ``correct`` only
    correct, ``reject`` rejected; at eps 0 they are the clean rates, so Multi-Shield's robust accuracy there
    lies above its (and the classifier's) clean accuracy by its clean rejections.
    """
    store = Store.open(store)
    rows = []
    for d in store.datasets:
        p, y, k = d.profile, d.labels, d.num_classes
        for clf in p.classifiers:
            clean = store.outputs(d.plan.clean[clf])
            ms_clean = _ms_status(clean, y, p.tolerance, k)
            curves = {
                "clf": lambda e: _clf_worst(store, d, clf, e),
                "ms_nonadaptive": lambda e: _ms_worst(_outs(store, d.plan.nonadaptive[clf, e]), y, p.tolerance, k),
                "ms_adaptive": lambda e: _ms_worst(_outs(store, d.plan.adaptive[clf, e]), y, p.tolerance, k),
                "ms_worst": lambda e: _ms_worst(_outs(store, d.plan.ensemble[clf]), y, p.tolerance, k),
            }
            clean_st = {"clf": status(clean.clf_pred(), y), "ms_nonadaptive": ms_clean, "ms_adaptive": ms_clean,
                        "ms_worst": ms_clean}
            for model, fn in curves.items():
                grid = [p.eps] if model == "ms_worst" else study_eps(p)
                if model == "ms_worst" and not d.plan.ensemble.get(clf):
                    continue
                for eps in [0.0] + grid:
                    st = clean_st[model] if eps == 0 else fn(eps)
                    rate = metrics.rate(st < BROKEN)
                    rows.append({"dataset": p.dataset, "classifier": clf, "model": model, "eps": eps, "n": len(y),
                                 "robust_acc": rate.value, "lo": rate.low, "hi": rate.high,
                                 "correct": float((st == CORRECT).float().mean()),
                                 "reject": float((st == REJECTED).float().mean())})
    return pd.DataFrame(rows)


def tolerance_tradeoff(store: Store | str) -> pd.DataFrame:
    """Clean accuracy, clean rejection and robust accuracy as the tolerance varies.

    ``clean_acc`` counts correct only; ``clean_robust`` correct or rejected on clean inputs, the way
    ``robust_acc_*`` count adversarial ones (so robust accuracy is compared with ``clean_robust``, not with
    ``clean_acc``, which it can exceed).

    The cached logits/similarities are re-thresholded at each tolerance; the adaptive examples were crafted
    against Multi-Shield at the profile's tolerance (the column ``crafted_at`` says so). Rates as fractions
    with 95% CIs (``<col>_lo``, ``<col>_hi``).
    """
    store = Store.open(store)
    rows = []
    for d in store.datasets:
        p, y, k = d.profile, d.labels, d.num_classes
        grid = sorted(set(p.tolerance_grid) | {p.tolerance})
        for clf in p.classifiers:
            clean = store.outputs(d.plan.clean[clf])
            clf_adv = _outs(store, d.plan.nonadaptive[clf, p.eps])
            ms_adv = _outs(store, d.plan.adaptive[clf, p.eps])
            for tol in grid:
                ms_clean = clean.ms_pred(tol)
                non = _rates(_ms_worst(clf_adv, y, tol, k))
                ada = _rates(_ms_worst(ms_adv, y, tol, k))
                rows.append({"dataset": p.dataset, "classifier": clf, "tolerance": tol, "eps": p.eps, "n": len(y),
                             "clean_acc": metrics.clean_accuracy(ms_clean, y),
                             "clean_reject": metrics.rejection_rate(ms_clean, k),
                             "clean_robust": metrics.rate((ms_clean == y) | (ms_clean == k)),
                             "robust_acc_nonadaptive": non["robust"], "reject_nonadaptive": non["reject"],
                             "robust_acc_adaptive": ada["robust"], "reject_adaptive": ada["reject"],
                             "crafted_at": p.tolerance})
    return _with_ci(rows)


def zero_shot_table(store: Store | str) -> pd.DataFrame:
    """Zero-shot accuracy of the VLM per dataset and prompt template (each alone, then all averaged) and text
    normalization. ``nan_scores``: the share of images whose similarities hold a NaN (argmax then picks the
    first class); ``top_class_share``: the share of images given the most frequent prediction (1 when the
    VLM predicts one class for everything)."""
    store = Store.open(store)
    rows = []
    for d in store.datasets:
        p = d.profile
        for job in d.plan.zero_shot:
            s = store.load(job, ("s",))["s"]
            pred = s.argmax(1)
            acc = metrics.clean_accuracy(pred, d.labels)
            rows.append({"dataset": p.dataset, "vlm": p.vlm, "template": job.option("label"),
                         "text_norm": job.option("text_norm"), "accuracy": acc.value, "lo": acc.low,
                         "hi": acc.high, "n": acc.n, "num_classes": d.num_classes,
                         "nan_scores": float(torch.isnan(s).any(dim=1).float().mean()),
                         "top_class_share": float(torch.bincount(pred, minlength=d.num_classes).max()) / len(pred)})
    return pd.DataFrame(rows)


def gallery(store: Store | str, clf: str | None = None, n: int = 8, attack: str = PAPER_ADAPTIVE[0]
            ) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor, list[str]]:
    """Clean and adversarial images (first dataset) with each model's decision, for the workflow figure.

    ``attack``: one of the paper's attacks at the profile's eps (:data:`mslib.plan.PAPER_ADAPTIVE` on
    Multi-Shield, by default its CE; :data:`mslib.plan.NONADAPTIVE` on the classifier). Returns (table, clean images, adversarial
    images, class names); the table has one row per image with the classifier's, the VLM's and
    Multi-Shield's predictions on the clean and adversarial image.
    """
    store = Store.open(store)
    d = store.datasets[0]
    p, y, k = d.profile, d.labels, d.num_classes
    clf = clf or p.classifiers[0]
    if clf not in p.classifiers:
        raise ValueError(f"unknown classifier {clf!r}; profile {store.profile_name!r} has {list(p.classifiers)}")
    jobs = {j.attack: j for j in (*d.plan.adaptive[clf, p.eps], *d.plan.nonadaptive[clf, p.eps])}
    if attack not in jobs:
        raise ValueError(f"gallery attack must be one of {sorted(jobs)}, got {attack!r}")
    clean = store.outputs(d.plan.clean[clf])
    adv_job = jobs[attack]
    adv = store.outputs(adv_job)
    # a mix: some the attack broke, some Multi-Shield rejected, some it got right
    st = _ms_status(adv, y, p.tolerance, k)
    per = -(-n // 3)
    pick = torch.cat([(st == s).nonzero().squeeze(1)[:per] for s in (BROKEN, REJECTED, CORRECT)])
    rest = torch.tensor([i for i in range(len(y)) if i not in set(pick.tolist())], dtype=torch.long)
    pick = torch.cat([pick, rest])[:n]  # fill up when one outcome has fewer than its share
    names = list(d.class_names) + ["REJECTED"]
    rows = []
    for i in pick.tolist():
        rows.append({"index": int(d.indices[i]), "true": names[int(y[i])],
                     "clf_clean": names[int(clean.clf_pred()[i])], "vlm_clean": names[int(clean.vlm_pred()[i])],
                     "ms_clean": names[int(clean.ms_pred(p.tolerance)[i])],
                     "clf_adv": names[int(adv.clf_pred()[i])], "vlm_adv": names[int(adv.vlm_pred()[i])],
                     "ms_adv": names[int(adv.ms_pred(p.tolerance)[i])]})
    x_clean = store.load(d.plan.clean[clf], ("x",))["x"][pick]
    x_adv = store.load(adv_job, ("x",))["x"][pick]
    return pd.DataFrame(rows), x_clean, x_adv, names
