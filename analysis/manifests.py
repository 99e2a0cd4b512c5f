"""Batch manifests (contracts.md section 7): which explanation each item showed, and where.

Only what the analysis needs is read: the batch's experiment, and per item its kind, the two
explanations (`first` = the one being evaluated, `second` = what it is compared against), which
of them was Robot A, and for catch items the answers that pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import UserError

FORMAT = "hitgen-manifest-1"
EXPERIMENTS: tuple[str, str] = ("method-vs-method", "model-vs-model")
KINDS: tuple[str, ...] = (*EXPERIMENTS, "catch")

ITEM_COLUMNS: tuple[str, ...] = (
    "batch",
    "experiment",
    "item_id",
    "kind",
    "class_name",
    "first_model",
    "first_method",
    "second_model",
    "second_method",
    "robot_a",
    "catch_type",
    "expected_choices",
)


@dataclass(frozen=True)
class Batch:
    """One manifest's identity, for reports."""

    name: str
    experiment: str
    path: Path
    n_items: int
    n_catch: int
    created_with: str


def find_manifests(paths: Iterable[Path]) -> list[Path]:
    """Expand the given paths: a file is a manifest; a directory is searched for
    `manifest.json` in itself and in its immediate subdirectories (a `batches/` folder)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted([*path.glob("manifest.json"), *path.glob("*/manifest.json")])
            if not inside:
                raise UserError(f"{path}: no manifest.json in it or in its subdirectories")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path}: no such manifest file or directory")
    return found


def _field(obj: Any, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        raise UserError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _explanation(item: dict[str, Any], side: str, where: str) -> tuple[str | None, str | None]:
    shown = item.get(side)
    if shown is None and item.get("kind") == "catch":
        return None, None
    return (
        _field(shown, "model", f"{where}.{side}"),
        _field(shown, "method", f"{where}.{side}"),
    )


def _item_row(batch: str, experiment: str, item: Any, where: str) -> dict[str, Any]:
    item_id = _field(item, "id", where)
    kind = _field(item, "kind", where)
    if kind not in KINDS:
        raise UserError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    robot_a = _field(item, "robot_a", where)
    if robot_a not in ("first", "second"):
        raise UserError(f"{where}.robot_a: {robot_a!r} is neither 'first' nor 'second'")
    first_model, first_method = _explanation(item, "first", where)
    second_model, second_method = _explanation(item, "second", where)
    catch = item.get("catch")
    catch_type: str | None = None
    expected: tuple[int, ...] = ()
    if kind == "catch":
        if not isinstance(catch, dict):
            raise UserError(f"{where}.catch: a catch item needs a catch object")
        catch_type = str(catch.get("type", ""))
        choices = _field(catch, "expected_choices", f"{where}.catch", list)
        if not choices or any(c not in (1, 2, 3, 4, 5) for c in choices):
            raise UserError(f"{where}.catch.expected_choices: {choices!r} is not a list of 1..5")
        expected = tuple(sorted(choices))
    elif catch is not None:
        raise UserError(f"{where}.catch: set on an item whose kind is {kind!r}")
    return {
        "batch": batch,
        "experiment": experiment,
        "item_id": item_id,
        "kind": kind,
        "class_name": item.get("class_name"),
        "first_model": first_model,
        "first_method": first_method,
        "second_model": second_model,
        "second_method": second_method,
        "robot_a": robot_a,
        "catch_type": catch_type,
        "expected_choices": expected,
    }


def read_manifest(path: Path) -> tuple[Batch, list[dict[str, Any]]]:
    """Parse and check one manifest; returns its identity and one row per item."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from None
    where = str(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: format is {got!r}, expected {FORMAT!r}")
    batch = _field(data, "batch", where)
    experiment = _field(data, "experiment", where)
    if experiment not in EXPERIMENTS:
        raise UserError(f"{path}: experiment {experiment!r} is not one of {', '.join(EXPERIMENTS)}")
    items = _field(data, "items", where, list)
    rows = [_item_row(batch, experiment, it, f"{path}: items[{i}]") for i, it in enumerate(items)]
    info = Batch(
        name=batch,
        experiment=experiment,
        path=path,
        n_items=len(rows),
        n_catch=sum(r["kind"] == "catch" for r in rows),
        created_with=str(data.get("created_with", "")),
    )
    return info, rows


def read_manifests(paths: Iterable[Path]) -> tuple[list[Batch], pd.DataFrame]:
    """Read every manifest; item ids and batch names must be unique across them."""
    batches: list[Batch] = []
    rows: list[dict[str, Any]] = []
    seen_batch: dict[str, Path] = {}
    seen_item: dict[str, Path] = {}
    for path in paths:
        info, items = read_manifest(path)
        if info.name in seen_batch:
            raise UserError(f"{path}: batch {info.name!r} is also in {seen_batch[info.name]}")
        seen_batch[info.name] = path
        for row in items:
            if row["item_id"] in seen_item:
                other = seen_item[row["item_id"]]
                raise UserError(f"{path}: item id {row['item_id']!r} is also in {other}")
            seen_item[row["item_id"]] = path
        batches.append(info)
        rows.extend(items)
    if not batches:
        raise UserError("no batch manifests found (give --manifest PATH)")
    return batches, pd.DataFrame(rows, columns=list(ITEM_COLUMNS))
