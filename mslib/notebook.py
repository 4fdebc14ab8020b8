"""What every study notebook does first and how it shows a table.

:func:`setup` refuses Papermill parameters the notebook does not take (Papermill itself only warns, then runs
with the defaults, so a typo would silently give another table) and finds the output folder: the one given,
else ``<repository>/figures/<profile>``, wherever the notebook was started from. :func:`show` displays a
reader's table exactly as it is saved in Markdown.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .cache import REPO_ROOT

# Papermill's Python translator opens the cell it injects with this comment.
_INJECTED = "# Parameters"


class UnknownParameterError(ValueError):
    """A Papermill parameter the notebook does not take."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback: one line
        return [f"{type(self).__name__}: {self}"]


def _assigned(source: str) -> list[str]:
    """The names a cell assigns at its top level, in order."""
    names: list[str] = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def check_parameters(history: Sequence[str], notebook: str = "this notebook") -> None:
    """Raise :class:`UnknownParameterError` (one line, listing the valid names) when the cell Papermill
    injected sets a name that the notebook's ``parameters`` cell (the cell run just before it) does not.

    ``history``: the sources of the cells run so far in order (IPython's ``In``); nothing injected, no check.
    """
    for i, src in enumerate(history):
        if i and src.lstrip().startswith(_INJECTED):
            valid = _assigned(history[i - 1])
            unknown = [n for n in _assigned(src) if n not in valid]
            if unknown:
                raise UnknownParameterError(
                    f"{notebook} takes no parameter {', '.join(map(repr, unknown))}; its parameters are: "
                    f"{', '.join(valid)}")


def output_dir(profile: str, out_dir: str | Path | None = None, root: Path = REPO_ROOT) -> Path:
    """``out_dir`` if given (a relative one is taken from the working directory, as any path typed is),
    else ``<root>/figures/<profile>``; created."""
    out = Path(out_dir) if out_dir else Path(root) / "figures" / profile
    out.mkdir(parents=True, exist_ok=True)
    return out


def setup(namespace: Mapping[str, Any], notebook: str = "this notebook") -> Path:
    """Check the Papermill parameters, set the figures' style and return the output folder.

    ``namespace``: the notebook's ``globals()`` (its ``profile``, ``out_dir`` and IPython's ``In``)."""
    from . import report

    check_parameters(list(namespace.get("In") or []), notebook)
    report.paper_style()
    return output_dir(namespace["profile"], namespace.get("out_dir"))


def show(table: pd.DataFrame, note: str | None = None) -> None:
    """Display a reader's table (:func:`mslib.labels.display`) as the Markdown saved beside the figures:
    the same text, its footnotes and ``note`` included."""
    from IPython.display import Markdown, display

    from .report import markdown

    display(Markdown(markdown(table, note)))


__all__ = ["UnknownParameterError", "check_parameters", "output_dir", "setup", "show"]
