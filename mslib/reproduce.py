"""Did this run reproduce the released study? Its tables compared with the reference tables, cell by cell.

The reference tables of the released study (``mslib/reference/<profile>/*.csv``, written by ``make reference``
from a run on the released weights) ship with the package. :func:`compare` reads every table a run wrote in
``figures/<profile>/`` and its reference, number by number; :func:`write_report` writes
``reproduction.md`` (a verdict, a line per table, every number that differs, published vs this run, and how
many evaluation samples the difference is) and ``reproduction.csv`` (every number). A rate (a value in
[0, 1] in both) that differs by d on a table row of n samples is d·n samples; other numbers are compared
exactly, and within float rounding (relative 1e-6: another CPU's reduction order) they count as equal.
Work counts (an attack's forward passes) are compared and listed apart: they say what a run cost, not what it
found, so they never make the verdict "differs".

``python -m mslib.reproduce --profile tiny`` prints the verdict; ``make figures`` runs it last.
"""
from __future__ import annotations

import argparse
import math
import numbers
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import REPO_ROOT, atomic_write

REFERENCE_ROOT = Path(__file__).resolve().parent / "reference"
FLOAT_ROUNDING = 1e-6  # relative: what a different summation order in float32/float64 can move
# columns that count work, not results: another CPU's last bits move an attack's trajectory, and with it how
# many passes it takes, without changing which samples it breaks
WORK_COLUMNS = frozenset({"n_forward"})


@dataclass(frozen=True)
class Cell:
    """One number of one table: where it is, its published and its reproduced value."""

    table: str
    row: str
    column: str
    published: object
    reproduced: object
    samples: int | None  # how many evaluation samples the difference is (rates only)
    status: str  # "equal", "rounding", "differs", "missing", "new", "work" (a work count that differs)


def _is_number(v: object) -> bool:
    """A real number that is not NaN (pandas hands out numpy scalars, which are not ``int``/``float``)."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) and not math.isnan(v)


def _row_label(row: pd.Series, numeric: list[str]) -> str:
    keys = [f"{c}={row[c]}" for c in row.index if c not in numeric and isinstance(row[c], str)]
    return ", ".join(keys) or str(row.name)


def _compare_cell(table: str, row: str, col: str, a: object, b: object, n: float | None) -> Cell:
    if _is_number(a) and _is_number(b):
        if a == b:
            return Cell(table, row, col, a, b, 0, "equal")
        if 0 <= a <= 1 and 0 <= b <= 1 and n:
            samples = round(abs(b - a) * n)
            return Cell(table, row, col, a, b, samples, "rounding" if samples == 0 else "differs")
        close = abs(b - a) <= FLOAT_ROUNDING * max(abs(a), abs(b))
        return Cell(table, row, col, a, b, None, "rounding" if close else "differs")
    both_missing = not _is_number(a) and not _is_number(b) and pd.isna(a) and pd.isna(b)
    same = both_missing or str(a) == str(b)
    return Cell(table, row, col, a, b, 0 if same else None, "equal" if same else "differs")


def compare_table(name: str, published: pd.DataFrame, reproduced: pd.DataFrame, n_samples: int) -> list[Cell]:
    """Every cell of a reference table against this run's (rows by position, columns by name)."""
    cells = []
    numeric = [c for c in published.columns if pd.api.types.is_numeric_dtype(published[c])]
    for i in range(max(len(published), len(reproduced))):
        if i >= len(reproduced) or i >= len(published):
            have = published if i < len(published) else reproduced
            status = "missing" if i < len(published) else "new"
            cells.append(Cell(name, _row_label(have.iloc[i], numeric), "(whole row)", None, None, None, status))
            continue
        prow, rrow = published.iloc[i], reproduced.iloc[i]
        label = _row_label(prow, numeric)
        n = prow["n"] if "n" in published.columns and _is_number(prow["n"]) else n_samples
        for col in published.columns:
            if col not in reproduced.columns:
                cells.append(Cell(name, label, col, prow[col], None, None, "missing"))
                continue
            cell = _compare_cell(name, label, col, prow[col], rrow[col], n)
            if col in WORK_COLUMNS and cell.status == "differs":
                cell = Cell(name, label, col, prow[col], rrow[col], None, "work")
            cells.append(cell)
        for col in reproduced.columns.difference(published.columns):
            cells.append(Cell(name, label, col, None, rrow[col], None, "new"))
    return cells


def tables(folder: Path) -> dict[str, Path]:
    """The tables of a figures folder (``*.csv`` but not figures' plotted data or this module's own output)."""
    return {p.stem: p for p in sorted(folder.glob("*.csv"))
            if not p.name.endswith(".data.csv") and p.stem != "reproduction"}


def compare(run_dir: Path, reference_dir: Path, n_samples: int) -> list[Cell]:
    """Every number of every reference table against the run's; a table the run lacks is one 'missing' cell."""
    cells: list[Cell] = []
    mine = tables(run_dir)
    for name, ref in tables(reference_dir).items():
        if name not in mine:
            cells.append(Cell(name, "(whole table)", "", None, None, None, "missing"))
            continue
        cells += compare_table(name, pd.read_csv(ref), pd.read_csv(mine[name]), n_samples)
    return cells


def verdict(cells: list[Cell]) -> str:
    """One line: reproduced exactly / within N samples / differs (what); work counts that differ are named
    after it but do not change it."""
    work = sum(c.status == "work" for c in cells)
    tail = f"; {work} work count{'s differ' if work != 1 else ' differs'}" if work else ""
    counted = [c for c in cells if c.status != "work"]
    numbers = [c for c in counted if c.status in ("equal", "rounding")]
    bad = [c for c in counted if c.status in ("differs", "missing", "new")]
    off = [c for c in bad if c.samples is not None]
    hard = [c for c in bad if c.samples is None]
    if not counted:
        return "nothing to compare (no reference tables)"
    if not bad and all(c.status == "equal" for c in counted):
        n_tables = len({c.table for c in counted})
        return f"reproduced exactly ({len(numbers)} numbers in {n_tables} table{'s' if n_tables != 1 else ''}{tail})"
    if not bad:
        return f"reproduced ({len(numbers)} numbers; some equal only within float rounding{tail})"
    if not hard:
        worst = max(c.samples for c in off)
        return (f"reproduced within {worst} sample{'s' if worst != 1 else ''} ({len(off)} of {len(counted)} numbers "
                f"differ by at most {worst} evaluation sample{'s' if worst != 1 else ''}{tail})")
    where = sorted({c.table for c in hard})
    return (f"differs: {len(hard)} number{'s' if len(hard) != 1 else ''} that {'are' if len(hard) != 1 else 'is'} "
            f"not a rate or missing, in {', '.join(where)}{tail}")


def _fmt(v: object) -> str:
    if _is_number(v):
        return f"{v:.6g}"
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def write_report(cells: list[Cell], out_dir: Path, profile: str, reference_dir: Path) -> Path:
    """``reproduction.md`` (verdict, per table, the differing numbers) and ``reproduction.csv`` (every number)."""
    atomic_write(out_dir / "reproduction.csv", lambda p: pd.DataFrame([c.__dict__ for c in cells]).to_csv(p, index=False))
    lines = [f"# Reproduction report: profile {profile}", "",
             f"**Verdict: {verdict(cells)}.**", "",
             f"Every table of this run compared, number by number, with the released study's reference tables "
             f"(`{_relative(reference_dir)}`). A rate that differs is counted in evaluation samples; other numbers "
             f"are equal, equal within float rounding (relative {FLOAT_ROUNDING:g}), or different.", "",
             f"Work counts ({', '.join(sorted(WORK_COLUMNS))}) say what the run cost, not what it found: they are "
             f"listed apart and do not change the verdict.", "",
             "| table | numbers | equal | within rounding | differ | work counts that differ | most samples off |",
             "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(c.table for c in cells):
        mine = [c for c in cells if c.table == name]
        count = {s: sum(c.status == s for c in mine) for s in ("equal", "rounding", "work")}
        differ = len(mine) - count["equal"] - count["rounding"] - count["work"]
        worst = max((c.samples or 0 for c in mine), default=0)
        lines.append(f"| {name} | {len(mine)} | {count['equal']} | {count['rounding']} | {differ} | {count['work']} "
                     f"| {worst} |")
    for title, kinds in (("Numbers that differ", ("differs", "missing", "new")), ("Work counts that differ", ("work",))):
        diffs = [c for c in cells if c.status in kinds]
        if diffs:
            lines += ["", f"## {title}", "", "| table | row | column | published | this run | samples |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {c.table} | {c.row} | {c.column} | {_fmt(c.published)} | {_fmt(c.reproduced)} | "
                      f"{'—' if c.samples is None else c.samples} |" for c in diffs]
    text = "\n".join(lines) + "\n"
    return atomic_write(out_dir / "reproduction.md", lambda p: p.write_text(text))


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def save_reference(run_dir: Path, reference_dir: Path) -> list[Path]:
    """Make a run's tables the reference (maintainers, after a run on the released weights)."""
    reference_dir.mkdir(parents=True, exist_ok=True)
    for old in tables(reference_dir).values():
        old.unlink()
    return [Path(shutil.copyfile(p, reference_dir / p.name)) for p in tables(run_dir).values()]


def main(argv: list[str] | None = None) -> int:
    from .profiles import get_profile

    ap = argparse.ArgumentParser(description="Compare a run's tables with the released study's reference tables.")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--figures", default=None, help="the run's tables (default figures/<profile>)")
    ap.add_argument("--reference", default=None, help="the reference tables (default mslib/reference/<profile>)")
    ap.add_argument("--save-reference", action="store_true", help="make this run's tables the reference")
    args = ap.parse_args(argv)
    try:
        profile = get_profile(args.profile)
    except (KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir = Path(args.figures) if args.figures else REPO_ROOT / "figures" / args.profile
    ref_dir = Path(args.reference) if args.reference else REFERENCE_ROOT / args.profile
    if not tables(run_dir):
        print(f"error: no tables in {run_dir}; run `make figures PROFILE={args.profile}` first", file=sys.stderr)
        return 2
    if args.save_reference:
        saved = save_reference(run_dir, ref_dir)
        print(f"reference of {args.profile}: {len(saved)} tables in {_relative(ref_dir)}")
        return 0
    if not tables(ref_dir):
        print(f"no reference tables are released for profile {args.profile!r}: nothing to compare")
        return 0
    cells = compare(run_dir, ref_dir, profile.n_samples)
    report = write_report(cells, run_dir, args.profile, ref_dir)
    print(f"{args.profile}: {verdict(cells)} ({_relative(report)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
