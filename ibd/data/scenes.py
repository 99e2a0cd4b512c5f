"""`scenes.csv`, a concept world's scene table (docs/contracts.md 3): one row per image, in the
order the world numbers its images, with the columns `image` (relative to the world directory),
`split` (train / val / test / explain), `class_index` and `class_name`. Its one writer and one
reader."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ibd.data.csvfiles import read_rows
from ibd.errors import UserError

NAME = "scenes.csv"
COLUMNS = ("image", "split", "class_index", "class_name")


@dataclass(frozen=True)
class Scene:
    """One row. `number` is its position in the table: the number the world draws the image by.
    Read without classes (`read(..., classes=False)`), class_index is -1 and class_name ""."""

    number: int
    image: str  # as listed, relative to the world directory ("" when the row names none)
    path: Path  # world / image
    split: str
    class_index: int
    class_name: str


def table_path(world: Path) -> Path:
    return Path(world) / NAME


def exists(world: Path) -> bool:
    return table_path(world).is_file()


def write(world: Path, rows: Iterable[Sequence[object]]) -> None:
    """Write (image, split, class index, class name) rows, in image-number order."""
    with table_path(world).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)


def read(world: Path, classes: bool = True) -> list[Scene]:
    """Every row of `world`'s scenes.csv; the class columns are read (and required) only with
    `classes`. One-line UserError for a missing file, a missing column or a class index that is
    not an integer."""
    path = table_path(world)
    if not path.is_file():
        raise UserError(
            f"{world} is not a concept world: {NAME} is missing (run `ibd world build`)"
        )
    needed = ["image", "split", *(("class_name", "class_index") if classes else ())]
    rows = read_rows(path, needed)
    return [_scene(Path(world), n, row, path, classes) for n, row in enumerate(rows)]


def _scene(world: Path, number: int, row: dict[str, str], path: Path, classes: bool) -> Scene:
    image = row["image"] or ""
    class_index, class_name = -1, ""
    if classes:
        class_name = row["class_name"] or ""
        try:
            class_index = int(row["class_index"])
        except (TypeError, ValueError):
            raise UserError(f"{path} row {number + 1}: bad class_index") from None
    return Scene(number, image, world / image, row["split"] or "", class_index, class_name)


def class_names(scenes: Sequence[Scene], world: Path) -> list[str]:
    """The class names in index order; the indices must be 0..K-1."""
    names = {s.class_index: s.class_name for s in scenes}
    if sorted(names) != list(range(len(names))):
        raise UserError(f"{table_path(world)}: class indices are not 0..{len(names) - 1}")
    return [names[k] for k in range(len(names))]
