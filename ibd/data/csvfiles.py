"""Reading the CSV tables of a concept dataset (scenes.csv, category.csv, ...) with one-line
errors for a file that is unreadable or lacks a column the reader needs."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from ibd.errors import UserError


def read_rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of the CSV file at `path`, which must have `columns` (UserError otherwise)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            lacking = [c for c in columns if c not in (reader.fieldnames or [])]
            if lacking:
                raise UserError(f"{path} has no column(s) {', '.join(lacking)}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable CSV file (cannot read it: {exc})") from None
