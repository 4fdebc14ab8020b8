"""What a reader or a user at the command line meets: refused parameters, output folders, one-line errors,
missing values that say why."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mslib import labels, notebook, report
from mslib.cache import REPO_ROOT

PARAMS = 'profile = "tiny"  # smoke | tiny | paper\nout_dir = None  # where tables and figures go\nn_images = 8\n'


def test_an_injected_parameter_the_notebook_does_not_take_is_refused_with_the_valid_ones():
    injected = '# Parameters\nprofile = "smoke"\neps = 8\n'
    with pytest.raises(notebook.UnknownParameterError, match=r"'eps'; its parameters are: profile, out_dir, n_images$"):
        notebook.check_parameters(["", PARAMS, injected])
    # the error renders as one line in IPython (no traceback)
    try:
        notebook.check_parameters(["", PARAMS, injected])
    except notebook.UnknownParameterError as e:
        assert len(e._render_traceback_()) == 1


def test_known_parameters_and_no_injection_pass():
    notebook.check_parameters(["", PARAMS, '# Parameters\nprofile = "smoke"\nn_images = 4\n'])
    notebook.check_parameters(["", PARAMS, "import os"])  # run without Papermill: nothing injected


def test_the_default_output_folder_is_the_repositorys_wherever_the_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "repo"
    assert notebook.output_dir("smoke", None, root=root) == root / "figures" / "smoke"
    assert (root / "figures" / "smoke").is_dir() and not (tmp_path / "figures").exists()
    assert notebook.output_dir("smoke", "mine") == Path("mine")  # a path given is taken as typed
    # and the real default is the repository's, not the working directory's
    assert notebook.output_dir.__defaults__[-1] == REPO_ROOT


def test_papermill_refuses_an_unknown_parameter_with_one_line(tmp_path):
    nb = REPO_ROOT / "notebooks" / "02_main_table.ipynb"
    done = subprocess.run([sys.executable, "-m", "papermill", str(nb), str(tmp_path / "out.ipynb"), "-p", "profile",
                           "smoke", "-p", "eps", "8", "--cwd", str(tmp_path), "-k", "python3", "--no-progress-bar"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode != 0
    last = [ln for ln in done.stderr.splitlines() if ln.strip()][-1]
    assert last == ("UnknownParameterError: this notebook takes no parameter 'eps'; its parameters are: "
                    "profile, out_dir"), done.stderr[-2000:]
    assert not list(tmp_path.glob("*.csv")) and not (tmp_path.parent / "figures").exists()


def test_results_not_ready_names_the_command_with_balanced_quotes_and_parentheses(tmp_path, monkeypatch):
    from mslib.store import ResultsNotReadyError, Store

    monkeypatch.setenv("MSLIB_CACHE", str(tmp_path))
    with pytest.raises(ResultsNotReadyError) as err:
        Store("smoke")
    msg = str(err.value)
    assert "`make results PROFILE=smoke` (or `python -m mslib.experiment --profile smoke`)" in msg
    assert msg.count("(") == msg.count(")") and msg.count("`") % 2 == 0


def test_a_failed_download_names_the_host(tmp_path):
    from mslib.fetch import download

    with pytest.raises(OSError, match=r"from no-such-host\.invalid"):
        download("https://no-such-host.invalid/model.bin", tmp_path / "model.bin", progress=False)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_missing_values_read_as_a_dash_with_a_footnote_and_numbers_are_rounded():
    df = pd.DataFrame({"attack": ["apgd-ce@ms", "square-reject@ms"], "zero_grad": [0.25, float("nan")],
                       "zero_grad_lo": [0.1, float("nan")], "zero_grad_hi": [0.5, float("nan")],
                       "value": [0.8500000238418579, 8.673617e-19], "n_measured": [40, 0]})
    out = labels.display(df, missing={"zero_grad": "Square computes no gradient"})
    assert out[labels.column("zero_grad")].tolist() == ["25.0 [10.0, 50.0]", "—"]
    assert out[labels.column("value")].tolist() == ["0.85", "0"]
    assert out.attrs["footnotes"] == ["— exactly-zero-gradient share (%): Square computes no gradient."]
    md = report.markdown(out, note="a note")
    table, rest = md.split("\n\n", 1)
    assert "| — |" in table and rest.startswith("— exactly-zero-gradient") and md.rstrip().endswith("a note")
    # without a reason the footnote still says there is no value, never a bare "nan"
    plain = labels.display(df[["attack", "zero_grad"]])
    assert "nan" not in report.markdown(plain) and plain.attrs["footnotes"]


def test_csv_files_carry_no_float_noise(tmp_path):
    df = pd.DataFrame({"a": [0.8500000238418579, 1 / 3, 8.673617e-19, -1e-20], "n": [1, 2, 3, 4]})
    path = report.write_csv(df, tmp_path / "t.csv")
    assert path.read_text().splitlines() == ["a,n", "0.85,1", "0.333333,2", "0,3", "0,4"]
