"""CSV exports: the tidy table (exactly the `ratings` view, docs/contracts.md 8) and an
MTurk-compatible table (the column names of MTurk's "Download results" CSV: one row per
assignment, HIT inputs as `Input.*`, answers as `Answer.*`)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TextIO

from sqlalchemy import Connection, select, text

from hitserver.errors import UserError
from hitserver.models import Batch, Item, MturkHit

TIDY_COLUMNS = (
    "batch",
    "item_id",
    "worker_id",
    "platform",
    "assignment_id",
    "platform_assignment_id",
    "choice",
    "reason",
    "accepted_at",
    "submitted_at",
    "duration_s",
    "status",
    "simulated",
    # Participant quality (hitserver.quality), after the contract's columns; empty when the
    # page sent no telemetry.
    "visible_s",
    "blur_count",
    "paste_count",
    "pasted_chars",
    "reason_chars",
)
WIDE_COLUMNS = (
    "HITId",
    "HITTypeId",
    "AssignmentId",
    "WorkerId",
    "AssignmentStatus",
    "AcceptTime",
    "SubmitTime",
    "WorkTimeInSeconds",
    "Input.batch",
    "Input.item_id",
    "Input.image",
    "Input.class_name",
    "Answer.choice",
    "Answer.reason",
)
FORMATS = ("tidy", "wide")


def tidy_rows(conn: Connection, batch: str | None = None) -> list[dict[str, object]]:
    """Every rating from the `ratings` view, ordered by batch, item, submission time."""
    query = "SELECT * FROM ratings"
    params: dict[str, str] = {}
    if batch is not None:
        query += " WHERE batch = :batch"
        params["batch"] = batch
    query += " ORDER BY batch, item_id, submitted_at, assignment_id"
    result = conn.execute(text(query), params)
    return [dict(row) for row in result.mappings()]


def _mturk_time(iso: str) -> str:
    """MTurk's results-file time format, in UTC."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.strftime("%a %b %d %H:%M:%S UTC %Y")


def wide_rows(conn: Connection, batch: str | None = None) -> Iterator[dict[str, object]]:
    items = {
        row.key: row
        for row in conn.execute(
            select(Item.key, Item.image, Item.class_name, Item.id, Batch.name).join(
                Batch, Batch.id == Item.batch_id
            )
        )
    }
    hits: dict[int, tuple[str, str]] = {}
    for hit in conn.execute(
        select(MturkHit.item_id, MturkHit.hit_id, MturkHit.hit_type_id).order_by(
            MturkHit.production
        )
    ):
        hits[hit.item_id] = (hit.hit_id, hit.hit_type_id)  # production wins over sandbox
    for row in tidy_rows(conn, batch):
        item = items[str(row["item_id"])]
        hit_id, hit_type = hits.get(item.id, ("", ""))
        yield {
            "HITId": hit_id,
            "HITTypeId": hit_type,
            "AssignmentId": row["platform_assignment_id"] or row["assignment_id"],
            "WorkerId": row["worker_id"],
            "AssignmentStatus": str(row["status"]).capitalize(),
            "AcceptTime": _mturk_time(str(row["accepted_at"])),
            "SubmitTime": _mturk_time(str(row["submitted_at"])),
            "WorkTimeInSeconds": round(float(str(row["duration_s"]))),
            "Input.batch": row["batch"],
            "Input.item_id": row["item_id"],
            "Input.image": item.image,
            "Input.class_name": item.class_name,
            "Answer.choice": row["choice"],
            "Answer.reason": row["reason"],
        }


# A cell starting with one of these is a formula to a spreadsheet: a reason "=HYPERLINK(...)"
# would run when a researcher opens the export. Such a cell is written with a leading "'"
# (which spreadsheets show as text); a cell that starts with "'" itself gets one more, so the
# change is undone exactly by `unneutralise` (analysis.ratings.read_csv does the same).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def neutralise(value: object) -> object:
    """A text cell a spreadsheet will not run as a formula; other values unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def unneutralise(text: str) -> str:
    """The cell as stored, from the cell as exported (the inverse of `neutralise`)."""
    if text.startswith("'") and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


def write_csv(rows: Iterable[dict[str, object]], columns: tuple[str, ...], out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow({key: neutralise(value) for key, value in row.items()})
        count += 1
    return count


def require_batch(conn: Connection, batch: str) -> None:
    """Raise UserError unless a batch of this name is loaded: a misspelt name would otherwise
    export a header and no ratings, as if nobody had answered yet."""
    if conn.execute(select(Batch.id).where(Batch.name == batch)).scalar() is None:
        raise UserError(f"no batch named {batch!r} is loaded")


def export(conn: Connection, out: TextIO, fmt: str = "tidy", batch: str | None = None) -> int:
    """Write the CSV; returns the number of ratings written. Raises UserError for an unknown
    `batch`."""
    if batch is not None:
        require_batch(conn, batch)
    if fmt == "tidy":
        return write_csv(tidy_rows(conn, batch), TIDY_COLUMNS, out)
    if fmt == "wide":
        return write_csv(wide_rows(conn, batch), WIDE_COLUMNS, out)
    raise ValueError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
