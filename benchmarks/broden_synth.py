"""A Broden-shaped dataset and feature store of any size, for scale runs (not a product feature).

`write_broden(root, n)` writes a directory in Broden's exact on-disk layout (Bau et al. 2017;
docs/dissect.md): `index.csv` (image, split, ih, iw, sh, sw, color, object, part, material,
scene, texture), `label.csv`, `category.csv`, `c_<category>.csv`, and under `images/` one
224 x 224 JPEG name per image with 112 x 112 segmentation PNGs holding label numbers as
R + 256 * G. The label vocabulary has 1,198 labels over Broden's six categories (11 colors,
584 objects, 234 parts, 32 materials of which 8 are also objects, 298 scenes, 47 textures) and a
long-tailed (Zipf) frequency. Each image comes from one of four "sources" in Broden's mix
(ADE-like: object + up to three part planes + scene; Pascal-like: object + up to two part planes;
OpenSurfaces-like: material; DTD-like: a whole-image texture) and has a color plane.

Images do not matter for runs on a synthetic feature store, so by default every image name is
a hard link to one of a few template JPEGs (`images="link"`); `images="unique"` writes one noise
JPEG per image. Segmentations are drawn with numpy and written by Pillow (PNG compress level 1),
on all cores (`multiprocessing`).

`write_store(root, out, dim, grid)` writes a feature store in `ibd.data.features`' on-disk
format directly (header.json, features.npy, labels.npy, images.csv, concepts.json,
progress.json) for the dataset at `root`: labels are read by the real reader
(`ibd.data.broden.BrodenDataset` at feature resolution), features are
relu(labels @ V + noise) with a random non-negative direction V_c per concept, so that concept
classifiers and dissection have something to find. Chunked: memory is independent of N.

    .venv/bin/python benchmarks/broden_synth.py broden DIR --images 63305
    .venv/bin/python benchmarks/broden_synth.py store DIR STORE --dim 2048 --grid 7
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
SIZES = {"color": 11, "object": 584, "part": 234, "material": 32, "scene": 298, "texture": 47}
SHARED_MATERIAL = 8  # material labels that are also object labels (listed in both categories)
IMAGE_SIZE = 224
SEG_SIZE = 112
TEMPLATES = 16
# Broden's sources, roughly in its proportions (ADE20K, Pascal-Context/Part, OpenSurfaces, DTD)
SOURCES = (("ade", 0.35), ("pascal", 0.30), ("surfaces", 0.26), ("dtd", 0.09))
ZIPF = 1.1


@dataclass(frozen=True)
class Vocabulary:
    """Label numbers per category (1-based, global) and names; part -> parent objects."""

    numbers: dict[str, np.ndarray]
    names: dict[int, str]
    part_parents: np.ndarray  # per part label index: parent object index

    @property
    def size(self) -> int:
        return len(self.names)


def vocabulary(seed: int = 0) -> Vocabulary:
    numbers: dict[str, np.ndarray] = {}
    names: dict[int, str] = {}
    nxt = 1
    for cat in CATEGORIES:
        count = SIZES[cat] - (SHARED_MATERIAL if cat == "material" else 0)
        own = np.arange(nxt, nxt + count)
        for k, number in enumerate(own):
            names[int(number)] = f"{cat}{k}"
        nxt += count
        if cat == "material":
            # some materials are object labels too (Broden's `glass`: object(2);material(1))
            shared = numbers["object"][np.linspace(40, 300, SHARED_MATERIAL).astype(int)]
            own = np.concatenate([own, shared])
        numbers[cat] = own
    rng = np.random.default_rng([seed, 7])
    parents = rng.integers(0, 200, size=SIZES["part"])
    return Vocabulary(numbers, names, parents)


def zipf_pick(rng: np.random.Generator, n: int, k: int, a: float = ZIPF) -> np.ndarray:
    """k distinct indices of 0..n-1, index r drawn with weight 1 / (r + 2)^a."""
    weights = 1.0 / (np.arange(n) + 2.0) ** a
    return rng.choice(n, size=min(k, n), replace=False, p=weights / weights.sum())


_YY, _XX = np.mgrid[0:SEG_SIZE, 0:SEG_SIZE]


def _blob(rng: np.random.Generator, scale: tuple[float, float]) -> np.ndarray:
    """A random ellipse or rectangle mask (bool SEG x SEG), size a fraction `scale` of the side."""
    cy, cx = rng.uniform(0, SEG_SIZE, 2)
    ry, rx = rng.uniform(*scale, 2) * SEG_SIZE / 2
    if rng.random() < 0.5:
        return ((_YY - cy) / ry) ** 2 + ((_XX - cx) / rx) ** 2 <= 1.0
    return (np.abs(_YY - cy) <= ry) & (np.abs(_XX - cx) <= rx)


def _object_plane(
    rng: np.random.Generator, vocab: Vocabulary, count: int
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Object label plane: a background object then `count - 1` blobs on top; returns the plane
    and (object index, its visible region) for part drawing."""
    picks = zipf_pick(rng, SIZES["object"], count)
    plane = np.full((SEG_SIZE, SEG_SIZE), vocab.numbers["object"][picks[0]], dtype=np.int32)
    for obj in picks[1:]:
        plane[_blob(rng, (0.15, 0.7))] = vocab.numbers["object"][obj]
    regions = [(int(o), plane == vocab.numbers["object"][o]) for o in picks]
    return plane, [(o, r) for o, r in regions if r.any()]


def _part_planes(
    rng: np.random.Generator, vocab: Vocabulary, regions: list[tuple[int, np.ndarray]], most: int
) -> list[np.ndarray]:
    """Up to `most` part planes: parts of the visible objects inside their regions, object k's
    parts going to plane k % most (Broden's `_part_1`, `_part_2`, ...)."""
    planes: list[np.ndarray] = []
    for k, (obj, region) in enumerate(regions):
        children = np.flatnonzero(vocab.part_parents == obj)
        if not len(children):
            children = zipf_pick(rng, SIZES["part"], 2)
        which = k % most
        while len(planes) <= which:
            planes.append(np.zeros((SEG_SIZE, SEG_SIZE), dtype=np.int32))
        for part in rng.choice(children, size=min(3, len(children)), replace=False):
            planes[which][_blob(rng, (0.05, 0.35)) & region] = vocab.numbers["part"][part]
    return [p for p in planes if p.any()]


def _patch_plane(rng: np.random.Generator, labels: np.ndarray, count: int) -> np.ndarray:
    """A background label then blobs of others (materials)."""
    picks = zipf_pick(rng, len(labels), count)
    plane = np.full((SEG_SIZE, SEG_SIZE), labels[picks[0]], dtype=np.int32)
    for k in picks[1:]:
        plane[_blob(rng, (0.2, 0.8))] = labels[k]
    return plane


def _color_plane(rng: np.random.Generator, vocab: Vocabulary) -> np.ndarray:
    coarse = rng.integers(0, SIZES["color"], size=(8, 8))
    return vocab.numbers["color"][np.kron(coarse, np.ones((14, 14), dtype=int))].astype(np.int32)


def _encode(plane: np.ndarray) -> Image.Image:
    rgb = np.zeros((*plane.shape, 3), dtype=np.uint8)
    rgb[..., 0] = plane % 256
    rgb[..., 1] = plane // 256
    return Image.fromarray(rgb, mode="RGB")


def split_of(name: str) -> str:
    """Broden assigns splits by a hash of the file name; here one in four is `val`."""
    return "val" if hashlib.md5(name.encode()).digest()[0] % 4 == 0 else "train"


def _draw(
    i: int, seed: int, vocab: Vocabulary
) -> tuple[dict[str, list[np.ndarray]], dict[str, int]]:
    """Image i's planes per category and whole-image labels (scene, texture)."""
    rng = np.random.default_rng([seed, i])
    source = rng.choice(len(SOURCES), p=[p for _, p in SOURCES])
    kind = SOURCES[source][0]
    planes: dict[str, list[np.ndarray]] = {"color": [_color_plane(rng, vocab)]}
    whole: dict[str, int] = {}
    if kind in ("ade", "pascal"):
        plane, regions = _object_plane(rng, vocab, int(rng.integers(3, 9)))
        planes["object"] = [plane]
        parts = _part_planes(rng, vocab, regions, 3 if kind == "ade" else 2)
        if parts:
            planes["part"] = parts
        if kind == "ade":
            whole["scene"] = int(vocab.numbers["scene"][zipf_pick(rng, SIZES["scene"], 1)[0]])
    elif kind == "surfaces":
        planes["material"] = [_patch_plane(rng, vocab.numbers["material"], int(rng.integers(2, 5)))]
    else:
        whole["texture"] = int(vocab.numbers["texture"][zipf_pick(rng, SIZES["texture"], 1)[0]])
    return planes, whole


def _write_image(
    job: tuple[int, int, str, str, Vocabulary],
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Write image i's files; returns its index.csv row and per-(category, label) image and
    pixel counts (len(CATEGORIES) x (labels + 1))."""
    i, seed, root, images, vocab = job
    stem = f"synth/{i:06d}"
    base = Path(root) / "images"
    planes, whole = _draw(i, seed, vocab)
    seen = np.zeros((len(CATEGORIES), vocab.size + 1), dtype=np.int64)
    pixels = np.zeros_like(seen)
    cells = {c: "" for c in CATEGORIES}
    for cat, items in planes.items():
        g = CATEGORIES.index(cat)
        names = []
        for k, plane in enumerate(items, start=1):
            name = f"{stem}_{cat}.png" if len(items) == 1 else f"{stem}_{cat}_{k}.png"
            _encode(plane).save(base / name, compress_level=1)
            names.append(name)
            labels, counts = np.unique(plane, return_counts=True)
            pixels[g, labels] += counts
            seen[g, labels] = 1
        cells[cat] = ";".join(names)
    for cat, number in whole.items():
        g = CATEGORIES.index(cat)
        seen[g, number] = 1
        pixels[g, number] += SEG_SIZE * SEG_SIZE
        cells[cat] = str(number)
    seen[:, 0] = 0
    pixels[:, 0] = 0
    image = f"{stem}.jpg"
    target = base / image
    if images == "unique":
        noise = np.random.default_rng([seed, i, 1]).integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3))
        Image.fromarray(noise.astype(np.uint8)).save(target, quality=85)
    else:
        target.unlink(missing_ok=True)
        os.link(base / "templates" / f"t{i % TEMPLATES}.jpg", target)
    size = [str(IMAGE_SIZE), str(IMAGE_SIZE), str(SEG_SIZE), str(SEG_SIZE)]
    row = [image, split_of(image), *size, *(cells[c] for c in CATEGORIES)]
    return row, seen, pixels


def _templates(root: Path, seed: int) -> None:
    folder = root / "images" / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 99])
    for t in range(TEMPLATES):
        noise = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
        Image.fromarray(noise).save(folder / f"t{t}.jpg", quality=85)


def _csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_metadata(root: Path, vocab: Vocabulary, seen: np.ndarray, pixels: np.ndarray) -> None:
    """label.csv, category.csv and c_<cat>.csv from the per-category image and pixel counts."""
    labels = []
    for number in range(1, vocab.size + 1):
        cats = [(c, int(seen[g, number])) for g, c in enumerate(CATEGORIES) if seen[g, number]]
        # a label never drawn (small N) is listed under its own category with no images
        home = next(c for c in CATEGORIES if number in vocab.numbers[c])
        cell = ";".join(f"{c}({k})" for c, k in cats) or f"{home}(0)"
        total = int(seen[:, number].sum())
        coverage = float(pixels[:, number].sum()) / max(1, total) / SEG_SIZE**2
        labels.append([number, vocab.names[number], cell, total, f"{coverage:.4f}", ""])
    _csv(
        root / "label.csv",
        ("number", "name", "category", "frequency", "coverage", "syns"),
        labels,
    )
    categories = []
    for g, cat in enumerate(CATEGORIES):
        numbers = np.sort(vocab.numbers[cat])
        rows = []
        for code, number in enumerate(numbers, start=1):
            k = int(seen[g, number])
            cover = float(pixels[g, number]) / max(1, k) / SEG_SIZE**2
            rows.append([code, int(number), vocab.names[int(number)], k, f"{cover:.4f}"])
        _csv(
            root / f"c_{cat}.csv",
            ("code", "number", "name", "frequency", "coverage"),
            rows,
        )
        categories.append([cat, 1, len(numbers), len(numbers), int(seen[g].sum())])
    _csv(root / "category.csv", ("name", "first", "last", "count", "frequency"), categories)


def write_broden(
    root: str | Path,
    n: int,
    *,
    seed: int = 0,
    images: str = "link",
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a Broden-format dataset of `n` images at `root` (see the module docstring)."""
    root = Path(root)
    (root / "images" / "synth").mkdir(parents=True, exist_ok=True)
    _templates(root, seed)
    vocab = vocabulary(seed)
    seen = np.zeros((len(CATEGORIES), vocab.size + 1), dtype=np.int64)
    pixels = np.zeros_like(seen)
    rows = []
    jobs = ((i, seed, str(root), images, vocab) for i in range(n))
    processes = workers or os.cpu_count() or 1
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        done = pool.imap(_write_image, jobs, chunksize=64)
        for row, s, p in tqdm(done, total=n, desc="broden", unit="img", disable=not progress):
            rows.append(row)
            seen += s
            pixels += p
    header = ("image", "split", "ih", "iw", "sh", "sw", *CATEGORIES)
    _csv(root / "index.csv", header, rows)
    _write_metadata(root, vocab, seen, pixels)
    return root


# -- the feature store -------------------------------------------------------------------


class _Masks:
    """Dataset of (index, packed labels at feature resolution) through the real reader."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> np.ndarray:
        mask = self.dataset.load_mask(i).numpy()  # C x H x W
        return np.packbits(np.moveaxis(mask, 0, -1), axis=-1, bitorder="little")


def _packed_chunks(dataset: Any, batch: int, workers: int) -> Iterator[np.ndarray]:
    from torch.utils.data import DataLoader

    loader = DataLoader(_Masks(dataset), batch_size=batch, num_workers=workers, collate_fn=np.stack)
    yield from loader


NOISE_ROWS = 4099  # rows of the noise table (prime: row r of the store takes r mod 4099)


class _Features:
    """relu(labels @ V + 0.5 * noise) for blocks of positions: V (C x D) a random sparse
    non-negative direction per concept, the noise a fixed random table whose row r % 4099 goes
    to store row r. Sparse in the labels (a position has a few concepts), so a block costs its
    labels' rows of V, not a C x D product."""

    def __init__(self, concepts: int, dim: int, seed: int) -> None:
        import torch

        rng = np.random.default_rng([seed, 5])
        directions = rng.random((concepts, dim), dtype=np.float32)
        directions *= rng.random((concepts, dim)) < 0.05
        self.directions = torch.from_numpy(4.0 * directions)
        table = rng.standard_normal((NOISE_ROWS, dim), dtype=np.float32)
        self.noise = torch.from_numpy(0.5 * table)

    def block(self, labels: np.ndarray, first_row: int) -> np.ndarray:
        """float32 rows for bool labels (rows x C) of store rows first_row, first_row + 1, ..."""
        import torch

        rows, concepts = np.nonzero(labels)
        index = torch.from_numpy((np.arange(len(labels)) + first_row) % NOISE_ROWS)
        x = self.noise[index]
        x.index_add_(0, torch.from_numpy(rows), self.directions[torch.from_numpy(concepts)])
        return x.clamp_(min=0).numpy()


def write_store(
    root: str | Path,
    out: str | Path,
    *,
    dim: int = 2048,
    grid: int = 7,
    dtype: str = "float16",
    categories: Sequence[str] = ("object", "part"),
    min_images: int = 10,
    seed: int = 0,
    batch: int = 256,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """A complete feature store at `out` for the Broden directory `root`, in the real format,
    without a network: features relu(labels @ V + 0.5 * noise) (`_Features`)."""

    from ibd.data import features as store_format
    from ibd.data.broden import BrodenDataset

    dataset = BrodenDataset(root, categories, min_images=min_images, mask_size=(grid, grid))
    n, c = len(dataset), len(dataset.concepts)
    out = store_format.make_store_dir(out)
    store_format._remove_store_files(out)
    spec = store_format.StoreSpec(
        model={"name": f"synthetic_{dim}", "arch": "synthetic", "seed": seed},
        layer="synthetic",
        dataset={
            "root": str(Path(root).resolve()),
            "fingerprint": store_format.broden_fingerprint(root, categories, min_images),
            "categories": list(categories),
            "min_images": min_images,
        },
        dtype=dtype,
    )
    header = {
        "format": store_format.FORMAT,
        "key": spec.key(),
        **spec.__dict__,
        "layout": "NHWD",
        "num_images": n,
        "height": grid,
        "width": grid,
        "dim": dim,
        "num_concepts": c,
    }
    store_format._write_metadata(out, dataset)
    shape = (n, grid, grid, dim)
    feats = np.lib.format.open_memmap(out / "features.npy", "w+", dtype=dtype, shape=shape)
    packed = np.lib.format.open_memmap(
        out / "labels.npy", "w+", dtype=np.uint8, shape=(n, grid, grid, (c + 7) // 8)
    )
    synthetic = _Features(c, dim, seed)
    done = 0
    bar = tqdm(total=n, desc="store", unit="img", disable=not progress)
    for chunk in _packed_chunks(dataset, batch, workers):
        k = len(chunk)
        bits = np.unpackbits(chunk, axis=-1, count=c, bitorder="little").reshape(-1, c)
        block = synthetic.block(bits.astype(bool), done * grid * grid)
        feats[done : done + k] = block.reshape(k, grid, grid, dim)
        store_format.release_pages(feats)
        packed[done : done + k] = chunk
        done += k
        bar.update(k)
    bar.close()
    feats.flush()
    packed.flush()
    del feats, packed
    (out / "header.json").write_text(json.dumps(header, indent=1) + "\n", encoding="utf-8")
    (out / "progress.json").write_text(json.dumps({"images_done": n, "complete": True}))
    return out


def _direct_labels(job: tuple[int, int, int, int, Vocabulary]) -> tuple[np.ndarray, np.ndarray]:
    """Images start..stop-1 drawn as `write_broden` draws them, without any file: their object
    and part labels at the centre pixel of each grid cell (k x grid x grid x labels, bit-packed
    along the labels as the store packs them; object labels then part labels) and which labels
    each image has (bool k x labels)."""
    start, stop, seed, grid, vocab = job
    numbers = np.concatenate([vocab.numbers["object"][: SIZES["object"]], vocab.numbers["part"]])
    lut = np.full(vocab.size + 1, -1)
    lut[numbers] = np.arange(len(numbers))
    centre = np.minimum(((np.arange(grid) + 0.5) * SEG_SIZE / grid).astype(int), SEG_SIZE - 1)
    cells = np.zeros((stop - start, grid, grid, len(numbers)), dtype=bool)
    for k, i in enumerate(range(start, stop)):
        planes, _ = _draw(i, seed, vocab)
        for plane in (*planes.get("object", []), *planes.get("part", [])):
            index = lut[plane[np.ix_(centre, centre)]]
            yy, xx = np.nonzero(index >= 0)
            cells[k, yy, xx, index[yy, xx]] = True
    # bit-packed: Pool.imap runs ahead of a slower consumer, and what waits is kept small
    return np.packbits(cells, axis=-1, bitorder="little"), cells.any(axis=(1, 2))


def write_store_direct(
    out: str | Path,
    n: int,
    *,
    dim: int = 2048,
    grid: int = 7,
    dtype: str = "float16",
    seed: int = 0,
    chunk: int = 256,
    progress: bool = True,
) -> Path:
    """A complete feature store of `n` images without writing the dataset: labels drawn as
    `write_broden` would draw them (object and part planes, centre-pixel rule), every object
    and part label a concept, features as in `write_store`. Memory: one chunk of images."""

    from ibd.data import features as store_format

    vocab = vocabulary(seed)
    names = [vocab.names[int(x)] for x in vocab.numbers["object"][: SIZES["object"]]]
    names += [vocab.names[int(x)] for x in vocab.numbers["part"]]
    c = len(names)
    out = store_format.make_store_dir(out)
    store_format._remove_store_files(out)
    shape = (n, grid, grid, dim)
    feats = np.lib.format.open_memmap(out / "features.npy", "w+", dtype=dtype, shape=shape)
    packed = np.lib.format.open_memmap(
        out / "labels.npy", "w+", dtype=np.uint8, shape=(n, grid, grid, (c + 7) // 8)
    )
    synthetic = _Features(c, dim, seed)
    counts = np.zeros(c, dtype=np.int64)
    jobs = [(s, min(s + chunk, n), seed, grid, vocab) for s in range(0, n, chunk)]
    bar = tqdm(total=n, desc="store", unit="img", disable=not progress)
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        for (start, stop, *_), (bits, present) in zip(
            jobs, pool.imap(_direct_labels, jobs), strict=True
        ):
            cells = np.unpackbits(bits, axis=-1, count=c, bitorder="little").astype(bool)
            block = synthetic.block(cells.reshape(-1, c), start * grid * grid)
            feats[start:stop] = block.reshape(stop - start, grid, grid, dim)
            packed[start:stop] = bits
            counts += present.sum(0)
            store_format.release_pages(feats)
            bar.update(stop - start)
    bar.close()
    feats.flush()
    packed.flush()
    del feats, packed
    with (out / "images.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "path", "split"])
        for i in range(n):
            name = f"synth/{i:06d}.jpg"
            writer.writerow([i, name, split_of(name)])
    concepts = [
        {"index": k, "number": k + 1, "name": name, "category": "object", "image_count": int(m)}
        for k, (name, m) in enumerate(zip(names, counts, strict=True))
    ]
    for record in concepts[SIZES["object"] :]:
        record["category"] = "part"
    (out / "concepts.json").write_text(json.dumps({"concepts": concepts, "dropped": []}))
    spec = store_format.StoreSpec(
        model={"name": f"synthetic_{dim}", "arch": "synthetic", "seed": seed},
        layer="synthetic",
        dataset={"direct": n, "seed": seed},
        dtype=dtype,
    )
    header = {
        "format": store_format.FORMAT,
        "key": spec.key(),
        **spec.__dict__,
        "layout": "NHWD",
        "num_images": n,
        "height": grid,
        "width": grid,
        "dim": dim,
        "num_concepts": c,
    }
    (out / "header.json").write_text(json.dumps(header, indent=1) + "\n", encoding="utf-8")
    (out / "progress.json").write_text(json.dumps({"images_done": n, "complete": True}))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("broden", help="write a Broden-format dataset")
    b.add_argument("root", type=Path)
    b.add_argument("--images", type=int, default=2000)
    b.add_argument("--image-files", choices=("link", "unique"), default="link")
    b.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("store", help="write a synthetic feature store for a Broden directory")
    s.add_argument("root", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--dim", type=int, default=2048)
    s.add_argument("--grid", type=int, default=7)
    s.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    s.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "broden":
        write_broden(args.root, args.images, seed=args.seed, images=args.image_files)
    else:
        write_store(
            args.root, args.out, dim=args.dim, grid=args.grid, dtype=args.dtype, seed=args.seed
        )


if __name__ == "__main__":
    main()
