"""The reproduction report: a run's tables against the reference tables, number by number."""
from __future__ import annotations

import pandas as pd

from mslib import reproduce


def _tables(tmp_path, published: pd.DataFrame, reproduced: pd.DataFrame):
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir()
    run.mkdir()
    published.to_csv(ref / "main_table.csv", index=False)
    reproduced.to_csv(run / "main_table.csv", index=False)
    pd.DataFrame({"x": [1.0]}).to_csv(run / "main_table.data.csv", index=False)  # a figure's data: not a table
    return run, ref


PUBLISHED = pd.DataFrame({"classifier": ["standard", "fgsm-rs"], "n": [300, 300],
                          "ms_robust_acc_worst": [29 / 300, 207 / 300], "grad_norm": [12.5, 3.25]})


def test_identical_tables_are_reproduced_exactly(tmp_path):
    run, ref = _tables(tmp_path, PUBLISHED, PUBLISHED.copy())
    cells = reproduce.compare(run, ref, n_samples=300)
    assert len(cells) == 8  # 2 rows x 4 columns; the .data.csv is not compared
    assert reproduce.verdict(cells) == "reproduced exactly (8 numbers in 1 table)"


def test_a_rate_off_by_two_samples_is_counted_in_samples(tmp_path):
    """Catches a report that calls any difference 'reproduced', or counts samples against the wrong n: 29/300
    against 31/300 is 2 samples of the row's 300, even though the profile's n_samples (used for tables
    without an n column) is 100 here."""
    mine = PUBLISHED.copy()
    mine.loc[0, "ms_robust_acc_worst"] = 31 / 300
    run, ref = _tables(tmp_path, PUBLISHED, mine)
    cells = reproduce.compare(run, ref, n_samples=100)
    off = [c for c in cells if c.status == "differs"]
    assert [(c.row, c.column, c.samples) for c in off] == [("classifier=standard", "ms_robust_acc_worst", 2)]
    assert reproduce.verdict(cells) == "reproduced within 2 samples (1 of 8 numbers differ by at most 2 evaluation samples)"
    report = reproduce.write_report(cells, run, "tiny", ref).read_text()
    assert "| main_table | classifier=standard | ms_robust_acc_worst | 0.0966667 | 0.103333 | 2 |" in report


def test_float_rounding_is_equal_but_a_real_change_or_a_missing_table_differs(tmp_path):
    """Catches exact comparison of non-rate floats (another CPU's summation order would fail every run) and,
    the other way, a tolerance so loose that a changed number passes."""
    mine = PUBLISHED.copy()
    mine.loc[1, "grad_norm"] = 3.25 * (1 + 1e-9)
    run, ref = _tables(tmp_path, PUBLISHED, mine)
    cells = reproduce.compare(run, ref, 300)
    assert [c.status for c in cells if c.column == "grad_norm"] == ["equal", "rounding"]
    assert reproduce.verdict(cells).startswith("reproduced (8 numbers")
    mine.loc[1, "grad_norm"] = 3.3
    mine.to_csv(run / "main_table.csv", index=False)
    assert reproduce.verdict(reproduce.compare(run, ref, 300)).startswith("differs: 1 number that is not a rate")
    PUBLISHED.to_csv(ref / "attacks_table.csv", index=False)  # a reference table this run did not write
    cells = reproduce.compare(run, ref, 300)
    assert any(c.table == "attacks_table" and c.status == "missing" for c in cells)


def test_a_work_count_that_differs_is_listed_apart_and_leaves_the_verdict(tmp_path):
    """Catches a report that calls a run "differs" because an attack took other forward passes (another CPU's
    last bits move a trajectory and its cost, not the samples it breaks), and one that hides the count or lets
    a real difference beside it pass."""
    published = PUBLISHED.assign(n_forward=[9300, 6012])
    mine = published.copy()
    mine.loc[1, "n_forward"] = 6040
    run, ref = _tables(tmp_path, published, mine)
    cells = reproduce.compare(run, ref, 300)
    assert [(c.row, c.status) for c in cells if c.column == "n_forward"] == [
        ("classifier=standard", "equal"), ("classifier=fgsm-rs", "work")]
    assert reproduce.verdict(cells) == "reproduced exactly (9 numbers in 1 table; 1 work count differs)"
    report = reproduce.write_report(cells, run, "tiny", ref).read_text()
    assert "## Work counts that differ" in report and "## Numbers that differ" not in report
    assert "| main_table | classifier=fgsm-rs | n_forward | 6012 | 6040 | — |" in report
    mine.loc[0, "ms_robust_acc_worst"] = 30 / 300
    mine.to_csv(run / "main_table.csv", index=False)
    assert reproduce.verdict(reproduce.compare(run, ref, 300)) == (
        "reproduced within 1 sample (1 of 9 numbers differ by at most 1 evaluation sample; 1 work count differs)")


def test_the_readme_numbers_are_the_reference_tables(tmp_path):
    """Catches a README whose findings were edited by hand or left behind when the reference tables changed."""
    from mslib import findings
    from mslib.cache import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    assert findings.replace_block(readme, findings.render()) == readme
    # and the check can fail: one reference number changed is one README number changed, in either profile
    for profile in (findings.PROFILE, findings.PLUS):
        (tmp_path / profile).mkdir()
        for p in (findings.REFERENCE_ROOT / profile).glob("*.csv"):
            (tmp_path / profile / p.name).write_text(p.read_text())
    assert findings.render(tmp_path) == findings.render()
    main = pd.read_csv(tmp_path / findings.PROFILE / "main_table.csv")
    main.loc[0, "clf_robust_acc"] += 1 / 300
    main.to_csv(tmp_path / findings.PROFILE / "main_table.csv", index=False)
    changed = findings.render(tmp_path)
    assert changed != findings.render()
    assert f"| {findings.NAMES[main.loc[0, 'classifier']]} | {100 * main.loc[0, 'clf_robust_acc']:.1f}% |" in changed
    # the full-budget column is tiny-plus's convergence table: one sample fewer broken there shows in its cell
    conv = pd.read_csv(tmp_path / findings.PLUS / "convergence.csv")
    row = conv.index[(conv.classifier == main.loc[0, "classifier"]) & (conv.defense == "Multi-Shield")][0]
    before = f"{100 * conv.loc[row, 'robust_acc_stronger']:.1f}%"
    conv.loc[row, "robust_acc_stronger"] += 1 / 300
    conv.to_csv(tmp_path / findings.PLUS / "convergence.csv", index=False)
    line = next(ln for ln in findings.render(tmp_path).splitlines()
                if ln.startswith(f"| {findings.NAMES[main.loc[0, 'classifier']]} |"))
    assert f"| {100 * conv.loc[row, 'robust_acc_stronger']:.1f}% |" in line and f"| {before} |" not in line
