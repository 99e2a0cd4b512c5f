"""Loading weights: Places365 checkpoints, plain state dicts, pickles, and clear mismatches."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from ibd.errors import UserError
from ibd.nets import architectures, hooks
from ibd.nets.gapnets import head_parameters, load_trunk
from ibd.nets.labels import read_labels
from ibd.nets.load import final_linear, load_model, save_checkpoint


def places365_checkpoint(path: Path, model: torch.nn.Module, arch: str) -> Path:
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 90, "arch": arch, "state_dict": state, "best_prec1": 54.7}, path)
    return path


def test_places365_checkpoint_predicts_like_the_model_it_was_saved_from(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=365).eval()
    ckpt = places365_checkpoint(tmp_path / "resnet18_places365.pth.tar", original, "resnet18")
    loaded = load_model(None, ckpt)  # arch and class count come from the file
    assert (loaded.arch, loaded.layer, len(loaded.classes)) == ("resnet18", "layer4", 365)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), original(x), rtol=0, atol=0)


def test_plain_state_dict_and_project_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = torchvision.models.alexnet(num_classes=5).eval()
    torch.save(model.state_dict(), tmp_path / "alexnet.pth")
    loaded = load_model("alexnet", tmp_path / "alexnet.pth")
    assert (len(loaded.classes), loaded.layer, loaded.name) == (5, "features", "alexnet")
    save_checkpoint(
        tmp_path / "mine.pt",
        loaded.model,
        arch="alexnet",
        classes=list("abcde"),
        layer="features.10",
        input_size=(128, 96),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        seed=3,
        accuracy={"test": 0.5},
    )
    again = load_model(None, tmp_path / "mine.pt")
    assert again.classes == list("abcde") and again.layer == "features.10"
    assert again.input_size == (128, 96) and again.mean == (0.5, 0.5, 0.5)
    assert again.meta["seed"] == 3 and again.meta["accuracy"] == {"test": 0.5}
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), model(x), rtol=0, atol=0)


def test_whole_pickled_model_needs_allow_pickle(tmp_path: Path) -> None:
    model = torchvision.models.resnet18(num_classes=3).eval()
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(UserError, match="--allow-pickle"):
        load_model("resnet18", tmp_path / "whole.pt")
    loaded = load_model("resnet18", tmp_path / "whole.pt", allow_pickle=True)
    assert len(loaded.classes) == 3 and loaded.layer == "layer4"


def test_mismatches_name_the_problem(tmp_path: Path) -> None:
    ckpt = places365_checkpoint(
        tmp_path / "r18.pth.tar", torchvision.models.resnet18(num_classes=365), "resnet18"
    )
    with pytest.raises(UserError, match=r"fc.weight \(365x512 in file vs 10x512 in model\)"):
        load_model("resnet18", ckpt, num_classes=10)
    with pytest.raises(
        UserError, match=r"resnet34 .*the checkpoint says arch 'resnet18'.*missing keys: layer1\.2"
    ):
        load_model("resnet34", ckpt)
    with pytest.raises(UserError, match="has no classifier 'classifier.6.weight'"):
        load_model("vgg16", ckpt)
    with pytest.raises(UserError, match="weights file not found"):
        load_model("resnet18", tmp_path / "nope.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UserError, match="not a PyTorch file or corrupt"):
        load_model("resnet18", tmp_path / "corrupt.pth")
    (tmp_path / "list.pth").write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(UserError):
        load_model("resnet18", tmp_path / "list.pth")
    with pytest.raises(UserError, match="unknown architecture 'resnet5000'"):
        load_model("resnet5000", ckpt)
    with pytest.raises(UserError, match="no layer named 'layer9'"):
        load_model("resnet18", ckpt, layer="layer9")


def test_labels_files(tmp_path: Path) -> None:
    places = tmp_path / "categories_places365.txt"
    places.write_text("/a/airfield 0\n/a/apartment_building/outdoor 1\n/b/bakery/shop 2\n")
    assert read_labels(places) == ["airfield", "apartment_building/outdoor", "bakery/shop"]
    plain = tmp_path / "plain.txt"
    plain.write_text("harbor\nliving room\n\n")
    assert read_labels(plain) == ["harbor", "living room"]
    model = torchvision.models.resnet18(num_classes=3)
    torch.save(model.state_dict(), tmp_path / "r.pth")
    assert load_model("resnet18", tmp_path / "r.pth", labels=places).classes[2] == "bakery/shop"
    with pytest.raises(UserError, match="names 2 classes but the model has 3 outputs"):
        load_model("resnet18", tmp_path / "r.pth", labels=plain)
    (tmp_path / "dup.txt").write_text("/a/a 0\n/b/b 0\n")
    with pytest.raises(UserError, match="index 0 appears twice"):
        read_labels(tmp_path / "dup.txt")


def test_gap_variants_and_trunk_loading() -> None:
    torch.manual_seed(2)
    net = architectures.get("vgg16_gap").build(11)
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 11)
    assert net.features(torch.zeros(1, 3, 224, 224)).shape == (1, 1024, 14, 14)
    source = torchvision.models.vgg16(num_classes=365)
    assert load_trunk(net, source.state_dict()) == 26  # 13 conv layers x (weight, bias)
    torch.testing.assert_close(net.features[28].weight, source.features[28].weight)
    head = {id(p) for p in head_parameters(net)}
    assert id(net.fc.weight) in head and id(net.features[0].weight) not in head
    weight, bias = final_linear(net)
    assert weight.shape == (11, 1024) and bias.shape == (11,)


def test_default_layers() -> None:
    assert architectures.get("resnet50").layer == "layer4"
    assert architectures.get("alexnet").layer == "features"
    assert architectures.get("densenet121").layer == "relu"  # the post-ReLU map
    assert architectures.get("vit_b_16").layer == "encoder.layers.encoder_layer_10"
    assert architectures.get("swin_t").layer == "norm"
    squeeze = torchvision.models.squeezenet1_0(num_classes=4)
    assert architectures.default_layer(squeeze) == "features"


@pytest.mark.parametrize("aux", [True, False])
def test_inception_v3_state_dicts_with_and_without_aux_logits_load(
    tmp_path: Path, aux: bool
) -> None:
    torch.manual_seed(0)
    source = torchvision.models.inception_v3(
        num_classes=3, aux_logits=aux, init_weights=False
    ).eval()
    torch.save(source.state_dict(), tmp_path / "inc.pth")
    loaded = load_model("inception_v3", tmp_path / "inc.pth")
    assert loaded.layer == "Mixed_7c" and loaded.input_size == (299, 299)
    assert (loaded.model.AuxLogits is not None) == aux
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), source(x))
    # training mode returns (logits, aux_logits) with aux: the hook reads the main logits
    loaded.model.train()
    fwd = hooks.run(loaded.model, "Mixed_7c", torch.randn(2, 3, 299, 299))
    assert fwd.logits.shape == (2, 3)
