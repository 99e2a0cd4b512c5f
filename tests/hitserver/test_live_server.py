"""Against a real `hitserver run` process (gunicorn, 2 workers x 8 threads) on 127.0.0.1:
50 simulated workers fill a batch; racing claims for the last slots; kill -9 mid-load loses no
acknowledged answer. On SQLite and PostgreSQL."""

from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text

from hitserver.database import make_engine, upgrade
from hitserver.loading import load_batch

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Ack:
    assignment_id: str
    worker: str
    item: str
    choice: int
    reason: str


class Load:
    """Simulated workers: claim, answer, repeat until nothing is left (bounded in count and
    time). Collects every answer the server acknowledged with 201."""

    def __init__(self, live: ModuleType, port: int, deadline_s: float) -> None:
        self.live = live
        self.port = port
        self.deadline = time.monotonic() + deadline_s
        self.acks: list[Ack] = []
        self.repeats = 0
        self.expired = 0
        self.lock = threading.Lock()

    def worker(self, name: str, *, tolerate_errors: bool = False, max_items: int = 100) -> None:
        client = self.live.Http(self.port)
        try:
            for _ in range(max_items):
                if time.monotonic() > self.deadline:
                    return
                status, new = client.request("POST", "/api/assignments", {"worker_id": name})
                if status == 204:
                    return
                if status == 503:
                    continue
                assert status == 201, (status, new)
                choice = 1 + sum(map(ord, name + new["item_id"])) % 5
                reason = f"{name} thinks so about {new['item_id']}"
                body = {"token": new["token"], "choice": choice, "reason": reason}
                url = f"/api/assignments/{new['assignment_id']}/response"
                status, stored = client.request("POST", url, body)
                if status == 409 and "expired" in stored["error"]:
                    with self.lock:
                        self.expired += 1
                    continue
                assert status == 201, (status, stored)
                with self.lock:
                    self.acks.append(
                        Ack(new["assignment_id"], name, new["item_id"], choice, reason)
                    )
                if choice == 3:  # some workers double-submit: the repeat must be a 200
                    again, same = client.request("POST", url, body)
                    assert (again, same) == (200, stored)
                    with self.lock:
                        self.repeats += 1
        except (OSError, http.client.HTTPException):  # a reply cut short by the kill
            if not tolerate_errors:
                raise
        finally:
            client.close()

    def run(self, names: list[str], **kwargs: Any) -> None:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = [pool.submit(self.worker, name, **kwargs) for name in names]
            for future in futures:
                future.result(timeout=180)


def ratings(db_url: str) -> list[Any]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT assignment_id, worker_id, item_id, choice, reason FROM ratings")
                )
            )
    finally:
        engine.dispose()


def prepare(db_url: str, write_batch, tmp_path: Path, items: int, n: int, name: str = "lb"):
    engine = make_engine(db_url)
    upgrade(engine)
    load_batch(engine, write_batch(tmp_path, name, items), assignments_per_item=n)
    engine.dispose()


def check_full(rows: list[Any], acks: list[Ack], items: int, n: int) -> None:
    per_item: dict[str, set[str]] = {}
    for row in rows:
        per_item.setdefault(row.item_id, set()).add(row.worker_id)
    assert len(per_item) == items
    wrong = {item: len(workers) for item, workers in per_item.items() if len(workers) != n}
    assert not wrong, f"items without exactly {n} distinct workers: {wrong}"
    assert len(rows) == items * n  # so nobody answered an item twice
    stored = {(r.assignment_id, r.worker_id, r.item_id, r.choice, r.reason) for r in rows}
    assert {(a.assignment_id, a.worker, a.item, a.choice, a.reason) for a in acks} == stored


def test_fifty_workers_fill_the_batch_exactly(db_url, write_batch, tmp_path: Path, live):
    items, n = 24, 5
    prepare(db_url, write_batch, tmp_path, items, n)
    with live.running_server(db_url, tmp_path / "server.log") as server:
        load = Load(live, server.port, deadline_s=90)
        load.run([f"sim{i:02d}" for i in range(50)])
        # The batch is full: nobody gets anything more.
        client = live.Http(server.port)
        assert client.request("POST", "/api/assignments", {"worker_id": "late"})[0] == 204
        client.close()
    assert len(load.acks) == items * n
    assert load.repeats > 0
    check_full(ratings(db_url), load.acks, items, n)


def test_racing_for_the_last_slots_of_an_item(db_url, write_batch, tmp_path: Path, live):
    prepare(db_url, write_batch, tmp_path, items=1, n=3, name="race")
    barrier = threading.Barrier(40)
    statuses: list[int] = []
    lock = threading.Lock()
    with live.running_server(db_url, tmp_path / "server.log") as server:

        def racer(index: int) -> None:
            client = live.Http(server.port)
            client.request("GET", "/api/health")  # connect before the start line
            barrier.wait(timeout=60)
            status, _ = client.request("POST", "/api/assignments", {"worker_id": f"r{index}"})
            client.close()
            with lock:
                statuses.append(status)

        with ThreadPoolExecutor(max_workers=40) as pool:
            for future in [pool.submit(racer, i) for i in range(40)]:
                future.result(timeout=120)
    assert sorted(statuses) == [201] * 3 + [204] * 37
    engine = make_engine(db_url)
    with engine.connect() as conn:
        held = conn.execute(
            text("SELECT count(*), count(DISTINCT worker_id) FROM assignments")
        ).one()
    engine.dispose()
    assert tuple(held) == (3, 3)


def test_kill_minus_nine_loses_no_acknowledged_answer(db_url, write_batch, tmp_path: Path, live):
    items, n = 30, 4
    prepare(db_url, write_batch, tmp_path, items, n)
    log = tmp_path / "server.log"
    # A short assignment timeout: what the crash leaves open expires soon after the restart.
    short = {"HITSERVER_ASSIGNMENT_TIMEOUT_S": "3"}
    with live.running_server(db_url, log, env=short) as server:
        before = Load(live, server.port, deadline_s=60)
        runner = threading.Thread(
            target=before.run, args=([f"c{i:02d}" for i in range(20)],),
            kwargs={"tolerate_errors": True},
        )  # fmt: skip
        runner.start()
        deadline = time.monotonic() + 60
        while len(before.acks) < 25 and time.monotonic() < deadline and runner.is_alive():
            time.sleep(0.01)
        server.kill_hard()
        runner.join(timeout=120)
    acked = len(before.acks)
    assert 25 <= acked < items * n, "the kill should land in the middle of the load"
    rows = ratings(db_url)
    stored = {(r.assignment_id, r.choice, r.reason) for r in rows}
    assert {(a.assignment_id, a.choice, a.reason) for a in before.acks} <= stored

    # Restart: assignments left open by the crash expire, their slots are reissued, and the
    # batch still ends with exactly N distinct workers per item.
    with live.running_server(db_url, log, env=short) as server:
        time.sleep(3.5)
        after = Load(live, server.port, deadline_s=90)
        after.run([f"d{i:02d}" for i in range(20)])
        # A worker whose answer came after the 3 s deadline (a stall on a loaded machine)
        # cannot take that item again, and the others may have left already, having seen
        # every slot held: that slot waits for a newcomer, as in a real study.
        for wave in range(5):
            if after.expired == 0:
                break
            after.expired = 0
            after.run([f"e{wave}{i}" for i in range(4)])
    rows = ratings(db_url)
    unacked = {(r.assignment_id, r.worker_id, r.item_id, r.choice, r.reason) for r in rows} - {
        (a.assignment_id, a.worker, a.item, a.choice, a.reason) for a in before.acks + after.acks
    }
    # Answers committed just before the kill whose 201 never reached the client are kept too.
    check_full(rows, before.acks + after.acks + [Ack(*u) for u in unacked], items, n)
