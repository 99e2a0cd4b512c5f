"""Exclusion rules beyond the catch trials, from the study config, and what each one removed.

A study config (`--config FILE`, `.toml` or `.json`; the same file `hitgen build --config`
reads) may hold a table `exclusion`:

    [exclusion]
    max_catch_fail = 0.5        # catch trials (analysis.catch): failed more than this fraction
    min_seconds = 8             # median time per task below this (server side, `duration_s`)
    max_pasted = 0.0            # more than this fraction of the reasons pasted
    max_near_identical = 0.25   # more than this fraction of the reasons near-identical to
                                # another worker's
    pasted_share = 0.5          # definition of a pasted reason (below)
    similarity = 0.8            # definition of near-identical (below)
    min_chars = 20

Every rule is worker-level: it removes every rating of the worker it catches. A rule whose
threshold is not set is not applied (only the catch-trial rule has a default, 0.5), and a rule
whose columns the answers lack (an export made before the server recorded them) is reported as
not applicable rather than guessed.

Definitions, the same as the HIT server dashboard's flags (hitserver.quality):

- *time per task*: `duration_s`, the server's time from claim to submit; a worker's median
  over all their ratings;
- *pasted reason*: `paste_count` > 0 and `pasted_chars` >= `pasted_share` x the reason's
  length; a worker's fraction is over their ratings that carry the page's telemetry (none:
  the rule does not apply to them);
- *near-identical reasons*: normalise both (NFKC, case-folded, every run of characters other
  than letters and digits one space); two reasons of two different workers are near-identical
  when both normalised texts have at least `min_chars` characters and the Jaccard similarity of
  their sets of character 4-grams is at least `similarity`. A worker's fraction is the share of
  their reasons near-identical to some other worker's.

A worker may be caught by several rules. The report gives, per rule, the workers it catches
and their ratings (`flagged`), and what it removes after the rules above it (`removed`, rules
in the order listed), so the removed counts add up to the total.
"""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from analysis.errors import UserError
from analysis.ratings import WORKER

SHINGLE = 4
CHUNK = 100_000  # candidate pairs compared at once (bounds the memory)
RULES: tuple[tuple[str, str], ...] = (
    ("catch", "catch trials"),
    ("time", "minimum time per task"),
    ("pasted", "pasted reasons"),
    ("near_identical", "near-identical reasons"),
)
"""(column suffix, name) of each rule, in the order they remove workers."""


@dataclass(frozen=True)
class Rules:
    """The thresholds of the rules beyond the catch trials (None: not applied)."""

    min_seconds: float | None = None
    max_pasted: float | None = None
    max_near_identical: float | None = None
    pasted_share: float = 0.5
    similarity: float = 0.8
    min_chars: int = 20

    def __post_init__(self) -> None:
        for name in ("max_pasted", "max_near_identical", "pasted_share", "similarity"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise UserError(f"exclusion.{name} {value}: must be between 0 and 1")
        if self.min_seconds is not None and self.min_seconds < 0:
            raise UserError(f"exclusion.min_seconds {self.min_seconds}: must be 0 or more")
        if self.similarity <= 0:
            raise UserError(f"exclusion.similarity {self.similarity}: must be above 0")
        if self.min_chars < 1:
            raise UserError(f"exclusion.min_chars {self.min_chars}: must be 1 or more")


NUMBER_KEYS = {f.name for f in fields(Rules)} | {"max_catch_fail"}


def read_config(path: Path) -> dict[str, float | int]:
    """The `exclusion` table of a study config (empty when it has none)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        elif path.suffix == ".json":
            data = json.loads(raw)
        else:
            raise UserError(f"{path}: a study config must be a .toml or .json file")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid {path.suffix[1:].upper()} ({exc})") from None
    table = data.get("exclusion", {}) if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise UserError(f"{path}: 'exclusion' must be a table")
    for key, value in table.items():
        if key not in NUMBER_KEYS:
            known = ", ".join(sorted(NUMBER_KEYS))
            raise UserError(f"{path}: exclusion.{key}: unknown setting (known: {known})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{path}: exclusion.{key}: must be a number, not {value!r}")
    if "min_chars" in table and not isinstance(table["min_chars"], int):
        raise UserError(f"{path}: exclusion.min_chars: must be an integer")
    return table


def rules_from(table: dict[str, Any]) -> Rules:
    return Rules(**{k: v for k, v in table.items() if k != "max_catch_fail"})


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
    similarity: float,
    min_chars: int,
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


def _numbers(ratings: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(ratings[column], errors="coerce")


def _pasted(ratings: pd.DataFrame, rules: Rules) -> pd.Series:
    """Per rating: True pasted, False not, NaN without telemetry."""
    count, chars = _numbers(ratings, "paste_count"), _numbers(ratings, "pasted_chars")
    length = ratings["reason"].fillna("").astype(str).str.len().clip(lower=1)
    pasted = (count > 0) & (chars >= rules.pasted_share * length)
    return pasted.astype(float).where(count.notna())


def measures(ratings: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """Per worker (index WORKER): `median_duration_s`, `pasted_fraction` (NaN without
    telemetry), `near_identical_fraction`; NaN columns where the answers lack the input."""
    workers = pd.Index(sorted(ratings[WORKER].unique()), name=WORKER)
    table = pd.DataFrame(index=workers)
    by = ratings[WORKER]
    has = ratings.columns
    table["median_duration_s"] = (
        _numbers(ratings, "duration_s").groupby(by).median() if "duration_s" in has else np.nan
    )
    table["pasted_fraction"] = (
        _pasted(ratings, rules).groupby(by).mean()
        if {"paste_count", "pasted_chars", "reason"} <= set(has)
        else np.nan
    )
    if "reason" in has:
        reasons = ratings["reason"].fillna("").astype(str).tolist()
        found = near_identical(reasons, by.tolist(), rules.similarity, rules.min_chars)
        hit = pd.Series([i in found for i in range(len(ratings))], index=ratings.index)
        table["near_identical_fraction"] = hit.astype(float).groupby(by).mean()
    else:
        table["near_identical_fraction"] = np.nan
    return table.reindex(workers)


def verdicts(table: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """Boolean columns `excluded_time`, `excluded_pasted`, `excluded_near_identical`."""
    eps = 1e-12
    out = pd.DataFrame(index=table.index)
    never = pd.Series(False, index=table.index)
    med = table["median_duration_s"]
    out["excluded_time"] = (
        never if rules.min_seconds is None else (med < rules.min_seconds - eps).fillna(False)
    )
    pasted = table["pasted_fraction"]
    out["excluded_pasted"] = (
        never if rules.max_pasted is None else (pasted > rules.max_pasted + eps).fillna(False)
    )
    shared = table["near_identical_fraction"]
    out["excluded_near_identical"] = (
        never
        if rules.max_near_identical is None
        else (shared > rules.max_near_identical + eps).fillna(False)
    )
    return out.astype(bool)


def applicable(ratings: pd.DataFrame) -> dict[str, str | None]:
    """Per rule suffix: None when it can be applied, else why not."""
    has = set(ratings.columns)

    def need(columns: set[str]) -> str | None:
        missing = sorted(columns - has)
        return None if not missing else f"the answers have no {', '.join(missing)} column"

    return {
        "catch": None,
        "time": need({"duration_s"}),
        "pasted": need({"paste_count", "pasted_chars", "reason"}),
        "near_identical": need({"reason"}),
    }


def definitions(rules: Rules, max_catch_fail: float) -> dict[str, str]:
    """Per rule suffix, the rule in words with its thresholds."""

    def pct(x: float) -> str:
        return f"{100 * x:g}%"

    off = "not applied (no threshold in the study config)"
    return {
        "catch": f"failed more than {pct(max_catch_fail)} of their catch trials",
        "time": off
        if rules.min_seconds is None
        else f"median time per task (claim to submit) below {rules.min_seconds:g} s",
        "pasted": off
        if rules.max_pasted is None
        else f"more than {pct(rules.max_pasted)} of their reasons pasted (paste events "
        f"making up at least {pct(rules.pasted_share)} of the reason)",
        "near_identical": off
        if rules.max_near_identical is None
        else f"more than {pct(rules.max_near_identical)} of their reasons near-identical to "
        f"another worker's (character 4-gram Jaccard >= {rules.similarity:g}, normalised "
        f"reasons of {rules.min_chars}+ characters)",
    }


def report(workers: pd.DataFrame, counted: pd.DataFrame) -> pd.DataFrame:
    """What each rule did: `rule`, `workers_flagged`, `ratings_flagged`, `workers_removed`,
    `ratings_removed`, then a row `any rule`. `workers` has the `excluded_<rule>` columns;
    ratings are the rows of `counted` (the analysed non-catch ratings)."""
    per_worker = counted.groupby(WORKER).size().reindex(workers.index).fillna(0).astype(int)
    taken = pd.Series(False, index=workers.index)
    rows = []
    for suffix, name in RULES:
        caught = workers[f"excluded_{suffix}"].astype(bool)
        new = caught & ~taken
        rows.append(
            {
                "rule": name,
                "workers_flagged": int(caught.sum()),
                "ratings_flagged": int(per_worker[caught].sum()),
                "workers_removed": int(new.sum()),
                "ratings_removed": int(per_worker[new].sum()),
            }
        )
        taken |= caught
    rows.append(
        {
            "rule": "any rule",
            "workers_flagged": int(taken.sum()),
            "ratings_flagged": int(per_worker[taken].sum()),
            "workers_removed": int(taken.sum()),
            "ratings_removed": int(per_worker[taken].sum()),
        }
    )
    return pd.DataFrame(rows)
