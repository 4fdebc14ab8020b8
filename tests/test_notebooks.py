"""Every notebook runs end to end with the smoke profile and writes its tables and figures."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
import torch

from mslib.store import Store
from results_helpers import outcomes_by_hand, share

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))

# files each notebook must write into out_dir (besides its executed copy)
EXPECTED = {
    "01_zero_shot": ["zero_shot.csv", "zero_shot.md", "zero_shot.tex", "zero_shot.png", "zero_shot.pdf"],
    "02_main_table": ["main_table.csv", "main_table.md", "main_table.tex", "main_table.png", "main_table.pdf",
                      "main_table.data.csv", "headline.csv", "headline.md", "headline.tex"],
    "03_security_curves": ["security_curves.csv", "security_curves.png", "security_curves.pdf"],
    "04_tolerance": ["tolerance.csv", "tolerance.png", "tolerance.pdf"],
    "05_gallery": ["gallery.csv", "gallery.png", "gallery.pdf"],
    "06_intro_course": ["intro_attack.png", "intro_attack.pdf", "intro_attack.data.csv"],
    "07_adaptive_attacks": ["attacks_table.csv", "attacks_table.md", "attacks_table.tex", "attacks_table.png",
                            "attacks_table.data.csv", "attack_curves.png", "attack_curves.data.csv"],
    "08_beyond_the_paper": ["beyond_table.csv", "beyond_table.md", "risk_coverage.png", "risk_coverage.pdf",
                            "risk_coverage.data.csv",
                            "attack_health.csv", "comparisons.csv", "vlm_robustness.csv"],
}
# the figures whose source data is written beside them (<stem>.data.csv)
FIGURE_DATA = ["zero_shot", "main_table", "security_curves", "tolerance", "gallery", "intro_attack", "attacks_table",
               "attack_curves", "risk_coverage"]


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory, variant_study) -> Iterator[Path]:
    from mslib.cache import data_root_at

    from notebook_kernel import shared_kernel
    from results_helpers import study_copy

    # a private copy of the session's small study with the smoke VLM variant (computed once, shared with the
    # results-layer and beyond tests; the trained models linked in): the notebooks write no result into data/.
    # The notebooks read the plan its index records, overrides included, as they read any profile's.
    cache = study_copy(variant_study, tmp_path_factory.mktemp("notebooks") / "cache")
    out = tmp_path_factory.mktemp("figures_smoke")
    # the kernel inherits MSLIB_CACHE; the module's tests read the same results (Store("smoke")) while it is set
    with data_root_at(cache), shared_kernel() as run:
        for nb in NOTEBOOKS:
            params = {"profile": "smoke", "out_dir": str(out)}
            if nb.stem == "06_intro_course":  # as many images as its figure shows: its data holds every image
                params["n_images"] = 6
            run(nb, out / nb.name, params, nb.parent)
        yield out


def test_every_notebook_has_a_parameters_cell_and_no_outputs():
    import nbformat

    assert len(NOTEBOOKS) >= 6
    for nb in NOTEBOOKS:
        cells = nbformat.read(nb, as_version=4).cells
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, nb.name
        assert tagged[0].source.lstrip().startswith("profile ="), nb.name
        # out_dir defaults after papermill's injection, so `-p profile smoke` alone writes to figures/smoke
        assert "out_dir = None" in tagged[0].source and "{profile}" not in tagged[0].source, nb.name
        # ...of the repository, from any working directory, and unknown parameters are refused (mslib.notebook)
        setup = cells[cells.index(tagged[0]) + 1]
        assert "out = notebook.setup(globals())" in setup.source, nb.name
        assert "../figures" not in "".join(c.source for c in cells), nb.name
        assert all(not c.get("outputs") for c in cells if c.cell_type == "code"), f"{nb.name} carries outputs"


@pytest.mark.slow
def test_each_notebook_writes_its_files(smoke_outputs):
    for nb in NOTEBOOKS:
        assert (smoke_outputs / nb.name).is_file()
        for name in EXPECTED.get(nb.stem, []):
            path = smoke_outputs / name
            assert path.is_file() and path.stat().st_size > 0, f"{nb.stem} did not write {name}"


@pytest.mark.slow
def test_main_table_is_consistent(smoke_outputs):
    from mslib import get_profile

    df = pd.read_csv(smoke_outputs / "main_table.csv")
    p = get_profile("smoke")
    assert set(df.classifier) == set(p.classifiers)
    required = ["dataset", "classifier", "eps", "clf_clean_acc", "clf_robust_acc", "vlm_clean_acc", "ms_clean_acc",
                "ms_clean_reject", "ms_robust_acc_nonadaptive", "ms_reject_nonadaptive", "ms_robust_acc_adaptive",
                "ms_reject_adaptive"]
    assert all(c in df.columns for c in required)
    rates = [c for c in required[3:]]
    assert ((df[rates] >= 0) & (df[rates] <= 1)).all().all()
    # every rate, by hand from the stored outputs (a loop over samples, not mslib.tables)
    store = Store("smoke")
    d = store.datasets[0]
    for clf in p.classifiers:
        row = df[df.classifier == clf].iloc[0]
        hand = _by_hand(store, d, clf)
        assert row.clf_clean_acc == pytest.approx(share(hand["clf_clean"], "correct"))
        assert row.clf_robust_acc == pytest.approx(share(hand["clf"], "correct"))
        assert row.ms_clean_acc == pytest.approx(share(hand["ms_clean"], "correct"))
        assert row.ms_clean_reject == pytest.approx(share(hand["ms_clean"], "rejected"))
        for s in ("nonadaptive", "adaptive", "worst"):
            assert row[f"ms_robust_acc_{s}"] == pytest.approx(share(hand[f"ms_{s}"], "correct", "rejected")), s
            assert row[f"ms_reject_{s}"] == pytest.approx(share(hand[f"ms_{s}"], "rejected")), s


def test_classifier_robust_accuracy_is_that_of_the_stored_images(smoke_outputs):
    """Catches: stored logits that are not those of the stored adversarial images (a result written under
    another job's key, or images of another eps), which every table reading ``f`` would silently repeat."""
    from mslib.models import load_classifier

    df = pd.read_csv(smoke_outputs / "main_table.csv")
    store = Store("smoke")
    d = store.datasets[0]
    p = d.profile
    for clf in p.classifiers:
        model = load_classifier(p, clf).eval()
        with torch.no_grad():
            preds = [model(store.load(j, ("x",))["x"]).argmax(1) for j in d.plan.nonadaptive[clf, p.eps]]
        robust = share(outcomes_by_hand(preds, d.labels), "correct")
        assert float(df[df.classifier == clf].clf_robust_acc.iloc[0]) == pytest.approx(robust), clf


def test_security_curves_read_each_eps_own_results(smoke_outputs):
    """Catches: a curve point read from another eps's (or another attack chain's) results, or a clean point
    that is not the clean rate. (Curves need not fall with eps: the classifier's and the transferred attacks
    are attacked afresh at each eps, so only checks against the stored outputs can fail on a real bug.)"""
    curves = pd.read_csv(smoke_outputs / "security_curves.csv")
    store = Store("smoke")
    d = store.datasets[0]
    p, y, k = d.profile, d.labels, d.num_classes
    for clf in p.classifiers:
        clean = store.outputs(d.plan.clean[clf])
        at_eps = {"clf": lambda e: outcomes_by_hand([store.outputs(j).clf_pred() for j in d.plan.nonadaptive[clf, e]], y),
                  "ms_nonadaptive": lambda e: outcomes_by_hand(
                      [store.outputs(j).ms_pred(p.tolerance) for j in d.plan.nonadaptive[clf, e]], y, k),
                  "ms_adaptive": lambda e: outcomes_by_hand(
                      [store.outputs(j).ms_pred(p.tolerance) for j in d.plan.adaptive[clf, e]], y, k)}
        ms_clean = outcomes_by_hand([clean.ms_pred(p.tolerance)], y, k)
        at_zero = {"clf": outcomes_by_hand([clean.clf_pred()], y), "ms_nonadaptive": ms_clean,
                   "ms_adaptive": ms_clean}
        seen = 0
        for r in curves[curves.classifier == clf].itertuples():
            if r.model not in at_eps:
                continue
            hand = at_zero[r.model] if r.eps == 0 else at_eps[r.model](r.eps)
            assert r.robust_acc == pytest.approx(share(hand, "correct", "rejected")), (r.model, r.eps)
            assert r.reject == pytest.approx(share(hand, "rejected")), (r.model, r.eps)
            seen += 1
        assert seen == 3 * (1 + len([e for e in p.eps_grid if e > 0]))


def _by_hand(store, d, clf: str) -> dict[str, list[str]]:
    """Per-sample outcomes of the main table's settings, read from the stored outputs and scored in a plain
    loop (results_helpers.outcomes_by_hand), independently of mslib.tables."""
    p, y, k = d.profile, d.labels, d.num_classes
    clean = store.outputs(d.plan.clean[clf])
    non = [store.outputs(j) for j in d.plan.nonadaptive[clf, p.eps]]
    ms = lambda jobs: outcomes_by_hand([store.outputs(j).ms_pred(p.tolerance) for j in jobs], y, k)  # noqa: E731
    return {"clf_clean": outcomes_by_hand([clean.clf_pred()], y), "clf": outcomes_by_hand([o.clf_pred() for o in non], y),
            "ms_clean": outcomes_by_hand([clean.ms_pred(p.tolerance)], y, k),
            "ms_nonadaptive": outcomes_by_hand([o.ms_pred(p.tolerance) for o in non], y, k),
            "ms_adaptive": ms(d.plan.adaptive[clf, p.eps]), "ms_worst": ms(d.plan.ensemble[clf])}


def _last_markdown(nb_path: Path) -> str:
    import nbformat

    for cell in reversed(nbformat.read(nb_path, as_version=4).cells):
        for o in cell.get("outputs", []):
            text = o.get("data", {}).get("text/markdown")
            if text:
                return "".join(text)
    raise AssertionError(f"{nb_path.name} displays no Markdown")


@pytest.mark.slow
def test_headline_gains_are_the_tables_differences(smoke_outputs):
    df = pd.read_csv(smoke_outputs / "main_table.csv").set_index(["dataset", "classifier"])
    head = pd.read_csv(smoke_outputs / "headline.csv")
    per = head[head.classifier != "mean"].set_index(["dataset", "classifier"])
    assert set(per.index) == set(df.index), "the headline must give every (dataset, classifier)"
    store = Store("smoke")
    d = store.datasets[0]
    gains = {}
    for clf in d.profile.classifiers:  # by hand: robust shares from the stored outputs, sample by sample
        hand = _by_hand(store, d, clf)
        for s in ("worst", "adaptive", "nonadaptive"):
            gains[clf, s] = share(hand[f"ms_{s}"], "correct", "rejected") - share(hand["clf"], "correct")
            assert per.loc[(d.profile.dataset, clf), f"gain_{s}"] == pytest.approx(gains[clf, s], abs=1e-6), (clf, s)  # CSVs: 6 significant digits
    mean = head[(head.dataset == d.profile.dataset) & (head.classifier == "mean")]
    assert float(mean.gain_worst.iloc[0]) == pytest.approx(
        sum(gains[c, "worst"] for c in d.profile.classifiers) / len(d.profile.classifiers), abs=1e-6)
    md = (smoke_outputs / "headline.md").read_text()
    assert "points" in md and "robust = correct or rejected" in md


@pytest.mark.slow
def test_main_figure_shares_add_up_and_match_the_table(smoke_outputs):
    from mslib import labels, tables

    shares = tables.main_outcomes("smoke")
    store = Store("smoke")
    d = store.datasets[0]
    hand = {clf: _by_hand(store, d, clf) for clf in d.profile.classifiers}
    # each share, by hand from the stored outputs, for every (classifier, setting, outcome)
    assert len(shares) == len(hand) * 6 * 3
    for r in shares.itertuples():
        assert r.share == pytest.approx(share(hand[r.classifier][r.setting], r.outcome)), r
    assert {(r.classifier, r.setting) for r in shares.itertuples()} == {(c, s) for c in hand for s in hand[c]}
    # the figure's source data: every setting, the worst case included, in the reader's words and in percent
    data = pd.read_csv(smoke_outputs / "main_table.data.csv")
    assert labels.setting("ms_worst") in set(data[labels.column("setting")])
    got = {(r[labels.column("classifier")], r[labels.column("setting")], r[labels.column("outcome")]):
           r[labels.column("share")] for _, r in data.iterrows()}
    want = {(labels.classifier(c), labels.setting(s), labels.OUTCOMES[o]): 100 * share(hand[c][s], o)
            for c in hand for s in hand[c] for o in labels.OUTCOMES}
    assert got.keys() == want.keys() and all(got[key] == pytest.approx(want[key]) for key in want)


@pytest.mark.slow
def test_figure_source_data_and_display_tables_carry_no_raw_codes(smoke_outputs):
    from mslib import labels

    # the README's promise: every figure's plotted data beside it
    missing = [png.name for png in smoke_outputs.glob("*.png") if not png.with_suffix(".data.csv").is_file()]
    assert not missing, f"figures without their .data.csv: {missing}"

    for stem in FIGURE_DATA:
        data = pd.read_csv(smoke_outputs / f"{stem}.data.csv")
        raw = [c for c in data.columns if labels.is_raw_code(c)]
        raw += sorted({v for c in data.columns if data[c].dtype == object for v in data[c].dropna()
                       if labels.is_raw_code(v)})
        assert not raw, f"{stem}.data.csv carries raw codes: {raw[:5]}"
    for md in sorted(smoke_outputs.glob("*.md")):
        header = md.read_text().splitlines()[0]
        raw = [h.strip() for h in header.strip("|").split("|") if labels.is_raw_code(h.strip())]
        assert not raw, f"{md.name} has raw headers {raw}"


@pytest.mark.slow
def test_every_csv_column_has_a_label(smoke_outputs):
    from mslib import labels

    for csv in sorted(smoke_outputs.glob("*.csv")):
        if csv.name.endswith(".data.csv"):
            continue
        missing = [c for c in pd.read_csv(csv, nrows=1).columns
                   if c not in labels.COLUMNS and not c.endswith(("_lo", "_hi"))]
        assert not missing, f"{csv.name}: columns without a label in mslib.labels.COLUMNS: {missing}"


@pytest.mark.slow
def test_reader_copies_state_percent_with_ci_and_what_robust_means(smoke_outputs):
    for stem in ("main_table", "headline", "attacks_table", "security_curves", "tolerance", "eps_half_check"):
        md = (smoke_outputs / f"{stem}.md").read_text()
        tex = (smoke_outputs / f"{stem}.tex").read_text()
        assert "robust = correct or rejected" in md and "robust = correct or rejected" in tex, stem
        lines = [ln.strip().strip("|").split("|") for ln in md.splitlines() if ln.startswith("|")]
        header, rows = [h.strip() for h in lines[0]], lines[2:]
        pct = [i for i, h in enumerate(header) if h.endswith("(%)")]
        assert pct, f"{stem}.md has no rate in percent"
        for row in rows:
            for i in pct:
                assert re.fullmatch(r"—|-?\d+\.\d( \[\d+\.\d, \d+\.\d\])?", row[i].strip()), (stem, header[i], row[i])
        assert any("[" in row[i] for row in rows for i in pct), f"{stem}.md shows no confidence interval"
    tex = (smoke_outputs / "main_table.tex").read_text()
    spec = tex.split("\\begin{tabular}{")[1].split("}")[0]
    assert sum(ch in "lrc" for ch in spec) <= 10, f"the LaTeX main table has too many columns ({spec})"


@pytest.mark.slow
def test_every_reader_table_shows_percent_and_points_as_its_headers_say(smoke_outputs):
    # a fraction under a "(%)" header reads as a plausible wrong number (0.097 % for 9.7 %)
    pct = re.compile(r"—|-?\d+\.\d( \[\d+\.\d, \d+\.\d\])?")
    pts = re.compile(r"—|[+-]\d+\.\d( \[[+-]\d+\.\d, [+-]\d+\.\d\])?")
    checked = set()
    for md in sorted(smoke_outputs.glob("*.md")):
        lines = [ln.strip().strip("|").split("|") for ln in md.read_text().splitlines() if ln.startswith("|")]
        header, rows = [h.strip() for h in lines[0]], lines[2:]
        for i, h in enumerate(header):
            rule = pct if h.endswith("(%)") else pts if h.endswith("(points)") else None
            for row in rows if rule else ():
                assert rule.fullmatch(row[i].strip()), (md.name, h, row[i])
                checked.add(md.stem)
        assert not any(v.strip() in ("True", "False") for row in rows for v in row), f"{md.name} shows True/False"
    assert {"comparisons", "risk_coverage", "beyond_table", "attack_health", "vlm_robustness"} <= checked
    cmp = (smoke_outputs / "comparisons.md").read_text()
    assert re.search(r"\| [+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\] \|", cmp), "paired differences need their CI"


@pytest.mark.slow
def test_closing_sentences_state_the_worst_case_first(smoke_outputs):
    for name in ("02_main_table", "07_adaptive_attacks"):
        text = _last_markdown(smoke_outputs / f"{name}.ipynb")
        assert "worst case" in text, name
        assert text.index("worst case") < text.index("adaptive"), f"{name}: the worst case must come first"
    head = pd.read_csv(smoke_outputs / "headline.csv")
    text = _last_markdown(smoke_outputs / "02_main_table.ipynb")
    for r in head[head.classifier != "mean"].itertuples():
        assert f"{100 * r.gain_worst:+.1f} points" in text, "the closing sentence must give each worst-case gain"


@pytest.mark.slow
def test_gallery_shows_as_many_images_as_asked(smoke_outputs):
    assert len(pd.read_csv(smoke_outputs / "gallery.csv")) == 8


@pytest.mark.slow
def test_zero_shot_at_chance_is_explained(smoke_outputs):
    zs = pd.read_csv(smoke_outputs / "zero_shot.csv")
    text = _last_markdown(smoke_outputs / "01_zero_shot.ipynb")
    chance = zs[(zs.accuracy - 1 / zs.num_classes).abs() < 1e-9]
    if (chance.nan_scores > 0).any():
        assert "NaN" in text and "chance" in text
    # a setting at chance without NaN scores would be unexplained
    assert not ((chance.nan_scores == 0) & (chance.top_class_share == 1)).any()


@pytest.mark.slow
def test_unknown_classifier_names_the_valid_ones(smoke_outputs):
    from mslib import tables

    with pytest.raises(ValueError, match="standard"):
        tables.gallery("smoke", "no-such-classifier")


@pytest.mark.slow
def test_beyond_sentences_use_the_readers_names(smoke_outputs):
    import nbformat

    cells = nbformat.read(smoke_outputs / "08_beyond_the_paper.ipynb", as_version=4).cells
    text = "".join("".join(o.get("data", {}).get("text/markdown", "")) for c in cells for o in c.get("outputs", []))
    # a paired comparison's sentence: a winner, or (on the test study's few samples) no clear one
    assert "Fashion-MNIST" in text and ("wins by" in text or "no clear winner" in text)
    assert "fashion_mnist" not in text and not re.search(r"[a-z]@[a-z]", text), text[:300]


# ---- what a reader sees: every table a notebook shows -----------------------------------------------------
# codes a reader must not meet: column codes, attack targets, settings, dataset codes
RAW = re.compile(r"_acc|@(ms|clf|vlm|conf)\b|\bms_|\bclf_|" + "|".join(
    sorted((k for k, v in __import__("mslib.labels", fromlist=["DATASETS"]).DATASETS.items() if k != v), key=len,
           reverse=True)))
UNROUNDED = re.compile(r"\d\.\d{5,}|\d[eE][-+]?\d|\bnan\b|\binf\b")


def reader_table_problems(nb_path: Path) -> tuple[list[str], int]:
    """What is wrong with the tables an executed notebook shows (and how many it shows): a raw DataFrame or
    Styler (HTML or plain text), a raw code, an unrounded float, a truncated cell, a "—" without its footnote."""
    import nbformat

    from mslib import labels

    problems, tables = [], 0
    for i, cell in enumerate(nbformat.read(nb_path, as_version=4).cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            html, plain = "".join(data.get("text/html", "")), "".join(data.get("text/plain", ""))
            if "<table" in html or "DataFrame" in plain or re.search(r"\n\s*\d+\s+\S+.*\s{2,}", plain):
                problems.append(f"{nb_path.stem} cell {i}: a raw DataFrame")
            text = "".join(data.get("text/markdown", ""))
            lines = [ln for ln in text.splitlines() if ln.startswith("|")]
            if not lines:
                continue
            tables += 1
            cells = [c.strip() for ln in lines if not ln.startswith("|---") for c in ln.strip("|").split("|")]
            for c in cells:
                if labels.is_raw_code(c) or RAW.search(c):
                    problems.append(f"{nb_path.stem} cell {i}: raw code {c!r}")
                if UNROUNDED.search(c):
                    problems.append(f"{nb_path.stem} cell {i}: unrounded number {c!r}")
                if c.endswith(("...", "…")):
                    problems.append(f"{nb_path.stem} cell {i}: truncated {c!r}")
            after = text.split(lines[-1], 1)[1]
            if labels.MISSING in cells and f"\n{labels.MISSING} " not in after:
                problems.append(f"{nb_path.stem} cell {i}: a {labels.MISSING} without a footnote saying why")
    return problems, tables


def test_every_table_a_notebook_shows_is_the_readers_copy(smoke_outputs):
    counts = {}
    for nb in NOTEBOOKS:
        problems, counts[nb.stem] = reader_table_problems(smoke_outputs / nb.name)
        assert not problems, problems[:5]
    # the tables each notebook shows: 02 the main table, 07 the attacks and the ε/2 check, 08 the baselines, the
    # VLMs, the attack health and the comparisons (and the convergence table where the profile runs it)
    assert counts["02_main_table"] >= 1 and counts["07_adaptive_attacks"] == 2 and counts["08_beyond_the_paper"] >= 4
    assert all(n >= 1 for stem, n in counts.items() if stem != "06_intro_course"), counts  # 06 shows no table
    # and what they show is what is saved: the Markdown file's table, its footnotes and note
    import nbformat

    md = (smoke_outputs / "attack_health.md").read_text()
    shown = ["".join(o.get("data", {}).get("text/markdown", "")) for c in
             nbformat.read(smoke_outputs / "08_beyond_the_paper.ipynb", as_version=4).cells for o in c.get("outputs", [])]
    assert md.strip() in [s.strip() for s in shown]


def test_csv_files_are_rounded_to_six_significant_digits(smoke_outputs):
    number = re.compile(r"(?<![\w.])-?(\d+)(?:\.(\d+))?(?:[eE][-+]?\d+)?(?![\w.])")
    for csv in sorted(smoke_outputs.glob("*.csv")):
        for m in number.finditer(csv.read_text()):
            digits = (m.group(1) + (m.group(2) or "")).lstrip("0")
            assert len(digits) <= 6 or not m.group(2), f"{csv.name}: {m.group(0)} is not rounded"


def _md_rows(path: Path) -> list[dict[str, str]]:
    lines = [ln.strip().strip("|").split("|") for ln in path.read_text().splitlines() if ln.startswith("|")]
    header = [h.strip() for h in lines[0]]
    return [dict(zip(header, (c.strip() for c in row))) for row in lines[2:]]


def test_the_confidence_rejector_is_never_named_after_a_vlm(smoke_outputs):
    from mslib import get_profile, labels

    p = get_profile("smoke")
    vlms = [p.vlm, *p.vlm_variants]
    assert len(vlms) == 2  # smoke has a variant, so the rejector is matched in two configurations
    vlm, defense = labels.column("vlm"), labels.column("defense")
    for name in ("beyond_table.md", "attack_health.md"):
        rows = [r for r in _md_rows(smoke_outputs / name) if r[defense] != "Multi-Shield"]
        assert rows and all(r[vlm] == "none" or r[vlm].startswith("none (matched to Multi-Shield [") for r in rows), name
    for r in _md_rows(smoke_outputs / "comparisons.md"):
        for side in (r[labels.column("a")], r[labels.column("b")]):
            if "confidence rejector" in side:
                assert "no VLM" in side and not any(v in side for v in vlms), side
    curves = pd.read_csv(smoke_outputs / "risk_coverage.data.csv")[labels.column("curve")]
    for c in set(curves[curves.str.startswith("confidence rejector")]):
        tag = c.split("matched to", 1)[0]  # the Multi-Shield it is matched to may be named, after "matched to"
        assert "no VLM" in tag and not any(v in tag for v in vlms), c


# ---- the study as a website, checked in a real browser ---------------------------------------------------
def _chromium() -> str:
    """Chromium's path, installing the Debian package when it is missing and we may (root with apt-get);
    the browser test is skipped only when it cannot be had."""
    import os
    import subprocess

    from mslib.browser import chromium_path

    if chromium_path() is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, env=env)
    path = chromium_path()
    if path is None:
        pytest.skip("headless Chromium is not installed and could not be (needs root and apt-get: "
                    "apt-get install chromium)")
    return path


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def test_the_site_renders_every_page_in_a_browser(smoke_outputs, tmp_path):
    import time

    from mslib import site
    from mslib.browser import Browser, site_pages

    chromium = _chromium()
    start, cpu = time.monotonic(), _children_cpu()
    index = site.build("smoke", figures=smoke_outputs, out=tmp_path / "site")
    seconds, cpu = time.monotonic() - start, _children_cpu() - cpu
    # CPU time, not wall time: 6 s of wall on an idle machine took 79 s beside other jobs (load 8); running
    # a notebook instead of rendering it would cost far more CPU than this
    assert cpu < 60, f"the site took {cpu:.0f} CPU seconds to build"
    pages = site_pages(index.parent)
    names = {p.relative_to(index.parent).as_posix() for p in pages}
    # every study notebook and every lesson is a page; the landing page carries the headline
    assert {f"study/{nb.stem}.html" for nb in NOTEBOOKS} <= names
    assert {f"course/{nb.stem}.html" for nb in sorted((ROOT / "course" / "lessons").glob("[0-9]*.ipynb"))} <= names
    landing = index.read_text()
    assert "Headline" in landing and "gain, worst case (points)" in landing and "main_table.png" in landing
    shot = ROOT / "site" / "smoke-landing.png"  # kept for a person to look at (site/ is not committed)
    shot.parent.mkdir(exist_ok=True)
    problems = []
    with Browser(chromium) as browser:
        for page in pages:
            r = browser.open(page.as_uri(), screenshot=shot if page == index else None)
            problems += [f"{page.name}: {e}" for e in r.errors] + [f"{page.name}: broken image {s}" for s in r.broken_images]
    assert not problems, problems[:10]
    assert shot.stat().st_size > 10_000, "the landing page's screenshot is empty"
    print(f"site: {len(pages)} pages, built in {seconds:.1f} s ({cpu:.1f} CPU s); landing page screenshot: {shot}")


def test_every_file_the_notebooks_write_is_readable_by_the_class(smoke_outputs):
    """Catches outputs created 0600 (tempfile.mkstemp without a chmod): a course folder or a shared figures
    folder unreadable by anyone but its writer. Under the usual umask 022 every file is group/other-readable."""
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    if mask & 0o044:
        pytest.skip(f"this process's umask {mask:03o} itself hides files from group/others")
    files = [p for p in smoke_outputs.rglob("*") if p.is_file()]
    assert len(files) > 40
    unreadable = [p.name for p in files if stat.S_IMODE(p.stat().st_mode) & 0o044 != 0o044]
    assert not unreadable, unreadable


# ---- the computed sentences: their numbers against the tables the same run wrote -----------------------------
# (read from the executed notebooks' outputs and the CSV files, never recomputed by the code under test)
NUM = r"-?\d+(?:\.\d+)?"


def _said(nb_path: Path, contains: str) -> str:
    """The one Markdown output of an executed notebook that contains ``contains`` (a sentence, not a table)."""
    import nbformat

    found = ["".join(o.get("data", {}).get("text/markdown", "")) for c in nbformat.read(nb_path, as_version=4).cells
             for o in c.get("outputs", [])]
    found = [t for t in found if contains in t and not t.lstrip().startswith("|")]
    assert len(found) == 1, f"{nb_path.stem}: {len(found)} sentences contain {contains!r}"
    return found[0]


def _shown(said: str, fraction: float, digits: int = 1, what: object = "") -> None:
    """``said`` (a percentage or points, as printed to ``digits`` decimals) is ``fraction`` × 100, rounded."""
    assert abs(float(said) - 100 * fraction) <= 0.5 * 10 ** -digits + 1e-6, (what, said, fraction)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("- ")]


def _codes(names) -> dict[str, str]:
    """Reader's name -> code, for the classifier codes of a table."""
    from mslib import labels

    return {labels.classifier(c): c for c in names}


@pytest.mark.slow
def test_security_curve_sentences_give_the_curves_numbers(smoke_outputs):
    """Catches: a number of notebook 03's sentence read from another curve, ε or column than the one it names
    (the non-adaptive rate printed as the adaptive one, a rate at ε = 0 given for the profile's ε, the
    rejections of another setting), or a classifier left out."""
    from mslib import labels

    df = pd.read_csv(smoke_outputs / "security_curves.csv")
    text = _said(smoke_outputs / "03_security_curves.ipynb", "the classifier alone keeps")
    pattern = re.compile(
        rf"- (?P<ds>[^,]+), (?P<clf>.+?): at ε = (?P<eps>{NUM}) the worst case over every attack leaves Multi-Shield "
        rf"(?P<w>{NUM})% robust \((?P<wr>{NUM}) points of it rejections\), the paper's adaptive attack (?P<a>{NUM})%, "
        rf"the non-adaptive attack (?P<n>{NUM})%; the classifier alone keeps (?P<c>{NUM})%\. At ε = 0 Multi-Shield "
        rf"is correct on (?P<c0>{NUM})% and correct or rejected on (?P<r0>{NUM})% \(the classifier: (?P<k0>{NUM})%\)\.")
    codes = _codes(df.classifier.unique())
    seen = set()
    for line in _lines(text):
        m = pattern.fullmatch(line)
        assert m, line
        clf = codes[m["clf"]]
        assert m["ds"] == labels.dataset(df.dataset.iloc[0])
        eps = float(m["eps"])
        assert eps == df[df.model == "ms_worst"].eps.max()  # the profile's ε, where the ensemble runs
        row = lambda model, e: df[(df.classifier == clf) & (df.model == model) & (df.eps == e)].iloc[0]  # noqa: E731
        _shown(m["w"], row("ms_worst", eps).robust_acc, what=(clf, "worst"))
        _shown(m["wr"], row("ms_worst", eps).reject, what=(clf, "worst rejections"))
        _shown(m["a"], row("ms_adaptive", eps).robust_acc, what=(clf, "adaptive"))
        _shown(m["n"], row("ms_nonadaptive", eps).robust_acc, what=(clf, "non-adaptive"))
        _shown(m["c"], row("clf", eps).robust_acc, what=(clf, "classifier"))
        _shown(m["c0"], row("ms_adaptive", 0).correct, what=(clf, "clean correct"))
        _shown(m["r0"], row("ms_adaptive", 0).robust_acc, what=(clf, "clean correct or rejected"))
        _shown(m["k0"], row("clf", 0).robust_acc, what=(clf, "classifier clean"))
        seen.add(clf)
    assert seen == set(df.classifier)


@pytest.mark.slow
def test_tolerance_sentence_gives_the_tables_means(smoke_outputs):
    """Catches: a number of notebook 04's sentence taken at another tolerance than it names (the grid's ends,
    the profile's tolerance) or from another column (clean accuracy for clean correct-or-rejected)."""
    df = pd.read_csv(smoke_outputs / "tolerance.csv")
    text = _said(smoke_outputs / "04_tolerance.ipynb", "mean clean rejection")
    m = re.search(
        rf"From tolerance (?P<lo>{NUM}) to (?P<hi>{NUM}), mean clean rejection goes from (?P<rlo>{NUM})% to "
        rf"(?P<rhi>{NUM})% and mean adaptive robust accuracy \(correct or rejected\) from (?P<alo>{NUM})% to "
        rf"(?P<ahi>{NUM})%\. At the profile's tolerance (?P<t>{NUM}), Multi-Shield is correct on (?P<acc>{NUM})% of "
        rf"clean inputs and correct or rejected on (?P<rob>{NUM})%", text)
    assert m, text
    lo, hi, t = float(m["lo"]), float(m["hi"]), float(m["t"])
    assert (lo, hi) == (df.tolerance.min(), df.tolerance.max()) and lo < t < hi
    assert t == df.crafted_at.iloc[0]
    at = lambda tol: df[df.tolerance == tol]  # noqa: E731 - one row per (dataset, classifier)
    assert len(at(lo)) == len(at(t)) == len(at(hi)) == df.classifier.nunique() >= 2
    _shown(m["rlo"], at(lo).clean_reject.mean(), what="clean rejection at the smallest tolerance")
    _shown(m["rhi"], at(hi).clean_reject.mean(), what="clean rejection at the largest tolerance")
    _shown(m["alo"], at(lo).robust_acc_adaptive.mean(), what="adaptive at the smallest tolerance")
    _shown(m["ahi"], at(hi).robust_acc_adaptive.mean(), what="adaptive at the largest tolerance")
    _shown(m["acc"], at(t).clean_acc.mean(), what="clean accuracy at the profile's tolerance")
    _shown(m["rob"], at(t).clean_robust.mean(), what="clean correct or rejected at the profile's tolerance")


@pytest.mark.slow
def test_intro_course_sentence_counts_the_images_its_figure_shows(smoke_outputs):
    """Catches: a number of notebook 06's sentence that is not the share of the images shown in its figure
    (the rejections counted as robust twice or not at all, the adaptive attack's share given for the
    non-adaptive one, the clean classifier for the attacked one). The fixture runs it on as many images as
    the figure shows, so its source data holds every image."""
    data = pd.read_csv(smoke_outputs / "intro_attack.data.csv")
    text = _said(smoke_outputs / "06_intro_course.ipynb", "Against the defense-unaware attack")
    m = re.search(
        rf"robust \(correct or rejected\) on (?P<non>{NUM})% of these (?P<n>\d+) images \((?P<non_rej>{NUM})% "
        rf"rejected\), the classifier alone on (?P<clf>{NUM})%; against the adaptive attack Multi-Shield is robust "
        rf"on (?P<ada>{NUM})% \((?P<ada_rej>{NUM})% rejected\)", text)
    assert m, text
    by = {what: g for what, g in data.groupby("inputs")}
    assert set(by) == {"clean", "non-adaptive attack", "adaptive attack"}
    n = int(m["n"])
    assert all(len(g) == n for g in by.values()), "the figure's data must hold every image of the sentence"

    def shares(g: pd.DataFrame) -> tuple[float, float, float]:
        rejected = g["Multi-Shield"] == "REJECTED"
        robust = rejected | (g["Multi-Shield"] == g["true class"])
        return robust.mean(), rejected.mean(), (g["classifier"] == g["true class"]).mean()

    non, ada = shares(by["non-adaptive attack"]), shares(by["adaptive attack"])
    _shown(m["non"], non[0], 0, "non-adaptive robust")
    _shown(m["non_rej"], non[1], 0, "non-adaptive rejected")
    _shown(m["clf"], non[2], 0, "classifier under the non-adaptive attack")
    _shown(m["ada"], ada[0], 0, "adaptive robust")
    _shown(m["ada_rej"], ada[1], 0, "adaptive rejected")


@pytest.mark.slow
def test_adaptive_attack_sentences_give_the_tables_numbers(smoke_outputs):
    """Catches: a number of notebook 07's sentences that is not its tables' (the worst case's interval, the gap
    to the paper's attacks with its sign flipped, the classifier at ε rather than ε/2, the ε/2 verdict the wrong
    way round), a worst case that is not the attacks table's, or an attack's budget that is not its own."""
    from mslib import labels

    half = pd.read_csv(smoke_outputs / "eps_half_check.csv")
    attacks = pd.read_csv(smoke_outputs / "attacks_table.csv")
    nb = smoke_outputs / "07_adaptive_attacks.ipynb"
    budgets = _said(nb, "Budgets at this profile: ")
    for r in attacks[attacks.attack != "worst case"].drop_duplicates("attack").itertuples():
        assert f"{labels.attack(r.attack)}: {r.budget}" in budgets, r.attack
    pattern = re.compile(
        rf"- (?P<ds>[^,]+), (?P<clf>.+?): the \*\*worst case over the ensemble\*\* leaves Multi-Shield (?P<w>{NUM})% "
        rf"\[(?P<lo>{NUM})%, (?P<hi>{NUM})%\] robust at ε = (?P<eps>{NUM}), (?P<gap>{NUM}) points below the paper's "
        rf"adaptive attacks \((?P<a>{NUM})%\); the classifier alone reaches (?P<c>{NUM})% at ε/2 = (?P<eh>{NUM}), "
        rf"(?P<verdict>below Multi-Shield's worst case at ε|at or above Multi-Shield's worst case at ε)")
    codes = _codes(half.classifier)
    seen = set()
    for line in _lines(_said(nb, "the classifier alone reaches")):
        m = pattern.match(line)
        assert m, line
        clf = codes[m["clf"]]
        h = half[half.classifier == clf].iloc[0]
        worst = attacks[(attacks.classifier == clf) & (attacks.attack == "worst case")].iloc[0]
        assert (float(m["eps"]), float(m["eh"])) == (h.eps, h.eps_half) and h.eps_half == h.eps / 2
        for key, v in (("w", h.ms_robust_acc_worst), ("lo", h.ms_robust_acc_worst_lo), ("hi", h.ms_robust_acc_worst_hi),
                       ("w", worst.robust_acc), ("lo", worst.robust_acc_lo), ("hi", worst.robust_acc_hi),
                       ("a", h.ms_robust_acc_adaptive), ("c", h.clf_robust_acc_eps_half),
                       ("gap", h.ms_robust_acc_adaptive - h.ms_robust_acc_worst)):
            _shown(m[key], v, what=(clf, key))
        assert m["verdict"].startswith("below") == (h.ms_robust_acc_worst > h.clf_robust_acc_eps_half), line
        seen.add(clf)
    assert seen == set(half.classifier)


@pytest.mark.slow
def test_beyond_sentences_give_the_health_and_comparison_tables_numbers(smoke_outputs):
    """Catches: notebook 08's attack-health summary counting other runs than its table flags (the flagged
    count, a flagged run's zero-gradient count and share, the Square ensembles that broke nothing), and a
    conclusion whose winner, difference, interval, robust accuracies, clean rejections or n are not its
    comparison row's (the two sides swapped, the interval of b − a given for a − b)."""
    from mslib import labels

    nb = smoke_outputs / "08_beyond_the_paper.ipynb"
    health = pd.read_csv(smoke_outputs / "attack_health.csv", keep_default_na=False)
    text = _said(nb, "attack runs")
    flagged = health[health.flag != ""]
    assert len(flagged), "the smoke study flags the paper's DLR loss: the flagged lines are checked"
    assert text.startswith(f"{len(flagged)} of {len(health)} attack runs are flagged:\n"), text[:80]
    lines = _lines(text)
    assert len(lines) == len(flagged)
    for line, r in zip(lines, flagged.itertuples()):
        assert line.startswith(f"- {labels.classifier(r.classifier)}, ") and f"**{r.flag}**" in line, line
        if r.defense != "Multi-Shield":  # smoke has two configurations: a rejector's line names its match
            assert f", {r.defense} (matched to Multi-Shield [{r.vlm}]), " in line, line
        if r.flag == "zero gradients":
            m = re.search(rf"— (\d+) of (\d+) samples \(({NUM})%\) had an exactly zero gradient", line)
            assert m and (int(m[1]), int(m[2])) == (int(r.n_zero_grad), int(r.n_measured)), line
            _shown(m[3], float(r.zero_grad), 0, line)
        else:
            n = int(r.new_breaks)
            assert f"broke {n} sample{'s' if n != 1 else ''} that" in line, line
    square = health[health.gradient_free.astype(str) == "True"]
    m = re.search(r"ran last on what every gradient attack left unbroken in (\d+) ensembles and broke nothing new in "
                  r"(\d+) of them", text)
    assert m and (int(m[1]), int(m[2])) == (len(square), int((square.new_breaks.astype(int) == 0).sum())), text[-200:]

    cmp = pd.read_csv(smoke_outputs / "comparisons.csv")
    lines = _lines(_said(nb, "worst-case robust accuracy"))
    assert len(lines) == len(cmp) > 0
    tail = re.compile(rf"(?P<d>[+-]?{NUM}) points \[95% CI (?P<lo>[+-]?{NUM}), (?P<hi>[+-]?{NUM})\]; worst-case robust "
                      rf"accuracy (?P<a>{NUM})% vs (?P<b>{NUM})% at clean rejection (?P<ca>{NUM})% vs (?P<cb>{NUM})% "
                      rf"\(n=(?P<n>\d+)\)\.")
    for line, r in zip(lines, cmp.itertuples()):
        if r.difference_hi < 0:  # b wins: said in b's direction, b − a and its interval
            verdict, d, lo, hi = f"{r.b} wins by", -r.difference, -r.difference_hi, -r.difference_lo
        else:
            verdict = f"{r.a} wins by" if r.difference_lo > 0 else f"no clear winner: {r.a} minus {r.b} is"
            d, lo, hi = r.difference, r.difference_lo, r.difference_hi
        head = f"- {labels.dataset(r.dataset)}, {labels.classifier(r.classifier)}, {r.question}: {verdict} "
        assert line.startswith(head), (line, head)
        m = tail.fullmatch(line[len(head):])
        assert m, line
        for key, v in (("d", d), ("lo", lo), ("hi", hi), ("a", r.robust_acc_a), ("b", r.robust_acc_b),
                       ("ca", r.clean_reject_a), ("cb", r.clean_reject_b)):
            _shown(m[key], v, what=(line[:60], key))
        assert int(m["n"]) == r.n
