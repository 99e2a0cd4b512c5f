"""Counterfactual images of the concept world (`ibd.evaluation.counterfactual`): the top concept's
effect, the model's own ranking, and images drawn again without one concept."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ibd.data.broden import BrodenDataset
from ibd.data.images import to_tensor
from ibd.errors import UserError
from ibd.evaluation import counterfactual as cf
from ibd.nets.load import LoadedModel
from ibd.world.writer import WorldSettings, build, image_name

SMALL = WorldSettings(seed=5, images=24)


def test_top_effect_against_the_largest_and_chance() -> None:
    effects = {"water": 2.0, "boat": 5.0, "sky": -1.0}
    assert cf.top_effect(effects, "boat") == cf.TopEffect(5.0, 5.0, True, 1 / 3, 2.0)
    water = cf.top_effect(effects, "water")
    assert water == cf.TopEffect(2.0, 5.0, False, 1 / 3, 2.0) and water.share == 0.4
    # a concept the image does not show: taking it out changes nothing
    assert cf.top_effect(effects, "umbrella") == cf.TopEffect(0.0, 5.0, False, 1 / 3, 2.0)
    # colours cannot be taken out of a world image; nothing to measure without a label
    assert cf.top_effect(effects, "blue") is None
    assert cf.top_effect(effects, None) is None
    assert cf.top_effect({}, "boat") is None
    only_negative = cf.top_effect({"water": -1.0, "sky": -3.0}, "water")
    assert only_negative is not None and only_negative.hit and math.isnan(only_negative.share)


def test_rank_by_effect_means_over_the_class_images_absent_as_zero() -> None:
    ranked = cf.rank_by_effect(
        [
            ("harbor", {"water": 4.0, "boat": 2.0}),
            ("harbor", {"water": 2.0, "house": 6.0}),
            ("beach", {"sand": 1.0, "sky": -2.0}),
        ]
    )
    # house and water tie at 3.0 and keep name order; boat is absent from the second image
    assert ranked == {
        "harbor": [("house", 3.0), ("water", 3.0), ("boat", 1.0)],
        "beach": [("sand", 1.0), ("sky", -2.0)],
    }
    assert cf.shared_at(["house", "water", "boat"], ["boat", "sail", "house"], 3) == 2 / 3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cf") / "world"
    assert build(out, SMALL, workers=1, progress=False)
    return out


def _shown_in_masks(world: Path, index: int) -> set[str]:
    """Object and part concepts labelled in the stored segmentation of image `index`."""
    dataset = BrodenDataset(world, categories=["object", "part"], min_images=1)
    position = next(
        i for i in range(len(dataset)) if dataset.image_path(i).stem == image_name(index)
    )
    masks = dataset.load_mask(position)
    return {c.name for c in dataset.concepts if masks[c.index].any()}


def test_draw_takes_out_each_concept_the_image_shows(world: Path) -> None:
    settings = WorldSettings.of_world(world)
    for index in (0, 5):
        stored = world / "images" / f"{image_name(index)}.jpg"
        drawn = cf.draw(settings, index, stored, None)
        assert set(drawn.shown) == _shown_in_masks(world, index)
        assert np.array_equal(np.asarray(drawn.image), np.asarray(Image.open(stored)))
        original = np.asarray(drawn.image, dtype=np.int16)
        for name, photo in zip(drawn.shown, drawn.photos, strict=True):
            changed = np.abs(np.asarray(photo, dtype=np.int16) - original).max(axis=2) > 40
            assert changed.any(), name  # the concept is gone (or grey) somewhere
        grey = cf.draw(settings, index, stored, cf.GREY)
        assert grey.shown == drawn.shown
        assert any(
            not np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(grey.photos, drawn.photos, strict=True)
        )


def test_draw_refuses_an_image_the_world_did_not_draw(world: Path, tmp_path: Path) -> None:
    edited = tmp_path / "edited.jpg"
    shutil.copy(world / "images" / f"{image_name(1)}.jpg", edited)
    pixels = np.asarray(Image.open(edited)).copy()
    pixels[:10, :10] = 0
    Image.fromarray(pixels).save(edited, quality=SMALL.jpeg_quality)
    with pytest.raises(UserError, match="is not image 1 as world generator"):
        cf.draw(WorldSettings.of_world(world), 1, edited, None)
    with pytest.raises(UserError, match="is not image 2 as"):  # another image's file
        cf.draw(WorldSettings.of_world(world), 2, world / "images" / f"{image_name(1)}.jpg", None)


class ChannelMeans(nn.Module):
    """logit_k = mean of input channel k (three classes), through a linear layer so that the
    model has parameters (a device)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def test_effects_are_logit_drops(world: Path) -> None:
    settings = WorldSettings.of_world(world)
    drawn = cf.draw(settings, 3, world / "images" / f"{image_name(3)}.jpg", cf.GREY)
    model = ChannelMeans().train()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    loaded = LoadedModel(model, "means", "means", ["r", "g", "b"], "fc", (56, 56), mean, std)
    measured = cf.effects(loaded, drawn)
    assert model.training  # its own mode is restored

    def channel_means(image: Image.Image) -> np.ndarray:
        return to_tensor(image, (56, 56), mean, std).double().mean(dim=(1, 2)).numpy()

    np.testing.assert_allclose(measured.logits, channel_means(drawn.image), atol=1e-5)
    for name, photo in zip(drawn.shown, drawn.photos, strict=True):
        expected = channel_means(drawn.image) - channel_means(photo)
        np.testing.assert_allclose(measured.drops[name], expected, atol=1e-5)
        assert measured.on(1)[name] == pytest.approx(expected[1], abs=1e-5)
