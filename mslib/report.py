"""Writing tables (CSV, Markdown, LaTeX) and figures (PNG, PDF) in one house style."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .cache import atomic_write


def out_dir(profile_name: str, root: str | Path = "figures") -> Path:
    """``figures/<profile>/`` (created)."""
    d = Path(root) / profile_name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def with_ci(df: pd.DataFrame, columns: list[str], percent: bool = True) -> pd.DataFrame:
    """A display copy where each rate column reads ``62.5 [47.0, 75.8]`` (from ``<col>_lo``/``<col>_hi``)."""
    out = df.copy()
    k = 100.0 if percent else 1.0
    for c in columns:
        if f"{c}_lo" in df.columns:
            out[c] = [f"{k * v:.1f} [{k * lo:.1f}, {k * hi:.1f}]" for v, lo, hi in
                      zip(df[c], df[f"{c}_lo"], df[f"{c}_hi"])]
        else:
            out[c] = [f"{k * v:.1f}" for v in df[c]]
    return out[[c for c in out.columns if not (c.endswith("_lo") or c.endswith("_hi"))]]


def save_table(df: pd.DataFrame, path_stem: str | Path, floatfmt: str = ".3f",
               display: pd.DataFrame | None = None) -> list[Path]:
    """Write ``df`` as ``<stem>.csv`` and ``display`` (default ``df``) as ``<stem>.md`` and ``<stem>.tex``.

    Files are written atomically; returns the paths. The CSV keeps every column at full precision.
    """
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv = atomic_write(stem.with_suffix(".csv"), lambda p: df.to_csv(p, index=False))
    df = df if display is None else display
    md_text = _markdown(df, floatfmt)
    md = atomic_write(stem.with_suffix(".md"), lambda p: p.write_text(md_text))
    fmt = "{:" + floatfmt + "}"
    tex_text = df.to_latex(index=False, float_format=lambda v: fmt.format(v), escape=True)
    tex = atomic_write(stem.with_suffix(".tex"), lambda p: p.write_text(tex_text))
    return [csv, md, tex]


def save_figure(fig, path_stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write a matplotlib figure as ``<stem>.png`` and ``<stem>.pdf`` (atomically); returns the paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in (".png", ".pdf"):
        paths.append(atomic_write(stem.with_suffix(ext),
                                  lambda p, e=ext: fig.savefig(p, format=e[1:], dpi=dpi, bbox_inches="tight")))
    return paths


def paper_style() -> None:
    """Seaborn/matplotlib defaults for the study's figures."""
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
