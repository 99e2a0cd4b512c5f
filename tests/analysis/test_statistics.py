"""Each statistic against a value worked out by hand, or by scipy called directly."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.agreement import ordinal_alpha
from analysis.bootstrap import cluster_bootstrap
from analysis.holm import holm
from analysis.preference import preference, sign_test, wilson_interval
from analysis.wilcoxon import wilcoxon_items


def _ratings(per_item: dict[str, list[int]]) -> pd.DataFrame:
    rows = [
        {"item_id": item, "worker": f"w{k}", "s": s}
        for item, scores in per_item.items()
        for k, s in enumerate(scores)
    ]
    return pd.DataFrame(rows)


def test_wilson_interval_by_hand_and_scipy() -> None:
    # k = 7, n = 10, z = 1.959964: centre = (7 + z^2/2) / (10 + z^2) = 0.644493,
    # half = z / (10 + z^2) * sqrt(7 * 3 / 10 + z^2 / 4) = 0.247716.
    low, high = wilson_interval(7, 10)
    assert (low, high) == pytest.approx((0.644493 - 0.247716, 0.644493 + 0.247716), abs=2e-6)
    ci = stats.binomtest(7, 10).proportion_ci(method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert wilson_interval(0, 10)[0] == 0.0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_sign_test_by_hand() -> None:
    # 9 of 10: P = 2 * (C(10,9) + C(10,10)) / 2^10 = 22 / 1024.
    assert sign_test(9, 10) == pytest.approx(22 / 1024, rel=1e-12)
    assert sign_test(5, 10) == pytest.approx(1.0)
    assert math.isnan(sign_test(0, 0))


def test_preference_reports_ties_beside_the_rate() -> None:
    pref = preference(prefer_first=6, prefer_second=2, ties=12, confidence=0.95)
    assert pref.rate == 0.75
    assert pref.tie_rate == 0.6
    assert pref.p_value == pytest.approx(stats.binomtest(6, 8).pvalue)


def test_holm_by_hand() -> None:
    # Sorted: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1): 0.02, 0.03, 0.06, max(0.04, 0.06).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.5, math.nan, 0.2])
    assert adjusted[0] == pytest.approx(0.5) and adjusted[2] == pytest.approx(0.4)
    assert math.isnan(adjusted[1])
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_wilcoxon_on_item_means_by_hand() -> None:
    # Item means 1, 2, -1, 0, 3. zsplit ranks |m|: 0 -> 1, 1 and -1 -> 2.5 each, 2 -> 4, 3 -> 5;
    # the zero's rank is split: r+ = 2.5 + 4 + 5 + 0.5 = 12, r- = 2.5 + 0.5 = 3, T = 3.
    # Normal approximation: mean n(n+1)/4 = 7.5, variance 5*6*11/24 - (2^3 - 2)/48 = 13.625.
    ratings = _ratings(
        {"a": [1, 1], "b": [2, 1, 2, 1, 2, 2, 2, 2], "c": [-2, 0], "d": [1, -1], "e": [3]}
    )
    ratings.loc[ratings["item_id"] == "b", "s"] = 2
    res = wilcoxon_items(ratings)
    expected_p = 2 * stats.norm.cdf((3 - 7.5) / math.sqrt(13.625))
    assert res.statistic == 3.0
    assert res.p_value == pytest.approx(expected_p, rel=1e-12)
    assert res.n_items == 5
    direct = stats.wilcoxon([1, 2, -1, 0, 3], zero_method="zsplit", method="approx")
    assert res.p_value == pytest.approx(direct.pvalue, rel=1e-12)


def test_wilcoxon_needs_two_items() -> None:
    assert math.isnan(wilcoxon_items(_ratings({"a": [1, 2, 2]})).p_value)


def test_cluster_bootstrap_with_one_rating_per_item_is_the_plain_bootstrap() -> None:
    scores = np.array([2, 1, 1, 0, 0, 0, -1, 2, 1, 0, 1, -2, 1, 2, 0, 1])
    ratings = _ratings({f"i{k:02d}": [int(s)] for k, s in enumerate(scores)})
    got = cluster_bootstrap(ratings, seed=3, n_resamples=999)
    plain = stats.bootstrap(
        (scores.astype(float),), np.mean, n_resamples=999, method="BCa",
        rng=np.random.default_rng(3),
    )  # fmt: skip
    assert got.method == "BCa"
    assert got.estimate == pytest.approx(scores.mean())
    assert (got.low, got.high) == pytest.approx(
        (plain.confidence_interval.low, plain.confidence_interval.high), rel=1e-12
    )


def test_cluster_bootstrap_is_seeded() -> None:
    ratings = _ratings({f"i{k}": [k % 3 - 1, (k * 7) % 5 - 2] for k in range(12)})
    a = cluster_bootstrap(ratings, seed=11, n_resamples=500)
    b = cluster_bootstrap(ratings, seed=11, n_resamples=500)
    c = cluster_bootstrap(ratings, seed=12, n_resamples=500)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_cluster_bootstrap_falls_back_to_percentile_when_bca_is_degenerate() -> None:
    # Every rating +1: every resample's mean is 1, BCa's correction is undefined.
    ratings = _ratings({f"i{k}": [1, 1] for k in range(6)})
    got = cluster_bootstrap(ratings, seed=0, n_resamples=200)
    assert got.method == "percentile"
    assert (got.estimate, got.low, got.high) == (1.0, 1.0, 1.0)


def test_clusters_widen_the_interval() -> None:
    # Same 100 scores, but as 10 items whose 10 ratings agree: far less information.
    values = [2, 1, 0, -1, 1, 0, 2, -2, 1, 0]
    clustered = _ratings({f"i{k}": [v] * 10 for k, v in enumerate(values)})
    separate = _ratings({f"i{k}": [values[k // 10]] for k in range(100)})
    wide = cluster_bootstrap(clustered, seed=0, n_resamples=500)
    narrow = cluster_bootstrap(separate, seed=0, n_resamples=500)
    assert wide.estimate == narrow.estimate == pytest.approx(0.4)
    assert (wide.high - wide.low) > 2.5 * (narrow.high - narrow.low)


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the worked example with
# 4 observers and 12 units; published ordinal alpha 0.815 (nominal 0.743).
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def test_ordinal_alpha_matches_krippendorffs_worked_example() -> None:
    rows = [
        {"worker": coder, "item_id": f"u{unit:02d}", "s": value - 3}
        for coder, values in KRIPPENDORFF_2011.items()
        for unit, value in enumerate(values)
        if value is not None
    ]
    got = ordinal_alpha(pd.DataFrame(rows))
    assert round(got.alpha, 3) == 0.815
    assert got.n_items == 11  # unit 12 has a single value and is not pairable


def test_ordinal_alpha_edge_cases() -> None:
    perfect = _ratings({"a": [2, 2], "b": [-1, -1], "c": [0, 0]})
    assert ordinal_alpha(perfect).alpha == pytest.approx(1.0)
    lonely = _ratings({"a": [2], "b": [1]})
    assert math.isnan(ordinal_alpha(lonely).alpha) and ordinal_alpha(lonely).n_items == 0
    constant = _ratings({"a": [1, 1], "b": [1, 1]})
    assert math.isnan(ordinal_alpha(constant).alpha)
