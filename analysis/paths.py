"""Default locations under the working directory (contracts.md section 0)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from analysis.errors import UserError


def ibd_home() -> Path:
    """`$IBD_HOME` if set, else `./ibd-data` relative to the current directory."""
    return Path(os.environ.get("IBD_HOME") or "ibd-data")


def default_manifests() -> list[Path]:
    """Every batch manifest that `hitgen build` wrote under the working directory."""
    return sorted((ibd_home() / "batches").glob("*/manifest.json"))


def default_database() -> Path:
    """The SQLite file that `hitserver load/run` uses by default."""
    return ibd_home() / "hitserver.sqlite"


def check_output_dir(out: Path) -> None:
    """Refuse an `--out` that can never be a directory (it, or a parent, is a file) before any
    work is done; other failures (permissions, ...) surface in `make_output_dir`."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: cannot create the directory: {parent} is a file")
            return


def make_output_dir(out: Path) -> None:
    """Create `--out` (and its parents), or say in one line why it cannot be."""
    check_output_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the directory: {_reason(exc)}") from None


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failure to write `path` (permissions, a full disk, ...) into a one-line error."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    # The path is already in the message; strerror alone reads better than the repr.
    return exc.strerror or str(exc)
