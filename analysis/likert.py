"""The five-point answer scale and its recoding toward the explanation of interest.

Workers answer on the page's scale (contracts.md section 9):
1 = Robot A clearly more reasonable, 2 = A slightly, 3 = equally, 4 = B slightly, 5 = B clearly.
Which explanation is Robot A was randomised per item (manifest `robot_a`), so a raw choice means
nothing until the placement is undone. Toward `first` (IBD in Fig. 8, the reference model in
Fig. 9) the score is

    s = 3 - choice   if robot_a == "first"
    s = choice - 3   if robot_a == "second"

so s is in {-2, ..., +2} and s > 0 means `first` was judged more reasonable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CHOICES: tuple[int, ...] = (1, 2, 3, 4, 5)
SCORES: tuple[int, ...] = (2, 1, 0, -1, -2)
"""Scores from most to least favourable to `first`: the order the categories are listed in."""

SCORE_NAMES: dict[int, str] = {
    2: "clearly more",
    1: "slightly more",
    0: "equal",
    -1: "slightly less",
    -2: "clearly less",
}
"""How `first` was judged against `second`, by score."""

CHOICE_NAMES: dict[int, str] = {
    1: "A clearly",
    2: "A slightly",
    3: "equal",
    4: "B slightly",
    5: "B clearly",
}
"""The raw answer, by choice: which robot (left or right) was judged more reasonable."""

SIDES: tuple[str, str] = ("first", "second")


def score(choice: pd.Series, robot_a: pd.Series) -> pd.Series:
    """Recode raw choices (1..5) into scores toward `first` (-2..+2), undoing the placement.

    `robot_a` holds "first" or "second" per rating: which explanation was shown as Robot A.
    """
    c = choice.astype(int).to_numpy()
    a_is_first = (robot_a == "first").to_numpy()
    s = np.where(a_is_first, 3 - c, c - 3)
    return pd.Series(s, index=choice.index, name="s", dtype=int)


def score_counts(scores: pd.Series) -> dict[int, int]:
    """How many ratings fell in each of the five categories, keyed by score (+2 .. -2)."""
    counts = scores.value_counts()
    return {k: int(counts.get(k, 0)) for k in SCORES}


def choice_counts(choices: pd.Series) -> dict[int, int]:
    """How many raw answers fell on each of the five choices (1 .. 5)."""
    counts = choices.value_counts()
    return {k: int(counts.get(k, 0)) for k in CHOICES}
