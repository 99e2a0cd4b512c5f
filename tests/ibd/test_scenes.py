"""scenes.csv: the one writer and reader (ibd.data.scenes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibd.data import scenes
from ibd.errors import UserError

ROWS = [
    ("images/0.jpg", "train", 1, "street"),
    ("images/1.jpg", "explain", 0, "harbor"),
    ("images/2.jpg", "explain", 1, "street"),
]


def test_what_is_written_is_read_back(tmp_path: Path) -> None:
    scenes.write(tmp_path, ROWS)
    assert (tmp_path / "scenes.csv").read_text().splitlines()[0] == (
        "image,split,class_index,class_name"
    )
    table = scenes.read(tmp_path)
    assert [(s.image, s.split, s.class_index, s.class_name) for s in table] == ROWS
    assert [s.number for s in table] == [0, 1, 2]
    assert table[1].path == tmp_path / "images/1.jpg"
    assert scenes.class_names(table, tmp_path) == ["harbor", "street"]


def test_without_classes_only_image_and_split_are_needed(tmp_path: Path) -> None:
    (tmp_path / "scenes.csv").write_text("image,split\nimages/a.png,explain\n")
    (scene,) = scenes.read(tmp_path, classes=False)
    assert (scene.image, scene.split, scene.class_index, scene.class_name) == (
        "images/a.png",
        "explain",
        -1,
        "",
    )
    with pytest.raises(UserError, match=r"scenes.csv has no column\(s\) class_name"):
        scenes.read(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "is not a concept world: scenes.csv is missing"),
        ("image,split,class_index,class_name\na.png,train,x,harbor\n", "row 1: bad class_index"),
        ("image,split,class_index,class_name\na.png,train,1,street\n", r"not 0\.\.0"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path: Path, text: str | None, message: str) -> None:
    if text is not None:
        (tmp_path / "scenes.csv").write_text(text)
    with pytest.raises(UserError, match=message):
        scenes.class_names(scenes.read(tmp_path), tmp_path)
