"""Join ratings with their manifest items and undo the left/right placement.

After this step nothing downstream looks at which robot was on the left except the
position-bias check, which asks exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import likert, manifests
from analysis.errors import UserError
from analysis.ratings import WORKER


@dataclass(frozen=True)
class Scored:
    """Every rating of a known item, with its score `s` toward `first` (-2..+2) and, for catch
    items, whether the answer passed (`passed`)."""

    ratings: pd.DataFrame
    n_other_batches: int
    other_batches: tuple[str, ...]
    ignored_columns: tuple[str, ...] = ()
    """Columns of the answers that the manifest or the recoding provides (say `robot_a`), so
    the answers' copies were dropped before the join."""


KEYS: tuple[str, ...] = ("batch", "item_id")
"""What ties a rating to its manifest item (the batch is checked, the item id is joined on)."""
DERIVED: tuple[str, ...] = ("s", "is_catch", "passed", "batch_item")
"""Columns this module adds."""
RESERVED: tuple[str, ...] = (
    *(c for c in manifests.ITEM_COLUMNS if c not in KEYS),
    *DERIVED,
    WORKER,
)
"""Columns of an answers file that the analysis does not take from it: the manifest is the
only authority on what an item showed and where, whatever an export carries alongside, and
the recoded columns and the worker label (`study`) are the analysis's own."""


def score_ratings(ratings: pd.DataFrame, items: pd.DataFrame) -> Scored:
    """Attach each rating's item and recode it.

    Ratings of batches that no given manifest describes are set aside (counted, named). A rating
    whose batch is known but whose item is not is an error: the manifest and the answers
    disagree (for instance, a batch rebuilt after answers were collected).
    """
    ignored = tuple(c for c in ratings.columns if c in RESERVED)
    known = set(items["batch"])
    ours = ratings["batch"].isin(known)
    other = tuple(sorted(set(ratings.loc[~ours, "batch"])))
    # Left in, an export's `robot_a` or `kind` would win the join and undo the placement with
    # the wrong side; the manifest must win for every field it has.
    mine = ratings.loc[ours].drop(columns=list(ignored))
    merged = mine.merge(
        items, on="item_id", how="left", suffixes=("", "_item"), validate="many_to_one"
    )
    unknown = merged["kind"].isna()
    if unknown.any():
        row = merged[unknown].iloc[0]
        raise UserError(
            f"rating of item {row['item_id']!r} (batch {row['batch']!r}): no such item in the "
            f"manifest of batch {row['batch']!r}; was the batch rebuilt after answers came in?"
        )
    wrong_batch = merged["batch"] != merged["batch_item"]
    if wrong_batch.any():
        row = merged[wrong_batch].iloc[0]
        raise UserError(
            f"rating of item {row['item_id']!r} says batch {row['batch']!r}, "
            f"but the manifests put it in batch {row['batch_item']!r}"
        )
    merged = merged.drop(columns=["batch_item"])
    merged["s"] = likert.score(merged["choice"], merged["robot_a"])
    merged["is_catch"] = merged["kind"] == "catch"
    passed = [
        (c in exp) if is_catch else np.nan
        for c, exp, is_catch in zip(
            merged["choice"], merged["expected_choices"], merged["is_catch"], strict=True
        )
    ]
    merged["passed"] = pd.Series(passed, index=merged.index, dtype=object)
    return Scored(
        ratings=merged,
        n_other_batches=int((~ours).sum()),
        other_batches=other,
        ignored_columns=ignored,
    )
