"""Reading the `ratings` view of a real database: a SQLite file and PostgreSQL."""

from __future__ import annotations

import sys
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from analysis.errors import UserError
from analysis.ratings import read_csv, read_database

CREATE = """CREATE TABLE {table} (
    id INTEGER PRIMARY KEY, batch TEXT, item_id TEXT, worker_id TEXT, platform TEXT,
    assignment_id TEXT, platform_assignment_id TEXT, choice INTEGER, reason TEXT,
    accepted_at TEXT, submitted_at TEXT, duration_s DOUBLE PRECISION, status TEXT,
    simulated INTEGER, secret_token TEXT)"""
# The view has exactly the export's columns; the table has more (an id, a token).
VIEW = """CREATE VIEW {view} AS SELECT batch, item_id, worker_id, platform, assignment_id,
    platform_assignment_id, choice, reason, accepted_at, submitted_at, duration_s, status,
    simulated FROM {table}"""


def _fill(conn: sa.Connection, table: str, view: str, rows: list[dict]) -> None:
    conn.execute(sa.text(CREATE.format(table=table)))
    conn.execute(sa.text(VIEW.format(view=view, table=table)))
    for n, row in enumerate(rows):
        values = {**row, "id": n + 1, "secret_token": "x"}
        cols = ", ".join(values)
        conn.execute(
            sa.text(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(':' + c for c in values)})"),
            values,
        )


def _rows(make_row) -> list[dict]:
    return [
        make_row("b1", "i1", "A1B2C3", 1, 0),
        make_row("b1", "i2", "A1B2C3", 4, 1),
        make_row("b1", "i1", "0042", 3, 2, simulated=True),
    ]


def _same_as_export(frame: pd.DataFrame, rows: list[dict], tmp_path) -> None:
    export = tmp_path / "export.csv"
    pd.DataFrame(rows).to_csv(export, index=False)
    expected = read_csv(export)
    cols = ["batch", "item_id", "worker_id", "choice", "status", "simulated"]
    pd.testing.assert_frame_equal(frame[cols], expected[cols], check_dtype=False)
    # A numeric-looking worker id stays text ("0042", not 42).
    assert frame["worker_id"].tolist() == ["A1B2C3", "A1B2C3", "0042"]
    assert frame["choice"].tolist() == [1, 4, 3]
    assert frame["simulated"].tolist() == [0, 0, 1]


def test_sqlite_file(tmp_path, make_row) -> None:
    url = f"sqlite:///{tmp_path / 'hitserver.sqlite'}"
    rows = _rows(make_row)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _fill(conn, "answers", "ratings", rows)
    engine.dispose()
    _same_as_export(read_database(url), rows, tmp_path)


def test_database_without_the_view(tmp_path) -> None:
    path = tmp_path / "other.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    engine.dispose()
    with pytest.raises(UserError, match="cannot read the ratings view: no such table: ratings"):
        read_database(f"sqlite:///{path}")


def test_missing_sqlite_file_is_not_created(tmp_path) -> None:
    path = tmp_path / "typo.sqlite"
    with pytest.raises(UserError, match="no such SQLite file"):
        read_database(f"sqlite:///{path}")
    assert not path.exists()


def test_bad_url() -> None:
    with pytest.raises(UserError, match="not a usable database URL"):
        read_database("nosuchdialect://x/y")


@pytest.mark.postgres
def test_postgresql(postgres_url, tmp_path, make_row) -> None:
    schema = f"analysis_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url)
    rows = _rows(make_row)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        _fill(conn, f"{schema}.answers", f"{schema}.ratings", rows)
    try:
        # The analysis reads plain `ratings`; the search path points it at our schema.
        url = sa.make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        frame = read_database(url.render_as_string(hide_password=False))
        _same_as_export(frame, rows, tmp_path)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.mark.parametrize(
    ("url", "driver"),
    [("mysql://u:secret@h/db", "MySQLdb"), ("postgresql+asyncpg://u:secret@h/db", "asyncpg")],
)
def test_a_driver_that_is_not_installed_is_a_user_error(url, driver, monkeypatch) -> None:
    # None in sys.modules makes `import driver` fail as if it were not installed, whether or
    # not this machine has it.
    monkeypatch.setitem(sys.modules, driver, None)
    with pytest.raises(UserError, match=f"database driver not installed: .*{driver}") as exc:
        read_database(url)
    assert "secret" not in str(exc.value)
