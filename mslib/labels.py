"""Human-readable names for the study's codes, in one place: attacks, table columns, settings, datasets.

Tables and CSV files keep the codes (``apgd-dlr-reject@ms``, ``ms_robust_acc_worst``, rates as fractions);
everything a reader sees — figure legends and axes, the Markdown/LaTeX copies of the tables — goes through
this module. :func:`display` makes the display copy of a table: percent with 95% CIs, names for codes.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

import pandas as pd

from .attacks import ATTACK_SPECS
from .data import DATASETS as _DATASET_SPECS

# Said somewhere visible on every output that shows a robust accuracy.
ROBUST = "robust = correct or rejected"
ROBUST_NOTE = ("Robust accuracy with rejection: an adversarial input counts as robust when Multi-Shield "
               "classifies it correctly or rejects it (robust = correct or rejected). Rates in percent with "
               "95% Wilson confidence intervals; gains in percentage points.")

# a dataset's display name comes from its spec (mslib.data.DATASETS)
DATASETS = {name: spec.display for name, spec in _DATASET_SPECS.items()}

CLASSIFIERS = {"standard": "standard CNN", "fgsm-rs": "FGSM-RS CNN (adv. trained)"}

# "<attack>@<target>": target clf = the classifier alone (transferred), ms = Multi-Shield, vlm = the VLM alone.
# Every registered attack on every target, named from its spec (a new attack needs no entry here).
_WHERE = {"ms": "", "conf": ", on the confidence rejector", "vlm": " on the VLM alone (transfer)",
          "clf": " on the classifier (non-adaptive)"}
ATTACKS = {f"{_name}@{_target}": _spec.shown_on.get(_target, _spec.label + _where)
           for _name, _spec in ATTACK_SPECS.items() for _target, _where in _WHERE.items()}
ATTACKS["worst case"] = "worst case over every attack"

# What a bar of the main figure or a line of the security curves measures: the model, and the inputs.
SETTINGS = {
    "clf_clean": "classifier alone, clean",
    "clf": "classifier alone, APGD-CE+DLR on it",
    "ms_clean": "Multi-Shield, clean",
    "ms_nonadaptive": "Multi-Shield, non-adaptive attack",
    "ms_adaptive": "Multi-Shield, adaptive attack (paper)",
    "ms_worst": "Multi-Shield, worst case (every attack)",
}

OUTCOMES = {"correct": "correct", "rejected": "rejected", "fooled": "wrong, not rejected (fooled)"}
OUTCOME_COLORS = {"correct": "#4c9a5b", "rejected": "#e6a141", "fooled": "#c8453c"}

TEXT_NORMS = {"standard": "standard (each class embedding normalized)",
              "original": "original code (÷ norm over classes, then per class)"}

SCOPES = {"alone": "on every sample", "chained (smaller ε; DLR after CE)": "chained (smaller ε; DLR after CE)",
          "after previous": "only where earlier attacks failed (cumulative)", "ensemble": "ensemble"}

COLUMNS = {
    "dataset": "dataset", "classifier": "classifier", "eps": "ε", "n": "n", "vlm": "VLM",
    "clf_clean_acc": "classifier: clean acc. (%)",
    "clf_robust_acc": "classifier: robust acc. (%)",
    "vlm_clean_acc": "VLM: clean acc. (%)",
    "ms_clean_acc": "Multi-Shield: clean acc. (%)",
    "ms_clean_reject": "Multi-Shield: clean rejection (%)",
    "ms_robust_acc_nonadaptive": "Multi-Shield: robust acc., non-adaptive (%)",
    "ms_reject_nonadaptive": "Multi-Shield: rejected, non-adaptive (%)",
    "ms_robust_acc_adaptive": "Multi-Shield: robust acc., adaptive (%)",
    "ms_reject_adaptive": "Multi-Shield: rejected, adaptive (%)",
    "ms_robust_acc_worst": "Multi-Shield: robust acc., worst case (%)",
    "ms_reject_worst": "Multi-Shield: rejected, worst case (%)",
    "ms_correct_worst": "Multi-Shield: correct, worst case (%)",
    "gain_worst": "gain, worst case (points)",
    "gain_adaptive": "gain, adaptive (points)",
    "gain_nonadaptive": "gain, non-adaptive (points)",
    # attacks table
    "attack": "attack", "description": "what it does", "scope": "run on",
    "robust_acc": "robust acc. (%)", "reject": "rejected (%)",
    "robust_acc_cumulative": "robust acc., this and every attack above (%)",
    "reject_cumulative": "rejected, this and every attack above (%)",
    "n_forward": "forward passes",
    # ε/2 check
    "eps_half": "ε/2", "clf_robust_acc_eps_half": "classifier: robust acc. at ε/2 (%)",
    # security curves, tolerance, zero-shot, outcomes
    "model": "model and attack", "correct": "correct (%)", "lo": "95% CI low (%)", "hi": "95% CI high (%)",
    "tolerance": "tolerance", "clean_acc": "clean acc. (%)", "clean_reject": "clean rejection (%)",
    "robust_acc_nonadaptive": "robust acc., non-adaptive (%)", "reject_nonadaptive": "rejected, non-adaptive (%)",
    "robust_acc_adaptive": "robust acc., adaptive (%)", "reject_adaptive": "rejected, adaptive (%)",
    "crafted_at": "attacks crafted at tolerance",
    "template": "prompt template", "text_norm": "text normalization", "accuracy": "zero-shot acc. (%)",
    "setting": "setting", "outcome": "outcome", "share": "share (%)", "num_classes": "classes",
    "nan_scores": "images with NaN scores (%)", "top_class_share": "images given the commonest class (%)",
    "measure": "success counts", "target": "attacked model", "step": "step", "success": "succeeded (%)",
    "loss": "mean loss", "clean_robust": "clean: correct or rejected (%)",
    # gallery
    "index": "test index", "true": "true class", "clf_clean": "classifier, clean", "vlm_clean": "VLM, clean",
    "ms_clean": "Multi-Shield, clean", "clf_adv": "classifier, adversarial", "vlm_adv": "VLM, adversarial",
    "ms_adv": "Multi-Shield, adversarial",
}

# Value columns whose entries are codes, and the mapping that names them.
# notebook 08 (mslib.beyond): baselines, VLM configurations, risk-coverage, attack health, paired comparisons
COLUMNS.update({
    "defense": "defense", "operating_point": "operating point",
    "robust_acc_worst": "robust acc., worst case (%)", "reject_worst": "rejected, worst case (%)",
    "robust_acc_every": "robust acc., worst over every stored example (%)",
    "n_attacks_worst": "attacks in the worst case", "source": "VLM source",
    "clean_zero_shot_acc": "VLM: clean zero-shot acc. (%)", "robust_zero_shot_acc": "VLM: robust zero-shot acc. (%)",
    "knob": "swept parameter", "curve": "rejector", "found_by": "found by", "value": "value", "adaptive": "attacked at this point",
    "gradient_free": "gradient-free attack", "n_measured": "samples measured",
    "n_zero_grad": "samples with an exactly zero gradient", "zero_grad": "exactly-zero-gradient share (%)",
    "budget": "budget", "robust_acc_base": "worst case, ensemble (%)",
    "robust_acc_stronger": "worst case, 4× budget (%)", "moved": "moved by (points)",
    "moved_samples": "samples it moved",
    "new_breaks": "samples it broke that no earlier attack had", "flag": "flag", "question": "question",
    "a": "configuration A", "b": "configuration B", "robust_acc_a": "A: robust acc. (%)",
    "robust_acc_b": "B: robust acc. (%)", "clean_reject_a": "A: clean rejection (%)",
    "clean_reject_b": "B: clean rejection (%)", "difference": "A − B (points)",
    "only_a": "robust only under A", "only_b": "robust only under B",
})

VALUE_MAPS: dict[str, Mapping[str, str]] = {
    "dataset": DATASETS, "classifier": CLASSIFIERS, "attack": ATTACKS, "setting": SETTINGS, "model": SETTINGS,
    "outcome": OUTCOMES, "text_norm": TEXT_NORMS, "scope": SCOPES,
}

_SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")


def _lookup(mapping: Mapping[str, str], code) -> str:
    return mapping.get(code, code) if isinstance(code, str) else code


def dataset(code: str) -> str:
    return _lookup(DATASETS, code)


def classifier(code: str) -> str:
    return _lookup(CLASSIFIERS, code)


def attack(code: str) -> str:
    """``apgd-dlr-reject@ms`` → "APGD-DLR, rejection-aware (adaptive, paper)"; an unknown code is spelled out."""
    if code in ATTACKS:
        return ATTACKS[code]
    name, _, target = code.partition("@")
    where = {"clf": "on the classifier", "ms": "on Multi-Shield", "vlm": "on the VLM",
             "conf": "on the confidence rejector"}.get(target, target)
    return f"{name.upper().replace('-', ' ')} {where}".strip()


def setting(code: str) -> str:
    return _lookup(SETTINGS, code)


def column(code: str) -> str:
    """The header of a table column; an unknown code is spelled out (underscores as spaces)."""
    if code in COLUMNS:
        return COLUMNS[code]
    return code.replace("_", " ")


def title(dataset_code: str, eps: float | None = None, n: int | None = None, classifier_code: str | None = None) -> str:
    """"Fashion-MNIST, standard CNN, ε = 0.1, n = 300" (the parts given)."""
    parts = [dataset(dataset_code)]
    if classifier_code is not None:
        parts.append(classifier(classifier_code))
    if eps is not None:
        parts.append(f"ε = {eps:g}")
    if n is not None:
        parts.append(f"n = {n}")
    return ", ".join(parts)


def is_raw_code(text) -> bool:
    """Whether ``text`` looks like an internal code a reader should not meet (snake_case or ``name@target``,
    or a key of one of the mappings that differs from its label)."""
    if not isinstance(text, str):
        return False
    if _SNAKE.match(text) or re.search(r"[a-z]@[a-z]", text):
        return True
    return any(text in m and m[text] != text for m in (ATTACKS, SETTINGS, TEXT_NORMS))


def named(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose code columns (attack, setting, model, …) hold names; headers unchanged."""
    out = df.copy()
    for col, mapping in VALUE_MAPS.items():
        if col in out.columns:
            out[col] = [attack(v) if col == "attack" and isinstance(v, str) else _lookup(mapping, v) for v in out[col]]
    return out


# What a reader sees for a missing value; every table that shows one says why below it.
MISSING = "—"
MISSING_WHY = "no value for this row"


def _pct(v: float, digits: int = 1) -> str:
    return MISSING if pd.isna(v) else f"{100 * v:.{digits}f}"


def as_points(v: float) -> str:
    """A difference of rates as signed percentage points ("+4.0"; "—" if missing)."""
    return MISSING if pd.isna(v) else f"{100 * v:+.1f}"


def number(v) -> str:
    """Any other number as a reader reads it: integers whole, the rest to 4 significant digits ("—" if
    missing): a float32 threshold 0.8500000238418579 reads 0.85, float noise below 1e-12 reads 0."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if abs(v) < 1e-12:  # float noise (a difference of equal rates as 8.7e-19) reads as what it is
        return "0"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}"


def display(df: pd.DataFrame, rates: Iterable[str] | None = None, points: Iterable[str] = (),
            ci: Mapping[str, tuple[str, str]] | None = None, drop: Iterable[str] = (),
            missing: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The reader's copy of a table: codes named, rates in percent with their 95% CI, gains in points.

    ``rates``: the rate columns (default: every column with ``<col>_lo``/``<col>_hi`` beside it); ``ci`` maps
    a rate column to its CI columns when they are named otherwise (e.g. ``{"accuracy": ("lo", "hi")}``);
    ``points``: differences of rates, shown as signed percentage points (with ``<col>_lo``/``_hi`` as their CI);
    ``drop``: columns left out. Columns whose header says "(%)" or "(points)" are formatted so even if not listed;
    boolean columns read "yes"/"no"; every other number is rounded (:func:`number`). A missing value reads
    "—", and ``out.attrs["footnotes"]`` says why, per column: ``missing`` maps a column to the reason
    (default :data:`MISSING_WHY`). Every copy a reader sees is made here (saved Markdown, notebooks, figures).
    """
    ci = dict(ci or {})
    cols = list(df.columns)
    # a header that says "(%)" or "(points)" is always formatted so, listed or not: a fraction under "(%)"
    # is a plausible wrong number
    points = list(dict.fromkeys([*points, *(c for c in cols if column(c).endswith("(points)"))]))
    if rates is None:
        rates = [c for c in cols if f"{c}_lo" in cols and f"{c}_hi" in cols and c not in points]
    rates = list(dict.fromkeys([*rates, *(c for c in cols if column(c).endswith("(%)") and c not in points)]))
    for c in rates:
        ci.setdefault(c, (f"{c}_lo", f"{c}_hi"))
    hidden = {x for pair in ci.values() for x in pair if x in cols} | set(drop)
    hidden |= {c for c in cols if c.endswith(("_lo", "_hi"))}
    out = named(df)
    for c in rates:
        lo, hi = ci[c]
        if lo in df.columns and hi in df.columns:
            out[c] = [_pct(v) if pd.isna(a) or pd.isna(v) else f"{_pct(v)} [{_pct(a)}, {_pct(b)}]"
                      for v, a, b in zip(df[c], df[lo], df[hi])]
        else:
            out[c] = [_pct(v) for v in df[c]]
    for c in points:
        lo, hi = f"{c}_lo", f"{c}_hi"
        out[c] = [as_points(v) if lo not in cols or pd.isna(v) or pd.isna(df[lo][i])
                  else f"{as_points(v)} [{as_points(df[lo][i])}, {as_points(df[hi][i])}]"
                  for i, v in zip(df.index, df[c])]
    for c in cols:
        if c in rates or c in points or c in hidden:
            continue
        if df[c].dtype == bool:  # flags read as words
            out[c] = ["yes" if v else "no" for v in df[c]]
        elif pd.api.types.is_numeric_dtype(df[c]):
            out[c] = [number(v) for v in df[c]]
        else:
            out[c] = [MISSING if v is None or (isinstance(v, float) and pd.isna(v)) or v == "" else v
                      for v in out[c]]
    out = out[[c for c in cols if c not in hidden]]
    why = dict(missing or {})
    feet = [f"{column(c)}: {why.get(c, MISSING_WHY)}" for c in out.columns if (out[c] == MISSING).any()]
    out = out.rename(columns={c: column(c) for c in out.columns})
    out.attrs["footnotes"] = [f"{MISSING} {'; '.join(feet)}."] if feet else []
    return out


__all__ = ["ATTACKS", "CLASSIFIERS", "COLUMNS", "DATASETS", "OUTCOMES", "OUTCOME_COLORS", "ROBUST",
           "MISSING", "ROBUST_NOTE", "SETTINGS", "TEXT_NORMS", "TOLERANCE_METRICS", "attack", "classifier", "column", "dataset", "display",
           "is_raw_code", "named", "number", "as_points", "setting", "title"]

# The tolerance figure's lines: clean and adversarial rates, each saying what it counts.
TOLERANCE_METRICS = {
    "clean_acc": "clean: correct",
    "clean_reject": "clean: rejected",
    "clean_robust": "clean: correct or rejected",
    "robust_acc_nonadaptive": "non-adaptive attack: correct or rejected",
    "robust_acc_adaptive": "adaptive attack (paper): correct or rejected",
}
