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

QUERY = "SELECT * FROM ratings"


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
    choice = pd.to_numeric(out["choice"], errors="coerce")
    bad = choice.isna() | ~choice.isin([1, 2, 3, 4, 5])
    if bad.any():
        pos = int(bad.to_numpy().nonzero()[0][0])
        raise UserError(
            f"{source}: row {pos + row_offset}: choice {frame['choice'].iloc[pos]!r} is not 1..5"
        )
    out["choice"] = choice.astype(int)
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
    dup = out.duplicated(["worker_id", "item_id"], keep=False)
    if dup.any():
        first = out[dup].iloc[0]
        raise UserError(
            f"{source}: worker {first['worker_id']!r} rated item {first['item_id']!r} "
            f"{int(dup.sum())} times; a worker rates an item once"
        )
    return out.reset_index(drop=True)


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
    # A CSV's first data line is line 2 (after the header).
    return _tidy(frame, str(path), row_offset=2)


def read_database(url: str) -> pd.DataFrame:
    """Ratings from the `ratings` view of the HIT server's database (any SQLAlchemy URL)."""
    try:
        parsed = sa.make_url(url)
        engine = sa.create_engine(parsed)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UserError(f"--db {url!r}: not a usable database URL: {exc}") from None
    shown = parsed.render_as_string(hide_password=True)
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
    finally:
        engine.dispose()
    return _tidy(frame, f"{shown}, view ratings", row_offset=1)


@dataclass(frozen=True)
class Selection:
    """The ratings kept for analysis and what was set aside, so reports can say so."""

    ratings: pd.DataFrame
    n_read: int
    n_simulated_dropped: int
    n_rejected_dropped: int
    n_simulated_kept: int


def select(ratings: pd.DataFrame, include_simulated: bool, include_rejected: bool) -> Selection:
    """Drop simulated answers (flagged `simulated == 1`) unless asked to keep them, and answers
    whose assignment the requester rejected unless asked to keep them."""
    keep = pd.Series(True, index=ratings.index)
    sim = ratings["simulated"] == 1
    rejected = ratings["status"] == "rejected"
    if not include_simulated:
        keep &= ~sim
    if not include_rejected:
        keep &= ~rejected
    kept = ratings[keep].reset_index(drop=True)
    # Rejected answers are counted as dropped only if the simulated filter had not dropped them.
    rejected_counted = rejected if include_simulated else rejected & ~sim
    return Selection(
        ratings=kept,
        n_read=len(ratings),
        n_simulated_dropped=0 if include_simulated else int(sim.sum()),
        n_rejected_dropped=0 if include_rejected else int(rejected_counted.sum()),
        n_simulated_kept=int((kept["simulated"] == 1).sum()),
    )
