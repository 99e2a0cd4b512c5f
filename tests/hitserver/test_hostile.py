"""A bounded hostile-traffic run against a real `hitserver run` (gunicorn, 2 workers x 8
threads) behind a pretend proxy (`HITSERVER_PROXIES=1`, each client its own address): honest
workers answer a batch while a hoarder invents worker ids and never answers, a fuzzer sends
broken bodies, wrong tokens and odd paths, slow clients announce bodies they never send, and
the server is killed with SIGKILL mid-run and started again on the same database.

Afterwards: 0 acknowledged answers lost, 0 duplicate (worker, item), 0 items over-assigned, 0
answers with a status >= 500, and the honest workers finished the batch. On SQLite and
PostgreSQL; about 25 s each.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import text

from hitserver.database import make_engine, upgrade
from hitserver.loading import load_batch

pytestmark = pytest.mark.slow

ITEMS, N = 24, 3
HONEST = 10
RUN_S = 45.0  # the honest workers must finish well within this
ENV = {
    "HITSERVER_PROXIES": "1",
    "HITSERVER_ASSIGNMENT_TIMEOUT_S": "4",
    "HITSERVER_NEW_WORKERS_PER_HOUR": "12",
    "HITSERVER_CLAIMS_PER_MINUTE": "60",
    "HITSERVER_BODY_TIMEOUT_S": "1",
}
CUT_SHORT = (OSError, http.client.HTTPException)  # the kill, or a slow request's reset


@dataclass
class Run:
    """What every client saw, shared between the threads."""

    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    acks: dict[tuple[str, str], tuple[str, int, str]] = field(default_factory=dict)
    hoarded: set[str] = field(default_factory=set)

    def saw(self, who: str, status: int) -> None:
        with self.lock:
            self.statuses[(who, status)] += 1

    def request(
        self, who: str, address: str, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None, timeout: float = 15.0,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            send = {"X-Forwarded-For": address, "Content-Type": "application/json"}
            conn.request(method, path, body=body, headers={**send, **(headers or {})})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        self.saw(who, response.status)
        return response.status, raw, response


def answer_of(worker: str, item: str) -> tuple[int, str]:
    return 1 + sum(map(ord, worker + item)) % 5, f"{worker} on {item}: the regions match"


def honest(run: Run, index: int) -> None:
    """Claim, answer, repeat; after a 204 wait and ask again until the batch is complete
    (slots held by the hoarder come back when they expire)."""
    worker, address = f"honest-{index}", f"10.1.0.{index + 1}"
    rng = random.Random(index)
    while not run.stop.is_set():
        try:
            status, raw, response = run.request(
                "honest", address, "POST", "/api/assignments",
                json.dumps({"worker_id": worker}).encode(),
            )  # fmt: skip
            if status in (204, 429):
                wait = 1.5 if status == 204 else min(2.0, float(response.getheader("Retry-After")))
                run.stop.wait(wait)
                continue
            assert status == 201, (status, raw)
            new = json.loads(raw)
            choice, reason = answer_of(worker, new["item_id"])
            body = json.dumps({"token": new["token"], "choice": choice, "reason": reason})
            url = f"/api/assignments/{new['assignment_id']}/response"
            time.sleep(rng.uniform(0.0, 0.2))  # reading the task
            for _ in range(50):  # the same answer again until the server says what became of it
                try:
                    status, raw, _ = run.request("honest", address, "POST", url, body.encode())
                    break
                except CUT_SHORT:
                    time.sleep(0.2)
            else:
                continue
            if status in (200, 201):
                with run.lock:
                    run.acks[(worker, new["item_id"])] = (new["assignment_id"], choice, reason)
            else:  # expired while the server was down: the slot goes to someone else
                assert status == 409, (status, raw)
        except CUT_SHORT:
            time.sleep(0.2)


def hoarder(run: Run) -> None:
    """Invents worker ids and claims with them, never answering; claims again with the ids
    that got something, hoping for more."""
    address, ids, rng = "10.66.0.1", 0, random.Random(66)
    while not run.stop.is_set():
        ids += 1
        for worker in [f"hoard-{ids}", f"hoard-{rng.randrange(1, ids + 1)}"]:
            try:
                status, raw, _ = run.request(
                    "hoarder", address, "POST", "/api/assignments",
                    json.dumps({"worker_id": worker, "platform": "simulated"}).encode(),
                )  # fmt: skip
            except CUT_SHORT:
                time.sleep(0.2)
                continue
            if status == 201:
                with run.lock:
                    run.hoarded.add(json.loads(raw)["assignment_id"])
        time.sleep(0.02)


def fuzzer(run: Run, seed: int) -> None:
    """Broken JSON, wrong types, wrong tokens for real assignments, oversized and chunked
    bodies, odd paths and methods; and a Prolific link per round."""
    rng = random.Random(seed)
    address = f"10.99.0.{seed}"
    while not run.stop.is_set():
        with run.lock:
            targets = sorted(run.hoarded) + [a for a, _, _ in run.acks.values()]
        target = rng.choice(targets) if targets else "a" + "0" * 24
        value = rng.choice(
            [None, True, 3.5, -1, 2**70, "", "x" * 3000, "\u202e\u200b", [1], {"a": {}}, "5"]
        )
        cases: list[tuple[str, str, bytes, dict[str, str]]] = [
            ("POST", "/api/assignments", rng.randbytes(rng.randrange(1, 300)), {}),
            ("POST", "/api/assignments", json.dumps({"worker_id": value}).encode(), {}),
            ("POST", "/api/assignments", b'{"worker_id": "' + b"y" * 70_000 + b'"}', {}),
            ("POST", f"/api/assignments/{target}/response",
             json.dumps({"token": "stolen", "choice": 3, "reason": "mine now"}).encode(), {}),
            ("POST", f"/api/assignments/{target}/response",
             json.dumps({"token": value, "choice": value, "reason": value}).encode(), {}),
            ("POST", f"/api/assignments/{target}/return", b'{"token": "x"}', {}),
            ("POST", "/api/assignments", b"5\r\nhello\r\nzz\r\n", {"Transfer-Encoding": "chunked"}),
            ("GET", rng.choice(["/b/lb/../manifest.json", "/b/lb/pages/%00.html", "/admin/",
                                "/work/a/" + target, "/mturk/items/lb-0001?turkSubmitTo=x",
                                "/b/lb/pages/lb-0001.html?turkSubmitTo=https://evil.example"]),
             b"", {}),
            ("GET", f"/prolific?PROLIFIC_PID=fz{rng.randrange(10**6)}&STUDY_ID=s&SESSION_ID=s",
             b"", {}),
            ("DELETE", "/api/assignments", b"", {}),
        ]  # fmt: skip
        method, path, body, headers = rng.choice(cases)
        with contextlib.suppress(*CUT_SHORT):
            run.request("fuzzer", address, method, path, body or None, headers, timeout=10)


def slow_clients(run: Run) -> None:
    """Keeps 8 connections that announce a body and send only part of it."""
    while not run.stop.is_set():
        socks = []
        for i in range(8):
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", run.port), timeout=5)
                sock.sendall(
                    b"POST /api/assignments HTTP/1.1\r\nHost: x\r\n"
                    + f"X-Forwarded-For: 10.77.0.{i}\r\n".encode()
                    + b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"
                )
                socks.append(sock)
        for sock in socks:
            with contextlib.suppress(OSError):
                head = sock.recv(64)
                if head.startswith(b"HTTP/1.1 "):
                    run.saw("slow", int(head.split(b" ", 2)[1]))
            sock.close()


def check(db_url: str, run: Run) -> dict[str, int]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT assignment_id, worker_id, item_id, choice, reason FROM ratings")
        ).all()
        holding = conn.execute(
            text(
                "SELECT item_id, count(*) FROM assignments"
                " WHERE status IN ('accepted', 'submitted', 'approved') GROUP BY item_id"
            )
        ).all()
        open_per_worker = conn.execute(
            text(
                "SELECT max(c) FROM (SELECT count(*) AS c FROM assignments"
                " WHERE status = 'accepted' GROUP BY worker_id) AS t"
            )
        ).scalar()
        hoarder_ids = conn.execute(
            text("SELECT count(*) FROM workers WHERE platform_worker_id LIKE 'hoard-%'")
        ).scalar()
    engine.dispose()
    stored = {(r.worker_id, r.item_id): (r.assignment_id, r.choice, r.reason) for r in rows}
    lost = [key for key, value in run.acks.items() if stored.get(key) != value]
    duplicates = len(rows) - len(stored)
    over = [item for item, count in holding if count > N]
    strangers = [key for key in stored if not key[0].startswith("honest-")]
    wrong = [key for key, (_, c, r) in stored.items() if (c, r) != answer_of(*key)]
    server_errors = {k: v for k, v in run.statuses.items() if k[1] >= 500}
    assert lost == [], f"acknowledged answers lost: {lost}"
    assert duplicates == 0
    assert over == []
    assert strangers == [] and wrong == []  # no stolen or altered answer
    assert server_errors == {}, server_errors
    assert len(stored) == ITEMS * N, "the honest workers did not finish the batch"
    assert open_per_worker is None or open_per_worker <= 1
    assert hoarder_ids <= 12  # HITSERVER_NEW_WORKERS_PER_HOUR for its address
    return {
        "answers": len(stored),
        "acked": len(run.acks),
        "hoarder_201": run.statuses[("hoarder", 201)],
        "hoarder_429": run.statuses[("hoarder", 429)],
        "hoarded_assignments": len(run.hoarded),
        "slow_408": run.statuses[("slow", 408)],
        "fuzz_requests": sum(v for (who, _), v in run.statuses.items() if who == "fuzzer"),
    }


def test_hostile_traffic_with_a_kill_loses_nothing_and_honest_workers_finish(
    db_url: str, write_batch, tmp_path: Path, live: ModuleType
) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    load_batch(engine, write_batch(tmp_path, "lb", ITEMS), assignments_per_item=N)
    engine.dispose()
    log = tmp_path / "server.log"
    started = time.monotonic()
    with live.running_server(db_url, log, env=ENV) as first:
        run = Run(first.port)
        threads = [threading.Thread(target=hoarder, args=(run,))]
        threads += [threading.Thread(target=fuzzer, args=(run, s)) for s in (1, 2)]
        threads += [threading.Thread(target=slow_clients, args=(run,))]
        threads += [threading.Thread(target=honest, args=(run, i)) for i in range(HONEST)]
        for thread in threads:
            thread.start()
        while len(run.acks) < ITEMS * N // 3 and time.monotonic() - started < RUN_S:
            time.sleep(0.02)
        first.kill_hard()  # mid-run: about a third of the answers in
        acked_at_kill = len(run.acks)
    with live.running_server(db_url, log, env=ENV) as second:
        run.port = second.port
        while time.monotonic() - started < RUN_S:
            engine = make_engine(db_url)
            with engine.connect() as conn:
                done = conn.execute(text("SELECT count(*) FROM ratings")).scalar()
            engine.dispose()
            if done >= ITEMS * N:
                break
            time.sleep(0.3)
        run.stop.set()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    assert 0 < acked_at_kill < ITEMS * N
    numbers = check(db_url, run)
    assert numbers["hoarder_429"] > 0 and numbers["slow_408"] > 0
    print(f"hostile run ({time.monotonic() - started:.1f} s): {numbers}")
