"""Numbers for the admin dashboard and for the Prolific completion code.

A catch trial is passed when the choice is in the item's `expected_choices` (contracts 7).
A worker's pass rate is passed / answered catch trials; "median time per item" is the median
of `duration_s` = submitted_at - accepted_at over the batch's answers. Rejected answers are
shown but not counted toward an item's N.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from hitserver.models import Assignment, Batch, Item, Response, Worker

COUNTED = ("submitted", "approved")


@dataclass(frozen=True)
class BatchSummary:
    id: int
    name: str
    experiment: str
    items: int
    assignments_per_item: int
    max_items_per_worker: int | None
    ratings: int
    complete_items: int
    open_assignments: int
    workers: int
    median_s: float | None

    @property
    def needed(self) -> int:
        return self.items * self.assignments_per_item


@dataclass(frozen=True)
class WorkerSummary:
    id: int
    platform: str
    key: str
    blocked: bool
    answered: int
    catch_passed: int
    catch_total: int
    median_s: float | None

    @property
    def pass_rate(self) -> float | None:
        return None if self.catch_total == 0 else self.catch_passed / self.catch_total


@dataclass(frozen=True)
class RecentAnswer:
    item_key: str
    worker_key: str
    platform: str
    choice: int
    reason: str
    status: str
    submitted_at: datetime | None


def passes(choice: int, expected_json: str | None) -> bool | None:
    """True/False for a catch item, None for an ordinary one."""
    if expected_json is None:
        return None
    return choice in json.loads(expected_json)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def batch_summaries(conn: Connection) -> list[BatchSummary]:
    batches = conn.execute(
        select(
            Batch.id,
            Batch.name,
            Batch.experiment,
            Batch.assignments_per_item,
            Batch.max_items_per_worker,
        ).order_by(Batch.id)
    ).all()
    items = dict(conn.execute(select(Item.batch_id, func.count()).group_by(Item.batch_id)).all())
    open_ = dict(
        conn.execute(
            select(Assignment.batch_id, func.count())
            .where(Assignment.status == "accepted")
            .group_by(Assignment.batch_id)
        ).all()
    )
    rows = conn.execute(
        select(Assignment.batch_id, Response.item_id, Response.worker_id, Response.duration_s)
        .join(Assignment, Assignment.id == Response.assignment_id)
        .where(Assignment.status.in_(COUNTED))
    ).all()
    per_item: Counter[int] = Counter()
    workers: defaultdict[int, set[int]] = defaultdict(set)
    durations: defaultdict[int, list[float]] = defaultdict(list)
    per_batch: Counter[int] = Counter()
    item_batch: dict[int, int] = {}
    for row in rows:
        per_item[row.item_id] += 1
        item_batch[row.item_id] = row.batch_id
        workers[row.batch_id].add(row.worker_id)
        durations[row.batch_id].append(row.duration_s)
        per_batch[row.batch_id] += 1
    summaries = []
    for batch in batches:
        complete = sum(
            1
            for item, count in per_item.items()
            if item_batch[item] == batch.id and count >= batch.assignments_per_item
        )
        summaries.append(
            BatchSummary(
                id=batch.id,
                name=batch.name,
                experiment=batch.experiment,
                items=items.get(batch.id, 0),
                assignments_per_item=batch.assignments_per_item,
                max_items_per_worker=batch.max_items_per_worker,
                ratings=per_batch[batch.id],
                complete_items=complete,
                open_assignments=open_.get(batch.id, 0),
                workers=len(workers[batch.id]),
                median_s=_median(durations[batch.id]),
            )
        )
    return summaries


def worker_summaries(conn: Connection, batch_id: int) -> list[WorkerSummary]:
    rows = conn.execute(
        select(
            Worker.id,
            Worker.platform,
            Worker.platform_worker_id,
            Worker.blocked,
            Response.choice,
            Response.duration_s,
            Item.expected_choices,
        )
        .join(Response, Response.worker_id == Worker.id)
        .join(Item, Item.id == Response.item_id)
        .where(Item.batch_id == batch_id)
        .order_by(Worker.platform, Worker.platform_worker_id)
    ).all()
    grouped: dict[int, list] = defaultdict(list)
    for row in rows:
        grouped[row.id].append(row)
    summaries = []
    for worker_rows in grouped.values():
        first = worker_rows[0]
        checks = [passes(r.choice, r.expected_choices) for r in worker_rows]
        catch = [c for c in checks if c is not None]
        summaries.append(
            WorkerSummary(
                id=first.id,
                platform=first.platform,
                key=first.platform_worker_id,
                blocked=first.blocked,
                answered=len(worker_rows),
                catch_passed=sum(catch),
                catch_total=len(catch),
                median_s=_median([r.duration_s for r in worker_rows]),
            )
        )
    return summaries


def catch_record(conn: Connection, worker_id: int) -> tuple[int, int, int]:
    """(answered, catch trials passed, catch trials answered) of a worker, over all batches."""
    rows = conn.execute(
        select(Response.choice, Item.expected_choices)
        .join(Item, Item.id == Response.item_id)
        .where(Response.worker_id == worker_id)
    ).all()
    catch = [c for c in (passes(r.choice, r.expected_choices) for r in rows) if c is not None]
    return len(rows), sum(catch), len(catch)


def recent_answers(conn: Connection, batch_id: int, limit: int = 50) -> list[RecentAnswer]:
    rows = conn.execute(
        select(
            Item.key,
            Worker.platform_worker_id,
            Worker.platform,
            Response.choice,
            Response.reason,
            Assignment.status,
            Assignment.submitted_at,
        )
        .join(Assignment, Assignment.id == Response.assignment_id)
        .join(Item, Item.id == Response.item_id)
        .join(Worker, Worker.id == Response.worker_id)
        .where(Item.batch_id == batch_id)
        .order_by(Response.id.desc())
        .limit(limit)
    ).all()
    return [RecentAnswer(*row) for row in rows]
