"""Participant quality: what the task page measured while a worker answered, and the admin
dashboard's per-worker flags.

The page (hitgen's page script) posts, beside the answer, an optional `telemetry` object:

- `visible_s` (number, 0 to 30 days): seconds the page was visible (not hidden) from load to
  submit;
- `blur_count` (integer): times the page lost the focus (another tab, window or application);
- `paste_count` (integer): paste events into the reason box;
- `pasted_chars` (integer): characters pasted into the reason box, all pastes together (only
  the number: the pasted text itself is never sent beyond what stays in the reason);
- `reason_chars` (integer): length of the reason as the page sent it.

Every key is optional and `null` counts as absent; an answer without telemetry (old pages, the
JSON API, MTurk) stores NULLs. The server's own measure, `duration_s` (claim to submit), is
stored with every answer anyway. A wrong type is a 400, a value out of range a 422, both naming
`telemetry.<key>`.

The dashboard's flags use fixed thresholds (below); `analysis` applies the study's exclusion
rules, with the same definitions, to decide what is left out.
"""

from __future__ import annotations

import json
import re
import statistics
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import sparse
from sqlalchemy import Connection, select, update

from hitserver.models import Item, Response
from hitserver.policy import Stored
from hitserver.validation import FieldError

MAX_VISIBLE_S = 30 * 24 * 3600.0  # an assignment lives at most 30 days (assignment_timeout_s)
MAX_COUNT = 1_000_000

# Dashboard flags (analysis' defaults where it has the same rule).
FAST_MEDIAN_S = 5.0
"""`fast`: the worker's median time per task (server side, claim to submit) is below this."""
PASTED_SHARE = 0.5
"""A reason is *pasted* when something was pasted into the box and the pasted characters make
up at least this share of the reason's length."""
SIMILARITY = 0.8
MIN_CHARS = 20
SHINGLE = 4
"""Two reasons are *near-identical* when both normalised texts (NFKC, case-folded, every run
of characters other than letters and digits one space) have at least MIN_CHARS characters and
the Jaccard similarity of their sets of character SHINGLE-grams is at least SIMILARITY."""
CHUNK = 100_000  # candidate pairs compared at once (bounds the memory)


@dataclass(frozen=True)
class Telemetry:
    visible_s: float | None = None
    blur_count: int | None = None
    paste_count: int | None = None
    pasted_chars: int | None = None
    reason_chars: int | None = None

    def values(self) -> dict[str, float | int | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


KEYS = tuple(f.name for f in fields(Telemetry))


def _seconds(key: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise FieldError(400, f"telemetry.{key}", "must be a number of seconds")
    # A plain comparison: NaN and infinities fail it, and an integer too large for a float
    # (math.isfinite would raise on it) compares fine.
    if not 0 <= raw <= MAX_VISIBLE_S:
        raise FieldError(422, f"telemetry.{key}", f"must be between 0 and {MAX_VISIBLE_S:g}")
    return float(raw)


def _count(key: str, raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise FieldError(400, f"telemetry.{key}", "must be an integer")
    if not 0 <= raw <= MAX_COUNT:
        raise FieldError(422, f"telemetry.{key}", f"must be between 0 and {MAX_COUNT}")
    return raw


def parse_telemetry(raw: Any) -> Telemetry | None:
    """The `telemetry` field of an answer: None when absent or null, else checked values."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise FieldError(400, "telemetry", "must be a JSON object")
    for key in raw:
        if key not in KEYS:
            name = str(key)[:64]
            raise FieldError(
                400, f"telemetry.{name}", f"unknown field (allowed: {', '.join(KEYS)})"
            )
    values: dict[str, Any] = {}
    for key in KEYS:
        value = raw.get(key)
        if value is not None:
            values[key] = _seconds(key, value) if key == "visible_s" else _count(key, value)
    return Telemetry(**values)


def store_telemetry(conn: Connection, stored: Stored, telemetry: Telemetry | None) -> Stored:
    """Record the telemetry of a newly stored answer, in the answer's own transaction. An
    identical repeat (a retry) keeps what the first post recorded."""
    if stored.created and telemetry is not None:
        conn.execute(
            update(Response)
            .where(Response.assignment_id == stored.assignment_id)
            .values(**telemetry.values())
        )
    return stored


def normalise(text: str) -> str:
    """A reason as the near-identity rule compares it."""
    return " ".join(re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).casefold()))


def _shingles(texts: list[str]) -> sparse.csr_matrix:
    """One row per text, one column per character 4-gram: 1 where the text has it."""
    vocabulary: dict[str, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for row, text in enumerate(texts):
        for gram in {text[k : k + SHINGLE] for k in range(len(text) - SHINGLE + 1)}:
            rows.append(row)
            cols.append(vocabulary.setdefault(gram, len(vocabulary)))
    ones = np.ones(len(rows), dtype=np.int32)
    return sparse.csr_matrix((ones, (rows, cols)), shape=(len(texts), len(vocabulary)))


def _prefixes(x: sparse.csr_matrix, threshold: float) -> sparse.csr_matrix:
    """Each row's |s| - ceil(t |s|) + 1 rarest 4-grams (ties by column): two sets whose
    Jaccard similarity reaches t share one of them (prefix filtering)."""
    sizes = np.diff(x.indptr)
    row_of = np.repeat(np.arange(x.shape[0]), sizes)
    frequency = np.asarray(x.sum(axis=0)).ravel()
    order = np.lexsort((x.indices, frequency[x.indices], row_of))
    rank = np.arange(len(order)) - np.repeat(x.indptr[:-1], sizes)
    keep = rank < (sizes - np.ceil(threshold * sizes).astype(int) + 1)[row_of]
    ones = np.ones(int(keep.sum()), dtype=np.int32)
    return sparse.csr_matrix((ones, (row_of[keep], x.indices[order[keep]])), shape=x.shape)


def near_identical(
    reasons: Sequence[str],
    owners: Sequence[object],
    similarity: float = SIMILARITY,
    min_chars: int = MIN_CHARS,
) -> set[int]:
    """Positions of the reasons that are near-identical to a reason of another owner
    (worker). Exact; only pairs that share a prefix 4-gram (`_prefixes`) are compared."""
    threshold = similarity - 1e-12
    texts = [normalise(r) for r in reasons]
    kept = [i for i, t in enumerate(texts) if len(t) >= min_chars]
    if not kept:
        return set()
    x = _shingles([texts[i] for i in kept])
    sizes = np.diff(x.indptr)
    prefixes = _prefixes(x, threshold)
    candidates = sparse.triu(prefixes @ prefixes.T, k=1).tocoo()
    found: set[int] = set()
    for start in range(0, candidates.nnz, CHUNK):
        a = candidates.row[start : start + CHUNK]
        b = candidates.col[start : start + CHUNK]
        shared = np.asarray(x[a].multiply(x[b]).sum(axis=1)).ravel()
        close = shared >= threshold * (sizes[a] + sizes[b] - shared)
        for i, j in zip(a[close], b[close], strict=True):
            if owners[kept[i]] != owners[kept[j]]:
                found.update((kept[i], kept[j]))
    return found


def is_pasted(paste_count: int | None, pasted_chars: int | None, reason: str) -> bool:
    """Whether most of a reason was pasted (PASTED_SHARE); False without telemetry."""
    if not paste_count or pasted_chars is None:
        return False
    return pasted_chars >= PASTED_SHARE * max(1, len(reason))


@dataclass(frozen=True)
class WorkerQuality:
    """One worker's quality numbers in one batch, for the dashboard."""

    median_s: float | None
    median_visible_s: float | None
    blur_count: int
    pasted_reasons: int
    shared_reasons: int
    catch_failed: bool
    answered: int

    @property
    def flags(self) -> list[str]:
        out = []
        if self.catch_failed:
            out.append("failed catch trials")
        if self.median_s is not None and self.median_s < FAST_MEDIAN_S:
            out.append("fast")
        if self.pasted_reasons:
            out.append(f"pasted {self.pasted_reasons}")
        if self.shared_reasons:
            out.append(f"near-identical reasons {self.shared_reasons}")
        return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def worker_quality(
    conn: Connection, batch_id: int, catch_fail_fraction: float
) -> dict[int, WorkerQuality]:
    """Per worker id with an answer in the batch: medians, counts and flags."""
    rows = conn.execute(
        select(
            Response.worker_id,
            Response.choice,
            Response.reason,
            Response.duration_s,
            Response.visible_s,
            Response.blur_count,
            Response.paste_count,
            Response.pasted_chars,
            Item.expected_choices,
        )
        .join(Item, Item.id == Response.item_id)
        .where(Item.batch_id == batch_id)
        .order_by(Response.id)
    ).all()
    shared = near_identical([r.reason for r in rows], [r.worker_id for r in rows])
    grouped: defaultdict[int, list[tuple[int, Any]]] = defaultdict(list)
    for position, row in enumerate(rows):
        grouped[row.worker_id].append((position, row))
    return {
        worker: _summarise(answers, shared, catch_fail_fraction)
        for worker, answers in grouped.items()
    }


def _summarise(
    answers: list[tuple[int, Any]], shared: set[int], catch_fail_fraction: float
) -> WorkerQuality:
    rows = [row for _, row in answers]
    catch = [r.choice in json.loads(r.expected_choices) for r in rows if r.expected_choices]
    failed = bool(catch) and catch.count(False) / len(catch) > catch_fail_fraction + 1e-12
    return WorkerQuality(
        median_s=_median([r.duration_s for r in rows]),
        median_visible_s=_median([r.visible_s for r in rows if r.visible_s is not None]),
        blur_count=sum(r.blur_count or 0 for r in rows),
        pasted_reasons=sum(is_pasted(r.paste_count, r.pasted_chars, r.reason) for r in rows),
        shared_reasons=sum(position in shared for position, _ in answers),
        catch_failed=failed,
        answered=len(rows),
    )
