"""`load`: a batch goes in once; a broken batch is refused with a message naming the problem."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from hitserver.database import make_engine, upgrade
from hitserver.errors import UserError
from hitserver.loading import load_batch


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def counts(engine: Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("batches", "items", "item_slots", "batch_worker_slots")
        )


def test_loading_twice_adds_nothing(engine: Engine, write_batch, tmp_path: Path) -> None:
    batch = write_batch(tmp_path, "tb", 3, catch={1: [1, 2]})
    first = load_batch(engine, batch, assignments_per_item=4, max_items_per_worker=2)
    assert (first.batch, first.items, first.added) == ("tb", 3, True)
    assert counts(engine) == (1, 3, 12, 2)
    second = load_batch(engine, batch, assignments_per_item=4, max_items_per_worker=2)
    assert second.added is False
    assert counts(engine) == (1, 3, 12, 2)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT key, kind, robot_a, expected_choices FROM items ORDER BY position")
        ).all()
    assert [tuple(r) for r in stored] == [
        ("tb-0001", "method-vs-method", "first", None),
        ("tb-0002", "catch", "second", "[1, 2]"),
        ("tb-0003", "method-vs-method", "first", None),
    ]


def test_a_moved_batch_is_found_at_its_new_place(engine: Engine, write_batch, tmp_path: Path):
    batch = write_batch(tmp_path / "old", "tb", 1)
    load_batch(engine, batch, assignments_per_item=1)
    moved = shutil.move(str(batch), str(tmp_path / "tb"))
    assert load_batch(engine, moved, assignments_per_item=1).added is False
    with engine.connect() as conn:
        assert conn.execute(text("SELECT path FROM batches")).scalar() == str(Path(moved))


def test_conflicting_loads_are_refused(engine: Engine, write_batch, tmp_path: Path) -> None:
    batch = write_batch(tmp_path, "tb", 2)
    load_batch(engine, batch, assignments_per_item=3)
    with pytest.raises(UserError, match="keeps them"):
        load_batch(engine, batch, assignments_per_item=5)
    changed = write_batch(tmp_path / "v2", "tb", 3)
    with pytest.raises(UserError, match="different manifest"):
        load_batch(engine, changed, assignments_per_item=3)
    # Same item ids under another batch name.
    clash = write_batch(tmp_path / "v3", "tb", 1)
    manifest = json.loads((clash / "manifest.json").read_text())
    manifest["batch"] = "other"
    (clash / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="'tb-0001' is already loaded"):
        load_batch(engine, clash, assignments_per_item=3)
    assert counts(engine) == (1, 2, 6, 0)


def _edit(batch: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((batch / "manifest.json").read_text())
    change(manifest)
    (batch / "manifest.json").write_text(json.dumps(manifest))


BROKEN: list[tuple[str, Callable[[Path], None]]] = [
    ("not found", lambda b: (b / "manifest.json").unlink()),
    ("not valid JSON", lambda b: (b / "manifest.json").write_text("{")),
    ("format must be", lambda b: _edit(b, lambda m: m.update(format="other-1"))),
    ("batch must be a name", lambda b: _edit(b, lambda m: m.update(batch="../x"))),
    ("experiment must be", lambda b: _edit(b, lambda m: m.update(experiment="x"))),
    ("items must be a non-empty list", lambda b: _edit(b, lambda m: m.update(items=[]))),
    (
        "items\\[1\\].id 'tb-0001' appears twice",
        lambda b: _edit(b, lambda m: m["items"][1].update(id="tb-0001")),
    ),
    ("items\\[0\\].robot_a", lambda b: _edit(b, lambda m: m["items"][0].update(robot_a="left"))),
    (
        "items\\[0\\].image 'images/none.png' does not exist",
        lambda b: _edit(b, lambda m: m["items"][0].update(image="images/none.png")),
    ),
    (
        "points outside the batch directory",
        lambda b: _edit(b, lambda m: m["items"][0].update(page="../../etc/passwd")),
    ),
    (
        "must be pages/<name>.html",
        lambda b: _edit(b, lambda m: m["items"][0].update(page="index.html")),
    ),
    ("exactly once", lambda b: (b / "pages" / "tb-0002.html").write_text("<html></html>")),
    (
        "needs catch.expected_choices",
        lambda b: _edit(b, lambda m: m["items"][0].update(kind="catch", catch=None)),
    ),
    (
        "expected_choices must be a non-empty list of 1..5",
        lambda b: _edit(b, lambda m: m["items"][0].update(catch={"expected_choices": [0]})),
    ),
    (
        "mask 'images/gone.png' does not exist",
        lambda b: _edit(b, lambda m: m["items"][0]["first"].update(masks=["images/gone.png"])),
    ),
    # These three used to end `hitserver load` with a traceback.
    (
        r"'images/\\x00x\.png' contains a NUL character",  # the repr shows the NUL as \x00
        lambda b: _edit(b, lambda m: m["items"][0].update(image="images/\x00x.png")),
    ),
    (
        "image 'images/a{300}.png' does not exist",  # too long a name: ENAMETOOLONG
        lambda b: _edit(b, lambda m: m["items"][0].update(image=f"images/{'a' * 300}.png")),
    ),
    (
        "manifest.json: JSON nested too deeply to be a manifest",
        lambda b: (b / "manifest.json").write_text("[" * 100_000),
    ),
]


@pytest.mark.parametrize(("message", "breaks"), BROKEN, ids=[m for m, _ in BROKEN])
def test_broken_batches_are_refused_by_name(
    write_batch, tmp_path: Path, message: str, breaks: Callable[[Path], None]
) -> None:
    # The manifest is checked before the database is touched: SQLite suffices here.
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    batch = write_batch(tmp_path, "tb", 2)
    breaks(batch)
    with pytest.raises(UserError, match=message):
        load_batch(engine, batch, assignments_per_item=1)
    assert counts(engine) == (0, 0, 0, 0)
