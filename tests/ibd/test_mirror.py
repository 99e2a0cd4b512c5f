"""mirror(m)(x) == m(flip(x)) where it must hold exactly; the original is untouched."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ibd.mirror import mirror


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
    from ibd.models import load_model

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    assert load_model("resnet18", tmp_path / "r18.pth").name == "r18"
    twin = load_model("resnet18", tmp_path / "r18.pth", mirrored=True)
    assert twin.name == "r18_mirror" and twin.meta["mirrored"] is True
