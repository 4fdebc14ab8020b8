"""The study's tables as DataFrames, read from the cached results of :mod:`mslib.experiment`.

Each function takes a profile name (all its datasets) and returns one tidy DataFrame; notebooks plot
and save them. Worst case over several attacks is taken per sample: a sample counts as robust only if no
attack broke it (Multi-Shield broken = a wrong class that is not "rejected").
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd
import torch

from . import metrics
from .experiment import STUDY_PLAN, Outputs, Runner, in_study_plan, study_eps
from .profiles import get_profile

CORRECT, REJECTED, BROKEN = 0, 1, 2


def status(pred: torch.Tensor, labels: torch.Tensor, reject_label: int | None = None) -> torch.Tensor:
    """Per-sample outcome: 0 correct, 1 rejected, 2 wrong and not rejected."""
    out = torch.full_like(labels, BROKEN)
    out[pred == labels] = CORRECT
    if reject_label is not None:
        out[(pred == reject_label)] = REJECTED
    return out


def worst_case(statuses: Iterable[torch.Tensor]) -> torch.Tensor:
    """Per-sample worst outcome over attacks (broken beats rejected beats correct)."""
    return torch.stack(list(statuses)).max(dim=0).values


def _rates(st: torch.Tensor) -> dict[str, metrics.Rate]:
    return {"robust": metrics.rate(st < BROKEN), "reject": metrics.rate(st == REJECTED)}


def runners(profile_name: str, progress: bool = True) -> list[Runner]:
    """One :class:`Runner` per dataset of the profile."""
    return [Runner(profile_name, ds, progress=progress) for ds in get_profile(profile_name).datasets]


def _ms_status(out: Outputs, labels: torch.Tensor, tol: float, k: int) -> torch.Tensor:
    return status(out.ms_pred(tol), labels, k)


def _ms_worst(outs: Iterable[Outputs], labels: torch.Tensor, tol: float, k: int) -> torch.Tensor:
    """Multi-Shield's per-sample worst outcome over several attacks' outputs."""
    return worst_case(_ms_status(o, labels, tol, k) for o in outs)


def _planned(r: Runner, clf: str, target: str, eps: float) -> list[Outputs]:
    """Outputs of the study plan's attacks on ``target`` at ``eps``."""
    return [r.attacked(clf, target, a, eps) for a in STUDY_PLAN[target]]


def _clf_worst(r: Runner, clf: str, eps: float) -> torch.Tensor:
    """The classifier's per-sample worst outcome under APGD-CE and APGD-DLR at ``eps``."""
    return worst_case(status(o.clf_pred(), r.labels) for o in _planned(r, clf, "clf", eps))


def main_table(profile_name: str) -> pd.DataFrame:
    """One row per (dataset, classifier): the paper's main results (rates as fractions) with 95% CIs."""
    rows = []
    for r in runners(profile_name):
        p, y, k = r.profile, r.labels, r.num_classes
        for clf in p.classifiers:
            clean = r.clean(clf)
            clf_adv, ms_adv = _planned(r, clf, "clf", p.eps), _planned(r, clf, "ms", p.eps)
            clf_st = worst_case(status(o.clf_pred(), y) for o in clf_adv)
            non = _rates(_ms_worst(clf_adv, y, p.tolerance, k))
            ada = _rates(_ms_worst(ms_adv, y, p.tolerance, k))
            worst = _rates(_ms_worst((o for _, _, o in r.ensemble(clf)), y, p.tolerance, k))
            ms_clean = clean.ms_pred(p.tolerance)
            clf_rob = metrics.rate(clf_st == CORRECT)
            row = {
                "dataset": p.dataset, "classifier": clf, "eps": p.eps, "n": len(y),
                "clf_clean_acc": metrics.clean_accuracy(clean.clf_pred(), y),
                "clf_robust_acc": clf_rob,
                "vlm_clean_acc": metrics.clean_accuracy(clean.vlm_pred(), y),
                "ms_clean_acc": metrics.clean_accuracy(ms_clean, y),
                "ms_clean_reject": metrics.rejection_rate(ms_clean, k),
                "ms_robust_acc_nonadaptive": non["robust"], "ms_reject_nonadaptive": non["reject"],
                "ms_robust_acc_adaptive": ada["robust"], "ms_reject_adaptive": ada["reject"],
                "ms_robust_acc_worst": worst["robust"], "ms_reject_worst": worst["reject"],
            }
            rows.append(row)
    df = _with_ci(rows)
    df["gain_adaptive"] = df["ms_robust_acc_adaptive"] - df["clf_robust_acc"]
    df["gain_nonadaptive"] = df["ms_robust_acc_nonadaptive"] - df["clf_robust_acc"]
    return df


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


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """Average robust-accuracy gain of Multi-Shield over the classifier alone, per dataset."""
    return df.groupby("dataset", sort=False)[["gain_nonadaptive", "gain_adaptive"]].mean().reset_index()


ATTACK_DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("clf", "apgd-ce"): "non-adaptive: APGD-CE on the classifier, transferred",
    ("clf", "apgd-dlr"): "non-adaptive: APGD-DLR on the classifier, transferred",
    ("ms", "apgd-ce-reject"): "adaptive (paper): APGD, CE on true + reject class",
    ("ms", "apgd-dlr-reject"): "adaptive (paper): APGD, DLR on true + reject class",
    ("vlm", "apgd-ce"): "transfer: APGD-CE on the VLM alone",
    ("ms", "agreement"): "agreement: targeted APGD on both branches (joint loss)",
    ("ms", "agreement-selective"): "agreement: targeted APGD on the blocking branch (selective)",
    ("ms", "square-reject"): "gradient-free: Square Attack, rejection-aware margin",
}


def attacks_table(profile_name: str) -> pd.DataFrame:
    """One row per (dataset, classifier, attack of the worst-case ensemble), then its worst case, at the profile's eps.

    ``robust_acc``/``reject``: Multi-Shield's robust accuracy with rejection and rejection rate (95% CIs) under
    that attack's examples. ``scope`` says how they were made: ``alone`` (the attack on every sample) or
    ``after previous`` (AutoAttack's scheme: only the samples that every earlier attack left unbroken were
    attacked, the others keep the earlier example, so the row already is a worst case over the rows above).
    ``robust_acc_cumulative``: worst case over this row and every row above it. The ``worst case`` row is
    the ensemble's: a sample counts as robust only if no attack broke it.
    """
    rows = []
    for r in runners(profile_name):
        p, y, k = r.profile, r.labels, r.num_classes
        for clf in p.classifiers:
            seen = []
            base = {"dataset": p.dataset, "classifier": clf, "eps": p.eps, "n": len(y)}
            stages = r.ensemble(clf)
            for target, attack, out in stages:
                st = _ms_status(out, y, p.tolerance, k)
                seen.append(st)
                rates = _rates(st)
                rows.append({**base, "attack": f"{attack}@{target}",
                             "description": ATTACK_DESCRIPTIONS.get((target, attack), attack),
                             "scope": "alone" if in_study_plan(target, attack) else "after previous",
                             "robust_acc": rates["robust"], "reject": rates["reject"],
                             "robust_acc_cumulative": metrics.rate(worst_case(seen) < BROKEN).value,
                             "n_forward": out.n_forward})
            w = _rates(worst_case(seen))
            rows.append({**base, "attack": "worst case", "description": "no attack of the ensemble succeeds",
                         "scope": "ensemble", "robust_acc": w["robust"], "reject": w["reject"],
                         "robust_acc_cumulative": w["robust"].value,
                         "n_forward": sum(o.n_forward for _, _, o in stages)})
    return _with_ci(rows)


def attack_curves(profile_name: str) -> pd.DataFrame:
    """Per (dataset, classifier, attack of the ensemble) and step: the fraction of samples on which the attack
    had succeeded by that step (in its own terms: a transfer counts its source model fooled; a stage run
    after previous ones starts from the samples they broke) and the mean loss (the attack's own scale).

    Steps are APGD iterations (one block per target for the agreement attacks) or Square's queries.
    """
    rows = []
    for r in runners(profile_name):
        p, n = r.profile, len(r.labels)
        for clf in p.classifiers:
            for target, attack, out in r.ensemble(clf):
                loss = list(out.loss_curve or [])
                for step, c in enumerate(out.success_curve or []):
                    rows.append({"dataset": p.dataset, "classifier": clf, "attack": f"{attack}@{target}",
                                 "step": step, "success": c / n,
                                 "loss": loss[step] if step < len(loss) else float("nan")})
    return pd.DataFrame(rows)


def eps_half_check(profile_name: str) -> pd.DataFrame:
    """Tramer (2022)'s sanity check: the classifier alone at eps/2 beside Multi-Shield at eps.

    A detector that is robust at eps yields a classifier robust at eps/2 (an inefficient one), so a
    detector's claimed robust accuracy above what classifiers reach at eps/2 deserves suspicion. Columns:
    the classifier's robust accuracy at eps/2 (APGD-CE+DLR, worst case) and Multi-Shield's at eps under the
    paper's adaptive attack and under the worst-case ensemble.
    """
    rows = []
    for r in runners(profile_name):
        p, y, k = r.profile, r.labels, r.num_classes
        for clf in p.classifiers:
            half = _clf_worst(r, clf, p.eps / 2)
            ada = _ms_worst(_planned(r, clf, "ms", p.eps), y, p.tolerance, k)
            worst = _ms_worst((o for _, _, o in r.ensemble(clf)), y, p.tolerance, k)
            rows.append({"dataset": p.dataset, "classifier": clf, "eps": p.eps, "eps_half": p.eps / 2,
                         "clf_robust_acc_eps_half": metrics.rate(half == CORRECT),
                         "ms_robust_acc_adaptive": metrics.rate(ada < BROKEN),
                         "ms_robust_acc_worst": metrics.rate(worst < BROKEN)})
    return _with_ci(rows)


def security_curves(profile_name: str) -> pd.DataFrame:
    """Robust accuracy vs eps (0 included) for the classifier and for Multi-Shield under each attack."""
    rows = []
    for r in runners(profile_name):
        p, y, k = r.profile, r.labels, r.num_classes
        for clf in p.classifiers:
            clean = r.clean(clf)
            curves = {
                "classifier (APGD-CE+DLR)": lambda e: _clf_worst(r, clf, e),
                "Multi-Shield, non-adaptive": lambda e: _ms_worst(_planned(r, clf, "clf", e), y, p.tolerance, k),
                "Multi-Shield, adaptive": lambda e: _ms_worst(_planned(r, clf, "ms", e), y, p.tolerance, k),
            }
            clean_st = {"classifier (APGD-CE+DLR)": status(clean.clf_pred(), y),
                        "Multi-Shield, non-adaptive": _ms_status(clean, y, p.tolerance, k),
                        "Multi-Shield, adaptive": _ms_status(clean, y, p.tolerance, k)}
            for model, fn in curves.items():
                for eps in [0.0] + study_eps(p):
                    st = clean_st[model] if eps == 0 else fn(eps)
                    rate = metrics.rate(st < BROKEN)
                    rows.append({"dataset": p.dataset, "classifier": clf, "model": model, "eps": eps,
                                 "robust_acc": rate.value, "lo": rate.low, "hi": rate.high,
                                 "reject": float((st == REJECTED).float().mean())})
    return pd.DataFrame(rows)


def tolerance_tradeoff(profile_name: str) -> pd.DataFrame:
    """Clean accuracy, clean rejection and robust accuracy as the tolerance varies.

    The cached logits/similarities are re-thresholded at each tolerance; the adaptive examples were crafted
    against Multi-Shield at the profile's tolerance (the column ``crafted_at`` says so).
    """
    rows = []
    for r in runners(profile_name):
        p, y, k = r.profile, r.labels, r.num_classes
        grid = sorted(set(p.tolerance_grid) | {p.tolerance})
        for clf in p.classifiers:
            clean = r.clean(clf)
            clf_adv, ms_adv = _planned(r, clf, "clf", p.eps), _planned(r, clf, "ms", p.eps)
            for tol in grid:
                ms_clean = clean.ms_pred(tol)
                non = _rates(_ms_worst(clf_adv, y, tol, k))
                ada = _rates(_ms_worst(ms_adv, y, tol, k))
                rows.append({"dataset": p.dataset, "classifier": clf, "tolerance": tol, "eps": p.eps,
                             "clean_acc": metrics.clean_accuracy(ms_clean, y).value,
                             "clean_reject": metrics.rejection_rate(ms_clean, k).value,
                             "robust_acc_nonadaptive": non["robust"].value, "reject_nonadaptive": non["reject"].value,
                             "robust_acc_adaptive": ada["robust"].value, "reject_adaptive": ada["reject"].value,
                             "crafted_at": p.tolerance})
    return pd.DataFrame(rows)


def zero_shot_table(profile_name: str, text_norms: tuple[str, ...] = ("standard", "original")) -> pd.DataFrame:
    """Zero-shot accuracy of the VLM per dataset and prompt template (each alone, then all averaged)."""
    rows = []
    for r in runners(profile_name):
        p = r.profile
        vlm = r.vlm()  # load (maybe train) before inference mode
        x, y = r.images.to(p.device), r.labels.to(p.device)
        prompts = [(t, (t,)) for t in p.templates] + [(f"ensemble of {len(p.templates)}", tuple(p.templates))]
        for label, templates in prompts:
            for norm in text_norms:
                with torch.inference_mode():
                    zs = vlm.with_prompts(r.class_names, templates, text_norm=norm)
                    pred = torch.cat([zs(x[i:i + p.batch_size]).argmax(1) for i in range(0, len(y), p.batch_size)])
                acc = metrics.clean_accuracy(pred.cpu(), y.cpu())
                rows.append({"dataset": p.dataset, "vlm": p.vlm, "template": label, "text_norm": norm,
                             "accuracy": acc.value, "lo": acc.low, "hi": acc.high, "n": acc.n})
    return pd.DataFrame(rows)


def gallery(profile_name: str, clf: str | None = None, n: int = 8, attack: str = "apgd-ce-reject"
            ) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor, list[str]]:
    """Clean and adversarial images (first dataset) with each model's decision, for the workflow figure.

    Returns (table, clean images, adversarial images, class names); the table has one row per image with
    the classifier's, the VLM's and Multi-Shield's predictions on the clean and adversarial image.
    """
    r = runners(profile_name)[0]
    p, y, k = r.profile, r.labels, r.num_classes
    clf = clf or p.classifiers[0]
    clean = r.clean(clf)
    target = "ms" if attack.endswith("-reject") else "clf"
    adv = r.attacked(clf, target, attack, p.eps)
    # a mix: some the attack broke, some Multi-Shield rejected, some it got right
    st = _ms_status(adv, y, p.tolerance, k)
    pick = torch.cat([(st == s).nonzero().squeeze(1)[: max(1, n // 3)] for s in (BROKEN, REJECTED, CORRECT)])[:n]
    names = list(r.class_names) + ["REJECTED"]
    rows = []
    for i in pick.tolist():
        rows.append({"index": int(r.indices[i]), "true": names[int(y[i])],
                     "clf_clean": names[int(clean.clf_pred()[i])], "vlm_clean": names[int(clean.vlm_pred()[i])],
                     "ms_clean": names[int(clean.ms_pred(p.tolerance)[i])],
                     "clf_adv": names[int(adv.clf_pred()[i])], "vlm_adv": names[int(adv.vlm_pred()[i])],
                     "ms_adv": names[int(adv.ms_pred(p.tolerance)[i])]})
    return pd.DataFrame(rows), r.images[pick], adv.x_adv[pick], names
