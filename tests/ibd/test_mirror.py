"""mirror(m)(x) == m(flip(x)) where it must hold exactly; the original is untouched."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ibd.nets.mirror import _flattened_linear, mirror


def stride_one_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 5, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


def test_mirror_equals_flipped_input_on_a_stride_one_network() -> None:
    torch.manual_seed(0)
    model = stride_one_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = mirror(model)
    x = torch.randn(3, 3, 17, 23)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x.flip(-1)), rtol=0, atol=1e-5)
        assert (twin(x) - model(x)).abs().max() > 1e-3  # it really changed something
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"mirror modified the original's {key}"
    assert torch.equal(twin[0].weight, model[0].weight.flip(-1))


def test_mirror_of_a_real_architecture_flips_every_conv() -> None:
    model = torchvision.models.resnet18(num_classes=5)
    twin = mirror(model)
    convs = [
        (a, b)
        for a, b in zip(model.modules(), twin.modules(), strict=True)
        if isinstance(a, nn.Conv2d)
    ]
    assert len(convs) == 20
    assert all(torch.equal(b.weight, a.weight.flip(-1)) for a, b in convs)


def test_mirror_flag_names_the_model_apart(tmp_path) -> None:
    from ibd.nets.load import load_model

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    assert load_model("resnet18", tmp_path / "r18.pth").name == "r18"
    twin = load_model("resnet18", tmp_path / "r18.pth", mirrored=True)
    assert twin.name == "r18_mirror" and twin.meta["mirrored"] is True


class Flattening(nn.Module):
    """torchvision's AlexNet / VGG layout in miniature: features, `avgpool` to 3 x 3, then a
    `classifier` whose first linear layer reads the flattened map."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Linear(6 * 9, 8), nn.ReLU(), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_mirror_of_a_flattening_classifier_equals_flipped_input() -> None:
    """The mirror reverses the flattened classifier's columns along the width too, so
    mirror(m)(x) == m(flip(x)) still holds for stride-1 convolutions."""
    torch.manual_seed(4)
    model = Flattening().eval()
    twin = mirror(model)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x.flip(-1)), rtol=0, atol=1e-5)
        assert (twin(x) - model(x)).abs().max() > 1e-3
    first, flipped = model.classifier[0].weight, twin.classifier[0].weight
    assert torch.equal(flipped.view(8, 6, 3, 3), first.view(8, 6, 3, 3).flip(-1))
    assert torch.equal(twin.classifier[2].weight, model.classifier[2].weight)  # not spatial


def test_torchvision_alexnet_and_vgg_are_recognised_as_flattening() -> None:
    with torch.device("meta"):
        alexnet, vgg = torchvision.models.alexnet(), torchvision.models.vgg16()
    linear, channels, height, width = _flattened_linear(alexnet)
    assert linear is alexnet.classifier[1] and (channels, height, width) == (256, 6, 6)
    linear, channels, height, width = _flattened_linear(vgg)
    assert linear is vgg.classifier[0] and (channels, height, width) == (512, 7, 7)
    with torch.device("meta"):
        assert _flattened_linear(torchvision.models.resnet18()) is None  # pools to 1 x 1
