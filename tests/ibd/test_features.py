"""The feature store: exact round trip of the hooked activations, labels at feature resolution by
the centre nearest-neighbour rule, resume after a crash byte for byte, skip and rebuild, and the
`ibd features` command on a small Broden directory written here in the real format."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tinynets import PooledConv

from ibd.cli import main
from ibd.data import features
from ibd.data.broden import BrodenDataset, Concept, encode_plane
from ibd.errors import UserError
from ibd.nets import hooks
from ibd.nets.load import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Images(torch.utils.data.Dataset):
    """Random 3 x 8 x 8 images with random 11-concept 8 x 8 masks; `fail_at` raises there."""

    def __init__(self, n: int = 10, concepts: int = 11, fail_at: int | None = None) -> None:
        rng = np.random.default_rng(1)
        self.images = torch.from_numpy(rng.normal(size=(n, 3, 8, 8)).astype(np.float32))
        self.masks = torch.from_numpy(rng.random((n, concepts, 8, 8)) < 0.3)
        self.concepts = [Concept(c, c + 1, f"c{c}", "object", n) for c in range(concepts)]
        self.fail_at = fail_at
        self.loaded = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i == self.fail_at:
            raise RuntimeError("simulated crash")
        self.loaded += 1
        return {"image": self.images[i], "mask": self.masks[i], "index": i, "path": f"im{i}.png"}

    def image_path(self, i: int) -> Path:
        return Path(f"im{i}.png")

    def split_of(self, i: int) -> str:
        return "val" if i % 3 == 2 else "train"


def spec(dtype: str = "float32") -> features.StoreSpec:
    return features.StoreSpec(
        model={"name": "pooled"}, layer="features", dataset={"fingerprint": "x"}, dtype=dtype
    )


def test_store_round_trips_the_hooked_activations_exactly(tmp_path: Path) -> None:
    model, data = PooledConv(5, seed=0).eval(), Images()
    store = features.build(model, data, tmp_path / "s", spec(), batch_size=4, progress=False)
    assert (store.num_images, store.grid, store.dim, store.num_concepts) == (10, (2, 2), 5, 11)
    for lo in range(0, 10, 4):
        with torch.no_grad():
            expected = hooks.run(model, "features", data.images[lo : lo + 4]).features
        got = torch.from_numpy(np.array(store.features[lo : lo + 4])).permute(0, 3, 1, 2)
        assert torch.equal(got, expected)
    # one position's vector in the flat view is a(i, j) of its image (image 7 in batch 4..7)
    with torch.no_grad():
        a = hooks.run(model, "features", data.images[4:8]).features[3]
    assert torch.equal(
        torch.from_numpy(store.read_vectors(np.array([7 * 4 + 1 * 2 + 0]))[0]), a[:, 1, 0]
    )
    assert store.paths == [f"im{i}.png" for i in range(10)]
    assert store.splits.tolist() == [data.split_of(i) for i in range(10)]
    assert [c["name"] for c in store.concepts] == [f"c{c}" for c in range(11)]
    half = features.build(
        model, data, tmp_path / "h", spec("float16"), batch_size=4, progress=False
    )
    assert half.features.dtype == np.float16
    assert np.array_equal(half.features, np.asarray(store.features).astype(np.float16))


def test_scattered_reads_release_the_mapping_every_release_rows_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read maps up to the kernel's fault-around per row it touches, so the mapping is given
    back every RELEASE_ROWS rows, not once per read; the values are those of the store."""
    store = features.build(
        PooledConv(5, seed=0).eval(), Images(), tmp_path / "s", spec(), batch_size=4, progress=False
    )
    monkeypatch.setattr(features, "RELEASE_ROWS", 3)
    released: list[int] = []
    real = features.release_pages
    monkeypatch.setattr(features, "release_pages", lambda a: (released.append(1), real(a)))
    rows = np.array([39, 2, 17, 5, 30, 11, 0])  # 7 rows: 3 + 3 + 1
    flat = np.asarray(store.features).reshape(-1, 5)
    assert np.array_equal(store.read_vectors(rows), flat[rows].astype(np.float32))
    assert len(released) == 3
    bits = np.asarray(store.labels).reshape(-1, store.labels.shape[-1])[rows]
    assert np.array_equal(store.read_labels(rows), features.unpack_labels(bits, 11))
    assert len(released) == 6
    assert store.read_vectors(np.array([], dtype=np.int64)).shape == (0, 5)


def test_labels_are_the_centre_pixel_of_each_feature_cell(tmp_path: Path) -> None:
    data = Images()
    store = features.build(
        PooledConv(5, seed=0), data, tmp_path / "s", spec(), batch_size=3, progress=False
    )
    # 8 -> 2 cells: cell i covers pixels 4i..4i+3, its centre pixel is floor((i + 0.5) * 4) = 4i + 2
    for n in range(10):
        expected = data.masks[n][:, [2, 6]][:, :, [2, 6]].numpy()
        assert np.array_equal(store.concept_masks(n), expected)
    rows = store.rows_of(np.array([4]))
    assert np.array_equal(
        store.read_labels(rows), data.masks[4][:, [2, 6]][:, :, [2, 6]].reshape(11, 4).T.numpy()
    )
    assert store.labels.shape == (10, 2, 2, 2)  # 11 concepts in 2 bytes


def test_bit_packing_puts_concept_c_in_bit_c_mod_8_of_byte_c_div_8() -> None:
    mask = np.zeros((1, 11, 1, 1), dtype=bool)
    mask[0, [0, 3, 9], 0, 0] = True
    packed = features.pack_labels(mask)
    assert packed[0, 0, 0].tolist() == [0b00001001, 0b00000010]
    assert np.array_equal(features.unpack_labels(packed, 11)[0, 0, 0], mask[0, :, 0, 0])


def test_resume_after_a_crash_gives_identical_files(tmp_path: Path) -> None:
    model = PooledConv(5, seed=0).eval()
    features.build(model, Images(), tmp_path / "whole", spec(), batch_size=3, progress=False)
    crashing = Images(fail_at=7)  # batches [0-2], [3-5] flushed; crash inside [6-8]
    with pytest.raises(RuntimeError, match="simulated crash"):
        features.build(model, crashing, tmp_path / "cut", spec(), batch_size=3, progress=False)
    progress = json.loads((tmp_path / "cut" / "progress.json").read_text())
    assert progress == {"images_done": 6, "complete": False}
    with pytest.raises(UserError, match="incomplete"):
        features.FeatureStore(tmp_path / "cut")
    resumed = Images()
    features.build(model, resumed, tmp_path / "cut", spec(), batch_size=3, progress=False)
    assert resumed.loaded == 4  # only images 6..9
    for name in ("features.npy", "labels.npy", "images.csv", "concepts.json", "header.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_same_settings_skip_and_different_settings_rebuild(tmp_path: Path) -> None:
    model = PooledConv(5, seed=0).eval()
    features.build(model, Images(), tmp_path / "s", spec(), batch_size=4, progress=False)
    again = Images()
    features.build(model, again, tmp_path / "s", spec(), batch_size=4, progress=False)
    assert again.loaded == 0
    other = Images()
    store = features.build(
        model, other, tmp_path / "s", spec("float16"), batch_size=4, progress=False
    )
    assert other.loaded == 10 and store.header["dtype"] == "float16"
    # the rebuilt store is exactly its files (no old arrays, no temporaries left behind), and
    # every file is the new store's
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(features.FILES)
    assert np.load(tmp_path / "s" / "features.npy").dtype == np.float16
    assert json.loads((tmp_path / "s" / "progress.json").read_text()) == {
        "images_done": 10,
        "complete": True,
    }


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_a_failing_rebuild_leaves_the_old_store_as_it_was(tmp_path: Path) -> None:
    model, out = PooledConv(5, seed=0).eval(), tmp_path / "s"
    features.build(model, Images(), out, spec(), batch_size=4, progress=False)
    before = _snapshot(out)
    no_concepts = Images()
    no_concepts.concepts = []
    with pytest.raises(UserError, match="keeps no concepts"):
        features.build(model, no_concepts, out, spec("float16"), progress=False)
    assert _snapshot(out) == before
    empty = Images(n=0)
    with pytest.raises(UserError, match="no images"):
        features.build(model, empty, out, spec("float16"), progress=False)
    assert _snapshot(out) == before
    # the new store fails on its first batch: the old one has not made way yet
    with pytest.raises(RuntimeError, match="simulated crash"):
        features.build(model, Images(fail_at=1), out, spec("float16"), progress=False)
    assert _snapshot(out) == before
    huge = Images()
    huge.images *= 1e6
    with pytest.raises(UserError, match="float16"):
        features.build(model, huge, out, spec("float16"), progress=False)
    assert _snapshot(out) == before
    assert features.FeatureStore(out).header["dtype"] == "float32"


def test_non_finite_activations_are_a_user_error_naming_the_image(tmp_path: Path) -> None:
    # One NaN in the store made every classifier NaN in `ibd basis learn`, reported as a
    # diverging run ("try a smaller lr").
    model, out = PooledConv(5, seed=0).eval(), tmp_path / "s"
    features.build(model, Images(), out, spec(), batch_size=4, progress=False)
    before = _snapshot(out)
    broken = Images()
    broken.images[2, 1, 4, 4] = float("nan")
    for other in (spec("float16"), dataclasses.replace(spec(), model={"name": "other"})):
        with pytest.raises(UserError, match=r"layer features gives non-finite .* on im2\.png"):
            features.build(model, broken, out, other, batch_size=4, progress=False)
        assert _snapshot(out) == before  # it was the first batch: the old store stays
    broken.images[2, 1, 4, 4] = 0.0
    broken.images[9, 0, 0, 0] = float("inf")  # the third batch of a fresh store
    with pytest.raises(UserError, match=r"non-finite activations \(NaN or inf\) on im9\.png"):
        features.build(model, broken, tmp_path / "t", spec(), batch_size=4, progress=False)
    assert json.loads((tmp_path / "t" / "progress.json").read_text())["images_done"] == 8


class Endless(torch.utils.data.Dataset):
    """10^10 images, 4096 channels on a 1 x 1 grid: 160 TB of features, more than any disk."""

    def __init__(self) -> None:
        self.concepts = [Concept(0, 1, "c0", "object", 10)]

    def __len__(self) -> int:
        return 10**10

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i >= 64:
            raise AssertionError("the extraction went on past the first batches")
        return {"image": torch.ones(3, 4, 4), "mask": torch.ones(1, 4, 4, dtype=torch.bool)}

    def image_path(self, i: int) -> Path:
        if i >= 64:
            raise AssertionError("the store's image list is being written")
        return Path(f"e{i}.png")

    def split_of(self, i: int) -> str:
        return "train"


def test_a_store_larger_than_the_free_disk_space_is_refused_before_the_old_one_goes(
    tmp_path: Path,
) -> None:
    # Writing through a memory map to a full disk killed the process with SIGBUS ("Bus error",
    # no message), after the old store had been removed.
    out = tmp_path / "s"
    features.build(PooledConv(5, seed=0).eval(), Images(), out, spec(), progress=False)
    before = _snapshot(out)
    other = dataclasses.replace(spec(), model={"name": "wide"})
    with pytest.raises(UserError, match=r"the feature store at .* needs [\d,.]+ MiB and only"):
        features.build(PooledConv(4096, seed=0).eval(), Endless(), out, other, progress=False)
    assert _snapshot(out) == before


def test_the_store_arrays_take_their_disk_space_before_the_first_write(tmp_path: Path) -> None:
    # open_memmap makes sparse files; their blocks are allocated up front, so a full disk is
    # an error at the start rather than a SIGBUS in the middle of the extraction.
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this platform")
    control = tmp_path / "control"
    with control.open("wb") as handle:
        handle.truncate(1 << 20)
        os.posix_fallocate(handle.fileno(), 0, 1 << 20)
    if control.stat().st_blocks * 512 < 1 << 20:
        pytest.skip("this file system does not report allocated blocks")
    out = tmp_path / "s"
    with pytest.raises(RuntimeError, match="simulated crash"):  # after two of 667 batches
        features.build(PooledConv(64, seed=0), Images(n=2000, fail_at=7), out, spec(), batch_size=3)
    assert (out / "features.npy").stat().st_size > 1 << 20
    for name in ("features.npy", "labels.npy"):
        stat = (out / name).stat()
        assert stat.st_blocks * 512 >= stat.st_size, name


def test_store_directory_that_is_a_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    for out in (tmp_path / "file", tmp_path / "file" / "s"):
        with pytest.raises(UserError, match="file"):
            features.build(PooledConv(5, seed=0), Images(), out, spec(), progress=False)
    assert (tmp_path / "file").read_text() == "mine"


def test_resume_with_missing_arrays_rebuilds(tmp_path: Path) -> None:
    model = PooledConv(5, seed=0).eval()
    with pytest.raises(RuntimeError, match="simulated crash"):
        features.build(
            model, Images(fail_at=7), tmp_path / "s", spec(), batch_size=3, progress=False
        )
    (tmp_path / "s" / "features.npy").unlink()
    data = Images()
    store = features.build(model, data, tmp_path / "s", spec(), batch_size=3, progress=False)
    assert data.loaded == 10 and store.num_images == 10


def test_spec_differences_name_the_settings() -> None:
    header = {"format": features.FORMAT, **dataclasses.asdict(spec())}
    assert features.spec_differences(header, spec()) == []
    assert features.spec_differences(header, spec("float16")) == ["dtype"]
    other = features.StoreSpec(
        model={"name": "pooled", "weights": "w"},
        layer="fc",
        dataset={"fingerprint": "y"},
    )
    assert features.spec_differences(header, other) == [
        "model.weights",
        "layer",
        "dataset.fingerprint",
    ]


def test_float16_overflow_is_a_user_error(tmp_path: Path) -> None:
    data = Images()
    data.images *= 1e6
    with pytest.raises(UserError, match="float16"):
        features.build(PooledConv(5, seed=0), data, tmp_path / "s", spec("float16"), progress=False)


def test_corrupt_store_is_a_user_error(tmp_path: Path) -> None:
    features.build(PooledConv(5, seed=0), Images(), tmp_path / "s", spec(), progress=False)
    (tmp_path / "s" / "labels.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match="labels.npy"):
        features.FeatureStore(tmp_path / "s")
    with pytest.raises(UserError, match="no feature store"):
        features.FeatureStore(tmp_path / "missing")


def _without_dim(text: str) -> str:
    header = json.loads(text)
    del header["dim"]
    return json.dumps(header)


@pytest.mark.parametrize(
    ("name", "corrupt"),
    [
        ("progress.json", lambda text: "[]"),
        ("progress.json", lambda text: '{"complete": true}'),
        ("header.json", _without_dim),
        ("header.json", lambda text: text.replace('"num_images": 10', '"num_images": "10"')),
        ("header.json", lambda text: text.replace('"float32"', '"float64"')),
        ("concepts.json", lambda text: "{}"),
        ("concepts.json", lambda text: '{"concepts": [1, 2]}'),
        ("images.csv", lambda text: text.replace(",train\n", "\n", 1)),
    ],
)
def test_hand_edited_store_files_are_user_errors_naming_the_file(
    tmp_path: Path, name: str, corrupt: Any
) -> None:
    features.build(PooledConv(5, seed=0), Images(), tmp_path / "s", spec(), progress=False)
    path = tmp_path / "s" / name
    edited = corrupt(path.read_text())
    assert edited != path.read_text()
    path.write_text(edited)
    with pytest.raises(UserError, match=name.replace(".", r"\.")):
        features.FeatureStore(tmp_path / "s")


# -- a small Broden directory and the command --------------------------------------------

LABELS = [(1, "sky", "object"), (2, "grass", "object"), (3, "house", "object"), (4, "door", "part")]
COLOURS = {1: (90, 160, 250), 2: (40, 170, 40), 3: (200, 60, 50), 4: (90, 50, 20)}


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_broden(root: Path, n: int = 12, size: int = 64, seed: int = 0) -> Path:
    """n images (size x size) of sky over grass with a house (with a door) at a random place;
    segmentations at half size; every third image is in the val split."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    seg = size // 2
    rows = []
    for i in range(n):
        obj = np.ones((seg, seg), dtype=np.int64)
        obj[seg // 2 :] = 2
        top, left = rng.integers(0, seg - 12, size=2)
        obj[top : top + 12, left : left + 12] = 3
        part = np.zeros_like(obj)
        part[top + 6 : top + 12, left + 4 : left + 8] = 4
        pixels = np.where(part > 0, part, obj)
        rgb = np.array([COLOURS[int(v)] for v in pixels.reshape(-1)], dtype=np.uint8)
        big = rgb.reshape(seg, seg, 3).repeat(2, axis=0).repeat(2, axis=1)
        noise = rng.integers(-20, 20, size=big.shape)
        Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8)).save(images / f"{i}.png")
        encode_plane(obj).save(images / f"{i}_object.png")
        encode_plane(part).save(images / f"{i}_part.png")
        split = "val" if i % 3 == 2 else "train"
        rows.append([f"{i}.png", split, size, size, seg, seg, f"{i}_object.png", f"{i}_part.png"])
    _write_csv(
        root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", "object", "part"], rows
    )
    _write_csv(
        root / "label.csv",
        ["number", "name", "category", "frequency", "coverage", "syns"],
        [[0, "-", "-", 0, 0, ""]] + [[k, nm, f"{c}({n})", n, 1.0, ""] for k, nm, c in LABELS],
    )
    _write_csv(
        root / "category.csv",
        ["name", "first", "last", "count", "frequency"],
        [["object", 1, 3, 3, n], ["part", 4, 4, 1, n]],
    )
    return root


def write_model(path: Path) -> Path:
    """A randomly initialised resnet18 checkpoint fed 64 x 64 images: layer4 is 512 x 2 x 2."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    return save_checkpoint(
        path,
        model,
        arch="resnet18",
        classes=["a", "b", "c"],
        layer="layer4",
        input_size=(64, 64),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    write_broden(root / "broden")
    write_model(root / "model.pt")
    return root


def test_features_command_builds_the_store_from_broden(
    world: Path, capsys: pytest.CaptureFixture
) -> None:
    out = world / "store"
    argv = ["features", "--weights", str(world / "model.pt"), "--dataset", str(world / "broden")]
    assert main([*argv, "--out", str(out), "--min-images", "1", "--batch-size", "5"]) == 0
    assert "12 images (train 8, val 4)" in capsys.readouterr().out
    store = features.FeatureStore(out)
    assert store.header["model"]["name"] == "model"
    assert store.header["layer"] == "layer4"
    assert store.concept_names == ["sky", "grass", "house", "door"]
    # labels: the broden masks at full segmentation size, sampled at the centre of each cell
    full = BrodenDataset(world / "broden", min_images=1)
    for n in (0, 5):
        mask = full[n]["mask"].numpy()  # 4 x 32 x 32; cell i of 2 covers 16 pixels, centre 16i+8
        assert np.array_equal(store.concept_masks(n), mask[:, [8, 24]][:, :, [8, 24]])
    mtime = (out / "features.npy").stat().st_mtime_ns
    assert main([*argv, "--out", str(out), "--min-images", "1"]) == 0  # same settings: reused
    assert (out / "features.npy").stat().st_mtime_ns == mtime


def test_features_command_errors_are_one_line(world: Path, capsys: pytest.CaptureFixture) -> None:
    weights = ["--weights", str(world / "model.pt")]
    assert main(["features", *weights, "--dataset", str(world / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("ibd features: error: concept dataset directory not found")
        and err.count("\n") == 1
    )
    assert (
        main(["features", *weights, "--dataset", str(world / "broden"), "--batch-size", "0"]) == 2
    )
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_features_command_with_bad_settings_keeps_the_existing_store(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "store"
    argv = ["features", "--weights", str(world / "model.pt"), "--dataset", str(world / "broden")]
    assert main([*argv, "--out", str(out), "--min-images", "1"]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--min-images", "1000"]) == 2
    err = capsys.readouterr().err
    assert "keeps no concepts" in err and err.count("\n") == 1
    assert _snapshot(out) == before
    features.FeatureStore(out)


FAST = ["--epochs", "1", "--min-positives", "1", "--quiet"]  # the default (authors') procedure


def _learn(world: Path, *extra: str) -> list[str]:
    weights = ["--weights", str(world / "model.pt"), "--dataset", str(world / "broden")]
    return ["basis", "learn", *weights, "--min-images", "1", *FAST, *extra]


def test_basis_learn_uses_an_existing_store_and_never_silently_replaces_it(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    store, out = tmp_path / "store", tmp_path / "basis.npz"
    argv = ["features", "--weights", str(world / "model.pt"), "--dataset", str(world / "broden")]
    assert main([*argv, "--out", str(store), "--min-images", "1", "--float16"]) == 0
    before = _snapshot(store)
    capsys.readouterr()
    # only the dtype differs: the float16 store is used as it is, and the user is told
    assert main(_learn(world, "--features", str(store), "--out", str(out))) == 0
    err = capsys.readouterr().err
    assert f"using the existing float16 feature store {store}" in err
    assert _snapshot(store) == before
    assert json.loads(str(np.load(out)["meta"]))["features"]
    # other settings: a one-line error naming them, and the store is untouched
    for flags, named in (
        (["--min-images", "2"], "dataset.min_images"),
        (["--categories", "object"], "dataset.categories"),
        (["--layer", "layer3"], "layer"),
    ):
        assert main(_learn(world, "--features", str(store), "--out", str(out), *flags)) == 2
        err = capsys.readouterr().err
        assert err.startswith("ibd basis: error: the feature store") and named in err, err
        assert "--rebuild" in err and err.count("\n") == 1
        assert _snapshot(store) == before
    # --rebuild replaces it, with the flags' settings
    flags = ["--features", str(store), "--out", str(out), "--min-images", "2", "--rebuild"]
    assert main(_learn(world, *flags)) == 0
    header = json.loads((store / "header.json").read_text())
    assert (header["dtype"], header["dataset"]["min_images"]) == ("float32", 2)


def test_basis_learn_output_paths_are_checked_before_any_work(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "outdir").mkdir()
    (tmp_path / "afile").write_text("mine")
    store = tmp_path / "store"
    cases = [
        (["--features", str(store), "--out", str(tmp_path / "outdir")], "is a directory"),
        (["--features", str(store), "--out", str(tmp_path / "afile" / "b.npz")], "is a file"),
        (["--features", str(tmp_path / "afile"), "--out", str(tmp_path / "b.npz")], "is a file"),
        (["--features", str(tmp_path / "afile" / "s"), "--out", str(tmp_path / "b.npz")], "file"),
    ]
    for flags, message in cases:
        assert main(_learn(world, *flags)) == 2
        err = capsys.readouterr().err
        assert err.startswith("ibd basis: error: ") and message in err, err
        assert err.count("\n") == 1
    assert not store.exists()  # nothing was extracted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "outdir"]
    assert list((tmp_path / "outdir").iterdir()) == []
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_random_model_does_not_overwrite_the_trained_models_outputs(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from ibd import paths
    from ibd.nets.load import load_model

    assert load_model("resnet18", None, num_classes=3).name == "resnet18_random"
    assert load_model("resnet18", None, num_classes=3, mirrored=True).name == (
        "resnet18_random_mirror"
    )
    monkeypatch.setenv("IBD_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "models").mkdir(parents=True)
    (tmp_path / "home" / "models" / "resnet18.pt").write_bytes((world / "model.pt").read_bytes())
    trained = ["--weights", str(paths.model_path("resnet18"))]
    base = ["basis", "learn", "--dataset", str(world / "broden"), "--min-images", "1", *FAST]
    assert main([*base, *trained]) == 0
    basis_before = paths.basis_path("resnet18").read_bytes()
    store_before = _snapshot(paths.features_dir("resnet18"))
    assert main([*base, "--arch", "resnet18", "--num-classes", "3"]) == 0
    assert "resnet18_random: mAP" in capsys.readouterr().out
    assert paths.basis_path("resnet18_random").is_file()
    assert features.FeatureStore(paths.features_dir("resnet18_random")).header["model"]["name"] == (
        "resnet18_random"
    )
    assert paths.basis_path("resnet18").read_bytes() == basis_before
    assert _snapshot(paths.features_dir("resnet18")) == store_before
    # a second random model replaces the first one's store (it can never be reused) silently
    assert main([*base, "--arch", "resnet18", "--num-classes", "3"]) == 0
