"""A basis.npz as `ibd basis learn` writes it (docs/contracts.md 5), for the tests that need one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_basis(
    path: Path, q: np.ndarray, names: list[str] | None = None, layer: str = "features"
) -> None:
    """Concept vectors `q` (C x D) named `names` (default concept0..), as their own raw weights."""
    names = names or [f"concept{c}" for c in range(len(q))]
    np.savez(
        path,
        names=np.array(names),
        categories=np.array(["object"] * len(q)),
        weight=q.astype(np.float32),
        bias=np.zeros(len(q), np.float32),
        q=q.astype(np.float32),
        ap=np.full(len(q), 0.7, np.float32),
        meta=np.array(json.dumps({"model": "test", "layer": layer})),
    )
