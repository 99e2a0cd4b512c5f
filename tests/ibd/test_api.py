"""The Python API (`import ibd`): explainers equal the command's files, the paper's identities
hold on API results, and the calls are hygienic (hooks, modes, batches, several explainers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tinyhome
import torch
from PIL import Image
from tinyhome import CLASSES, IMAGES
from tinynets import PooledConv

import ibd
from ibd.cli import main
from ibd.data.images import load_rgb, to_tensor
from ibd.explain import records as records_module
from ibd.nets import architectures

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny home of tinyhome.py: a ResNet18 whose class weights mix a 12-concept basis."""
    return tinyhome.build(tmp_path_factory.mktemp("api"))


@pytest.fixture()
def home(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IBD_HOME", str(root))
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="module")
def model(root: Path) -> ibd.Model:
    return ibd.load_model(root / "models" / "tiny.pt")


def cli_files(method: str, out: str, *extra: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    argv = ["explain", "--method", method, "--weights", "models/tiny.pt", "--out", out]
    assert main([*argv, *extra, *IMAGES]) == 0
    records = json.loads(Path(out, "explanations.json").read_text())
    with np.load(Path(out, "heatmaps.npz")) as npz:
        return records, {k: npz[k] for k in npz.files}


def explainer(name: str, model: ibd.Model, root: Path, **options: object) -> ibd.Explainer:
    if name == "cam":
        return ibd.CAM(model, **options)
    if name == "gradcam":
        return ibd.GradCAM(model, **options)
    if name == "ibd":
        return ibd.IBD(model, root / "basis" / "tiny.npz", root / "dec.json", **options)
    return ibd.NetDissect(model, root / "dissect" / "tiny" / "tally.csv", **options)


@pytest.mark.parametrize("method", ["cam", "gradcam", "ibd", "netdissect"])
def test_each_explainer_equals_the_command_files(home: Path, method: str) -> None:
    assert main(["decompose", "--weights", "models/tiny.pt", "--out", "dec.json"]) == 0
    extra = ("--decomposition", "dec.json") if method == "ibd" else ()
    records, maps = cli_files(method, f"cli-{method}", *extra)
    model = ibd.load_model("models/tiny.pt")
    got = explainer(method, model, home)(IMAGES)
    assert json.loads(json.dumps([e.to_dict() for e in got])) == records
    for e in got:
        for c in e.components:
            assert isinstance(c.heatmap, torch.Tensor) and c.heatmap.shape == (3, 3)
            np.testing.assert_array_equal(c.heatmap.numpy(), maps[c.key])
    # what the API writes is what the command wrote
    records_module.write(home / f"api-{method}", got)
    assert (home / f"api-{method}" / "explanations.json").read_text() == Path(
        f"cli-{method}", "explanations.json"
    ).read_text()


def test_ibd_contributions_and_residual_sum_to_the_logit(model: ibd.Model, root: Path) -> None:
    basis = ibd.Basis.load(root / "basis" / "tiny.npz")
    explanations = ibd.IBD(model, basis, top=12)(image_paths(root), targets=None)
    logits = model.model(batch_of(model, root)).detach()
    for n, e in enumerate(explanations):
        assert e.score == pytest.approx(float(logits[n, e.class_index]), abs=1e-5)
        assert e.class_index == int(logits[n].argmax())
        total = sum(c.contribution for c in e.components) + e.residual
        assert total == pytest.approx(float(logits[n, e.class_index]), abs=1e-4)
    # every class, not only the top one
    for k in range(3):
        for e in ibd.IBD(model, basis)(image_paths(root), targets=k):
            assert e.class_index == k
            assert sum(c.contribution for c in e.components) + e.residual == pytest.approx(
                e.score, abs=1e-4
            )


def image_paths(root: Path) -> list[Path]:
    return [root / p for p in IMAGES]


def batch_of(model: ibd.Model, root: Path) -> torch.Tensor:
    return torch.stack(
        [to_tensor(load_rgb(p), model.input_size, model.mean, model.std) for p in image_paths(root)]
    )


def test_gradcam_is_cam_over_hw_on_a_gap_model() -> None:
    net = PooledConv(channels=6, seed=3)
    model = ibd.Model.wrap(net, layer="features", labels=["a", "b"], input_size=32)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for target in (0, 1):
        cams = ibd.CAM(model)(x, targets=target)
        grads = ibd.GradCAM(model)(x, targets=target)
        for c, g in zip(cams, grads, strict=True):
            (cc,), (gc,) = c.components, g.components
            assert cc.heatmap.shape == (8, 8)
            torch.testing.assert_close(gc.heatmap, cc.heatmap / 64, rtol=1e-4, atol=1e-6)
            assert gc.contribution == pytest.approx(cc.contribution / 64, rel=1e-4)
            # CAM's contribution is w_k . GAP(A): the logit less the bias
            bias = float(net.fc.bias[target].detach())
            assert cc.contribution + bias == pytest.approx(c.score, abs=1e-5)


@pytest.mark.parametrize("method", ["cam", "gradcam", "ibd", "netdissect"])
def test_a_batch_with_one_target_each_equals_single_calls(
    model: ibd.Model, root: Path, method: str
) -> None:
    if method == "ibd":
        weights, basis = str(root / "models/tiny.pt"), str(root / "basis/tiny.npz")
        argv = [
            "decompose",
            "--weights",
            weights,
            "--basis",
            basis,
            "--out",
            str(root / "dec.json"),
        ]
        assert main(argv) == 0
    explain = explainer(method, model, root)
    images = image_paths(root)
    together = explain(images, targets=[2, "beach", 0])
    alone = [explain(images[n], targets=t)[0] for n, t in enumerate([2, 1, "harbor"])]
    assert [e.class_index for e in together] == [2, 1, 0]
    for a, b in zip(together, alone, strict=True):
        assert a.image == b.image and a.class_name == b.class_name
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert [c.label for c in a.components] == [c.label for c in b.components]
        for ca, cb in zip(a.components, b.components, strict=True):
            assert ca.contribution == pytest.approx(cb.contribution, rel=1e-4, abs=1e-5)
            torch.testing.assert_close(ca.heatmap, cb.heatmap, rtol=1e-4, atol=1e-5)


def test_images_as_tensor_pil_path_or_list_give_the_same_explanation(
    model: ibd.Model, root: Path
) -> None:
    path = image_paths(root)[1]
    picture = Image.open(path)
    tensor = to_tensor(load_rgb(path), model.input_size, model.mean, model.std)
    gradcam = ibd.GradCAM(model)
    forms = {
        "path": gradcam(path),
        "str": gradcam(str(path)),
        "pil": gradcam(picture),
        "tensor": gradcam(tensor),
        "batch": gradcam(tensor[None]),
        "list": gradcam([picture, tensor, path])[2:],
    }
    assert forms["path"][0].image == str(path)
    assert forms["pil"][0].image == "image[0]" and forms["batch"][0].image == "tensor[0]"
    want = forms["path"][0]
    for name, (got,) in forms.items():
        assert got.class_index == want.class_index, name
        assert got.score == pytest.approx(want.score, abs=1e-5), name
        torch.testing.assert_close(got.components[0].heatmap, want.components[0].heatmap)


def test_targets_by_name_index_digits_or_one_per_image(model: ibd.Model, root: Path) -> None:
    cam = ibd.CAM(model)
    images = image_paths(root)
    by_name = cam(images, targets="forest")
    by_index = cam(images, targets=2)
    by_digits = cam(images, targets="2")
    per_image = cam(images, targets=["forest", 2, torch.tensor(2)])
    for group in (by_index, by_digits, per_image):
        assert [e.to_dict() for e in group] == [e.to_dict() for e in by_name]
    assert {e.class_name for e in by_name} == {"forest"}
    for bad, message in [
        ("moon", "unknown class 'moon'"),
        (3, "out of range"),
        ([0, 1], "2 targets for 3 images"),
    ]:
        with pytest.raises(ibd.UserError, match=message):
            cam(images, targets=bad)


def test_no_hook_is_left_after_a_call_that_raised(model: ibd.Model, root: Path) -> None:
    layer = model.model.get_submodule("layer4")
    net_hooks = [m._forward_hooks for m in model.model.modules()]
    bad = torch.zeros(1, 3, 96, 96, dtype=torch.float64)  # the first convolution raises
    explainers = (
        ibd.GradCAM(model),
        ibd.CAM(model),
        ibd.IBD(model, root / "basis" / "tiny.npz"),
        explainer("netdissect", model, root),
    )
    for explain in explainers:
        with pytest.raises(RuntimeError, match="type"):
            explain(bad)
        with pytest.raises(ibd.UserError):
            explain(torch.zeros(2, 3, 96, 96), targets=[0, 1, 2])
        assert not layer._forward_hooks and all(not h for h in net_hooks)
    assert not model.model.training


def test_two_explainers_on_one_model_do_not_disturb_each_other(
    model: ibd.Model, root: Path
) -> None:
    images = image_paths(root)
    basis = root / "basis" / "tiny.npz"
    first_ibd, first_grad = ibd.IBD(model, basis)(images), ibd.GradCAM(model)(images)
    concepts, gradcam = ibd.IBD(model, basis), ibd.GradCAM(model)
    with concepts, gradcam:  # both held open at once
        interleaved = [(concepts(p)[0], gradcam(p)[0]) for p in images]
    assert not model.model.get_submodule("layer4")._forward_hooks
    for n, (a, b) in enumerate(interleaved):
        assert values(a) == pytest.approx(values(first_ibd[n]), abs=1e-5)
        assert [c.label for c in a.components] == [c.label for c in first_ibd[n].components]
        torch.testing.assert_close(b.components[0].heatmap, first_grad[n].components[0].heatmap)


def values(e: ibd.Explanation) -> list[float]:
    return [e.class_index, e.score, e.residual or 0.0, *(c.contribution for c in e.components)]


def test_wrap_takes_a_module_as_it_is_and_restores_its_mode() -> None:
    net = PooledConv(channels=5, seed=0).train()
    model = ibd.Model.wrap(net, layer="features", input_size=(16, 16))
    assert model.classes == ["class_0", "class_1"] and model.input_size == (16, 16)
    assert model.mean == architectures.IMAGENET_MEAN
    (e,) = ibd.GradCAM(model)(torch.ones(3, 16, 16))
    assert net.training and e.class_name in model.classes
    with ibd.GradCAM(model) as explain:
        assert not net.training
        explain(torch.ones(3, 16, 16))
    assert net.training
    with pytest.raises(ibd.UserError, match="no layer named 'layer9'"):
        ibd.Model.wrap(net, layer="layer9")
    with pytest.raises(ibd.UserError, match="3 labels but the model has 2 outputs"):
        ibd.Model.wrap(net, layer="features", labels=["a", "b", "c"])
    with pytest.raises(ibd.UserError, match="unknown normalization"):
        ibd.Model.wrap(net, layer="features", normalization="places")
    custom = ibd.Model.wrap(net, layer="features", normalization=((0, 0, 0), (1, 1, 1)))
    assert custom.mean == (0.0, 0.0, 0.0) and custom.std == (1.0, 1.0, 1.0)


class FlatHead(torch.nn.Module):
    """A 1x1 convolution, then flatten and a linear layer (as AlexNet's head): not GAP-linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Conv2d(3, 2, 1)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def test_cam_refuses_a_head_that_is_not_gap_linear() -> None:
    model = ibd.Model.wrap(FlatHead(), layer="features", input_size=2)
    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ibd.UserError, match="CAM does not apply"):
        ibd.CAM(model)(x)
    (e, _) = ibd.GradCAM(model)(x)
    assert e.components[0].heatmap.shape == (2, 2)
    with pytest.raises(RuntimeError, match="no_grad"), torch.no_grad():
        ibd.GradCAM(model)(x)


def test_decompose_and_basis_round_trip_the_command_files(home: Path, model: ibd.Model) -> None:
    argv = ["decompose", "--weights", "models/tiny.pt", "--basis", "basis/tiny.npz"]
    assert main([*argv, "--out", "cli-dec.json"]) == 0
    cli = json.loads(Path("cli-dec.json").read_text())
    basis = ibd.Basis.load("basis/tiny.npz")
    meta = {
        "model": "tiny",
        "arch": "resnet18",
        "weights": "models/tiny.pt",
        "basis": "basis/tiny.npz",
        "basis_meta": basis.meta,
    }
    dec = ibd.decompose(model, basis, meta=meta)
    assert dec.to_dict() == cli
    dec.save("api-dec.json")
    assert Path("api-dec.json").read_text() == Path("cli-dec.json").read_text()
    loaded = ibd.Decomposition.load("cli-dec.json")
    assert loaded.class_names == CLASSES and loaded.solver == "nnls"
    for k in range(3):
        assert loaded.terms(k) == dec.terms(k)
    np.testing.assert_allclose(loaded.residual_fraction, dec.residual_fraction, rtol=1e-12)
    assert loaded.to_dict()["classes"] == cli["classes"]
    # a decomposition made in Python explains exactly as its file does
    images = image_paths(home)
    from_object = ibd.IBD(model, basis, dec)(images)
    from_file = ibd.IBD(model, "basis/tiny.npz", "cli-dec.json")(images)
    assert [e.to_dict() for e in from_object] == [e.to_dict() for e in from_file]
    # class weights as an array, with the basis as a path
    weights = model.model.fc.weight.detach().numpy()
    bare = ibd.decompose(weights, "basis/tiny.npz", solver="omp", max_concepts=3)
    assert bare.class_names == ["class_0", "class_1", "class_2"] and bare.counts.tolist() == [3] * 3
    # the basis writes back what it read
    basis.save(home / "copy.npz")
    again = ibd.Basis.load(home / "copy.npz")
    np.testing.assert_array_equal(again.q, basis.q)
    assert again.names == basis.names and again.meta == basis.meta


def test_an_explanation_renders_its_own_input(model: ibd.Model, root: Path) -> None:
    (e,) = ibd.IBD(model, root / "basis" / "tiny.npz")(image_paths(root)[0])
    picture = e.render()
    assert isinstance(picture, Image.Image) and picture.width > picture.height > 0
    same = e.render(load_rgb(image_paths(root)[0]))
    assert np.array_equal(np.asarray(picture), np.asarray(same))
    (t,) = ibd.IBD(model, root / "basis" / "tiny.npz")(batch_of(model, root)[:1])
    # a tensor input is drawn un-normalised: the picture is the image at the model's input size
    shown = np.asarray(t.picture.load(), dtype=np.float64)
    resized = np.asarray(load_rgb(image_paths(root)[0]).resize((96, 96), Image.Resampling.BILINEAR))
    assert shown.shape == (96, 96, 3) and np.abs(shown - resized).max() <= 1


def test_import_ibd_is_light() -> None:
    code = "import sys, ibd; assert 'torch' not in sys.modules; print(ibd.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ibd.IBD" not in dir(ibd) and {"IBD", "decompose", "Basis"} <= set(dir(ibd))


def test_basis_learn_trains_on_a_feature_store_and_round_trips(tmp_path: Path) -> None:
    from test_basis import planted_store, quiet

    from ibd import basis as basis_module

    store, _ = planted_store(tmp_path)
    options = {"epochs": 2, "rounds": 1, "pool_size": 300}
    learned = ibd.Basis.learn(store.path, "paper", log=lambda _: None, **options)
    settings = basis_module.Settings.for_procedure("paper", **options)
    direct = basis_module.learn(store, settings, **quiet())
    assert learned.names == direct.names and learned.meta["settings"] == direct.meta["settings"]
    np.testing.assert_array_equal(learned.weight, direct.weight)
    # without a procedure: the authors' (the default), which has no mining rounds
    default = ibd.Basis.learn(store.path, log=lambda _: None, epochs=2, pool_size=300)
    assert default.meta["settings"]["procedure"] == "authors"
    authors = basis_module.learn(
        store, basis_module.Settings.for_procedure("authors", epochs=2, pool_size=300), **quiet()
    )
    np.testing.assert_array_equal(default.weight, authors.weight)
    with pytest.raises(ibd.UserError, match="rounds: only for the paper procedure"):
        ibd.Basis.learn(store.path, log=lambda _: None, **options)
    learned.save(tmp_path / "basis.npz")
    again = ibd.Basis.load(tmp_path / "basis.npz")
    np.testing.assert_array_equal(again.q, learned.q)
    assert again.names == learned.names and again.categories == learned.categories
    with pytest.raises(ibd.UserError, match="basis file not found"):
        ibd.Basis.load(tmp_path / "none.npz")


def test_wrap_gives_a_users_densenet_its_post_relu_map() -> None:
    """torchvision's DenseNet applies ReLU after `features` in forward(); wrapping it exposes
    that map as layer `relu`, so CAM applies (Grad-CAM == CAM / HW), with the logits unchanged."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.densenet121(num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
    model = ibd.Model.wrap(net, layer="relu", input_size=64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, rtol=0, atol=0)
    cams, grads = ibd.CAM(model)(x, targets=[0, 2]), ibd.GradCAM(model)(x, targets=[0, 2])
    for c, g in zip(cams, grads, strict=True):
        heat = c.components[0].heatmap
        assert heat.shape == (2, 2)
        torch.testing.assert_close(g.components[0].heatmap, heat / 4, rtol=1e-4, atol=1e-6)
