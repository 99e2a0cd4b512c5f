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


def test_ibd_usage_mistakes_are_one_line() -> None:
    """docs/contracts.md 1: one line on stderr and exit status 2, no usage block."""
    for argv, message in (
        (["train", "--epochs", "x"], "ibd train: error: argument --epochs: invalid int value"),
        (["world", "frob"], "ibd world: error: argument ACTION: invalid choice: 'frob'"),
        (["nonsense"], "ibd: error: argument COMMAND: invalid choice: 'nonsense'"),
    ):
        cmd = [sys.executable, "-m", "ibd.cli", *argv]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 2, argv
        assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr


def test_ibd_output_into_a_closed_pipe_ends_quietly() -> None:
    """`ibd info --archs | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    cmd = [sys.executable, "-m", "ibd.cli", "info", "--archs"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the child has printed anything (it is still importing)
    err = child.stderr.read().decode()
    assert child.wait() == 1 and err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["hitgen", "build", "--n", "many"], "hitgen build: error: argument --n: invalid int"),
        (["hitserver", "load", "--nonsense"], "hitserver load: error: "),
        (["analysis", "stats", "--nonsense"], "analysis: error: unrecognized arguments"),
    ],
)
def test_every_script_reports_a_usage_mistake_in_one_line(argv: list[str], message: str) -> None:
    """docs/contracts.md 1, for the other three scripts too (ibd.errors.OneLineParser)."""
    done = subprocess.run(
        [sys.executable, "-m", f"{argv[0]}.cli", *argv[1:]], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
