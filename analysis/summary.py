"""The numbers per comparison, per worker, and for the position-bias check, as tables."""

from __future__ import annotations

from typing import Any

import pandas as pd
from tqdm import tqdm

from analysis import agreement, bootstrap, comparisons, likert, preference, wilcoxon
from analysis.holm import holm
from analysis.ratings import PLATFORM, WORKER
from analysis.study import SETTINGS, Study

SCORE_COLUMNS: dict[int, str] = {
    s: "n_" + name.replace(" ", "_") for s, name in likert.SCORE_NAMES.items()
}
CHOICE_COLUMNS: dict[int, str] = {c: f"n_choice_{c}" for c in likert.CHOICES}


def _comparison_row(
    comp: comparisons.Comparison,
    ratings: pd.DataFrame,
    seed: int,
    n_resamples: int,
    confidence: float,
) -> dict[str, Any]:
    counts = likert.score_counts(ratings["s"])
    pref = preference.preference(
        prefer_first=counts[2] + counts[1],
        prefer_second=counts[-1] + counts[-2],
        ties=counts[0],
        confidence=confidence,
    )
    interval = bootstrap.cluster_bootstrap(ratings, seed, n_resamples, confidence)
    wil = wilcoxon.wilcoxon_items(ratings)
    agree = agreement.ordinal_alpha(ratings)
    return {
        "figure": comp.figure,
        "comparison": comp.label,
        "experiment": comp.experiment,
        "first_model": comp.first_model,
        "first_method": comp.first_method,
        "second_model": comp.second_model,
        "second_method": comp.second_method,
        "n_ratings": len(ratings),
        "n_items": ratings["item_id"].nunique(),
        "n_workers": ratings[WORKER].nunique(),
        "n_simulated": int((ratings["simulated"] == 1).sum()),
        **{SCORE_COLUMNS[s]: counts[s] for s in likert.SCORES},
        "prefer_first": pref.prefer_first,
        "prefer_second": pref.prefer_second,
        "ties": pref.ties,
        "tie_rate": pref.tie_rate,
        "preference_rate": pref.rate,
        "preference_ci_low": pref.low,
        "preference_ci_high": pref.high,
        "sign_p": pref.p_value,
        "mean_score": interval.estimate,
        "mean_score_ci_low": interval.low,
        "mean_score_ci_high": interval.high,
        "bootstrap_method": interval.method,
        "wilcoxon_statistic": wil.statistic,
        "wilcoxon_p": wil.p_value,
        "wilcoxon_n_items": wil.n_items,
        "wilcoxon_zero_method": wilcoxon.ZERO_METHOD,
        "alpha_ordinal": agree.alpha,
        "alpha_n_items": agree.n_items,
        "confidence": confidence,
    }


def comparison_table(
    study: Study,
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per (setting, comparison), in display order; Holm-adjusted p-values are over
    the comparisons of one figure under one setting (`sign_p_holm`, `wilcoxon_p_holm`).
    Every comparison a manifest makes has its row, with N=0 (and undefined statistics) when
    no rating of it is left under a setting."""
    jobs = [
        (setting, comp, frame)
        for setting in SETTINGS
        for comp, frame in comparisons.split(study.subset(setting), study.comparisons)
    ]
    rows = []
    for setting, comp, frame in tqdm(jobs, desc="comparisons", unit="cmp", leave=False):
        rows.append(
            {"setting": setting, **_comparison_row(comp, frame, seed, n_resamples, confidence)}
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    for column in ("sign_p", "wilcoxon_p"):
        adjusted = table.groupby(["setting", "figure"], sort=False)[column].transform(
            lambda p: pd.Series(holm(list(p)), index=p.index)
        )
        table.insert(table.columns.get_loc(column) + 1, f"{column}_holm", adjusted)
    return table


def position_bias_table(study: Study, confidence: float = 0.95) -> pd.DataFrame:
    """Raw answers, Robot A (left) against Robot B (right), regardless of which explanation
    was where: per experiment and over all, per setting. With explanations placed at random, a
    share of A far from 1/2 is a bias toward a side, not toward a method."""
    rows = []
    for setting in SETTINGS:
        real = study.subset(setting)
        real = real[~real["is_catch"]]
        groups = [(e, g) for e, g in real.groupby("experiment", sort=True)]
        for name, frame in [*groups, ("all", real)]:
            counts = likert.choice_counts(frame["choice"])
            pref = preference.preference(
                prefer_first=counts[1] + counts[2],
                prefer_second=counts[4] + counts[5],
                ties=counts[3],
                confidence=confidence,
            )
            items = frame.drop_duplicates("item_id")
            rows.append(
                {
                    "setting": setting,
                    "experiment": name,
                    "n_ratings": len(frame),
                    **{CHOICE_COLUMNS[c]: counts[c] for c in likert.CHOICES},
                    "prefer_a": pref.prefer_first,
                    "prefer_b": pref.prefer_second,
                    "ties": pref.ties,
                    "share_a": pref.rate,
                    "share_a_ci_low": pref.low,
                    "share_a_ci_high": pref.high,
                    "sign_p": pref.p_value,
                    "n_items": len(items),
                    "n_items_first_left": int((items["robot_a"] == "first").sum()),
                    "confidence": confidence,
                }
            )
    return pd.DataFrame(rows)


def worker_table(study: Study) -> pd.DataFrame:
    """Per worker: how much they rated, how they used the scale, their catch results. Workers
    are identified by `worker_id` and, where the answers have it, `platform`."""
    real = study.ratings[~study.ratings["is_catch"]]
    by = real.groupby(WORKER)
    table = study.workers.copy()
    identity = [c for c in ("worker_id", PLATFORM) if c in table.columns]
    table.insert(len(identity), "n_ratings", by.size().reindex(table.index).fillna(0).astype(int))
    choices = pd.crosstab(real[WORKER], real["choice"]).reindex(
        index=table.index, columns=list(likert.CHOICES), fill_value=0
    )
    for c in likert.CHOICES:
        table[CHOICE_COLUMNS[c]] = choices[c].astype(int)
    table["mean_score"] = by["s"].mean().reindex(table.index)
    if "duration_s" in real.columns:
        durations = pd.to_numeric(real["duration_s"], errors="coerce")
        table["median_duration_s"] = durations.groupby(real[WORKER]).median()
    table["simulated"] = study.ratings.groupby(WORKER)["simulated"].max().reindex(table.index)
    # The label is `worker_id` or `platform:worker_id`, both already columns.
    return table.reset_index(drop=True)
