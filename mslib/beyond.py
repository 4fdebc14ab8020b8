"""Beyond the paper: two questions and a health check, as tables read from the results store (no compute).

1. At the same cost in clean rejections, does the VLM agreement signal beat a rejector that needs no VLM?
   :func:`beyond_table` puts Multi-Shield beside the confidence rejector (the classifier alone, rejecting
   below a max-softmax threshold matched to Multi-Shield's clean rejections on the same samples, attacked by
   the same machinery) and the classifier alone; :func:`risk_coverage` sweeps both rejectors' operating
   points; :func:`comparisons` gives paired differences with 95% intervals.
2. Does Multi-Shield become robust when its VLM is? Every table shows each VLM configuration of the study
   (the profile's VLM and its ``vlm_variants``, e.g. the FARE-fine-tuned LiT) side by side;
   :func:`vlm_robustness` reports each VLM's clean and robust (APGD-CE on the VLM alone) zero-shot accuracy.
3. :func:`attack_health` flags weak attacks: the share of attacked samples whose loss gradient is exactly
   zero at the start point (a fixed point: the attack cannot move), and whether the gradient-free Square
   attack, at the budget shown beside its verdict, breaks samples that every gradient attack before it left
   unbroken (gradient masking). :func:`convergence_table` says how far the worst case moves when the
   strongest attacks run again with 4x the budget (profiles with ``convergence``).

A sample is *broken* under a defense when its output is a wrong class that is not "rejected"; worst case
over attacks is per sample. Rates are fractions with 95% Wilson intervals.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import pandas as pd
import torch

from . import labels, metrics
from .attacks import attack_spec
from .defense import confidence_decide, threshold_for_rejections
from .plan import CONVERGENCE_RESTARTS, CONVERGENCE_SCALE, PAPER_ADAPTIVE, DatasetPlan, Job
from .store import DatasetResults, Outputs, Store
from .metrics import BROKEN, CORRECT, REJECTED, status, worst_case
from .tables import _ms_status, _with_ci, budget

CONFIDENCE = "confidence rejector"
CLASSIFIER = "classifier alone"
RATE_GRID = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
ZERO_GRAD_WARN = 0.1  # an exactly-zero-gradient share above this flags the attack as unable to move


def rejector_name(thr: float) -> str:
    """The confidence rejector as a reader meets it: it uses no VLM, so it is named by its threshold, never
    by the VLM of the Multi-Shield its threshold was matched to."""
    return f"{CONFIDENCE} (no VLM, threshold {thr:.3g})"


def several_configurations(df: pd.DataFrame) -> bool:
    """Whether a table holds Multi-Shield with more than one VLM: then a rejector's rows would read alike, and
    they say which Multi-Shield's clean rejection their threshold was matched to."""
    return df.loc[df.defense == "Multi-Shield", "vlm"].nunique() > 1


def defense_label(defense: str, vlm: str, matched: bool = False) -> str:
    """A row's defense as a reader names it: Multi-Shield with its VLM, the others (which use none) alone; with
    ``matched`` (:func:`several_configurations`) the confidence rejector names the Multi-Shield it matches."""
    if defense == "Multi-Shield":
        return f"Multi-Shield [{vlm}]"
    return f"{defense} (matched to Multi-Shield [{vlm}])" if matched and defense == CONFIDENCE else defense


def for_readers(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of a table with ``defense`` and ``vlm`` columns whose rows that use no VLM (the confidence
    rejector, the classifier alone) read "none" under VLM, and, where there are several configurations, which
    Multi-Shield the rejector's threshold was matched to; the codes stay in the CSV (a rejector's ``vlm`` there
    is the configuration it was matched in)."""
    out = df.copy()
    several = several_configurations(df)
    for i in out.index[out.defense != "Multi-Shield"]:
        matched = several and out.at[i, "defense"] == CONFIDENCE
        out.at[i, "vlm"] = f"none (matched to Multi-Shield [{df.at[i, 'vlm']}])" if matched else "none"
    return out


def configs(d: DatasetResults) -> dict[str, DatasetPlan]:
    """VLM name -> the plan of that configuration: the profile's VLM first, then its variants."""
    return {d.plan.profile.vlm: d.plan, **{name: v for name, v in d.plan.variants.items()}}


def _conf_status(out: Outputs, y: torch.Tensor, thr: float, k: int) -> torch.Tensor:
    return status(confidence_decide(out.f, thr), y, k)


def _worst(store: Store, jobs: Iterable[Job], score) -> torch.Tensor:
    return worst_case(score(store.outputs(j)) for j in jobs)


def every_output(store: Store, d: DatasetResults, clf: str) -> dict[str, list[Outputs]]:
    """Per VLM configuration, every stored output of classifier ``clf`` at the profile's eps in it: the clean
    one first, then every attack on the classifier, on Multi-Shield, on the VLM and on the confidence rejector.

    Each is an eps-perturbation of the same images, so a defense may be scored on all of them, with one
    limit: an output's VLM scores ``s`` are its own configuration's VLM's. The classifier and the confidence
    rejector (logits ``f`` only) may be scored on every configuration's outputs (:func:`_flat`); Multi-Shield
    with VLM ``v`` only on ``every[v]``, which for a variant includes the profile's configuration's examples
    rescored with ``v`` (``plan.transfer``: transfer attacks from the clean-VLM defense).
    """
    out: dict[str, list[Outputs]] = {}
    for vlm, plan in configs(d).items():
        jobs: dict[str, Job] = {}
        for j in (plan.clean[clf], *plan.ensemble[clf], *plan.baseline[clf], *plan.transfer.get(clf, ())):
            jobs.setdefault(j.key, j)
        out[vlm] = [store.outputs(j) for j in jobs.values()]
    return out


def _flat(every: dict[str, list[Outputs]]) -> list[Outputs]:
    return [o for outs in every.values() for o in outs]


def _each_classifier(store: Store) -> Iterator[tuple[DatasetResults, str, dict[str, list[Outputs]]]]:
    """(dataset results, classifier, :func:`every_output` of it) for every classifier of the study."""
    for d in store.datasets:
        for clf in d.profile.classifiers:
            yield d, clf, every_output(store, d, clf)


def _adaptive(stages: tuple[Job, ...]) -> tuple[Job, ...]:
    return tuple(j for j in stages if j.attack in PAPER_ADAPTIVE and j.target != "clf")


def _defense_rows(store: Store, d: DatasetResults, vlm: str, plan: DatasetPlan, clf: str,
                  every: dict[str, list[Outputs]]) -> list[dict]:
    """Multi-Shield and the matched confidence rejector of one configuration."""
    p, y, k = plan.profile, d.labels, d.num_classes
    clean = store.outputs(plan.clean[clf])
    base = {"dataset": p.dataset, "classifier": clf, "vlm": vlm, "eps": p.eps, "n": len(y)}
    rows = []
    ms = lambda o: _ms_status(o, y, p.tolerance, k)  # noqa: E731
    non = _worst(store, plan.nonadaptive[clf, p.eps], ms)
    ada = _worst(store, plan.adaptive[clf, p.eps], ms)
    worst = _worst(store, plan.ensemble[clf], ms)
    rows.append({**base, "defense": "Multi-Shield", "operating_point": f"tolerance {p.tolerance:g}",
                 "clean_acc": metrics.rate(ms(clean) == CORRECT), "clean_reject": metrics.rate(ms(clean) == REJECTED),
                 "robust_acc_nonadaptive": metrics.rate(non < BROKEN), "robust_acc_adaptive": metrics.rate(ada < BROKEN),
                 "robust_acc_worst": metrics.rate(worst < BROKEN), "reject_worst": metrics.rate(worst == REJECTED),
                 "robust_acc_every": metrics.rate(worst_case(ms(o) for o in every[vlm]) < BROKEN),
                 "n_attacks_worst": len(plan.ensemble[clf])})
    thr = store.threshold(plan, clf)
    cf = lambda o: _conf_status(o, y, thr, k)  # noqa: E731
    stages = plan.baseline[clf]
    non = _worst(store, plan.nonadaptive[clf, p.eps], cf)
    ada = _worst(store, _adaptive(stages), cf)
    worst = _worst(store, stages, cf)
    rows.append({**base, "defense": CONFIDENCE,
                 "operating_point": f"threshold {thr:.3g}, matched to Multi-Shield [{vlm}]'s clean rejection",
                 "clean_acc": metrics.rate(cf(clean) == CORRECT), "clean_reject": metrics.rate(cf(clean) == REJECTED),
                 "robust_acc_nonadaptive": metrics.rate(non < BROKEN), "robust_acc_adaptive": metrics.rate(ada < BROKEN),
                 "robust_acc_worst": metrics.rate(worst < BROKEN), "reject_worst": metrics.rate(worst == REJECTED),
                 "robust_acc_every": metrics.rate(worst_case(cf(o) for o in _flat(every)) < BROKEN),
                 "n_attacks_worst": len(stages)})
    return rows


def _classifier_row(store: Store, d: DatasetResults, clf: str, every: dict[str, list[Outputs]]) -> dict:
    p, y = d.profile, d.labels
    clean = store.outputs(d.plan.clean[clf])
    st = _worst(store, d.plan.nonadaptive[clf, p.eps], lambda o: status(o.clf_pred(), y))
    robust = metrics.rate(st == CORRECT)
    every_st = worst_case(status(o.clf_pred(), y) for o in _flat(every))
    return {"dataset": p.dataset, "classifier": clf, "vlm": "", "eps": p.eps, "n": len(y), "defense": CLASSIFIER,
            "operating_point": "no rejection", "clean_acc": metrics.rate(clean.clf_pred() == y),
            "clean_reject": metrics.rate(torch.zeros_like(y, dtype=torch.bool)),
            "robust_acc_nonadaptive": robust, "robust_acc_adaptive": robust, "robust_acc_worst": robust,
            "reject_worst": metrics.rate(torch.zeros_like(y, dtype=torch.bool)),
            "robust_acc_every": metrics.rate(every_st == CORRECT), "n_attacks_worst": 2}


def beyond_table(store: Store | str) -> pd.DataFrame:
    """One row per (dataset, classifier, VLM configuration, defense) at the profile's eps, with 95% CIs.

    Defenses: ``Multi-Shield`` (that VLM, the profile's tolerance), ``confidence rejector`` (threshold matched
    to that Multi-Shield's clean rejections), and once per classifier the ``classifier alone``. Columns: clean
    accuracy and rejection; robust accuracy non-adaptive (APGD-CE/DLR on the classifier, transferred),
    adaptive (the paper's rejection-aware CE then DLR on that defense's K+1 logits) and worst (per sample
    over the defense's whole ensemble: for Multi-Shield the study's, for the rejector the transferred
    attacks, CE/DLR-reject, the stronger DLR and Square on its logits; for the classifier APGD-CE+DLR);
    ``robust_acc_every``: per sample over every stored example of the classifier at eps that the defense
    can be scored on (:func:`every_output`: for the classifier and the confidence rejector, every attack of
    every VLM configuration; for Multi-Shield, every attack of its own configuration), the strongest
    evaluation here.
    """
    store = Store.open(store)
    rows = []
    for d, clf, every in _each_classifier(store):
        rows.append(_classifier_row(store, d, clf, every))
        for vlm, plan in configs(d).items():
            rows += _defense_rows(store, d, vlm, plan, clf, every)
    return _with_ci(rows)


def risk_coverage(store: Store | str) -> pd.DataFrame:
    """Worst-case robust accuracy against clean rejection as each rejector's operating point moves.

    Per (dataset, classifier, VLM configuration): Multi-Shield over tolerances (the profile's grid, its
    tolerance, and the tolerances that reject each share of :data:`RATE_GRID` of the clean samples) and the
    confidence rejector over thresholds (each share of the grid and each Multi-Shield point's clean
    rejection). At every point each sample is scored, under that rejector, on every stored example of the
    classifier at the profile's eps that it can be scored on (:func:`every_output`) and counts as robust only
    if none breaks it. ``adaptive`` is True only at the operating point the attacks were run against;
    elsewhere the examples were crafted for another point, so those robust accuracies are upper bounds.
    ``curve``: the line's name for readers (the rejector's names no VLM).
    """
    store = Store.open(store)
    rows = []
    for d, clf, every in _each_classifier(store):
        y, k = d.labels, d.num_classes
        cfg = configs(d)
        for vlm, plan in cfg.items():
            p = plan.profile
            # the legend's names: the rejector uses no VLM; only its matched point differs by configuration
            curve = {"Multi-Shield": f"Multi-Shield [{vlm}]", CONFIDENCE: f"{CONFIDENCE} (no VLM)"
                     + (f", matched to Multi-Shield [{vlm}]" if len(cfg) > 1 else "")}
            clean = store.outputs(plan.clean[clf])
            outs = [clean] + every[vlm]  # Multi-Shield: this configuration's VLM scores only
            gaps = (clean.s.max(1).values - clean.s.gather(1, clean.f.argmax(1, keepdim=True)).squeeze(1))
            sorted_gaps = torch.sort(gaps, descending=True).values
            tols = set(p.tolerance_grid) | {p.tolerance}
            for r in RATE_GRID:  # the tolerance rejecting a share r: just at the (r·N)-th largest gap
                m = int(round(r * len(y)))
                tols.add(float(sorted_gaps[m]) if m < len(y) else 0.0)
            ms_points = []
            for tol in sorted(tols):
                sts = [_ms_status(o, y, tol, k) for o in outs]
                w, c = worst_case(sts), sts[0]
                ms_points.append(int((c == REJECTED).sum()))
                rows.append(_rc_row(p, clf, vlm, "Multi-Shield", "tolerance", tol, c, w, tol == p.tolerance)
                            | {"curve": curve["Multi-Shield"]})
            matched = store.threshold(plan, clf)
            counts = {int(round(r * len(y))) for r in RATE_GRID} | set(ms_points)
            thrs = {threshold_for_rejections(clean.f, m) for m in counts} | {matched}
            for thr in sorted(thrs):
                sts = [_conf_status(o, y, thr, k) for o in [clean] + _flat(every)]
                rows.append(_rc_row(p, clf, vlm, CONFIDENCE, "threshold", thr, sts[0], worst_case(sts),
                                    thr == matched) | {"curve": curve[CONFIDENCE]})
    return pd.DataFrame(rows)


def _rc_row(p, clf, vlm, defense, knob, value, clean_st, worst_st, adaptive) -> dict:
    robust = metrics.rate(worst_st < BROKEN)
    return {"dataset": p.dataset, "classifier": clf, "vlm": vlm, "defense": defense, "knob": knob, "value": value,
            "clean_reject": float((clean_st == REJECTED).float().mean()),
            "clean_acc": float((clean_st == CORRECT).float().mean()),
            "robust_acc_worst": robust.value, "lo": robust.low, "hi": robust.high, "adaptive": bool(adaptive)}


def _every_status(store: Store, d: DatasetResults, vlm: str, plan: DatasetPlan, clf: str, defense: str,
                  every: dict[str, list[Outputs]]) -> torch.Tensor:
    y, k, p = d.labels, d.num_classes, plan.profile
    if defense == "Multi-Shield":
        return worst_case(_ms_status(o, y, p.tolerance, k) for o in every[vlm])
    thr = store.threshold(plan, clf)
    return worst_case(_conf_status(o, y, thr, k) for o in _flat(every))


def comparisons(store: Store | str) -> pd.DataFrame:
    """Paired differences of worst-case robust accuracy (same samples, 95% Newcombe intervals), as fractions.

    Each side is scored per sample on every stored example of the classifier at eps that it can be scored
    on (:func:`every_output`).

    Per (dataset, classifier): for each VLM configuration, Multi-Shield − confidence rejector (equal clean
    rejections) and Multi-Shield − classifier alone; for each VLM variant, Multi-Shield with it − Multi-Shield
    with the profile's VLM, and the same for their confidence rejectors. ``clean_reject_a``/``_b``: the two
    sides' clean rejection rates (equal for the matched comparisons up to ties).
    """
    store = Store.open(store)
    rows = []
    for d, clf, every in _each_classifier(store):
        y, k = d.labels, d.num_classes
        clf_st = worst_case(status(o.clf_pred(), y) for o in _flat(every))
        cfg = configs(d)
        worst = {(vlm, dfn): _every_status(store, d, vlm, plan, clf, dfn, every) for vlm, plan in cfg.items()
                 for dfn in ("Multi-Shield", CONFIDENCE)}
        rejects, names = {}, {(None, CLASSIFIER): CLASSIFIER}
        for vlm, plan in cfg.items():
            clean = store.outputs(plan.clean[clf])
            rejects[vlm, "Multi-Shield"] = float((clean.ms_pred(plan.profile.tolerance) == k).float().mean())
            thr = store.threshold(plan, clf)
            rejects[vlm, CONFIDENCE] = float((confidence_decide(clean.f, thr) == k).float().mean())
            names[vlm, CONFIDENCE] = rejector_name(thr)
            names[vlm, "Multi-Shield"] = f"Multi-Shield [{vlm}]"
        rejects[None, CLASSIFIER] = 0.0

        def add(question, a, b, st_a, st_b):
            diff = metrics.paired_difference(st_a < BROKEN, st_b < BROKEN)
            rows.append({"dataset": d.profile.dataset, "classifier": clf, "question": question,
                         "a": names[a], "b": names[b],
                         "robust_acc_a": float((st_a < BROKEN).float().mean()),
                         "robust_acc_b": float((st_b < BROKEN).float().mean()),
                         "clean_reject_a": rejects[a], "clean_reject_b": rejects[b],
                         "difference": diff.value, "difference_lo": diff.low, "difference_hi": diff.high,
                         "only_a": diff.only_a, "only_b": diff.only_b, "n": diff.n})

        base_vlm = d.profile.vlm
        for vlm in cfg:
            add("VLM signal vs confidence at equal clean rejection", (vlm, "Multi-Shield"), (vlm, CONFIDENCE),
                worst[vlm, "Multi-Shield"], worst[vlm, CONFIDENCE])
            add("Multi-Shield vs its classifier alone", (vlm, "Multi-Shield"), (None, CLASSIFIER),
                worst[vlm, "Multi-Shield"], clf_st)
        for vlm in cfg:
            if vlm == base_vlm:
                continue
            add("robust VLM vs clean VLM in Multi-Shield", (vlm, "Multi-Shield"), (base_vlm, "Multi-Shield"),
                worst[vlm, "Multi-Shield"], worst[base_vlm, "Multi-Shield"])
            add("robust VLM Multi-Shield vs the clean-VLM confidence rejector", (vlm, "Multi-Shield"),
                (base_vlm, CONFIDENCE), worst[vlm, "Multi-Shield"], worst[base_vlm, CONFIDENCE])
    return pd.DataFrame(rows)


def vlm_robustness(store: Store | str) -> pd.DataFrame:
    """Per (dataset, VLM configuration): the VLM's clean zero-shot accuracy (the profile's prompts averaged)
    and its robust zero-shot accuracy under APGD-CE on the VLM alone at the profile's eps (every sample)."""
    store = Store.open(store)
    rows = []
    for d in store.datasets:
        for vlm, plan in configs(d).items():
            clean = store.outputs(plan.clean[plan.profile.classifiers[0]])
            row = {"dataset": d.profile.dataset, "vlm": vlm, "source": plan.profile.vlm_spec.get("source"),
                   "eps": plan.profile.eps, "clean_zero_shot_acc": metrics.rate(clean.vlm_pred() == d.labels)}
            if plan.vlm_attack:
                adv = store.outputs(plan.vlm_attack[0])
                row["robust_zero_shot_acc"] = metrics.rate(adv.vlm_pred() == d.labels)
            rows.append(row)
    return _with_ci(rows)


def _new_breaks(store: Store, job: Job, broken: torch.Tensor, before: torch.Tensor | None) -> int:
    """Samples a stage broke itself: broken in its outputs, not reused from its ``after`` jobs (or, for a
    stage run on every sample, not broken by any stage before it)."""
    if job.after:
        reused = store.load(job, ("reused",))["reused"]
        return int((broken & ~reused).sum())
    return int((broken & ~before).sum()) if before is not None else int(broken.sum())


def _each_defense(store: Store) -> Iterator[tuple[DatasetResults, str, str, DatasetPlan, str, str, tuple[Job, ...], Any]]:
    """(dataset results, classifier, VLM configuration, its plan, defense name, target code, the defense's
    worst-case ensemble, its per-sample scorer) for Multi-Shield and the matched confidence rejector."""
    for d in store.datasets:
        y, k = d.labels, d.num_classes
        for clf in d.profile.classifiers:
            for vlm, plan in configs(d).items():
                tol, thr = plan.profile.tolerance, store.threshold(plan, clf)
                yield d, clf, vlm, plan, "Multi-Shield", "ms", plan.ensemble[clf], \
                    (lambda o, tol=tol: _ms_status(o, y, tol, k))
                yield d, clf, vlm, plan, CONFIDENCE, "conf", plan.baseline[clf], \
                    (lambda o, thr=thr: _conf_status(o, y, thr, k))


def attack_health(store: Store | str) -> pd.DataFrame:
    """Per (dataset, classifier, VLM configuration, defense, attack of its worst-case ensemble) at the
    profile's eps: is the attack able to move, and does a gradient-free attack find what gradients missed?

    ``n_measured``: samples the attack started a gradient step on (not already broken, not reused);
    ``zero_grad``: the share of them whose loss gradient was exactly zero at the start point, a fixed point
    of APGD (AutoAttack's ``check_zero_gradients``, made exact; CIs in ``zero_grad_lo``/``_hi``);
    ``new_breaks``: samples this stage broke that no stage before it had; ``budget``: the attack's budget;
    ``flag``: ``zero gradients`` when that share exceeds :data:`ZERO_GRAD_WARN`, ``gradient masking`` when
    Square (gradient-free, run last on what every gradient attack left unbroken) breaks any sample, else empty.
    """
    store = Store.open(store)
    rows = []
    for d, clf, vlm, plan, defense, _, stages, score in _each_defense(store):
        before = None
        for job in stages:
            broken = score(store.outputs(job)) == BROKEN
            zg = store.load(job, ("zero_grad",)).get("zero_grad")
            measured = zg >= 0 if zg is not None else torch.zeros_like(d.labels, dtype=torch.bool)
            share = metrics.rate((zg == 1)[measured]) if zg is not None else metrics.rate(measured[:0])
            new = _new_breaks(store, job, broken, before)
            gradient_free = attack_spec(job.attack).gradient_free
            flag = ("gradient masking" if gradient_free and new > 0 else
                    "zero gradients" if share.n and share.value > ZERO_GRAD_WARN else "")
            rows.append({"dataset": d.profile.dataset, "classifier": clf, "vlm": vlm, "defense": defense,
                         "attack": f"{job.attack}@{job.target}", "budget": budget(job), "gradient_free": gradient_free,
                         "n_measured": share.n, "n_zero_grad": share.count, "zero_grad": share, "new_breaks": new,
                         "flag": flag})
            before = broken if before is None else before | broken
    return _with_ci(rows)


STRONGER = (f"{CONVERGENCE_SCALE}× iterations and queries, {CONVERGENCE_RESTARTS} restarts for gradient attacks")


def convergence_table(store: Store | str) -> pd.DataFrame:
    """How far the worst case moves at a larger budget, per (dataset, classifier, VLM configuration, defense).

    ``robust_acc_base``: the worst case over the defense's ensemble; ``robust_acc_stronger``: after its
    strongest attacks ran again on the survivors with :data:`STRONGER` (``plan.convergence``); ``moved``: the
    paired difference base − stronger (points, 95% Newcombe interval); ``moved_samples``: samples that were
    robust and are now broken; ``found_by``: which stronger attacks broke them. Empty when the profile does
    not run the check (``Profile.convergence``).
    """
    store = Store.open(store)
    rows = []
    if not any(plan.convergence for d in store.datasets for plan in configs(d).values()):
        return _with_ci(rows)  # nothing to read: no thresholds to match, no outputs to load
    for d, clf, vlm, plan, defense, code, stages, score in _each_defense(store):
        if not plan.convergence:
            continue
        base = _worst(store, stages, score)
        worst, found = base, {}
        for job in plan.convergence[clf, code]:
            st = score(store.outputs(job))
            new = int(((st == BROKEN) & (worst < BROKEN)).sum())
            if new:
                found[labels.attack(f"{job.attack}@{job.target}")] = new
            worst = worst_case([worst, st])
        diff = metrics.paired_difference(base < BROKEN, worst < BROKEN)
        rows.append({"dataset": d.profile.dataset, "classifier": clf, "vlm": vlm, "defense": defense,
                     "eps": plan.profile.eps, "n": len(d.labels), "robust_acc_base": metrics.rate(base < BROKEN),
                     "robust_acc_stronger": metrics.rate(worst < BROKEN), "moved": diff.value,
                     "moved_lo": diff.low, "moved_hi": diff.high,
                     "moved_samples": int(((base < BROKEN) & (worst == BROKEN)).sum()),
                     "found_by": "; ".join(f"{a}: {n}" for a, n in found.items()) or "none"})
    return _with_ci(rows)


def unchecked_configurations(store: Store | str) -> list[str]:
    """VLM configurations whose worst case the convergence check did not recompute (a VLM variant of a profile
    without :attr:`Profile.variant_convergence`), as reader labels; empty where every one was checked."""
    store = Store.open(store)
    return [defense_label("Multi-Shield", vlm) for d in store.datasets for vlm, plan in configs(d).items()
            if not plan.convergence]


def conclusions(cmp: pd.DataFrame) -> list[str]:
    """One sentence per comparison row of :func:`comparisons`, with the difference and its 95% interval,
    saying which side wins or that the interval cannot tell them apart."""
    out = []
    for r in cmp.itertuples():
        if r.difference_hi < 0:  # b wins: say it in b's direction, b − a with its interval
            verdict = (f"{r.b} wins by {labels.as_points(-r.difference)} points "
                       f"[95% CI {labels.as_points(-r.difference_hi)}, {labels.as_points(-r.difference_lo)}]")
        else:
            lead = f"{r.a} wins by" if r.difference_lo > 0 else f"no clear winner: {r.a} minus {r.b} is"
            verdict = (f"{lead} {labels.as_points(r.difference)} points "
                       f"[95% CI {labels.as_points(r.difference_lo)}, {labels.as_points(r.difference_hi)}]")
        out.append(f"{labels.dataset(r.dataset)}, {labels.classifier(r.classifier)}, {r.question}: {verdict}; "
                   f"worst-case robust accuracy {100 * r.robust_acc_a:.1f}% vs "
                   f"{100 * r.robust_acc_b:.1f}% at clean rejection {100 * r.clean_reject_a:.1f}% vs "
                   f"{100 * r.clean_reject_b:.1f}% (n={r.n}).")
    return out


__all__ = ["CLASSIFIER", "CONFIDENCE", "attack_health", "beyond_table", "comparisons", "conclusions", "convergence_table",
           "configs", "defense_label", "for_readers", "rejector_name", "risk_coverage",
           "unchecked_configurations", "vlm_robustness"]
