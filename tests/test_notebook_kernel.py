"""The shared kernel the notebook fixtures use starts each notebook as a fresh kernel would: no name, no record
of mslib's from the notebook before, in the notebook's own folder."""
from __future__ import annotations

import nbformat
import papermill as pm
import pytest

from notebook_kernel import shared_kernel


def _notebook(path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)


def test_a_notebook_sees_nothing_the_one_before_it_left(tmp_path):
    """Catches a shared kernel that hands one notebook's names, mslib registries (the course's checks run,
    the attack registry) or working folder to the next: a notebook could then pass on what it never did."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _notebook(first / "first.ipynb", "marker = 1",
              "from mslib.course import check\n"
              "check.RESULTS['left-over'] = check.Verdict('left-over', True, 'from the first notebook')\n"
              "import mslib.attacks as A\n"
              "A.ATTACK_SPECS['left-over'] = A.ATTACK_SPECS[next(iter(A.ATTACK_SPECS))]")
    _notebook(second / "second.ipynb", "x = 0",
              "import os\nfrom mslib.course import check\nimport mslib.attacks as A\n"
              "print(sorted(check.RESULTS), 'left-over' in A.ATTACK_SPECS, os.getcwd())",
              "marker")
    with shared_kernel() as run:
        run(first / "first.ipynb", tmp_path / "first-out.ipynb", {}, first)
        with pytest.raises(pm.PapermillExecutionError, match="NameError"):
            run(second / "second.ipynb", tmp_path / "second-out.ipynb", {}, second)
    out = nbformat.read(tmp_path / "second-out.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in out.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert printed.strip() == f"[] False {second}"
