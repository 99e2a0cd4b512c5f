"""Group commit for SQLite: many requests' writes, one transaction, one fsync.

SQLite has one writer at a time and, with `synchronous=FULL`, one fsync per commit, so
per-request transactions cap a study's answer rate at one answer per fsync however many threads
serve it (benchmarks/RESULTS.md, "Figures behind the code"). Here each process has one writer
thread: request threads queue their unit of work and wait; the writer runs whatever has queued
(up to `max_batch` units) in one transaction, each unit inside its own SAVEPOINT (a refused unit
rolls back alone), commits once, and only then wakes the requests. An answer is acknowledged
after the fsync that made it durable, exactly as before, but 50 answers share that fsync.

Between processes (gunicorn workers) the writers take turns through an exclusive `flock` on
a file beside the database: a waiting writer is woken the moment the lock is free, where
SQLite's own busy handler would poll with sleeps of up to 100 ms.

PostgreSQL needs none of this: concurrent commits already share WAL flushes there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from hitserver.database import Busy, in_transaction

T = TypeVar("T")
Work = Callable[[Connection], Any]
IDLE_EXIT_S = 5.0
WAIT_S = 60.0


class GroupCommitter:
    """Runs units of work for one engine on one writer thread, committing them in groups."""

    def __init__(self, engine: Engine, lock_path: str | None = None, max_batch: int = 64) -> None:
        self.engine = engine
        self.lock_path = lock_path
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Work, Future[Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, work: Callable[[Connection], T]) -> T:
        """Queue `work`, wait until its group is committed, return its result or raise."""
        future: Future[Any] = Future()
        self._queue.put((work, future))
        self._ensure_writer()
        try:
            return future.result(timeout=WAIT_S)
        except TimeoutError as exc:
            raise Busy("the database writer is overloaded; try again") from exc

    def _turn(self) -> contextlib.AbstractContextManager[None]:
        """This process's turn to write (other processes' writers wait on the file lock)."""
        return contextlib.nullcontext() if self.lock_path is None else _flock(self.lock_path)

    def _ensure_writer(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                # Started lazily so that a forked gunicorn worker gets its own writer.
                self._thread = threading.Thread(
                    target=self._loop, name="hitserver-writer", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            group = [first]
            while len(group) < self.max_batch:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit(group)

    def _commit(self, group: list[tuple[Work, Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []

        def all_units(conn: Connection) -> None:
            outcomes.clear()
            for work, future in group:
                savepoint = conn.begin_nested()
                try:
                    result = work(conn)
                except Exception as exc:  # the unit's own refusal: undo only its writes
                    savepoint.rollback()
                    outcomes.append((future, None, exc))
                else:
                    savepoint.commit()
                    outcomes.append((future, result, None))

        try:
            with self._turn():
                in_transaction(self.engine, all_units)
        except Exception as exc:  # nothing of the group was committed
            for _, future in group:
                future.set_exception(exc)
            return
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def writer_for(engine: Engine) -> Callable[[Callable[[Connection], T]], T]:
    """How the app runs a write: grouped on SQLite, one retried transaction on PostgreSQL."""
    if engine.dialect.name == "sqlite":
        return GroupCommitter(engine, f"{engine.url.database}-writer.lock").run
    return lambda work: in_transaction(engine, work)
