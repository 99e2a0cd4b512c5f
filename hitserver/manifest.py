"""Read and check a `hitgen` batch directory (docs/contracts.md 7) before anything is stored."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hitserver.errors import UserError

FORMAT = "hitgen-manifest-1"
PLACEHOLDER = "<!-- hit-config -->"
# \A...\Z: `$` would also match before a trailing newline.
NAME_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,200}\Z")
EXPERIMENTS = ("method-vs-method", "model-vs-model")
KINDS = ("method-vs-method", "model-vs-model", "catch")


@dataclass(frozen=True)
class Side:
    """What a worker sees of one explanation: concept names and mask images (batch-relative)."""

    concepts: tuple[str, ...]
    masks: tuple[str, ...]


@dataclass(frozen=True)
class ManifestItem:
    key: str
    kind: str
    page: str
    image: str
    class_name: str
    robot_a: str
    expected_choices: tuple[int, ...] | None
    first: Side
    second: Side
    spec: dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    directory: Path
    name: str
    experiment: str
    text: str
    sha256: str
    items: tuple[ManifestItem, ...]


def _inside(directory: Path, relative: str, where: str) -> Path:
    """`directory/relative`, refusing absolute paths, `..` escapes and names no file system
    can hold (a NUL byte, which `resolve` refuses with ValueError)."""
    if "\x00" in relative:
        raise UserError(f"{where}: {relative!r} contains a NUL character")
    try:
        path = (directory / relative).resolve()
    except (OSError, ValueError) as exc:
        raise UserError(f"{where}: {relative!r} is not a usable path ({exc})") from exc
    if Path(relative).is_absolute() or not path.is_relative_to(directory):
        raise UserError(f"{where}: {relative!r} points outside the batch directory")
    return path


def _is_file(path: Path) -> bool:
    """`path.is_file()`, False for a name the file system refuses (e.g. too long)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _side(raw: Any, where: str) -> Side:
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be an object")
    concepts = raw.get("concepts", [])
    masks = raw.get("masks", [])
    if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
        raise UserError(f"{where}.concepts must be a list of strings")
    if not isinstance(masks, list) or not all(isinstance(m, str) for m in masks):
        raise UserError(f"{where}.masks must be a list of strings")
    return Side(tuple(concepts), tuple(masks))


def _text(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise UserError(f"{where}.{key} must be a non-empty string")
    return value


def _expected(item: dict[str, Any], kind: str, where: str) -> tuple[int, ...] | None:
    catch = item.get("catch")
    if catch is None:
        if kind == "catch":
            raise UserError(f"{where}: a catch item needs catch.expected_choices")
        return None
    if not isinstance(catch, dict):
        raise UserError(f"{where}.catch must be null or an object")
    choices = catch.get("expected_choices")
    if (
        not isinstance(choices, list)
        or not choices
        or not all(type(c) is int and 1 <= c <= 5 for c in choices)
    ):
        raise UserError(f"{where}.catch.expected_choices must be a non-empty list of 1..5")
    return tuple(sorted(set(choices)))


def read_manifest(batch_dir: str | Path) -> Manifest:
    """Parse `BATCH/manifest.json` and check every file a worker will be served."""
    directory = Path(batch_dir).resolve()
    path = directory / "manifest.json"
    raw_text, data = _load_json(path, batch_dir)
    name, experiment, raw_items = _header(data, path)
    items: list[ManifestItem] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_items):
        item = _item(raw, f"{path}: items[{index}]", directory)
        if item.key in seen:
            raise UserError(f"{path}: items[{index}].id {item.key!r} appears twice")
        seen.add(item.key)
        items.append(item)
    return Manifest(
        directory=directory,
        name=name,
        experiment=experiment,
        text=raw_text,
        sha256=hashlib.sha256(raw_text.encode("utf-8")).hexdigest(),
        items=tuple(items),
    )


def _load_json(path: Path, batch_dir: str | Path) -> tuple[str, Any]:
    """The manifest's text and its parsed JSON, or a one-line UserError."""
    try:
        raw_text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UserError(f"{path}: not found (is {batch_dir} a hitgen batch?)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from exc
    try:
        return raw_text, json.loads(raw_text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    except RecursionError as exc:  # the parser recurses once per level of nesting
        raise UserError(f"{path}: JSON nested too deeply to be a manifest") from exc


def _header(data: Any, path: Path) -> tuple[str, str, list[Any]]:
    """The batch name, the experiment and the raw items, checked."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: must hold a JSON object")
    if data.get("format") != FORMAT:
        raise UserError(f"{path}: format must be {FORMAT!r}, not {data.get('format')!r}")
    name = data.get("batch")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in (".", ".."):
        raise UserError(f"{path}: batch must be a name of letters, digits, '_', '.', '-'")
    experiment = data.get("experiment")
    if experiment not in EXPERIMENTS:
        raise UserError(f"{path}: experiment must be one of {', '.join(EXPERIMENTS)}")
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise UserError(f"{path}: items must be a non-empty list")
    return name, experiment, raw_items


def _item(raw: Any, where: str, directory: Path) -> ManifestItem:
    """One manifest item, its fields and its files checked."""
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be an object")
    key = _text(raw, "id", where)
    if not NAME_RE.fullmatch(key):
        raise UserError(f"{where}.id {key!r} must use letters, digits, '_', '.', '-'")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise UserError(f"{where}.kind must be one of {', '.join(KINDS)}")
    robot_a = raw.get("robot_a")
    if robot_a not in ("first", "second"):
        raise UserError(f"{where}.robot_a must be 'first' or 'second'")
    image = _text(raw, "image", where)
    if not _is_file(_inside(directory, image, f"{where}.image")):
        raise UserError(f"{where}.image {image!r} does not exist")
    page = _text(raw, "page", where)
    _check_page(directory, page, where)
    first = _side(raw.get("first"), f"{where}.first")
    second = _side(raw.get("second"), f"{where}.second")
    for mask in (*first.masks, *second.masks):
        if not _is_file(_inside(directory, mask, f"{where}.masks")):
            raise UserError(f"{where}: mask {mask!r} does not exist")
    return ManifestItem(
        key=key,
        kind=kind,
        page=page,
        image=image,
        class_name=_text(raw, "class_name", where),
        robot_a=robot_a,
        expected_choices=_expected(raw, kind, where),
        first=first,
        second=second,
        spec=raw,
    )


def _check_page(directory: Path, page: str, where: str) -> None:
    """The page is `pages/<name>.html` inside the batch, readable, with one placeholder."""
    page_path = _inside(directory, page, f"{where}.page")
    if page_path.parent != directory / "pages" or page_path.suffix != ".html":
        raise UserError(f"{where}.page must be pages/<name>.html, not {page!r}")
    try:
        html = page_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}.page {page!r}: cannot read ({exc})") from exc
    if html.count(PLACEHOLDER) != 1:
        raise UserError(f"{where}.page {page!r} must contain {PLACEHOLDER} exactly once")
