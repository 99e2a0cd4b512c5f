"""Every console script lists its subcommands, and an unbuilt one says so and fails."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPTS = {
    "ibd": ["world", "train", "basis", "decompose", "dissect", "explain", "evaluate"],
    "hitgen": ["build"],
    "hitserver": ["load", "run", "export", "mturk", "simulate"],
    "analysis": ["plot", "stats", "report"],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_lists_subcommands(script: str) -> None:
    cmd = [sys.executable, "-m", f"{script}.cli", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for sub in SCRIPTS[script]:
        assert sub in out, f"{script} --help does not list {sub}"


def test_basis_learn_help_lists_rebuild() -> None:
    cmd = [sys.executable, "-m", "ibd.cli", "basis", "learn", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "--rebuild" in out and "--float16" in out
