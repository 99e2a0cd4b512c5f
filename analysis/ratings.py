"""Collected ratings, from the HIT server's tidy export (CSV) or its database's `ratings` view
(contracts.md section 8). Both carry the same columns; the analysis reads nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from analysis.errors import UserError

REQUIRED: tuple[str, ...] = ("batch", "item_id", "worker_id", "choice", "status", "simulated")
"""The columns of the export the analysis uses; the others are carried along untouched."""

STATUSES: tuple[str, ...] = ("accepted", "submitted", "approved", "rejected", "returned", "expired")
"""Every assignment status the HIT server's database allows (hitserver's models.STATUSES,
restated: the packages do not import each other). Rated assignments are `submitted`,
`approved` or `rejected` (contracts.md 8); the others are accepted so that a database the
server wrote is never refused."""
REJECTED = "rejected"

PLATFORM = "platform"
"""The export's platform column: the server keys a worker by (platform, worker_id)."""
WORKER = "worker"
"""The column the analysis adds: one label per worker, `worker_id` alone when that id occurs
on one platform only, else `platform:worker_id` (see `label_workers`)."""

QUERY = "SELECT * FROM ratings"


def _status(value: str) -> str:
    # MTurk spells its statuses capitalised ("Rejected"); the contract's are lower case.
    return value.strip().lower()


def _tidy(frame: pd.DataFrame, source: str, row_offset: int) -> pd.DataFrame:
    """Check columns and types; `row_offset` turns a 0-based row into the source's row number."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise UserError(f"{source}: missing column(s) {', '.join(missing)}")
    out = frame.copy()
    for col in ("batch", "item_id", "worker_id", "status"):
        if out[col].isna().any():
            row = int(out.index[out[col].isna()][0]) + row_offset
            raise UserError(f"{source}: row {row}: empty {col}")
        out[col] = out[col].astype(str)
    if PLATFORM in out.columns:
        # An empty platform is one platform of its own, not a wildcard.
        out[PLATFORM] = out[PLATFORM].fillna("").astype(str)
    choice = pd.to_numeric(out["choice"], errors="coerce")
    bad = choice.isna() | ~choice.isin([1, 2, 3, 4, 5])
    if bad.any():
        pos = int(bad.to_numpy().nonzero()[0][0])
        raise UserError(
            f"{source}: row {pos + row_offset}: choice {frame['choice'].iloc[pos]!r} is not 1..5"
        )
    out["choice"] = choice.astype(int)
    out["status"] = out["status"].map(_status)
    unknown = ~out["status"].isin(STATUSES)
    if unknown.any():
        pos = int(unknown.to_numpy().nonzero()[0][0])
        raise UserError(
            f"{source}: row {pos + row_offset}: status {frame['status'].iloc[pos]!r} is not one "
            f"of {', '.join(STATUSES)}"
        )
    flags = out["simulated"].map(
        lambda v: {"0": 0, "1": 1, "false": 0, "true": 1}.get(str(v).strip().lower())
    )
    if flags.isna().any():
        pos = int(flags.isna().to_numpy().nonzero()[0][0])
        raise UserError(
            f"{source}: row {pos + row_offset}: simulated "
            f"{frame['simulated'].iloc[pos]!r} is not 0 or 1"
        )
    out["simulated"] = flags.astype(int)
    return out.reset_index(drop=True)


def worker_key(ratings: pd.DataFrame) -> list[str]:
    """The columns that identify a worker: (platform, worker_id) as the server keys them, or
    worker_id alone for a file without a platform column."""
    return [PLATFORM, "worker_id"] if PLATFORM in ratings.columns else ["worker_id"]


def check_one_rating_per_item(ratings: pd.DataFrame, source: str) -> None:
    """A worker rates an item once; anything else is a broken export."""
    dup = ratings.duplicated([*worker_key(ratings), "item_id"], keep=False)
    if dup.any():
        first = ratings[dup].iloc[0]
        who = first[WORKER] if WORKER in ratings.columns else first["worker_id"]
        raise UserError(
            f"{source}: worker {who!r} rated item {first['item_id']!r} "
            f"{int(dup.sum())} times; a worker rates an item once"
        )


def label_workers(ratings: pd.DataFrame) -> pd.Series:
    """One readable label per worker (same index as `ratings`): the worker id, or
    `platform:worker_id` where the same id occurs on more than one platform."""
    ids = ratings["worker_id"]
    if PLATFORM not in ratings.columns:
        return ids.rename(WORKER)
    platforms = ratings[PLATFORM]
    shared = platforms.groupby(ids).transform("nunique") > 1
    qualified = platforms + ":" + ids
    labels = ids.where(~shared, qualified)
    # A plain id that happens to read like another worker's `platform:id` would merge two
    # people; then every worker is written out in full.
    if labels.nunique() != len(ratings[[PLATFORM, "worker_id"]].drop_duplicates()):
        labels = qualified
    return labels.rename(WORKER)


def read_csv(path: Path) -> pd.DataFrame:
    """Ratings from `hitserver export` / `GET /admin/export.csv`."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: cannot read as CSV: {exc}") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty file, not a ratings export") from None
    # `hitserver export` writes a text cell that a spreadsheet would run as a formula with a
    # leading "'" (docs/hitserver.md, Security model); undone here, so the CSV reads as the
    # database's `ratings` view does.
    frame = frame.apply(lambda column: column.map(_unneutralise, na_action="ignore"))
    # A CSV's first data line is line 2 (after the header).
    return _tidy(frame, str(path), row_offset=2)


# The first characters `hitserver.export.neutralise` escapes.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def _unneutralise(text: str) -> str:
    if text.startswith("'") and text[1:].startswith(_FORMULA_STARTS):
        return text[1:]
    return text


def read_database(url: str) -> pd.DataFrame:
    """Ratings from the `ratings` view of the HIT server's database (any SQLAlchemy URL)."""
    try:
        parsed = sa.make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise UserError(f"--db {url!r}: not a usable database URL: {exc}") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        engine = sa.create_engine(parsed)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UserError(f"--db {shown}: not a usable database URL: {exc}") from None
    except ImportError as exc:
        # SQLAlchemy knows the dialect, but its driver (MySQLdb, asyncpg, ...) is not installed.
        raise UserError(f"--db {shown}: database driver not installed: {exc}") from None
    database = parsed.database or ""
    # SQLite would silently create an empty file for a mistyped path.
    is_file_db = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if is_file_db and not Path(database).is_file():
        raise UserError(f"--db {shown}: no such SQLite file {database}")
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(QUERY))
            frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise UserError(f"--db {shown}: cannot read the ratings view: {reason}") from None
    except ImportError as exc:
        # Some dialects import part of their driver only when they first connect.
        raise UserError(f"--db {shown}: database driver not installed: {exc}") from None
    finally:
        engine.dispose()
    return _tidy(frame, f"{shown}, view ratings", row_offset=1)


@dataclass(frozen=True)
class Selection:
    """What was read and what was set aside, so reports can say so."""

    n_read: int
    n_simulated_dropped: int
    n_rejected_dropped: int
    n_simulated_kept: int


def drop_simulated(ratings: pd.DataFrame, include_simulated: bool) -> pd.DataFrame:
    """Drop simulated answers (flagged `simulated == 1`) unless asked to keep them."""
    if include_simulated:
        return ratings
    return ratings[ratings["simulated"] == 0].reset_index(drop=True)


def is_rejected(ratings: pd.DataFrame) -> pd.Series:
    """Answers whose assignment the requester rejected."""
    return ratings["status"] == REJECTED
