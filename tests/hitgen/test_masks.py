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


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(1, 30), w=st.integers(1, 30), levels=st.integers(1, 6), seed=st.integers(0, 999)
)
def test_mask_covers_twenty_percent_even_with_ties(h: int, w: int, levels: int, seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, levels, (h, w)).astype(float)
    mask = top_fraction_mask(values)
    assert mask.sum() == int(np.floor(0.2 * h * w + 0.5))
    if mask.any() and not mask.all():
        assert values[mask].min() >= values[~mask].max()  # it is the top, not any 20%


def test_ties_are_taken_in_raster_order() -> None:
    mask = top_fraction_mask(np.zeros((2, 5)))  # k = 2
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
