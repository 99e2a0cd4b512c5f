"""`hitserver load`: store a batch, its items and their slots. Loading twice adds nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, insert, select, update

from hitserver.errors import UserError
from hitserver.manifest import Manifest, read_manifest
from hitserver.models import Batch, Item, ItemSlot, WorkerSlot


@dataclass(frozen=True)
class LoadResult:
    batch: str
    items: int
    added: bool
    assignments_per_item: int
    max_items_per_worker: int | None


def load_batch(
    engine: Engine,
    batch_dir: str | Path,
    *,
    assignments_per_item: int,
    max_items_per_worker: int | None = None,
) -> LoadResult:
    """Store the batch in one transaction (all of it or nothing).

    Re-loading the same manifest only updates where the batch lives on disk; a different
    manifest under a loaded name, a different N or cap, or an item id that another batch
    already uses is refused.
    """
    if assignments_per_item < 1:
        raise UserError("--assignments must be at least 1")
    if max_items_per_worker is not None and max_items_per_worker < 1:
        raise UserError("--max-per-worker must be at least 1")
    manifest = read_manifest(batch_dir)
    with engine.begin() as conn:
        result = _store(conn, manifest, assignments_per_item, max_items_per_worker)
        if result.added and conn.dialect.name == "postgresql":
            # Without statistics of the new rows the planner takes the tables for empty and
            # sorts every free slot on each claim (benchmarks/RESULTS.md) instead of walking the
            # free-slot index; autovacuum would only catch up minutes into the study.
            conn.exec_driver_sql("ANALYZE batches, items, item_slots, batch_worker_slots")
        return result


def _store(conn: Connection, manifest: Manifest, n: int, cap: int | None) -> LoadResult:
    existing = conn.execute(select(Batch).where(Batch.name == manifest.name)).mappings().first()
    if existing is not None:
        if existing["manifest_sha256"] != manifest.sha256:
            raise UserError(
                f"batch {manifest.name!r} is already loaded from a different manifest.json; "
                "give the new batch another name"
            )
        if existing["assignments_per_item"] != n or existing["max_items_per_worker"] != cap:
            raise UserError(
                f"batch {manifest.name!r} is loaded with --assignments "
                f"{existing['assignments_per_item']} and --max-per-worker "
                f"{existing['max_items_per_worker']}; a loaded batch keeps them"
            )
        if existing["path"] != str(manifest.directory):
            conn.execute(
                update(Batch).where(Batch.id == existing["id"]).values(path=str(manifest.directory))
            )
        return LoadResult(manifest.name, len(manifest.items), False, n, cap)

    keys = [item.key for item in manifest.items]
    clash = conn.execute(select(Item.key).where(Item.key.in_(keys)).limit(1)).scalar()
    if clash is not None:
        raise UserError(f"item id {clash!r} is already loaded from another batch")

    batch_id = conn.execute(
        insert(Batch).returning(Batch.id),
        {
            "name": manifest.name,
            "experiment": manifest.experiment,
            "path": str(manifest.directory),
            "manifest_sha256": manifest.sha256,
            "manifest": manifest.text,
            "item_count": len(manifest.items),
            "assignments_per_item": n,
            "max_items_per_worker": cap,
            "is_open": True,
            "loaded_at": datetime.now(UTC),
        },
    ).scalar_one()
    item_ids = (
        conn.execute(
            insert(Item).returning(Item.id, sort_by_parameter_order=True),
            [
                {
                    "batch_id": batch_id,
                    "key": item.key,
                    "position": position,
                    "kind": item.kind,
                    "page": item.page,
                    "image": item.image,
                    "class_name": item.class_name,
                    "robot_a": item.robot_a,
                    "expected_choices": (
                        None
                        if item.expected_choices is None
                        else json.dumps(list(item.expected_choices))
                    ),
                    "spec": json.dumps(item.spec, sort_keys=True),
                }
                for position, item in enumerate(manifest.items)
            ],
        )
        .scalars()
        .all()
    )
    slots = [{"item_id": i, "batch_id": batch_id, "slot": s} for i in item_ids for s in range(n)]
    conn.execute(insert(ItemSlot), slots)
    if cap is not None:
        conn.execute(insert(WorkerSlot), [{"batch_id": batch_id, "slot": s} for s in range(cap)])
    return LoadResult(manifest.name, len(manifest.items), True, n, cap)
