"""Every notebook runs end to end with the smoke profile and writes its tables and figures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))

# files each notebook must write into out_dir (besides its executed copy)
EXPECTED = {
    "01_zero_shot": ["zero_shot.csv", "zero_shot.md", "zero_shot.tex", "zero_shot.png", "zero_shot.pdf"],
    "02_main_table": ["main_table.csv", "main_table.md", "main_table.tex", "main_table.png", "main_table.pdf",
                      "headline.csv"],
    "03_security_curves": ["security_curves.csv", "security_curves.png", "security_curves.pdf"],
    "04_tolerance": ["tolerance.csv", "tolerance.png", "tolerance.pdf"],
    "05_gallery": ["gallery.csv", "gallery.png", "gallery.pdf"],
    "06_intro_course": ["intro_attack.png", "intro_attack.pdf"],
    "07_adaptive_attacks": ["attacks_table.csv", "attacks_table.md", "attacks_table.tex"],
    "08_beyond_the_paper": ["beyond_table.csv", "beyond_table.md", "risk_coverage.png", "risk_coverage.pdf",
                            "attack_health.csv", "comparisons.csv", "vlm_robustness.csv"],
}


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory) -> Path:
    import papermill as pm

    out = tmp_path_factory.mktemp("figures_smoke")
    for nb in NOTEBOOKS:
        pm.execute_notebook(str(nb), str(out / nb.name), parameters={"profile": "smoke", "out_dir": str(out)},
                            kernel_name="python3", cwd=str(nb.parent), progress_bar=False)
    return out


def test_every_notebook_has_a_parameters_cell_and_no_outputs():
    import nbformat

    assert len(NOTEBOOKS) >= 6
    for nb in NOTEBOOKS:
        cells = nbformat.read(nb, as_version=4).cells
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, nb.name
        assert tagged[0].source.lstrip().startswith("profile ="), nb.name
        assert all(not c.get("outputs") for c in cells if c.cell_type == "code"), f"{nb.name} carries outputs"


def test_each_notebook_writes_its_files(smoke_outputs):
    for nb in NOTEBOOKS:
        assert (smoke_outputs / nb.name).is_file()
        for name in EXPECTED.get(nb.stem, []):
            path = smoke_outputs / name
            assert path.is_file() and path.stat().st_size > 0, f"{nb.stem} did not write {name}"


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
    assert (df.clf_robust_acc <= df.clf_clean_acc + 1e-9).all()
    # with rejection, robust accuracy can't exceed correct-or-rejected on clean inputs
    assert (df.ms_robust_acc_adaptive <= df.ms_clean_acc + df.ms_clean_reject + 1e-9).all()
    curves = pd.read_csv(smoke_outputs / "security_curves.csv")
    for _, g in curves.groupby(["dataset", "classifier", "model"]):
        acc = g.sort_values("eps").robust_acc.to_numpy()
        assert (acc[1:] <= acc[:-1] + 1e-9).all(), "security curves must be monotone in eps"
