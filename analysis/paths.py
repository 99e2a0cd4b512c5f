"""Default locations under the working directory (contracts.md section 0)."""

from __future__ import annotations

import os
from pathlib import Path


def ibd_home() -> Path:
    """`$IBD_HOME` if set, else `./ibd-data` relative to the current directory."""
    return Path(os.environ.get("IBD_HOME") or "ibd-data")


def default_manifests() -> list[Path]:
    """Every batch manifest that `hitgen build` wrote under the working directory."""
    return sorted((ibd_home() / "batches").glob("*/manifest.json"))


def default_database() -> Path:
    """The SQLite file that `hitserver load/run` uses by default."""
    return ibd_home() / "hitserver.sqlite"
