"""Writing tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) in one house style."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from .cache import atomic_write

# CSV files: six significant digits, after float noise below 1e-12 is cut (a float32 0.85 is
# 0.8500000238418579 in float64, a difference of equal rates can come out as 8.7e-19); one format for every file.
CSV_FLOAT_FORMAT = "%.6g"


def rounded(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its float columns rounded to 12 decimals (what :data:`CSV_FLOAT_FORMAT` then prints)."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(12) + 0.0  # + 0.0: no "-0" in a file
    return out


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """``df`` as CSV (no index, floats as :data:`CSV_FLOAT_FORMAT`), written atomically."""
    return atomic_write(Path(path), lambda p: rounded(df).to_csv(p, index=False, float_format=CSV_FLOAT_FORMAT))


def markdown(df: pd.DataFrame, note: str | None = None, floatfmt: str = ".3f") -> str:
    """A reader's table (:func:`mslib.labels.display`) as Markdown: the table, its footnotes (what a "—"
    stands for, from ``df.attrs["footnotes"]``) and ``note``. The same text is saved and shown in notebooks."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    for foot in df.attrs.get("footnotes", ()):
        text += f"\n{foot}\n"
    return text + (f"\n{note}\n" if note else "")


def save_table(df: pd.DataFrame, path_stem: str | Path, floatfmt: str = ".3f",
               display: pd.DataFrame | None = None, note: str | None = None, latex: str | None = None) -> list[Path]:
    """Write ``df`` as ``<stem>.csv`` and ``display`` (default ``df``) as ``<stem>.md`` and ``<stem>.tex``.

    Files are written atomically; returns the paths. The CSV keeps every column (codes and fractions, six
    significant digits: :func:`write_csv`); the reader's copies get ``note`` below the Markdown table and as the LaTeX caption.
    ``latex``: the LaTeX text to write instead of ``display``'s (e.g. :func:`main_table_latex`).
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv = write_csv(df, stem.with_suffix(".csv"))
    df = df if display is None else display
    md_text = markdown(df, note, floatfmt)
    md = atomic_write(stem.with_suffix(".md"), lambda p: p.write_text(md_text))
    fmt = "{:" + floatfmt + "}"
    if latex is None:
        foot = " ".join(df.attrs.get("footnotes", ()))
        cap = " ".join(s for s in (foot, note) if s)
        latex = df.to_latex(index=False, float_format=lambda v: fmt.format(v), escape=True,
                            caption=_tex_escape(cap) if cap else None)
    tex = atomic_write(stem.with_suffix(".tex"), lambda p: p.write_text(latex))
    return [csv, md, tex]


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("%", r"\%"), ("&", r"\&"), ("_", r"\_"), ("#", r"\#"),
                 ("ε", r"$\varepsilon$"), ("÷", r"$\div$"), ("–", "--"), ("—", "---")):
        text = text.replace(a, b)
    return text


def main_table_latex(df: pd.DataFrame, caption: str | None = None) -> str:
    """The paper's main table, compact enough for a page: per (dataset, classifier) the classifier's clean
    and robust accuracy, the VLM's clean accuracy, and Multi-Shield's clean accuracy, clean rejection and
    robust accuracy under the non-adaptive, adaptive and worst-case attacks, in percent with the 95% CI in
    small type below each value. ``df``: :func:`mslib.tables.main_table`."""
    from . import labels

    groups = [("Classifier", [("clf_clean_acc", "clean"), ("clf_robust_acc", "robust")]),
              ("VLM", [("vlm_clean_acc", "clean")]),
              ("Multi-Shield", [("ms_clean_acc", "clean"), ("ms_clean_reject", "clean rej."),
                                ("ms_robust_acc_nonadaptive", "non-adapt."), ("ms_robust_acc_adaptive", "adaptive"),
                                ("ms_robust_acc_worst", "worst")])]
    cols = [c for _, g in groups for c in g]
    spec = "ll" + "|".join("r" * len(g) for _, g in groups)
    head1 = " & ".join([r"\multicolumn{2}{l}{}"] + [rf"\multicolumn{{{len(g)}}}{{c}}{{{name}}}" for name, g in groups])
    head2 = " & ".join(["dataset", "model"] + [h for _, h in cols])
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\setlength{\tabcolsep}{3.5pt}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", head1 + r" \\", head2 + r" \\", r"\midrule"]

    def cell(row, c: str) -> str:
        v, lo, hi = row[c], row.get(f"{c}_lo"), row.get(f"{c}_hi")
        ci = "" if lo is None or pd.isna(lo) else rf"\\{{\scriptsize [{100 * lo:.0f}, {100 * hi:.0f}]}}"
        return rf"\shortstack{{{100 * v:.1f}{ci}}}"

    for _, row in df.iterrows():
        name = _tex_escape(labels.classifier(row["classifier"]))
        lines.append(" & ".join([_tex_escape(labels.dataset(row["dataset"])), name] + [cell(row, c) for c, _ in cols])
                     + r" \\")
    eps = ", ".join(sorted({f"{e:g}" for e in df["eps"]}))
    ns = ", ".join(sorted({str(int(n)) for n in df["n"]}))
    cap = caption or (f"Accuracy (\\%) at $\\varepsilon = {eps}$ ($L_\\infty$), n = {ns} test images, 95\\% Wilson CIs "
                      "below each value. Robust accuracy of Multi-Shield: robust = correct or rejected. Non-adaptive: "
                      "APGD-CE/DLR examples of the classifier alone; adaptive: the paper's rejection-aware "
                      "APGD-CE then DLR; worst: per sample over every attack run. Full table: main\\_table.csv.")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{cap}}}", r"\label{tab:main}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def save_figure(fig, path_stem: str | Path, dpi: int = 150, data: pd.DataFrame | None = None) -> list[Path]:
    """Write a matplotlib figure as ``<stem>.png`` and ``<stem>.pdf`` (atomically); returns the paths.

    ``data``: the figure's source data as plotted (its labels as the reader sees them), written beside it
    as ``<stem>.data.csv``.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in (".png", ".pdf"):
        paths.append(atomic_write(stem.with_suffix(ext),
                                  lambda p, e=ext: fig.savefig(p, format=e[1:], dpi=dpi, bbox_inches="tight")))
    if data is not None:
        paths.append(write_csv(data, stem.with_suffix(".data.csv")))
    return paths


def outcome_bars(shares: pd.DataFrame, order: list[str] | None = None, cumulative_marks: pd.DataFrame | None = None,
                 title: str = "", width: float = 5.2):
    """Horizontal stacked bars of correct / rejected / fooled shares (they add up to 100%), one panel per
    (dataset, classifier), one bar per ``setting`` (codes as in :func:`mslib.tables.main_outcomes`; labels
    from :mod:`mslib.labels`). ``order``: the settings top to bottom. ``cumulative_marks``: optional
    ``dataset, classifier, setting, robust`` rows drawn as black ticks (e.g. an attack alone). Returns the figure."""
    import matplotlib.pyplot as plt

    from . import labels

    panels = list(shares.groupby(["dataset", "classifier"], sort=False))
    order = order or list(dict.fromkeys(shares.setting))
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 0.42 * len(order) + 1.6),
                             squeeze=False, sharey=True)
    for ax, ((ds, clf), g) in zip(axes[0], panels):
        piv = g.pivot_table(index="setting", columns="outcome", values="share").reindex(order).fillna(0.0)
        left = pd.Series(0.0, index=piv.index)
        ys = range(len(order))[::-1]
        for outcome in ("correct", "rejected", "fooled"):
            v = 100 * piv.get(outcome, pd.Series(0.0, index=piv.index))
            ax.barh(list(ys), v.to_numpy(), left=left.to_numpy(), color=labels.OUTCOME_COLORS[outcome],
                    label=labels.OUTCOMES[outcome], edgecolor="white", linewidth=0.6)
            for y, val, l0 in zip(ys, v, left):
                if val >= 7:
                    ax.text(l0 + val / 2, y, f"{val:.0f}", ha="center", va="center", fontsize=8, color="white")
            left = left + v
        if cumulative_marks is not None:
            m = cumulative_marks[(cumulative_marks.dataset == ds) & (cumulative_marks.classifier == clf)]
            pos = dict(zip(order, ys))
            for r in m.itertuples():
                if r.setting in pos:
                    ax.plot([100 * r.robust] * 2, [pos[r.setting] - 0.42, pos[r.setting] + 0.42], color="black", lw=2)
        ax.set_yticks(list(ys), [labels.setting(s) if s in labels.SETTINGS else labels.attack(s) for s in order])
        ax.set_xlim(0, 100)
        ax.set_xlabel("share of test inputs (%)")
        ax.set_title(labels.classifier(clf) if len(shares.dataset.unique()) == 1 else
                     f"{labels.dataset(ds)}, {labels.classifier(clf)}", fontsize=10)
        ax.grid(axis="y", visible=False)
    handles, names = axes[0, 0].get_legend_handles_labels()
    if cumulative_marks is not None:
        from matplotlib.lines import Line2D
        handles.append(Line2D([], [], color="black", lw=2))
        names.append("that attack alone: correct or rejected")
    fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def decision_grid(rows: list[tuple[str, list, list[str], list[str]]], fontsize: int = 9, size: float = 1.75):
    """A grid of images with their decisions: ``rows`` of (row label, images C×H×W in [0, 1], captions,
    caption colours). Returns the figure."""
    import matplotlib.pyplot as plt

    n = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n + 1.2, (size + 0.75) * len(rows)), squeeze=False)
    for i, (name, images, captions, colors) in enumerate(rows):
        for j in range(n):
            ax = axes[i, j]
            ax.set_xticks([]); ax.set_yticks([])
            if j >= len(images):
                ax.axis("off")
                continue
            img = images[j].detach().cpu()
            ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(captions[j], fontsize=fontsize, color=colors[j])
        # horizontal, wrapped and right-aligned: a rotated label as tall as the row runs into its neighbours
        label = "\n".join(textwrap.fill(line, 20) for line in name.split("\n"))
        axes[i, 0].set_ylabel(label, fontsize=fontsize + 1, rotation=0, ha="right", va="center", labelpad=8)
    fig.tight_layout()
    return fig


def outcome_color(pred: str, true: str, rejected: str = "REJECTED") -> str:
    """Green: correct, orange: rejected, red: fooled."""
    from . import labels

    key = "correct" if pred == true else ("rejected" if pred == rejected else "fooled")
    return labels.OUTCOME_COLORS[key]


def paper_style() -> None:
    """Seaborn/matplotlib defaults for the study's figures."""
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
