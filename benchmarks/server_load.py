"""Load benchmark of the HIT server: simulated workers over HTTP against `hitserver run`
(gunicorn, gthread workers) on 127.0.0.1, with SQLite and with PostgreSQL.

Each simulated worker loops: POST /api/assignments, then POST .../response with an answer.
A "submission" is an answer acknowledged with 201. Two phases per database, 100 concurrent
workers each:

- saturation: no pause between tasks, until the batch is full (the server answers 204):
  the sustained submissions per second (target >= 300/s on 2 cores);
- paced: every worker starts a task every concurrency/300 seconds (300 submissions/s in all,
  the target rate) for a fixed time: p50/p99 latency of each request at that load (target
  p99 < 100 ms). With no pause at all, 100 closed-loop workers queue behind each other and
  latency is just 100 / throughput (Little's law), so it is measured at the target rate.

Both phases end with the checks: lost (acknowledged answers missing from the database) and
duplicates (more than N ratings of an item, or a worker twice on an item) must be 0.

Side by side, the same client drives a trivial WSGI app under the same gunicorn settings
(two canned JSON answers per task, no database): the machine's HTTP ceiling in this run,
printed as a ratio. The client runs in separate processes (threads inside) so its own GIL
does not cap the server; client and server share the machine's cores.

    .venv/bin/python benchmarks/server_load.py     # SQLite, and PostgreSQL when
                                                   # HITSERVER_TEST_PG_URL (.services.env) is set
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import math
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent
TARGET_RATE = 300.0
TARGET_P99_MS = 100.0
CANNED = json.dumps({"assignment_id": "a" + "0" * 24, "item_id": "x", "token": "t" * 43}).encode()


def ceiling_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The trivial WSGI app of the ceiling run: reads the body, answers a canned 201."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)
    start_response(
        "201 CREATED",
        [("Content-Type", "application/json"), ("Content-Length", str(len(CANNED)))],
    )
    return [CANNED]


def _batch_writer() -> Any:
    """The tests' contract-conforming batch writer (a batch in the exact hitgen format)."""
    path = ROOT.parent / "tests" / "hitserver" / "batchfixture.py"
    spec = importlib.util.spec_from_file_location("batchfixture", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_batch


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JsonClient:
    """A keep-alive HTTP/1.1 client for JSON POSTs to 127.0.0.1, lean because it shares the
    cores with the server: `http.client` parses every response's headers with the `email`
    package, which made the client cost about a sixth of the CPU of a task."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buffer = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buffer = sock, b""
        return sock

    def _receive(self, sock: socket.socket) -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """(status, decoded JSON body or None)."""
        sock = self.sock or self._connect()
        data = json.dumps(body).encode()
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data)
        )
        while b"\r\n\r\n" not in self.buffer:
            self._receive(sock)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"transfer-encoding" in fields:
            raise ConnectionError("chunked responses are not expected from this server")
        length = int(fields.get(b"content-length", b"0"))
        while len(self.buffer) < length:
            self._receive(sock)
        raw, self.buffer = self.buffer[:length], self.buffer[length:]
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, (json.loads(raw) if raw else None)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _simulated_worker(
    port: int, name: str, batch: str, interval: float, until: float, limit: int
) -> dict[str, Any]:
    """One worker: claim + answer, every `interval` seconds (0: no pause), until `until`
    (monotonic), at most `limit` tasks, or until the server has nothing left (204)."""
    conn = JsonClient(port)
    acks: list[tuple[str, int, str]] = []
    claim_ms: list[float] = []
    answer_ms: list[float] = []
    errors = 0
    next_start = time.monotonic() + random.uniform(0, interval)
    try:
        for task in range(limit):
            if interval:
                time.sleep(max(0.0, next_start - time.monotonic()))
                next_start += interval
            if time.monotonic() > until:
                break
            start = time.perf_counter()
            status, new = conn.post("/api/assignments", {"worker_id": name, "batch": batch})
            claim_ms.append((time.perf_counter() - start) * 1000)
            if status == 204:
                break
            if status != 201:
                errors += 1
                continue
            choice = 1 + task % 5
            reason = f"{name}: reason {task}"
            body = {"token": new["token"], "choice": choice, "reason": reason}
            start = time.perf_counter()
            status, _ = conn.post(f"/api/assignments/{new['assignment_id']}/response", body)
            answer_ms.append((time.perf_counter() - start) * 1000)
            if status == 201:
                acks.append((new["assignment_id"], choice, reason))
            else:
                errors += 1
    finally:
        conn.close()
    return {"acks": acks, "claim_ms": claim_ms, "answer_ms": answer_ms, "errors": errors}


def _client_process(port: int, names: list[str], job: dict[str, Any], out: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    time.sleep(max(0.0, job["start_at"] - time.time()))
    until = time.monotonic() + job["seconds"]
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = list(
            pool.map(
                lambda n: _simulated_worker(
                    port, n, job["batch"], job["interval"], until, job["limit"]
                ),
                names,
            )
        )
    out.put(results)


def drive(
    port: int, args: argparse.Namespace, batch: str, interval: float, seconds: float, limit: int
) -> dict[str, Any]:
    """Run the simulated workers in `args.client_processes` processes; gather their results."""
    context = mp.get_context("fork")
    queue: Any = context.Queue()
    names = [f"{batch}-{i:03d}" for i in range(args.concurrency)]
    groups = [names[i :: args.client_processes] for i in range(args.client_processes)]
    job = {"start_at": time.time() + 1.0, "batch": batch, "interval": interval,
           "seconds": seconds, "limit": limit}  # fmt: skip
    procs = [
        context.Process(target=_client_process, args=(port, group, job, queue)) for group in groups
    ]
    for proc in procs:
        proc.start()
    results = [r for _ in procs for r in queue.get(timeout=seconds + 300)]
    for proc in procs:
        proc.join(timeout=30)
    elapsed = time.time() - job["start_at"]
    answer_ms = np.array([x for r in results for x in r["answer_ms"]] or [np.nan])
    claim_ms = np.array([x for r in results for x in r["claim_ms"]] or [np.nan])
    acks = {a for r in results for a in r["acks"]}
    return {
        "acks": acks,
        "seconds": elapsed,
        "rate": len(acks) / elapsed,
        "answer_p50": float(np.percentile(answer_ms, 50)),
        "answer_p99": float(np.percentile(answer_ms, 99)),
        "claim_p50": float(np.percentile(claim_ms, 50)),
        "claim_p99": float(np.percentile(claim_ms, 99)),
        "errors": sum(r["errors"] for r in results),
    }


@contextlib.contextmanager
def _serving(command: list[str], log: Path, env: dict[str, str]) -> Iterator[int]:
    port = _free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **env},
            start_new_session=True, cwd=ROOT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/health")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _check(db_url: str, acks: set[tuple[str, int, str]], batch: str, n: int) -> tuple[int, int]:
    """(lost, duplicates) of one phase's batch."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        stored = {
            tuple(r)
            for r in conn.execute(
                text("SELECT assignment_id, choice, reason FROM ratings WHERE batch = :b"),
                {"b": batch},
            )
        }
        over = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT item_id FROM ratings WHERE batch = :b "
                "GROUP BY item_id HAVING count(*) > :n OR count(DISTINCT worker_id) < count(*)) "
                "AS t"
            ),
            {"b": batch, "n": n},
        ).scalar_one()
    engine.dispose()
    return len(acks - stored), int(over)


def run_database(label: str, db_url: str, args: argparse.Namespace, workdir: Path) -> None:
    from hitserver.database import make_engine, upgrade
    from hitserver.loading import load_batch

    paced_total = math.ceil(TARGET_RATE * args.paced_seconds * 1.2)
    engine = make_engine(db_url)
    upgrade(engine)
    write = _batch_writer()
    load_batch(engine, write(workdir / label, "sat", args.items), assignments_per_item=args.n)
    load_batch(
        engine,
        write(workdir / label, "paced", math.ceil(paced_total / args.n)),
        assignments_per_item=args.n,
    )
    engine.dispose()
    command = [
        sys.executable, "-m", "hitserver.cli", "run", "--port", "{port}", "--db", db_url,
        "--workers", str(args.server_workers), "--threads", str(args.threads),
    ]  # fmt: skip
    env = {"HITSERVER_SECRET_KEY": uuid.uuid4().hex * 2, "HITSERVER_ADMIN_TOKEN": "t" * 40}
    with _serving(command, workdir / f"{label}.log", env) as port:
        saturation = drive(port, args, "sat", 0.0, args.max_seconds, 10**6)
        interval = args.concurrency / TARGET_RATE
        paced = drive(port, args, "paced", interval, args.paced_seconds, 10**6)
    lost_s, dup_s = _check(db_url, saturation["acks"], "sat", args.n)
    lost_p, dup_p = _check(db_url, paced["acks"], "paced", args.n)
    print(
        f"{label:<10} saturation: {len(saturation['acks'])} submissions in "
        f"{saturation['seconds']:.1f} s = {saturation['rate']:.0f}/s "
        f"({saturation['rate'] / TARGET_RATE:.2f}x the {TARGET_RATE:.0f}/s target; "
        f"{saturation['rate'] / CEILING['rate']:.2f}x the trivial-app ceiling); "
        f"lost {lost_s}, duplicates {dup_s}, errors {saturation['errors']}",
        flush=True,
    )
    print(
        f"{label:<10} paced at {TARGET_RATE:.0f}/s: achieved {paced['rate']:.0f}/s; answer p50 "
        f"{paced['answer_p50']:.1f} ms, p99 {paced['answer_p99']:.1f} ms "
        f"({TARGET_P99_MS / paced['answer_p99']:.2f}x the {TARGET_P99_MS:.0f} ms target); claim "
        f"p50 {paced['claim_p50']:.1f} ms, p99 {paced['claim_p99']:.1f} ms; lost {lost_p}, "
        f"duplicates {dup_p}, errors {paced['errors']}",
        flush=True,
    )


CEILING: dict[str, Any] = {}


def run_ceiling(args: argparse.Namespace, workdir: Path) -> None:
    command = [
        sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", str(args.server_workers),
        "--threads", str(args.threads), "-b", "127.0.0.1:{port}", "--no-control-socket",
        "server_load:ceiling_app",
    ]  # fmt: skip
    with _serving(command, workdir / "ceiling.log", {}) as port:
        limit = math.ceil(args.items * args.n / args.concurrency)
        CEILING.update(drive(port, args, "ceiling", 0.0, args.max_seconds, limit))
    print(
        f"{'ceiling':<10} trivial WSGI app, same gunicorn and client: {CEILING['rate']:.0f} "
        f"tasks/s (2 requests each); request p50 {CEILING['answer_p50']:.1f} ms",
        flush=True,
    )


@contextlib.contextmanager
def _pg_schema(base_url: str) -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _pg_url() -> str | None:
    if os.environ.get("HITSERVER_TEST_PG_URL"):
        return os.environ["HITSERVER_TEST_PG_URL"]
    env_file = ROOT.parent / ".services.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "HITSERVER_TEST_PG_URL" and value.strip():
                return value.strip()
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=100, help="simulated workers")
    parser.add_argument("--items", type=int, default=300, help="items of the saturation batch")
    parser.add_argument("--n", type=int, default=10, help="workers per item")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--server-workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn process")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(
        f"server_load: hitserver run (gunicorn {args.server_workers} x {args.threads} threads), "
        f"{args.concurrency} concurrent simulated workers, {os.cpu_count()} CPU cores shared by "
        f"client and server; load average before the run {load:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="server_load_") as tmp:
        workdir = Path(tmp)
        run_ceiling(args, workdir)
        if args.only in (None, "sqlite"):
            run_database("sqlite", f"sqlite:///{workdir / 'bench.sqlite'}", args, workdir)
        pg = _pg_url()
        if args.only in (None, "postgresql"):
            if pg is None:
                print("postgresql skipped: HITSERVER_TEST_PG_URL is not set")
            else:
                with _pg_schema(pg) as url:
                    run_database("postgresql", url, args, workdir)
    print(f"server_load: load average after the run {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
