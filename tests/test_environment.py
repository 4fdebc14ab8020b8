"""environment.yml and pyproject.toml name the same packages at the same versions."""
from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _norm(req: str) -> tuple[str, str]:
    name, _, version = req.partition("==")
    assert version, f"{req!r} is not pinned with =="
    return name.strip().lower().replace("_", "-"), version.strip()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyproject = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1
    conda = {_norm(r) for r in pip_lists[0]}
    assert conda == pyproject, f"only in environment.yml: {conda - pyproject}; only in pyproject: {pyproject - conda}"
