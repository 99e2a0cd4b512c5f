"""Real-format weight files: the Places365 release's key layouts (DataParallel on the whole
network or on `features` only, pre-0.4 files without BatchNorm counters, old DenseNet names),
pickled wrappers, and the one-line errors of whole-model pickles."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from ibd.cli import main
from ibd.data.images import load_batch
from ibd.errors import UserError
from ibd.nets import architectures
from ibd.nets.labels import read_labels
from ibd.nets.load import load_model, standard_keys
from ibd.nets.train import init_from
from ibd.nets.worldnets import world_resnet

OLD_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))([12]\..*)$")


def places365_file(path: Path, state: dict[str, torch.Tensor], arch: str) -> Path:
    """Saved as the 2017 release was: PyTorch's legacy (pre-1.6, not zip) file format."""
    payload = {"epoch": 90, "arch": arch, "state_dict": state, "best_prec1": 53.2}
    torch.save(payload, path, _use_new_zipfile_serialization=False)
    return path


def without_counters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as PyTorch < 0.4 saved it: BatchNorm had no `num_batches_tracked`."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def same_outputs(a: nn.Module, b: nn.Module, size: int) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def test_a_pre_0_4_resnet_checkpoint_loads_without_batchnorm_counters(
    tmp_path: Path, one_torch_thread: None
) -> None:
    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=365).eval()
    state = {"module." + k: v for k, v in without_counters(original.state_dict()).items()}
    loaded = load_model(None, places365_file(tmp_path / "r18.pth.tar", state, "resnet18"))
    same_outputs(loaded.model, original, 64)
    counters = [v for k, v in loaded.model.state_dict().items() if "num_batches" in k]
    assert len(counters) == 20 and all(int(c) == 0 for c in counters)


@pytest.mark.slow
def test_places365_alexnet_keys_have_module_inside_features(
    tmp_path: Path, one_torch_thread: None
) -> None:
    """The Places365 training script wraps only `model.features` of AlexNet and VGG in
    DataParallel, so their keys read `features.module.0.weight`, the classifier's plain."""
    torch.manual_seed(1)
    original = torchvision.models.alexnet(num_classes=365).eval()
    state = {
        k.replace("features.", "features.module.", 1) if k.startswith("features.") else k: v
        for k, v in original.state_dict().items()
    }
    ckpt = places365_file(tmp_path / "alexnet_places365.pth.tar", state, "alexnet")
    loaded = load_model(None, ckpt)
    assert (loaded.arch, loaded.layer, len(loaded.classes)) == ("alexnet", "features", 365)
    same_outputs(loaded.model, original, 224)
    # the GAP variant takes the same file's conv trunk
    net = architectures.get("alexnet_gap").build(4)
    copied = init_from(net, ckpt)
    assert len(copied) == 10  # 5 convolutions x (weight, bias)
    assert torch.equal(net.features[10].weight, original.features[10].weight)


def test_pre_0_4_densenet_names_are_joined(tmp_path: Path, one_torch_thread: None) -> None:
    torch.manual_seed(2)
    original = torchvision.models.densenet121(num_classes=365).eval()
    state = {}
    for key, value in without_counters(original.state_dict()).items():
        old = OLD_DENSENET.match(key)  # norm1.weight -> norm.1.weight (the 2017 naming)
        state["module." + (f"{old.group(1)}.{old.group(2)}" if old else key)] = value
    assert "module.features.denseblock1.denselayer1.norm.1.weight" in state
    loaded = load_model(None, places365_file(tmp_path / "d.pth.tar", state, "densenet121"))
    same_outputs(loaded.model, original, 32)


def test_standard_keys_only_touch_wrapper_segments() -> None:
    state = {
        "module.layer1.0.conv1.weight": 1,
        "features.module.3.bias": 2,
        "features.denseblock2.denselayer7.conv.2.weight": 3,
        "submodule.fc.weight": 4,
        "features.denseblock2.denselayer7.norm.running_mean": 5,
    }
    assert standard_keys(state) == {
        "layer1.0.conv1.weight": 1,
        "features.3.bias": 2,
        "features.denseblock2.denselayer7.conv2.weight": 3,
        "submodule.fc.weight": 4,
        "features.denseblock2.denselayer7.norm.running_mean": 5,
    }


def test_a_pickled_dataparallel_model_is_unwrapped(tmp_path: Path) -> None:
    torch.manual_seed(3)
    inner = world_resnet(4).eval()
    torch.save(nn.DataParallel(inner), tmp_path / "whole.pth.tar")
    loaded = load_model(None, tmp_path / "whole.pth.tar", allow_pickle=True)
    assert loaded.layer == "layer4" and len(loaded.classes) == 4
    same_outputs(loaded.model, inner, 64)


def test_a_named_architecture_says_how_to_feed_a_whole_pickle(tmp_path: Path) -> None:
    torch.save(world_resnet(12), tmp_path / "whole.pt")
    loaded = load_model("world_resnet", tmp_path / "whole.pt", allow_pickle=True)
    assert loaded.input_size == (112, 112) and loaded.layer == "layer4"


def test_a_whole_pickle_whose_class_cannot_be_imported_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "placesnets.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(2, 2)\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import placesnets  # written just above

        torch.save(placesnets.Net(), tmp_path / "whole.pth.tar")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("placesnets", None)
    with pytest.raises(UserError, match="needs the Python module 'placesnets'") as caught:
        load_model(None, tmp_path / "whole.pth.tar", allow_pickle=True)
    assert "\n" not in str(caught.value)


def test_class_count_from_labels_and_bad_counts(tmp_path: Path) -> None:
    labels = tmp_path / "categories.txt"
    labels.write_text("/a/airfield 0\n/b/bakery/shop 1\n/c/canyon 2\n")
    random = load_model("resnet18", None, labels=labels)
    assert random.classes == ["airfield", "bakery/shop", "canyon"]
    assert random.model.fc.out_features == 3 and random.name == "resnet18_random"
    with pytest.raises(UserError, match="at least 1, not 0"):
        load_model("resnet18", None, num_classes=0)


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    path = tmp_path / "categories_places365.txt"
    path.write_bytes("/a/airfield 0\r\n/b/bakery/shop 1\r\n".encode("utf-8-sig"))
    assert read_labels(path) == ["airfield", "bakery/shop"]
    plain = tmp_path / "plain.txt"
    plain.write_bytes("harbor\nbeach\n".encode("utf-8-sig"))
    assert read_labels(plain) == ["harbor", "beach"]


def test_the_authors_normalisation_can_be_chosen_for_a_file_that_records_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(world_resnet(3).state_dict(), tmp_path / "plain.pth")
    default = load_model("world_resnet", tmp_path / "plain.pth")
    assert default.mean == pytest.approx((0.485, 0.456, 0.406))
    authors = load_model("world_resnet", tmp_path / "plain.pth", normalization="authors")
    # to_tensor computes (x / 255 - mean) / std: the authors' (x - 124.69) / 57.12 on 0..255
    pixel = torch.tensor([200.0, 100.0, 50.0]) / 255
    got = (pixel - torch.tensor(authors.mean)) / torch.tensor(authors.std)
    expected = (torch.tensor([200.0, 100.0, 50.0]) - torch.tensor([124.69, 118.69, 109.54])) / 57.12
    torch.testing.assert_close(got, expected)
    with pytest.raises(UserError, match="unknown normalization 'caffe'"):
        load_model("world_resnet", tmp_path / "plain.pth", normalization="caffe")
    args = ["info", "--arch", "world_resnet", "--weights", str(tmp_path / "plain.pth")]
    assert main([*args, "--normalization", "authors"]) == 0
    assert "(0.48898" in capsys.readouterr().out  # 124.69 / 255


def test_a_squeezenet_with_its_convolution_head_loads_and_explains(
    tmp_path: Path, one_torch_thread: None, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    original = torchvision.models.squeezenet1_1(num_classes=7).eval()
    state = {"module." + k: v for k, v in original.state_dict().items()}
    weights = places365_file(tmp_path / "sq.pth.tar", state, "squeezenet1_1")
    loaded = load_model(None, weights)
    assert len(loaded.classes) == 7 and loaded.layer == "features"
    same_outputs(loaded.model, original, 64)
    image = tmp_path / "a.png"
    torchvision.transforms.functional.to_pil_image(torch.rand(3, 40, 40)).save(image)
    out = tmp_path / "gradcam"
    assert (
        main(
            [
                "explain",
                "--method",
                "gradcam",
                "--weights",
                str(weights),
                "--out",
                str(out),
                str(image),
            ]
        )
        == 0
    )
    record = json.loads((out / "explanations.json").read_text())[0]
    with torch.no_grad():
        logits = original(load_batch([image], loaded.input_size, loaded.mean, loaded.std)[0])
    assert record["class_index"] == int(logits.argmax())
    assert abs(record["score"] - float(logits.max())) < 1e-4
    assert (
        main(
            [
                "explain",
                "--method",
                "cam",
                "--weights",
                str(weights),
                "--out",
                str(tmp_path / "cam"),
                str(image),
            ]
        )
        == 2
    )
    assert "CAM does not apply" in capsys.readouterr().err
