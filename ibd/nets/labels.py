"""Class names from a labels file.

Two formats: Places365's `categories_places365.txt` (`/a/airfield 0`: a path-like name and its
index) and plain text with one name per line. Blank lines are ignored.
"""

from __future__ import annotations

from pathlib import Path

from ibd.errors import UserError


def _places_name(raw: str) -> str:
    # "/a/apartment_building/outdoor" -> "apartment_building/outdoor"
    parts = raw.strip("/").split("/", 1)
    return parts[1] if len(parts) == 2 and len(parts[0]) == 1 else raw


def read_labels(path: str | Path) -> list[str]:
    """Class names in index order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labels file not found: {path}")
    try:
        # utf-8-sig: a byte-order mark (Windows editors) is not part of the first name
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise UserError(f"labels file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read labels file {path}: {exc.strerror or exc}") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise UserError(f"labels file {path} is empty")
    indexed = [ln.rsplit(None, 1) for ln in lines]
    if all(len(p) == 2 and p[1].isdigit() and p[0].startswith("/") for p in indexed):
        names: dict[int, str] = {}
        for lineno, (raw, idx) in enumerate(indexed, start=1):
            if int(idx) in names:
                raise UserError(f"{path}:{lineno}: index {idx} appears twice")
            names[int(idx)] = _places_name(raw)
        if sorted(names) != list(range(len(names))):
            raise UserError(f"{path}: indices are not 0..{len(names) - 1}")
        return [names[k] for k in range(len(names))]
    return lines
