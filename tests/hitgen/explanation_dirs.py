"""Small explanation directories in the contract format (docs/contracts.md section 4), written
row by row for tests that need particular contributions, sizes or photos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

Row = tuple[Path, str, list[tuple[str, float, np.ndarray]]]


def explanation_dir(
    directory: Path, method: str, rows: list[Row], model: str = "ref", **extra: Any
) -> Path:
    """`model`'s `method` explanations, one per row of (image, class name, [(label,
    contribution, heatmap)]); `extra` keys are added to every entry."""
    entries, maps = [], {}
    for i, (image, class_name, parts) in enumerate(rows):
        components = []
        for j, (label, contribution, heatmap) in enumerate(parts):
            key = f"{model}/{method}/{i}/{j}"
            maps[key] = np.asarray(heatmap, dtype=np.float32)
            components.append({"label": label, "contribution": contribution, "heatmap": key})
        entry = {
            "image": str(image.resolve()),
            "model": model,
            "method": method,
            "class_index": sum(map(ord, class_name)) % 365,
            "class_name": class_name,
            "score": float(sum(c["contribution"] for c in components)),
            "components": components,
            "residual": None if method in ("cam", "gradcam") else 0.0,
            "heatmap_shape": list(np.shape(parts[0][2])),
        }
        entries.append(entry | extra)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "explanations.json").write_text(json.dumps(entries, indent=1))
    np.savez(directory / "heatmaps.npz", **maps)
    return directory
