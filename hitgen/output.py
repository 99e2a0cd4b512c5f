"""Where a batch is written: what may be replaced, staging, and the final move into place.

A directory is a batch only if its manifest.json parses and carries hitgen's format tag, so
`--force` can never delete a directory that merely holds some other file named manifest.json.
The batch is written into a hidden sibling directory and renamed into place when complete, so a
failed build leaves nothing behind and never half-replaces an existing batch.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hitgen.errors import UserError

MANIFEST_FORMAT = "hitgen-manifest-1"


def is_batch(directory: Path) -> bool:
    """`directory` holds a manifest.json written by hitgen (readable, with our format tag)."""
    try:
        data = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT


def check_target(target: Path, force: bool) -> None:
    """Refuse a `target` that exists and is not an empty directory, unless it is a batch and
    `force` says to replace it."""
    try:
        for parent in target.parents:  # nearest first: the directory it would be created in
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"{target}: {parent} is not a directory; choose another --out")
                break
        if not target.exists():
            return
        if target.is_dir() and not any(target.iterdir()):
            return
        batch = target.is_dir() and is_batch(target)
    except OSError as exc:
        raise UserError(f"{target}: cannot inspect ({exc.strerror or exc})") from None
    if not batch:
        why = ""
        if target.is_dir() and (target / "manifest.json").exists():
            why = f" (its manifest.json is not a {MANIFEST_FORMAT} manifest)"
        raise UserError(f"{target}: exists and is not a hitgen batch{why}; choose another --out")
    if not force:
        raise UserError(f"{target}: batch exists (use --force to replace it)")


@dataclass(frozen=True)
class Destination:
    """One batch about to be written: `label` names it in messages (e.g. "batches[1]")."""

    label: str
    batch: str
    target: Path


def check_distinct(destinations: Sequence[Destination], where: str) -> None:
    """Refuse batches of one run that would overwrite each other (the same directory, one
    inside the other) or share a name (item ids are `<batch>-<number>` and must stay unique)."""
    real = [(d, Path(os.path.realpath(d.target))) for d in destinations]
    for index, (one, one_dir) in enumerate(real):
        for other, other_dir in real[:index]:
            pair = f"{where}{other.label} and {one.label}"
            if one_dir == other_dir:
                raise UserError(
                    f"{pair} would both be written to {one.target}; give each its own out or batch"
                )
            if one_dir in other_dir.parents or other_dir in one_dir.parents:
                raise UserError(
                    f"{pair} would be written one inside the other ({other.target}, "
                    f"{one.target}); give each its own out"
                )
            if one.batch == other.batch:
                raise UserError(
                    f"{pair} are both named {one.batch!r}, so their item ids would clash; "
                    f"give each its own batch name"
                )


def _staging(target: Path) -> Path:
    return target.parent / f".{target.name}.hitgen-tmp"


def prepare_staging(target: Path, force: bool) -> Path:
    """Check `target` again (it may have changed since planning) and create the hidden
    directory the batch is written into."""
    check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging(target)
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    (staging / "pages").mkdir()
    return staging


def discard_staging(target: Path) -> None:
    shutil.rmtree(_staging(target), ignore_errors=True)


def move_into_place(staging: Path, target: Path) -> None:
    """Replace `target` by `staging`; if that fails, the old batch is put back."""
    old = target.parent / f".{target.name}.hitgen-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        if old.exists():
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
