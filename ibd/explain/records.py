"""Explanations and their files (docs/contracts.md 4).

An `Explanation` is one image's explanation by one method of one model: the target class, its
score (the pre-softmax logit), the components ranked by contribution, each with its raw heatmap
at feature resolution (a torch tensor), and the residual. `to_dict()` is its record in
`explanations.json`; `write` puts a list of them into a directory as `explanations.json` plus
`heatmaps.npz` (each component's heatmap, float32, under its key) and `read` reads the two files
back: their one writer and one reader.

An IBD component may carry its significance (`ibd explain --significance`, docs/significance.md):
`p_value`, `p_error`, `p_adjusted` (numbers in 0..1) and `significant` (a boolean); records
without them (every record written before they existed) read as untested
(`component_significance`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ibd.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

    from ibd.nets.model import Picture

METHODS = ("ibd", "cam", "gradcam", "netdissect")
P_FIELDS = ("p_value", "p_error", "p_adjusted")


def component_significance(component: Any) -> dict[str, Any]:
    """The significance fields of one component (a record's dict, or a `Component`'s `extra`):
    {} for an untested component; ValueError for a p-value outside 0..1 or a `significant`
    that is not a boolean."""
    if not isinstance(component, dict):
        return {}
    found: dict[str, Any] = {}
    for key in P_FIELDS:
        value = component.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{key} must be a number in 0..1, got {value!r}")
        found[key] = float(value)
    flag = component.get("significant")
    if flag is not None:
        if not isinstance(flag, bool):
            raise ValueError(f"significant must be true or false, got {flag!r}")
        found["significant"] = flag
    return found


@dataclass
class Component:
    """One part of an explanation: its label (a concept, a unit's concept, or the class for
    CAM / Grad-CAM), its contribution to the score, the key of its heatmap in `heatmaps.npz`,
    further record fields (`extra`: a unit's number and IoU), and the raw heatmap (H x W) when
    it was computed in this process (None for a record built from files)."""

    label: str
    contribution: float
    key: str
    extra: dict[str, Any] = field(default_factory=dict)
    heatmap: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "contribution": self.contribution,
            "heatmap": self.key,
            **self.extra,
        }


@dataclass
class Explanation:
    """One image explained by one method (docs/contracts.md 4). For ibd and netdissect,
    sum(contributions) + residual == score; cam and gradcam have no residual (None).
    `extra` holds further record fields (the target's softmax probability); `picture` is the
    input image, kept for `render`."""

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
    picture: Picture | None = field(default=None, repr=False, compare=False)

    @property
    def probability(self) -> float | None:
        """The target class's softmax probability, when the explainer recorded it."""
        value = self.extra.get("probability")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        """The record of `explanations.json`."""
        return {
            "image": self.image,
            "model": self.model,
            "method": self.method,
            "class_index": self.class_index,
            "class_name": self.class_name,
            "score": self.score,
            "components": [c.to_dict() for c in self.components],
            "residual": self.residual,
            "heatmap_shape": list(self.heatmap_shape),
            **self.extra,
        }

    def render(self, image: Image.Image | None = None, **options: Any) -> Image.Image:
        """A picture in the style of the paper's Fig. 1 / 4: the input, the class map and the
        top components overlaid on it (`ibd.explain.render.render_explanation`, whose keyword
        options this passes on). `image` defaults to the explained input itself."""
        from ibd.explain.render import render_explanation

        if image is None:
            if self.picture is None:
                raise UserError(f"no input image is kept for {self.image}: pass image=")
            image = self.picture.load()
        return render_explanation(image, self, **options)


def _finite(value: object) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _heatmaps(
    explanations: list[Explanation], given: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """Each component's heatmap by key: from `given` when passed, else the components' own."""
    keys = [c.key for e in explanations for c in e.components]
    if len(set(keys)) != len(keys):
        raise ValueError("heatmap keys must be unique within an explanation directory")
    if given is None:
        given = {
            c.key: c.heatmap.detach().float().cpu().numpy()
            for e in explanations
            for c in e.components
            if c.heatmap is not None
        }
    if missing := sorted(set(keys) - set(given)):
        raise ValueError(f"no heatmap for keys {missing[:3]}")
    return {k: np.asarray(given[k], dtype=np.float32) for k in keys}


def write(
    out_dir: str | Path,
    explanations: list[Explanation],
    heatmaps: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write both files into `out_dir` (created), replacing earlier ones atomically. The
    heatmaps are the components' own unless `heatmaps` maps every key to one."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {out}: {exc.strerror}") from None
    maps = _heatmaps(explanations, heatmaps)
    for e in explanations:
        values = [e.score, e.residual, *(c.contribution for c in e.components)]
        if not all(_finite(v) for v in values):
            raise UserError(f"non-finite score or contribution for {e.image} ({e.method})")
        try:
            for c in e.components:
                component_significance(c.extra)
        except ValueError as exc:
            raise UserError(f"{e.image} ({e.method}): {exc}") from None
    records = [e.to_dict() for e in explanations]
    tmp_json, tmp_npz = out / "explanations.json.tmp", out / "heatmaps.tmp.npz"
    moves = ((tmp_json, out / "explanations.json"), (tmp_npz, out / "heatmaps.npz"))
    # both files are written in full before either replaces its predecessor, so a failure
    # (a full disk, a directory in the way) leaves the earlier pair as it was
    for path in (path for move in moves for path in move):
        if path.is_dir():
            raise UserError(f"cannot write {path}: a directory is in the way")
    try:
        tmp_json.write_text(json.dumps(records, indent=1) + "\n")
        np.savez_compressed(tmp_npz, **maps)
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
