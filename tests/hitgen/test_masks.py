"""Heatmap -> top-20% highlight mask (paper 3.4), checked against torch and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hitgen.masks import (
    DIM,
    OUTLINE_RGB,
    TOP_FRACTION,
    dimmed,
    heatmap_mask,
    highlight,
    interpolation_matrix,
    top_fraction_mask,
    upsample,
)

RAMP = np.tile(np.arange(5, dtype=np.float32), (4, 1))


def test_interpolation_matrix_by_hand() -> None:
    # 2 -> 4, align_corners=False: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (past the end)
    expected = [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]]
    np.testing.assert_allclose(interpolation_matrix(2, 4), expected)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((7, 7), (224, 224)), ((4, 5), (32, 40)), ((3, 9), (17, 50)), ((1, 1), (3, 4))],
)
def test_upsample_equals_torch_bilinear(shape: tuple[int, int], size: tuple[int, int]) -> None:
    heatmap = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(heatmap)[None, None].double(),
        size=size,
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    np.testing.assert_allclose(upsample(heatmap, size), expected, atol=1e-12)


def ibd_region(values: np.ndarray) -> np.ndarray:
    """`ibd evaluate`'s pointing region (the tie rule hitgen mirrors; tests may import ibd)."""
    from ibd.evaluation.scoring import top_region

    return top_region(torch.from_numpy(values), TOP_FRACTION).numpy()


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 30), w=st.integers(1, 30), levels=st.integers(1, 6), seed=st.integers(0, 999)
)
def test_tied_values_join_or_stay_out_together(h: int, w: int, levels: int, seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, levels, (h, w)).astype(float)
    mask = top_fraction_mask(values)
    k = int(np.floor(TOP_FRACTION * h * w + 0.5))
    if values.min() == values.max() or k == 0:
        return  # constant maps: test_constant_map_keeps_the_documented_top_rows
    assert mask.any() and not mask[values == values.min()].any()
    assert values[mask].min() > values[~mask].max()  # an upper set: no tie group is split
    # of the two cuts around the k-th largest value, the one nearer k pixels (the larger on a
    # draw), unless the larger would take in the map's minimum
    t = np.sort(values.ravel())[::-1][k - 1]
    above, region = int((values > t).sum()), int((values >= t).sum())
    assert mask.sum() in (above, region)
    if t > values.min() and above > 0:
        assert mask.sum() == (above if k - above < region - k else region)
    # the same region as `ibd evaluate` wherever the two pixel counts agree
    if np.ceil(TOP_FRACTION * h * w) == k:
        np.testing.assert_array_equal(mask, ibd_region(values))


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # k = 2 of 10; threshold 4: "> 4" has 1 pixel, ">= 4" has exactly 2
        ([5, 4, 3, 3, 3, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        # threshold 3 tied three times: 1 pixel vs 3 pixels, equally far from 2: the ties join
        ([5, 3, 3, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),
        # tied four times: 1 pixel (1 from k) beats 4 pixels (2 from k): the ties stay out
        ([5, 3, 3, 3, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        # a sparse map, zero at the threshold: only its raised part, never a run of zeros
        ([0, 0, 0, 0, 0, 0, 0, 0, 0, 7], [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    ],
)
def test_ties_by_hand(row: list[int], expected: list[int]) -> None:
    values = np.array([row], dtype=float)
    assert top_fraction_mask(values).astype(int).tolist() == [expected]


def test_the_minimum_never_joins_a_non_constant_map() -> None:
    # top 80% of [2, 1, 0, 0, 0]: k = 4, threshold 0 = the minimum; ">= 0" (5 pixels) is nearer 4
    # than "> 0" (2 pixels), but the minimum marks where the map is not
    mask = top_fraction_mask(np.array([[2.0, 1.0, 0.0, 0.0, 0.0]]), fraction=0.8)
    assert mask.tolist() == [[True, True, False, False, False]]


def test_sparse_heatmap_mask_is_its_hot_corner_not_a_band() -> None:
    heatmap = np.zeros((7, 7), dtype=np.float32)
    heatmap[6, 6] = 1.0  # a ReLU'd map: one hot cell
    mask = heatmap_mask(heatmap, (224, 224))
    # cell 6 reaches output pixel i where (i + 0.5) * 7 / 224 - 0.5 > 5, i.e. i >= 176
    expected = np.zeros((224, 224), dtype=bool)
    expected[176:, 176:] = True
    np.testing.assert_array_equal(mask, expected)
    assert mask.mean() == pytest.approx(48 * 48 / 224**2)  # 4.6%, not 20%


def test_constant_map_keeps_the_documented_top_rows() -> None:
    mask = top_fraction_mask(np.zeros((2, 5)))  # k = 2, taken in raster order
    assert mask.tolist() == [[True, True, False, False, False], [False] * 5]


def test_ramp_mask_is_the_rightmost_fifth() -> None:
    mask = heatmap_mask(RAMP, (32, 40))
    expected = np.zeros((32, 40), dtype=bool)
    expected[:, 32:] = True
    assert (mask == expected).all()
    assert mask.mean() == pytest.approx(0.2)


def test_highlight_keeps_mask_outlines_it_and_dims_the_rest() -> None:
    photo = np.random.default_rng(1).integers(64, 256, (32, 40, 3), dtype=np.uint8)
    mask = heatmap_mask(RAMP, (32, 40))
    out = highlight(photo, mask)
    assert (out[mask] == photo[mask]).all()
    assert (out[:, 30:32] == OUTLINE_RGB).all()  # the two columns just left of the mask
    rest = out[:, :30]
    assert (rest[..., 0] == rest[..., 1]).all() and (rest[..., 1] == rest[..., 2]).all()
    luma = photo[:, :30] @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(rest[..., 0], luma * DIM, atol=1.0)
    np.testing.assert_array_equal(dimmed(photo)[:, :30], rest)
