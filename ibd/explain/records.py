"""The explanation files every method writes (docs/contracts.md 4):
`explanations.json` (one record per image, model and method) and `heatmaps.npz` (each component's
raw heatmap at feature resolution, float32, under its key)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ibd.errors import UserError

METHODS = ("ibd", "cam", "gradcam", "netdissect")


@dataclass
class Component:
    label: str
    contribution: float
    heatmap: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "contribution": self.contribution,
            "heatmap": self.heatmap,
            **self.extra,
        }


@dataclass
class Explanation:
    image: str
    model: str
    method: str
    class_index: int
    class_name: str
    score: float
    components: list[Component]
    residual: float | None
    heatmap_shape: tuple[int, int]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("extra")
        record["components"] = [c.to_json() for c in self.components]
        record["heatmap_shape"] = list(self.heatmap_shape)
        record.update(self.extra)
        return record


def _finite(value: object) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def write(out_dir: str | Path, explanations: list[Explanation], heatmaps: dict[str, np.ndarray]):
    """Write both files into `out_dir` (created), replacing earlier ones atomically."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {out}: {exc.strerror}") from None
    keys = [c.heatmap for e in explanations for c in e.components]
    if len(set(keys)) != len(keys):
        raise ValueError("heatmap keys must be unique within an explanation directory")
    if missing := sorted(set(keys) - set(heatmaps)):
        raise ValueError(f"no heatmap for keys {missing[:3]}")
    for e in explanations:
        values = [e.score, e.residual, *(c.contribution for c in e.components)]
        if not all(_finite(v) for v in values):
            raise UserError(f"non-finite score or contribution for {e.image} ({e.method})")
    records = [e.to_json() for e in explanations]
    tmp_json, tmp_npz = out / "explanations.json.tmp", out / "heatmaps.tmp.npz"
    moves = ((tmp_json, out / "explanations.json"), (tmp_npz, out / "heatmaps.npz"))
    # both files are written in full before either replaces its predecessor, so a failure
    # (a full disk, a directory in the way) leaves the earlier pair as it was
    for path in (path for move in moves for path in move):
        if path.is_dir():
            raise UserError(f"cannot write {path}: a directory is in the way")
    try:
        tmp_json.write_text(json.dumps(records, indent=1) + "\n")
        np.savez_compressed(tmp_npz, **{k: np.asarray(heatmaps[k], dtype=np.float32) for k in keys})
        for tmp, final in moves:
            tmp.replace(final)
    except OSError as exc:
        tmp_json.unlink(missing_ok=True)
        tmp_npz.unlink(missing_ok=True)
        raise UserError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from None
    return out


def read(out_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The records and heatmaps of an explanation directory."""
    out = Path(out_dir)
    try:
        records = json.loads((out / "explanations.json").read_text())
        with np.load(out / "heatmaps.npz") as npz:
            heatmaps = {k: npz[k] for k in npz.files}
    except FileNotFoundError as exc:
        raise UserError(f"not an explanation directory: {exc.filename} is missing") from None
    except (json.JSONDecodeError, ValueError, OSError) as exc:
        raise UserError(f"cannot read explanations in {out}: {exc}") from None
    return records, heatmaps
