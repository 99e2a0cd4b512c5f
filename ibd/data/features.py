"""The feature store: a layer's activations over a concept dataset, on disk, with the concept
labels at feature resolution (paper 3.1: one feature vector a(i,j) in R^D per position of the
H x W grid; its labels are the concept masks downsampled to H x W by nearest neighbour).

A store is a directory:

    header.json    format, model identity, layer, dataset (root, fingerprint), dtype, shapes, key
    features.npy   N x H x W x D float32 or float16, memory-mappable `.npy`
    labels.npy     N x H x W x ceil(C/8) uint8: concept labels bit-packed along the concept axis
                   (numpy `packbits`, little bit order: concept c is bit c % 8 of byte c // 8)
    images.csv     index, path, split (one row per image, in store order)
    concepts.json  the kept concepts (index, number, name, category, image_count) and the dropped
    progress.json  {"images_done": n, "complete": bool}, rewritten after every flushed batch

Positions are the fastest-varying after images and the vector the slowest, so the (N*H*W) x D
view `vectors` reads a(i,j) rows contiguously, which is what basis learning samples; the labels
share the same row order. Extraction streams the dataset through a DataLoader, never holding
it in memory. It resumes from the last flushed batch after a crash; re-running with the same
settings (the header's `key`) skips; different settings rebuild.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import json
import mmap
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ibd.data.broden import nearest_indices
from ibd.errors import UserError
from ibd.nets import hooks

FORMAT = "ibd-feature-store-1"
DTYPES = ("float32", "float16")
FILES = (
    "header.json",
    "features.npy",
    "labels.npy",
    "images.csv",
    "concepts.json",
    "progress.json",
)
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class ConceptDataset(Protocol):
    """What extraction needs from a concept dataset (`ibd.data.broden.BrodenDataset` is one): items
    `{"image": 3 x H x W, "mask": bool C x h x w, ...}`, the kept concepts, and per image its
    path and split, known without decoding it."""

    concepts: Sequence[Any]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...

    def image_path(self, i: int) -> Path: ...

    def split_of(self, i: int) -> str: ...


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def broden_fingerprint(root: str | Path, categories: Iterable[str], min_images: int) -> str:
    """sha256 over the Broden metadata files that decide the images, the kept concepts and the
    split (`index.csv`, `label.csv`, `category.csv`, the selected `c_<category>.csv`), plus the
    selection settings. The image and plane files themselves are not hashed."""
    root = Path(root)
    digest = hashlib.sha256()
    cats = list(categories)
    digest.update(json.dumps({"categories": cats, "min_images": int(min_images)}).encode())
    for name in ("index.csv", "label.csv", "category.csv", *(f"c_{c}.csv" for c in cats)):
        path = root / name
        digest.update(name.encode())
        digest.update(file_sha256(path).encode() if path.is_file() else b"absent")
    return digest.hexdigest()


@dataclass(frozen=True)
class StoreSpec:
    """What a store's contents depend on. `model` identifies the network and its input
    (name, arch, weights + sha256, mirrored, input size, normalisation), `dataset` the concept
    data (root, fingerprint, categories, min_images). Equal specs give equal stores."""

    model: dict[str, Any]
    layer: str
    dataset: dict[str, Any]
    dtype: str = "float32"

    def key(self) -> str:
        text = json.dumps(
            {"format": FORMAT, **dataclasses.asdict(self)}, sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()


def _concept_dict(concept: Any) -> dict[str, Any]:
    fields = ("index", "number", "name", "category", "image_count")
    return {f: getattr(concept, f) for f in fields if hasattr(concept, f)}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"feature store file missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"feature store file is corrupt (not JSON): {path}") from None


def downsample_labels(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour downsampling of bool N x C x h x w masks to N x C x H x W: output cell
    (i, j) takes source pixel (floor((i + 0.5) h / H), floor((j + 0.5) w / W)), the pixel under
    the cell's centre (the rule of `ibd.data.broden.nearest_indices`)."""
    h, w = mask.shape[-2:]
    if (h, w) == tuple(size):
        return mask
    ys = torch.from_numpy(nearest_indices(h, size[0]))
    xs = torch.from_numpy(nearest_indices(w, size[1]))
    return mask[..., ys, :][..., xs]


# Rows read between two releases of the mapped pages. A read of scattered rows maps more than
# the rows themselves: on each page fault Linux also maps the neighbouring pages already in the
# page cache (fault-around, 64 KiB by default), so one read of 65,536 scattered rows of a
# Broden-sized store mapped gigabytes at once (benchmarks/RESULTS.md, "The paper's scale").
# 4,096 rows bound that to 256 MiB.
RELEASE_ROWS = 4096


def release_pages(array: np.ndarray) -> None:
    """Drop the pages of a memory-mapped array from this process's resident set (Linux
    `madvise(MADV_DONTNEED)`; they stay in the page cache, and written pages of a shared file
    mapping are kept). Reading a 12 GB store through its mapping would otherwise count every
    page read in the process's resident memory. A no-op for other arrays and platforms."""
    base: Any = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED") and not base.closed:
        base.madvise(mmap.MADV_DONTNEED)


def pack_labels(mask: np.ndarray) -> np.ndarray:
    """bool N x C x H x W -> uint8 N x H x W x ceil(C/8), bits along the concept axis."""
    return np.packbits(np.moveaxis(mask, 1, -1), axis=-1, bitorder="little")


def unpack_labels(packed: np.ndarray, num_concepts: int) -> np.ndarray:
    """uint8 ... x ceil(C/8) -> bool ... x C (inverse of the packing of `pack_labels`)."""
    bits = np.unpackbits(packed, axis=-1, count=num_concepts, bitorder="little")
    return bits.astype(bool)


HEADER_INTS = ("num_images", "height", "width", "dim", "num_concepts")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_progress(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _is_count(value.get("images_done"))
        and isinstance(value.get("complete"), bool)
    )


def _checked_header(path: Path) -> dict[str, Any]:
    """The header at `path`, with the fields a reader needs checked (one-line errors)."""
    header = _read_json(path)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise UserError(f"{path} is not a {FORMAT} header")
    for name in HEADER_INTS:
        if name not in header:
            raise UserError(f"{path} is corrupt: it has no '{name}'")
        if not _is_count(header[name]):
            raise UserError(f"{path} is corrupt: '{name}' is {header[name]!r}, not a count")
    if header.get("dtype") not in DTYPES:
        raise UserError(f"{path} is corrupt: 'dtype' must be one of {', '.join(DTYPES)}")
    return header


def _checked_concepts(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped) concept records of a store's concepts.json (one-line errors)."""
    document = _read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("concepts"), list):
        raise UserError(f"{path} is corrupt: expected an object with a 'concepts' list")
    dropped = document.get("dropped", [])
    if not isinstance(dropped, list):
        raise UserError(f"{path} is corrupt: 'dropped' is not a list")
    for record in (*document["concepts"], *dropped):
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            raise UserError(f"{path} is corrupt: every concept needs a 'name' ({record!r})")
    return document["concepts"], dropped


class FeatureStore:
    """A complete store opened read-only; arrays are memory-mapped, nothing is loaded whole."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "header.json").is_file():
            raise UserError(f"no feature store at {self.path} (run `ibd features`)")
        self.header: dict[str, Any] = _checked_header(self.path / "header.json")
        progress = _read_json(self.path / "progress.json")
        if not _is_progress(progress):
            raise UserError(
                f"{self.path / 'progress.json'} is corrupt: expected "
                '{"images_done": n, "complete": true|false}'
            )
        if not progress["complete"]:
            raise UserError(
                f"feature store {self.path} is incomplete ({progress['images_done']} of "
                f"{self.header['num_images']} images): re-run `ibd features` to finish it"
            )
        n, h, w, d = (self.header[k] for k in ("num_images", "height", "width", "dim"))
        self.num_concepts = int(self.header["num_concepts"])
        self.features = self._memmap("features.npy", (n, h, w, d), np.dtype(self.header["dtype"]))
        self.labels = self._memmap("labels.npy", (n, h, w, (self.num_concepts + 7) // 8), "u1")
        self.paths, self.splits = self._read_images(n)
        self.concepts, self.dropped = _checked_concepts(self.path / "concepts.json")
        if len(self.concepts) != self.num_concepts:
            raise UserError(
                f"{self.path / 'concepts.json'} lists {len(self.concepts)} concepts but the "
                f"header says {self.num_concepts}"
            )

    def _memmap(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        path = self.path / name
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"feature store file missing: {path}") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"feature store file is corrupt: {path} ({exc})") from None
        if array.shape != tuple(shape) or array.dtype != np.dtype(dtype):
            raise UserError(
                f"{path} is {array.dtype} {array.shape}, the header says {np.dtype(dtype)} {shape}"
            )
        return array

    def _read_images(self, n: int) -> tuple[list[str], np.ndarray]:
        path = self.path / "images.csv"
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except FileNotFoundError:
            raise UserError(f"feature store file missing: {path}") from None
        except (UnicodeDecodeError, csv.Error):
            raise UserError(f"feature store file is corrupt (not CSV text): {path}") from None
        if len(rows) != n or any(
            set(r) != {"index", "path", "split"} or None in r.values() for r in rows
        ):
            raise UserError(f"{path} must hold index,path,split rows for {n} images")
        return [r["path"] for r in rows], np.array([r["split"] for r in rows])

    @property
    def num_images(self) -> int:
        return int(self.header["num_images"])

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.header["height"]), int(self.header["width"])

    @property
    def dim(self) -> int:
        return int(self.header["dim"])

    @property
    def concept_names(self) -> list[str]:
        return [str(c["name"]) for c in self.concepts]

    @property
    def vectors(self) -> np.ndarray:
        """(N*H*W) x D view: row n*H*W + i*W + j is a(i,j) of image n."""
        return self.features.reshape(-1, self.dim)

    @property
    def packed_rows(self) -> np.ndarray:
        """(N*H*W) x ceil(C/8) view of the packed labels, rows as in `vectors`."""
        return self.labels.reshape(-1, self.labels.shape[-1])

    def images_in(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def rows_of(self, images: np.ndarray) -> np.ndarray:
        """Flat position rows of the given images, image by image."""
        per = self.grid[0] * self.grid[1]
        return (np.asarray(images, dtype=np.int64)[:, None] * per + np.arange(per)).reshape(-1)

    def read_vectors(self, rows: np.ndarray) -> np.ndarray:
        """float32 len(rows) x D (rows sorted ascending read fastest). The mapped pages read
        are released from the process every `RELEASE_ROWS` rows (`release_pages`): its resident
        memory stays at what it holds, however much of the store it streams."""
        rows = np.asarray(rows)
        values = np.empty((len(rows), self.dim), dtype=np.float32)
        for start in range(0, len(rows), RELEASE_ROWS):
            part = slice(start, start + RELEASE_ROWS)
            values[part] = self.vectors[rows[part]]
            release_pages(self.features)
        return values

    def read_labels(self, rows: np.ndarray) -> np.ndarray:
        """bool len(rows) x C (mapped pages released as in `read_vectors`)."""
        rows = np.asarray(rows)
        values = np.empty((len(rows), self.num_concepts), dtype=bool)
        for start in range(0, len(rows), RELEASE_ROWS):
            part = slice(start, start + RELEASE_ROWS)
            values[part] = unpack_labels(self.packed_rows[rows[part]], self.num_concepts)
            release_pages(self.labels)
        return values

    def concept_masks(self, image: int) -> np.ndarray:
        """bool C x H x W labels of one image at feature resolution."""
        return np.moveaxis(unpack_labels(self.labels[image], self.num_concepts), -1, 0)


def _progress(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((path / "progress.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if _is_progress(value) else None


def existing_header(path: str | Path) -> dict[str, Any] | None:
    """The header of whatever store is at `path` (complete or not), None when there is none or
    it is unreadable."""
    try:
        value = json.loads((Path(path) / "header.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def spec_differences(header: dict[str, Any], spec: StoreSpec) -> list[str]:
    """The settings, as dotted names (`dtype`, `layer`, `model.weights_sha256`,
    `dataset.min_images`, ...), in which the store with `header` differs from `spec`; empty when
    `spec` describes that store."""
    new = json.loads(json.dumps({"format": FORMAT, **dataclasses.asdict(spec)}, default=str))
    found = []
    for name, value in new.items():
        old = header.get(name)
        if isinstance(value, dict) and isinstance(old, dict):
            found += [f"{name}.{k}" for k in sorted({*value, *old}) if value.get(k) != old.get(k)]
        elif value != old:
            found.append(name)
    return found


def make_store_dir(path: str | Path) -> Path:
    """Create the store directory `path` (and its parents); one-line errors."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"feature store {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the feature store directory {path}: {exc}") from None
    return path


def _open_for_resume(
    out: Path, header: dict[str, Any], n: int, num_concepts: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The arrays of the unfinished store at `out`, opened for writing, or None when they are
    missing or do not match its header (then the store is rebuilt)."""
    try:
        shape = tuple(int(header[k]) for k in ("num_images", "height", "width", "dim"))
        features = np.load(out / "features.npy", mmap_mode="r+", allow_pickle=False)
        labels = np.load(out / "labels.npy", mmap_mode="r+", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (
        shape[0] != n
        or header.get("dtype") not in DTYPES
        or features.shape != shape
        or features.dtype != np.dtype(header["dtype"])
        or labels.shape != (*shape[:3], (num_concepts + 7) // 8)
        or labels.dtype != np.uint8
    ):
        return None
    return features, labels


def _remove_store_files(path: Path) -> None:
    for name in FILES:
        (path / name).unlink(missing_ok=True)


def _check_space(out: Path, need: int) -> None:
    """UserError when the file system under `out` cannot take `need` more bytes, counting the
    blocks of an old store there (about to be removed) as free."""
    old = [out / name for name in FILES if (out / name).is_file()]
    freed = sum(getattr(p.stat(), "st_blocks", 0) * 512 for p in old)
    free = shutil.disk_usage(out).free + freed
    if need > free:
        raise UserError(
            f"the feature store at {out} needs {need / 2**20:,.1f} MiB and only "
            f"{free / 2**20:,.1f} MiB are free there (--float16 halves it; --features DIR "
            "puts it elsewhere)"
        )


def _reserve(path: Path) -> None:
    """Allocate the blocks of the memory-mapped file at `path` now, where the platform has
    posix_fallocate: `open_memmap` makes a sparse file, and a write through the mapping that
    finds the disk full kills the process with SIGBUS ("Bus error", no message)."""
    if not hasattr(os, "posix_fallocate"):
        return
    with path.open("r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise UserError(f"no room on the disk for {path} ({exc.strerror})") from None
            # any other refusal (a file system without fallocate): the file stays sparse


def _write_metadata(out: Path, dataset: ConceptDataset) -> None:
    try:
        with (out / "images.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "path", "split"])
            for i in range(len(dataset)):
                writer.writerow([i, str(dataset.image_path(i)), dataset.split_of(i)])
    except OSError as exc:
        raise UserError(f"cannot write {out / 'images.csv'}: {exc.strerror or exc}") from None
    document = {
        "concepts": [_concept_dict(c) for c in dataset.concepts],
        "dropped": [_concept_dict(c) for c in getattr(dataset, "dropped", [])],
    }
    _atomic_write(out / "concepts.json", json.dumps(document, indent=1) + "\n")


def _to_store_dtype(
    features: torch.Tensor, dtype: str, layer: str, paths: Sequence[str]
) -> np.ndarray:
    """N x D x H x W activations as the store's N x H x W x D block. Non-finite activations
    are an error naming the first image that has one: a single NaN would make every
    classifier's training NaN (the bank's per-dimension mean and spread)."""
    array = features.permute(0, 2, 3, 1).float().cpu().numpy()
    finite = np.isfinite(array).reshape(len(array), -1).all(1)
    if not finite.all():
        raise UserError(
            f"layer {layer} gives non-finite activations (NaN or inf) on "
            f"{paths[int(np.argmin(finite))]}: the model's weights or the image are broken"
        )
    if dtype == "float16":
        if np.abs(array).max(initial=0.0) > _FLOAT16_MAX:
            raise UserError(
                f"activations exceed float16's range ({_FLOAT16_MAX:g}): drop --float16"
            )
        return array.astype(np.float16)
    return array


def _check_build_input(dataset: ConceptDataset, spec: StoreSpec, batch_size: int) -> None:
    if spec.dtype not in DTYPES:
        raise UserError(f"feature dtype must be one of {', '.join(DTYPES)}, not {spec.dtype}")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if len(dataset) == 0:
        raise UserError("the concept dataset has no images")
    if len(dataset.concepts) == 0:
        raise UserError("the concept dataset keeps no concepts (lower --min-images?)")


def _resume_point(
    out: Path, key: str, n: int, num_concepts: int
) -> tuple[bool, int, tuple[np.ndarray, np.ndarray] | None]:
    """(complete, first image to extract, the arrays opened for writing when resuming)."""
    header = existing_header(out)
    state = _progress(out) if header and header.get("key") == key else None
    if state is not None and state["complete"]:
        return True, n, None
    if state is not None and 0 < state["images_done"] < n:
        opened = _open_for_resume(out, header or {}, n, num_concepts)
        if opened is not None:
            _reserve(out / "features.npy")
            _reserve(out / "labels.npy")
            return False, state["images_done"], opened
    return False, 0, None


def _create_store(
    out: Path,
    dataset: ConceptDataset,
    spec: StoreSpec,
    key: str,
    shape: tuple[int, int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Replace whatever is at `out` by a new store's metadata and preallocated arrays of
    N x H x W x D features; called once the first batch has gone through."""
    n, h, w, d = shape
    num_concepts = len(dataset.concepts)
    itemsize = np.dtype(spec.dtype).itemsize
    _check_space(out, n * h * w * (d * itemsize + (num_concepts + 7) // 8))
    _remove_store_files(out)
    header = {
        "format": FORMAT,
        "key": key,
        **dataclasses.asdict(spec),
        "layout": "NHWD",
        "num_images": n,
        "height": h,
        "width": w,
        "dim": d,
        "num_concepts": num_concepts,
    }
    _write_metadata(out, dataset)
    try:
        features = np.lib.format.open_memmap(
            out / "features.npy", mode="w+", dtype=spec.dtype, shape=(n, h, w, d)
        )
        labels = np.lib.format.open_memmap(
            out / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, h, w, (num_concepts + 7) // 8)
        )
        _reserve(out / "features.npy")
        _reserve(out / "labels.npy")
    except UserError:
        _remove_store_files(out)  # give the room back
        raise
    except OSError as exc:
        _remove_store_files(out)
        raise UserError(
            f"cannot create the feature store at {out}: {exc.strerror or exc}"
        ) from None
    _atomic_write(out / "header.json", json.dumps(header, indent=1) + "\n")
    return features, labels


def _batch_arrays(
    batch: dict[str, Any], features: torch.Tensor, spec: StoreSpec, done: int, num_concepts: int
) -> tuple[np.ndarray, np.ndarray]:
    """One batch's store blocks: (features N x H x W x D, packed labels at H x W)."""
    mask = batch["mask"]
    if mask.ndim != 4 or mask.shape[1] != num_concepts:
        raise UserError(
            f"dataset masks are {tuple(mask.shape)}, expected N x {num_concepts} x h x w"
        )
    k, _, h, w = features.shape
    paths = batch.get("path") or [f"image {done + i}" for i in range(k)]
    block = _to_store_dtype(features, spec.dtype, spec.layer, paths)
    packed = pack_labels(downsample_labels(mask.bool(), (h, w)).numpy())
    return block, packed


def build(
    model: nn.Module,
    dataset: ConceptDataset,
    out: str | Path,
    spec: StoreSpec,
    *,
    batch_size: int = 32,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> FeatureStore:
    """Extract `spec.layer` of `model` over `dataset` into the store at `out`; returns it opened.

    Complete store with the same `spec.key()`: nothing to do. Incomplete one with the same key:
    continue after its last flushed batch. Anything else there: rebuild from scratch. The input
    is checked first, and an old store is only removed once the first batch of the new one has
    been extracted, so a bad invocation leaves it as it was. After every batch the arrays are
    flushed and `progress.json` rewritten atomically, so a run killed at any point (SIGKILL
    included) loses at most the batch in flight.
    """
    _check_build_input(dataset, spec, batch_size)
    n, num_concepts = len(dataset), len(dataset.concepts)
    out = make_store_dir(out)
    key = spec.key()
    complete, start, opened = _resume_point(out, key, n, num_concepts)
    if complete:
        return FeatureStore(out)
    features, labels = opened if opened is not None else (None, None)
    loader = DataLoader(
        Subset(dataset, range(start, n)), batch_size=batch_size, num_workers=workers
    )
    model = model.eval().to(device)
    done = start
    bar = tqdm(total=n, initial=start, unit="img", desc="features", disable=not progress)
    try:
        for batch in loader:
            with torch.no_grad():
                forward = hooks.run(model, spec.layer, batch["image"].to(device))
            _, d, h, w = forward.features.shape
            block, packed = _batch_arrays(batch, forward.features, spec, done, num_concepts)
            if features is None or labels is None:
                # The first batch went through: only now does an old store make way.
                features, labels = _create_store(out, dataset, spec, key, (n, h, w, d))
            if features.shape[1:] != (h, w, d):
                raise UserError(
                    f"layer {spec.layer} gives {d} x {h} x {w} features, the store at {out} "
                    f"holds {features.shape[3]} x {features.shape[1]} x {features.shape[2]}"
                )
            k = len(block)
            features[done : done + k] = block
            labels[done : done + k] = packed
            features.flush()
            labels.flush()
            release_pages(features)
            release_pages(labels)
            done += k
            _atomic_write(
                out / "progress.json", json.dumps({"images_done": done, "complete": done == n})
            )
            bar.update(k)
    finally:
        bar.close()
        del features, labels
    return FeatureStore(out)
