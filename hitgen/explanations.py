"""Reading an explanation directory: `explanations.json` + `heatmaps.npz` (contracts section 4)."""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hitgen.errors import UserError

METHODS = ("ibd", "netdissect", "cam", "gradcam")
MAX_HEATMAPS = 4  # the paper's interface shows at most four heatmaps per explanation
# Methods whose components are terms of the class score, each with its own contribution. A
# component with contribution <= 0 speaks *against* the class, so "kitchen because: snow" would
# misstate it: only positive ones are shown. CAM and Grad-CAM have one component, the class map
# itself, whose "contribution" is the score and may be negative; it is always shown.
CONTRIBUTION_METHODS = ("ibd", "netdissect")


@dataclass(frozen=True)
class Component:
    """One labelled heatmap of an explanation (raw values at feature resolution)."""

    label: str
    contribution: float
    heatmap: np.ndarray


@dataclass(frozen=True)
class Explanation:
    """One (image, model, method) explanation, components ranked largest contribution first."""

    image: str  # the path exactly as written in explanations.json
    image_path: Path  # where that image was found
    model: str
    method: str
    class_index: int
    class_name: str
    components: tuple[Component, ...]
    image_size: tuple[int, int] | None  # (height, width) of the decoded photo, when stated
    origin: str  # "<dir>/explanations.json: entry N", for messages

    @property
    def shown(self) -> tuple[Component, ...]:
        """The components a task shows: the top four, of those with a positive contribution for
        the methods in CONTRIBUTION_METHODS (possibly none: such an image is left out)."""
        if self.method not in CONTRIBUTION_METHODS:
            return self.components[:MAX_HEATMAPS]
        return tuple(c for c in self.components if c.contribution > 0)[:MAX_HEATMAPS]


def _field(entry: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in entry:
        raise UserError(f"{where}: missing field {key!r}")
    value = entry[key]
    # bool is an int subclass; a JSON true is never a valid number here
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UserError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _resolve_image(image: str, directory: Path, where: str) -> Path:
    """Contract 4: a relative path is tried against the current directory, then against DIR."""
    given = Path(image)
    candidates = [given] if given.is_absolute() else [given, directory / given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"{where}: image {image!r} not found (also looked in {directory})")


def _read_entries(json_path: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{json_path}: not found (no explanations here)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{json_path}: not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise UserError(f"{json_path}: expected a list of explanations")
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UserError(f"{json_path}: entry {number} is not an object")
    return entries


def _open_heatmaps(npz_path: Path) -> Any:
    try:
        return np.load(npz_path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{npz_path}: not found") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{npz_path}: not a readable .npz file ({exc})") from None


def _heatmap(
    store: Any, key: str, shape: tuple[int, ...], npz_path: Path, where: str
) -> np.ndarray:
    if key not in store.files:
        raise UserError(f"{where}: heatmap {key!r} is not in {npz_path}")
    try:
        array = store[key]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"{npz_path}: heatmap {key!r} is unreadable ({exc})") from None
    if array.shape != shape:
        raise UserError(f"{where}: heatmap {key!r} has shape {array.shape}, expected {shape}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise UserError(f"{where}: heatmap {key!r} must hold finite numbers")
    return array.astype(np.float32)


def load_explanations(
    directory: Path, model: str | None = None, method: str | None = None
) -> list[Explanation]:
    """The explanations in `directory` for `model` and `method` (None: any), in file order.

    Every entry is checked for the contract's fields; heatmaps are read only for the selected
    entries. Components are (stably) sorted by contribution, largest first, as the contract ranks
    them.
    """
    json_path = directory / "explanations.json"
    npz_path = directory / "heatmaps.npz"
    entries = _read_entries(json_path)
    selected: list[tuple[str, dict[str, Any]]] = []
    for number, entry in enumerate(entries):
        where = f"{json_path}: entry {number}"
        entry_method = _field(entry, "method", str, where)
        if entry_method not in METHODS:
            raise UserError(f"{where}: unknown method {entry_method!r} (one of {METHODS})")
        entry_model = _field(entry, "model", str, where)
        if (model is None or entry_model == model) and (method is None or entry_method == method):
            selected.append((where, entry))
    if not selected:
        wanted = " ".join(f"{k}={v}" for k, v in (("model", model), ("method", method)) if v)
        raise UserError(f"{json_path}: no explanations with {wanted or 'any model'}")

    explanations = []
    with _open_heatmaps(npz_path) as store:
        for where, entry in selected:
            explanations.append(_parse(entry, where, directory, store, npz_path))
    return explanations


def _size(value: Any, key: str, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    ):
        raise UserError(f"{where}: {key} must be two positive integers")
    return (value[0], value[1])


def _parse(
    entry: dict[str, Any], where: str, directory: Path, store: Any, npz_path: Path
) -> Explanation:
    image = _field(entry, "image", str, where)
    shape = _size(_field(entry, "heatmap_shape", list, where), "heatmap_shape", where)
    # optional (contract section 4): the original image's [H, W]
    raw_size = entry.get("image_size")
    image_size = None if raw_size is None else _size(raw_size, "image_size", where)
    raw_components = _field(entry, "components", list, where)
    if not raw_components:
        raise UserError(f"{where}: components is empty")
    components = []
    for index, raw in enumerate(raw_components):
        part = f"{where}: component {index}"
        if not isinstance(raw, dict):
            raise UserError(f"{part} is not an object")
        contribution = float(_field(raw, "contribution", (int, float), part))
        if not math.isfinite(contribution):
            raise UserError(f"{part}: contribution is not finite")
        components.append(
            Component(
                label=_field(raw, "label", str, part),
                contribution=contribution,
                heatmap=_heatmap(store, _field(raw, "heatmap", str, part), shape, npz_path, part),
            )
        )
    components.sort(key=lambda c: -c.contribution)
    return Explanation(
        image=image,
        image_path=_resolve_image(image, directory, where),
        model=_field(entry, "model", str, where),
        method=_field(entry, "method", str, where),
        class_index=_field(entry, "class_index", int, where),
        class_name=_field(entry, "class_name", str, where),
        components=tuple(components),
        image_size=image_size,
        origin=where,
    )
