"""Group commit on SQLite: units queued together share one commit; a refused unit rolls back
alone; nobody is answered before the commit that holds their write."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from hitserver.commits import GroupCommitter
from hitserver.database import make_engine


def test_units_share_commits_and_fail_alone(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER UNIQUE)"))
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    committer = GroupCommitter(engine)
    results: dict[int, object] = {}
    lock = threading.Lock()
    first_running = threading.Event()

    def slow_first(conn) -> str:
        first_running.set()
        time.sleep(0.3)  # holds the writer: everyone else queues meanwhile
        conn.execute(text("INSERT INTO t VALUES (-1)"))
        return "first"

    def unit(i: int):
        def work(conn) -> int:
            conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": 1000 + i})
            # Unit 7 then breaks the unique constraint: its own first insert must go too.
            conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": 5 if i == 7 else i})
            return i

        return work

    def call(i: int) -> None:
        try:
            outcome: object = committer.run(unit(i))
        except IntegrityError as exc:
            outcome = exc
        with lock:
            results[i] = outcome

    starter = threading.Thread(target=lambda: results.setdefault(-1, committer.run(slow_first)))
    starter.start()
    assert first_running.wait(timeout=10)
    commits.clear()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in [starter, *threads]:
        thread.join(timeout=30)

    assert results[-1] == "first"
    assert isinstance(results[7], IntegrityError)
    assert {i: results[i] for i in range(20) if i != 7} == {i: i for i in range(20) if i != 7}
    with engine.connect() as conn:
        stored = set(conn.execute(text("SELECT x FROM t")).scalars())
    assert stored == {-1} | set(range(20)) - {7} | {1000 + i for i in range(20) if i != 7}
    # 21 units, but the 20 that queued behind the slow one went in one or two groups.
    assert 1 <= len(commits) <= 3
    engine.dispose()


def test_a_units_error_reaches_its_caller_and_the_writer_goes_on(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite'}")
    committer = GroupCommitter(engine)
    with pytest.raises(Exception, match="no such table"):
        committer.run(lambda conn: conn.execute(text("INSERT INTO missing VALUES (1)")))
    assert committer.run(lambda conn: conn.execute(text("SELECT 41 + 1")).scalar()) == 42
    engine.dispose()
