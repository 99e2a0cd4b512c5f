"""`ibd dissect` against NetDissect-Lite (CSAILVision/NetDissect-Lite), side by side: the same
Broden-format data, the same network, the same categories, one process, timed stage by stage.

NetDissect-Lite is not part of this repository: pass the path of a checkout with
`--netdissect DIR`. Its code runs unchanged; only what current Python and SciPy no longer
provide is supplied before it is imported (`scipy.misc.imresize` / `imread`, removed from SciPy:
Pillow's bilinear resize in mode 'F' and Pillow's reader, which is what they called;
`numpy.NaN`, removed from NumPy 2; generators that end by `raise StopIteration`, an error since
Python 3.7, end quietly as they did in Python 2; its one-hot matrix indexed by a tuple, as
NumPy now requires; images read as int32, see `_imread`), and its
`settings` module is filled in from our flags (CPU, no test mode). Without `--netdissect` only
our side runs.

The data is written by `benchmarks/broden_synth.py` (one noise JPEG per image, so decoding is
real work) unless `--dataset` names a Broden-format directory. The network is a torchvision
architecture with random weights (speed does not depend on training). Both sides cache the
layer's activations once (NetDissect-Lite in a float64 memmap, ours in a float32 one), compute
the thresholds (NetDissect-Lite with its approximate streaming quantile, ours exactly), then
count. The ratio is NetDissect-Lite's total time over ours. Our side uses NetDissect-Lite's
input normalisation, its `overlap` category rule and its coverage rule for labels in several
categories, so the best labels can be compared too (they differ only where its approximate
quantile moves a threshold enough to change a unit's best label).

    .venv/bin/python benchmarks/dissect_speed.py --netdissect /path/to/NetDissect-Lite \\
        [--images 300] [--arch resnet18] [--work /tmp/dissect_speed]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

CATEGORIES = ["object", "part", "scene", "texture", "color"]  # NetDissect-Lite's default
NETDISSECT_MEAN_RGB = (124.6901, 118.6897, 109.5388)  # its bgr_mean [109.5388, 118.6897, 124.6901]


def _imresize(arr: np.ndarray, size: tuple[int, int], mode: str | None = None) -> np.ndarray:
    """scipy.misc.imresize(arr, (h, w), mode='F') as SciPy had it: Pillow bilinear, mode F."""
    image = Image.fromarray(np.asarray(arr, dtype=np.float32), mode="F")
    return np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _imread(path: str) -> np.ndarray:
    """scipy.misc.imread's pixels, as int32: NetDissect-Lite computes R + G * 256 on them, which
    NumPy 1 widened from uint8 on its own and NumPy 2 refuses (NEP 50)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int32)


def _onehot(self: Any, arr: np.ndarray, minlength: int | None = None) -> np.ndarray:
    """NetDissect-Lite's `SegmentationData.onehot` with its index written as a tuple."""
    length = int(np.amax(arr)) + 1
    if minlength is not None:
        length = max(minlength, length)
    result = np.zeros((*arr.shape, length))
    result[(*np.indices(arr.shape), arr)] = 1
    return result


def _ended_quietly(generator: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        iterator = generator(*args, **kwargs)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except RuntimeError as exc:
                if isinstance(exc.__cause__, StopIteration):
                    return
                raise
            yield item

    return wrapper


def netdissect_side(
    checkout: Path, data: Path, out: Path, model: torch.nn.Module, layer: str, args: Any
) -> dict[str, float]:
    """NetDissect-Lite's three stages on `data`, timed; its tally.csv goes to `out`."""
    import scipy.misc

    if not hasattr(np, "NaN"):  # removed in NumPy 2; NetDissect-Lite's vecquantile uses it
        np.NaN = np.nan  # type: ignore[attr-defined]
    scipy.misc.imresize = _imresize  # type: ignore[attr-defined]
    scipy.misc.imread = _imread  # type: ignore[attr-defined]
    sys.path.insert(0, str(checkout))
    settings = types.ModuleType("settings")
    settings.__dict__.update(
        GPU=False,
        TEST_MODE=False,
        CLEAN=False,
        MODEL=args.arch,
        QUANTILE=args.quantile,
        SEG_THRESHOLD=0.04,
        SCORE_THRESHOLD=0.04,
        TOPN=10,
        PARALLEL=1,
        CATAGORIES=CATEGORIES,
        OUTPUT_FOLDER=str(out),
        DATA_DIRECTORY=str(data),
        IMG_SIZE=args.image_size,
        NUM_CLASSES=365,
        FEATURE_NAMES=[layer],
        WORKERS=args.workers,
        BATCH_SIZE=args.batch_size,
        TALLY_BATCH_SIZE=16,
        TALLY_AHEAD=4,
        INDEX_FILE="index.csv",
    )
    sys.modules["settings"] = settings
    import feature_operation
    from loader import data_loader

    # PEP 479 (Python 3.7): a generator that ends with `raise StopIteration` now raises
    # RuntimeError; end the two prefetcher generators quietly instead, as they did in Python 2
    # NumPy >= 1.23 reads `a[list_of_index_arrays]` as one index array, not as a tuple: its
    # one-hot label-to-category matrix would come out all ones (every label in every category)
    data_loader.SegmentationData.onehot = _onehot
    prefetcher = data_loader.SegmentationPrefetcher
    for name in ("batches", "tensor_batches"):
        setattr(prefetcher, name, _ended_quietly(getattr(prefetcher, name)))

    out.mkdir(parents=True, exist_ok=True)
    handle = model.get_submodule(layer).register_forward_hook(feature_operation.hook_feature)
    seconds: dict[str, float] = {}
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet, torch.no_grad():
        started = time.perf_counter()
        fo = feature_operation.FeatureOperator()
        features, _ = fo.feature_extraction(model=model)
        seconds["features"] = time.perf_counter() - started
        started = time.perf_counter()
        thresholds = fo.quantile_threshold(features[0], savepath="quantile.npy")
        seconds["thresholds"] = time.perf_counter() - started
        started = time.perf_counter()
        fo.tally(features[0], thresholds, savepath="tally.csv")
        seconds["tally"] = time.perf_counter() - started
    handle.remove()
    seconds["total"] = sum(seconds.values())
    return seconds


def ibd_side(data: Path, out: Path, model: torch.nn.Module, layer: str, args: Any) -> dict:
    from ibd import dissect
    from ibd.data.broden import BrodenDataset

    started = time.perf_counter()
    # NetDissect-Lite's input: (RGB * 255 - its BGR mean reversed) / (255 * 0.224)
    dataset = BrodenDataset(
        data,
        CATEGORIES,
        min_images=1,
        image_size=(args.image_size, args.image_size),
        mean=[m / 255 for m in NETDISSECT_MEAN_RGB],
        std=(0.224, 0.224, 0.224),
    )
    result = dissect.dissect(
        model,
        layer,
        dataset,
        quantile=args.quantile,
        rule="overlap",
        primary="coverage",
        batch_size=args.batch_size,
        workers=args.workers,
        progress=False,
        cache_dir=out.parent,
    )
    dissect.write_outputs(out, result, 0.04, {"model": args.arch})
    seconds = {"total": time.perf_counter() - started, **result.seconds}
    return seconds


def same_labels(ours: Path, theirs: Path) -> str:
    """How many units carry the same best label in both tally.csv files."""
    from ibd.dissect import read_tally

    a, b = read_tally(ours / "tally.csv"), read_tally(theirs / "tally.csv")
    same = sum(x.label == y.label for x, y in zip(a, b, strict=True))
    return f"{same} of {len(a)}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netdissect", type=Path, help="a NetDissect-Lite checkout")
    parser.add_argument("--dataset", type=Path, help="Broden-format directory (default: written)")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--quantile", type=float, default=0.005)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="our data-loading processes (NetDissect-Lite's prefetcher uses cpu_count())",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternate both sides N times")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/dissect_speed"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.dataset
    if data is None:
        import broden_synth

        data = args.work / "broden"
        if not (data / "index.csv").is_file():
            broden_synth.write_broden(data, args.images, images="unique", progress=False)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.arch)(num_classes=365).eval()
    report: dict[str, Any] = {"images": args.images, "arch": args.arch, "rounds": []}
    for _ in range(args.rounds):
        ours = ibd_side(data, args.work / "ibd", model, args.layer, args)
        record: dict[str, Any] = {"ibd_s": ours}
        if args.netdissect is not None:
            shutil.rmtree(args.work / "netdissect", ignore_errors=True)
            theirs = netdissect_side(
                args.netdissect, data, args.work / "netdissect", model, args.layer, args
            )
            record["netdissect_s"] = theirs
            record["netdissect_over_ibd"] = theirs["total"] / ours["total"]
            record["same_label"] = same_labels(args.work / "ibd", args.work / "netdissect")
        report["rounds"].append(record)
    ratios = [r["netdissect_over_ibd"] for r in report["rounds"] if "netdissect_over_ibd" in r]
    if ratios:
        report["median_netdissect_over_ibd"] = float(np.median(ratios))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
