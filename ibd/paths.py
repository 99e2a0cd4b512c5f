"""Default locations under the working directory (docs/contracts.md 0): `$IBD_HOME`, else
`./ibd-data`. Every command's defaults come from here, so the concept world runs with no flags."""

from __future__ import annotations

import os
from pathlib import Path

from ibd.errors import UserError

REFERENCE_MODEL = "world_resnet"


def home() -> Path:
    return Path(os.environ.get("IBD_HOME") or "ibd-data")


def world_dir() -> Path:
    return home() / "world"


def models_dir() -> Path:
    return home() / "models"


def model_path(name: str = REFERENCE_MODEL) -> Path:
    return models_dir() / f"{name}.pt"


def basis_path(model: str = REFERENCE_MODEL) -> Path:
    return home() / "basis" / f"{model}.npz"


def features_dir(model: str = REFERENCE_MODEL) -> Path:
    return home() / "features" / model


def dissect_dir(model: str = REFERENCE_MODEL) -> Path:
    return home() / "dissect" / model


def decompose_path(model: str = REFERENCE_MODEL) -> Path:
    return home() / "decompose" / f"{model}.json"


def explanations_dir(model: str, method: str) -> Path:
    return home() / "explanations" / model / method


def check_creatable(path: Path) -> None:
    """Fail before any work when `path` cannot be created: its nearest existing ancestor must
    be a writable directory (one-line errors)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"cannot create {path}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"cannot create {path}: {parent} is not writable")
            return
