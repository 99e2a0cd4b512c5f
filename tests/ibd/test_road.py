"""ROAD's noisy linear imputation on images small enough to solve by hand, its removal orders,
and the MoRF / LeRF scores on a model whose score is the image's mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ibd.evaluation import road


def test_one_removed_pixel_is_the_weighted_mean_of_its_neighbours() -> None:
    """Centre of a 3 x 3 image: direct neighbours 2, 4, 6, 8 (weight 1), diagonal ones 1, 3,
    7, 9 (weight 1/2): (20 + 10) / (4 + 2) = 5 in channel 0; channel 1 is twice channel 0."""
    values = np.arange(1.0, 10.0).reshape(3, 3)
    values[1, 1] = 100.0  # the value removed: must not leak
    image = np.stack([values, 2 * values])
    removed = np.zeros((3, 3), dtype=bool)
    removed[1, 1] = True
    out = road.impute(image, removed, noise=0.0)
    assert out[:, 1, 1] == pytest.approx([5.0, 10.0])
    kept = ~removed
    np.testing.assert_array_equal(out[:, kept], image[:, kept])


def test_a_corner_pixel_uses_the_neighbours_inside_the_image() -> None:
    """Top-left of [[x, 2], [4, 8]]: (2 + 4 + 8 / 2) / (1 + 1 + 1/2) = 10 / 2.5 = 4."""
    image = np.array([[[0.0, 2.0], [4.0, 8.0]]])
    removed = np.array([[True, False], [False, False]])
    assert road.impute(image, removed, noise=0.0)[0, 0, 0] == pytest.approx(4.0)


def test_removed_neighbours_are_solved_together() -> None:
    """A 1 x 4 row [3, x, y, 9]: 2x = 3 + y and 2y = x + 9, so x = 5, y = 7 (the straight line
    between the kept ends), not the mean of kept neighbours alone."""
    image = np.array([[[3.0, -1.0, -1.0, 9.0]]])
    removed = np.array([[False, True, True, False]])
    np.testing.assert_allclose(road.impute(image, removed, noise=0.0)[0, 0], [3, 5, 7, 9])


def test_a_constant_image_stays_constant_and_a_big_hole_is_filled() -> None:
    image = np.full((3, 12, 12), 0.25)
    removed = np.ones((12, 12), dtype=bool)
    removed[0, 0] = False  # 143 of 144 pixels removed
    np.testing.assert_allclose(road.impute(image, removed, noise=0.0), image)
    with pytest.raises(ValueError, match="every pixel"):
        road.impute(image, np.ones((12, 12), dtype=bool), noise=0.0)
    np.testing.assert_array_equal(road.impute(image, np.zeros((12, 12), dtype=bool)), image)


def test_noise_is_added_to_the_removed_pixels_only() -> None:
    rng_values = np.random.default_rng(5)
    image = rng_values.random((3, 20, 20))
    removed = np.zeros((20, 20), dtype=bool)
    removed[5:15, 5:15] = True
    plain = road.impute(image, removed, noise=0.0)
    noisy = road.impute(image, removed, noise=0.5, rng=np.random.default_rng(9))
    expected = np.random.default_rng(9).standard_normal((3, 100)) * 0.5
    np.testing.assert_allclose((noisy - plain)[:, removed], expected)
    np.testing.assert_array_equal(noisy[:, ~removed], image[:, ~removed])
    with pytest.raises(ValueError, match="random generator"):
        road.impute(image, removed, noise=0.5)


def test_removal_masks_in_both_orders() -> None:
    """Saliency 0..9 over 10 pixels: at 30 % MoRF removes 9, 8, 7 and LeRF 0, 1, 2; ties go
    by position (the earlier pixel counts as more salient)."""
    saliency = torch.arange(10.0).reshape(2, 5)
    morf = road.removal_masks(saliency, [30, 50], "morf")
    lerf = road.removal_masks(saliency, [30, 50], "lerf")
    assert morf.shape == (2, 2, 5) and morf.sum(axis=(1, 2)).tolist() == [3, 5]
    assert np.flatnonzero(morf[0]).tolist() == [7, 8, 9]
    assert np.flatnonzero(lerf[0]).tolist() == [0, 1, 2]
    ties = road.removal_masks(torch.zeros(1, 4), [50], "morf")
    assert np.flatnonzero(ties[0]).tolist() == [0, 1]
    assert np.flatnonzero(road.removal_masks(torch.zeros(1, 4), [50], "lerf")[0]).tolist() == [
        2,
        3,
    ]
    assert road.removal_counts(7, [10, 50, 99]).tolist() == [0, 3, 6]
    with pytest.raises(ValueError):
        road.removal_masks(saliency, [30], "random")
    with pytest.raises(ValueError):
        road.check_percentages([0, 50])


def mean_score(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image's mean value as the class score; top-1 while it is above 0.5."""
    score = images.mean(dim=(1, 2, 3))
    return score, score > 0.5


def test_road_scores_follow_the_map() -> None:
    """An image whose right half is 1 and left half 0. A map pointing at the right half: MoRF
    removes the ones first (their imputed values fall towards the zeros) and the score drops;
    LeRF removes the zeros first and the score rises. A map pointing left does the opposite."""
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 1.0
    right = torch.zeros(1, 8, 8)
    right[..., 4:] = 1.0
    right += torch.linspace(0, 0.1, 64).reshape(1, 8, 8)  # no ties
    targets = torch.zeros(1, dtype=torch.long)
    found = road.road_curves(
        mean_score, image, right, targets, [0], percentages=[25, 50], noise=0.0
    )
    assert found.percentages == (25, 50)
    assert found.morf.shape == (1, 2) and (found.morf < 0.5).all() and (found.lerf > 0.5).all()
    assert found.morf[0, 1] < found.morf[0, 0]  # more removed, lower
    # 50 % MoRF removes every 1: nothing is left to impute from but zeros
    assert found.morf[0, 1] == pytest.approx(0.0, abs=1e-9)
    assert found.lerf[0, 1] == pytest.approx(1.0, abs=1e-9)
    assert found.morf_top1.tolist() == [[0.0, 0.0]] and found.lerf_top1.tolist() == [[1.0, 1.0]]
    left = road.road_curves(
        mean_score, image, 1 - right, targets, [0], percentages=[25, 50], noise=0.0
    )
    np.testing.assert_allclose(left.morf, found.lerf)
    (scores,) = road.per_image(found)
    assert scores.morf == pytest.approx(found.morf.mean())
    assert scores.lerf_top1 == 1.0


def test_road_noise_is_seeded_per_image_not_per_batch() -> None:
    rng = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 6, 6, generator=rng)
    maps = torch.rand(3, 6, 6, generator=rng)
    targets = torch.zeros(3, dtype=torch.long)
    together = road.road_curves(mean_score, images, maps, targets, [4, 5, 6], seed=2)
    alone = road.road_curves(mean_score, images[1:2], maps[1:2], targets[:1], [5], seed=2)
    np.testing.assert_allclose(together.morf[1], alone.morf[0], rtol=1e-6)
    other = road.road_curves(mean_score, images[1:2], maps[1:2], targets[:1], [5], seed=3)
    assert not np.allclose(other.morf[0], alone.morf[0], rtol=0, atol=1e-9)
    mean = road.mean_curves([together, alone])
    np.testing.assert_allclose(mean.lerf, np.concatenate([together.lerf, alone.lerf]).mean(axis=0))
