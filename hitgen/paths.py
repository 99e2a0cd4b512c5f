"""Default locations under the concept-world root (docs/contracts.md section 0)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def ibd_home(environ: Mapping[str, str] | None = None) -> Path:
    """`$IBD_HOME` if set and non-empty, else `./ibd-data` (relative to the current directory)."""
    env = os.environ if environ is None else environ
    return Path(env.get("IBD_HOME") or "ibd-data")


def explanations_dir(home: Path, model: str, method: str) -> Path:
    """Where `ibd explain` writes `model`'s `method` explanations."""
    return home / "explanations" / model / method


def batches_dir(home: Path) -> Path:
    """Where `hitgen build` writes batches when no `--out` is given."""
    return home / "batches"
