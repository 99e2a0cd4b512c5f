"""A reader for concept datasets in Broden's on-disk format (Bau et al. 2017; docs/contracts.md 3).

A Broden directory holds

- `index.csv`: `image, split, ih, iw, sh, sw`, then one column per category. A cell is empty or a
  `;`-separated list; each item is a PNG file name (a per-pixel label plane, several planes per
  category allowed, e.g. `x_part_1.png;x_part_2.png`) or a decimal label number (a whole-image
  label, e.g. a scene or texture).
- `label.csv`: `number, name, category, frequency, coverage, syns`; the category cell lists every
  category the label occurs in with its image count, e.g. `object(3);material(36)`.
- `category.csv` (`name, first, last, count, frequency`) and `c_<category>.csv`
  (`code, number, name, frequency, coverage`: per-category image counts).
- `images/`: the images and the label planes, paths relative to it.

A plane's pixel holds the global label number `R + 256 * G`; 0 means unlabelled.

`BrodenDataset` keeps only `index.csv` and `label.csv` in memory and decodes one image and its
planes per item, so it serves the full dataset (63,305 images) as well as the concept world.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ibd.data.images import load_rgb
from ibd.errors import UserError
from ibd.nets.architectures import IMAGENET_MEAN, IMAGENET_STD

META_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
SPLITS = ("train", "val")

# Lookup-table codes for label numbers that are not kept concepts.
_NOT_KEPT = -1
_UNKNOWN = -2

_CATEGORY_ITEM = re.compile(r"^\s*([^()]+?)\s*\(\s*(\d+)\s*\)\s*$")


@dataclass(frozen=True)
class Concept:
    """A kept label: `index` is its dense position (0..C-1) in the masks, `number` its global
    label number in `label.csv`. `category` is its primary category among the selected ones
    (the one where it occurs in the most images); `categories` lists all selected ones it occurs
    in. `image_count` is the number of images it occurs in (see `BrodenDataset`). A dropped
    label (too few images) has index -1."""

    index: int
    number: int
    name: str
    category: str
    image_count: int
    categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Row:
    line: int  # line number in index.csv, for error messages
    image: str
    split: str
    ih: int
    iw: int
    sh: int
    sw: int
    cells: tuple[tuple[str, tuple[str | int, ...]], ...]  # selected categories' non-empty cells
    present: frozenset[str]  # every category with a non-empty cell


def _read_csv(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with their line numbers; UserError if missing or lacking a column."""
    if not path.is_file():
        raise UserError(f"missing Broden file: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            lacking = [c for c in required if c not in columns]
            if lacking:
                raise UserError(f"{path}: missing column(s) {', '.join(lacking)}")
            rows = []
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise UserError(
                        f"{path} line {reader.line_num}: expected {len(columns)} fields"
                    )
                rows.append((reader.line_num, row))
            return rows
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None


def _int(path: Path, line: int, column: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UserError(f"{path} line {line}: {column} '{value}' is not an integer") from None
    if number < minimum:
        raise UserError(f"{path} line {line}: {column} {number} is below {minimum}")
    return number


def parse_label_categories(cell: str) -> dict[str, int]:
    """`object(3);material(36)` -> {"object": 3, "material": 36}; raises ValueError."""
    result: dict[str, int] = {}
    for item in cell.split(";"):
        if not item.strip():
            continue
        match = _CATEGORY_ITEM.match(item)
        if match is None:
            raise ValueError(f"category item '{item}' is not of the form name(count)")
        result[match.group(1)] = int(match.group(2))
    return result


def decode_plane(path: Path) -> np.ndarray:
    """Label numbers of a segmentation PNG: R + 256 * G (int32, H x W)."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.int32)
    return rgb[:, :, 0] + 256 * rgb[:, :, 1]


def encode_plane(labels: np.ndarray) -> Image.Image:
    """Inverse of `decode_plane`: an RGB image with R = n mod 256, G = n div 256, B = 0."""
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= 65536:
        raise ValueError("label numbers must lie in 0..65535")
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    rgb[:, :, 0] = labels % 256
    rgb[:, :, 1] = labels // 256
    return Image.fromarray(rgb, mode="RGB")


def nearest_indices(source: int, target: int) -> np.ndarray:
    """Source positions sampled by nearest-neighbour resizing `source` -> `target` pixels:
    i -> floor((i + 0.5) * source / target), the pixel under the centre of target cell i
    (paper 3.1: concept masks downsampled to the feature grid by nearest neighbour)."""
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


class BrodenDataset(torch.utils.data.Dataset):
    """Images with multi-label concept masks from a Broden directory.

    `categories` selects which label planes make the masks (default object + part, as the
    paper). A label is kept as a concept when it occurs in a selected category in at least
    `min_images` images over the whole index (all splits), counted from the per-category
    frequencies of `c_<category>.csv` as NetDissect does (the label.csv category counts when a
    `c_` file is missing); for a label in several selected categories the largest count is used.
    Labels below the threshold are listed in `.dropped`.

    `split` (None, "train" or "val") keeps the rows of that split. `image_size` (H, W) resizes
    images bilinearly; `mask_size` (h, w) downsamples masks by nearest neighbour (None: the
    segmentation size `sh x sw` of each row). Items are
    `{"image": 3xHxW float (x - mean) / std, "mask": bool C x h x w, "index": i, "path": str}`.
    """

    def __init__(
        self,
        root: str | Path,
        categories: Iterable[str] = ("object", "part"),
        split: str | None = None,
        min_images: int = 10,
        image_size: tuple[int, int] | None = None,
        mask_size: tuple[int, int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"Broden directory not found: {self.root}")
        if split not in (None, *SPLITS):
            raise UserError(f"split must be one of {', '.join(SPLITS)} (or none), not '{split}'")
        self.categories = tuple(dict.fromkeys(categories))
        if not self.categories:
            raise UserError("select at least one category")
        self.split = split
        self.min_images = int(min_images)
        self.image_size = tuple(image_size) if image_size is not None else None
        self.mask_size = tuple(mask_size) if mask_size is not None else None
        self.mean = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(3, 1, 1)

        self.all_categories = self._read_categories()
        unknown = [c for c in self.categories if c not in self.all_categories]
        if unknown:
            raise UserError(
                f"{self.root / 'category.csv'} has no category {', '.join(unknown)} "
                f"(it has: {', '.join(self.all_categories)})"
            )
        self.labels = self._read_labels()
        self.concepts, self.dropped = self._select_concepts()
        self._lut = self._lookup_table()
        self._rows = self._read_index()

    # -- metadata -------------------------------------------------------------------------

    def _read_categories(self) -> list[str]:
        path = self.root / "category.csv"
        names = [row["name"] for _, row in _read_csv(path, ("name",))]
        if not names:
            raise UserError(f"{path} lists no categories")
        return names

    def _read_labels(self) -> dict[int, tuple[str, dict[str, int]]]:
        path = self.root / "label.csv"
        labels: dict[int, tuple[str, dict[str, int]]] = {}
        for line, row in _read_csv(path, ("number", "name", "category")):
            number = _int(path, line, "number", row["number"])
            if number == 0:
                continue  # the unlabelled entry
            if number in labels:
                raise UserError(f"{path} line {line}: label number {number} appears twice")
            try:
                cats = parse_label_categories(row["category"])
            except ValueError as exc:
                raise UserError(f"{path} line {line}: {exc}") from None
            labels[number] = (row["name"], cats)
        return labels

    def _category_counts(self, category: str) -> dict[int, int]:
        path = self.root / f"c_{category}.csv"
        if not path.is_file():
            return {n: cats[category] for n, (_, cats) in self.labels.items() if category in cats}
        counts: dict[int, int] = {}
        for line, row in _read_csv(path, ("code", "number", "frequency")):
            number = _int(path, line, "number", row["number"])
            if number == 0:
                continue
            if number not in self.labels:
                raise UserError(f"{path} line {line}: label number {number} is not in label.csv")
            counts[number] = _int(path, line, "frequency", row["frequency"])
        return counts

    def _select_concepts(self) -> tuple[list[Concept], list[Concept]]:
        counts = {cat: self._category_counts(cat) for cat in self.categories}
        kept: list[Concept] = []
        dropped: list[Concept] = []
        for number in sorted(self.labels):
            name, _ = self.labels[number]
            in_cats = [c for c in self.categories if number in counts[c]]
            if not in_cats:
                continue
            # ties go to the earlier selected category
            primary = max(in_cats, key=lambda c: (counts[c][number], -self.categories.index(c)))
            image_count = counts[primary][number]
            concept = Concept(
                index=len(kept) if image_count >= self.min_images else -1,
                number=number,
                name=name,
                category=primary,
                image_count=image_count,
                categories=tuple(in_cats),
            )
            (kept if image_count >= self.min_images else dropped).append(concept)
        return kept, dropped

    def _lookup_table(self) -> np.ndarray:
        size = max(self.labels, default=0) + 1
        lut = np.full(size, _UNKNOWN, dtype=np.int64)
        lut[0] = _NOT_KEPT
        lut[list(self.labels)] = _NOT_KEPT
        for concept in self.concepts:
            lut[concept.number] = concept.index
        return lut

    def _read_index(self) -> list[_Row]:
        path = self.root / "index.csv"
        rows: list[_Row] = []
        for line, row in _read_csv(path, META_COLUMNS):
            sizes = [_int(path, line, c, row[c], minimum=1) for c in ("ih", "iw", "sh", "sw")]
            if not row["image"]:
                raise UserError(f"{path} line {line}: empty image name")
            if self.split is not None and row["split"] != self.split:
                continue
            cells = []
            for category in self.all_categories:
                items: list[str | int] = []
                for item in (s.strip() for s in (row.get(category) or "").split(";")):
                    if not item:
                        continue
                    if item.isdigit():
                        number = int(item)
                        if number not in self.labels:
                            raise UserError(
                                f"{path} line {line}: unknown label number {number} in column "
                                f"{category} (not in label.csv)"
                            )
                        items.append(number)
                    else:
                        items.append(item)
                if items and category in self.categories:
                    cells.append((category, tuple(items)))
            present = frozenset(c for c in self.all_categories if (row.get(c) or "").strip(";"))
            rows.append(_Row(line, row["image"], row["split"], *sizes, tuple(cells), present))
        return rows

    # -- per image --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rows)

    def image_path(self, i: int) -> Path:
        return self.root / "images" / self._rows[i].image

    def split_of(self, i: int) -> str:
        return self._rows[i].split

    def segmentation_size(self, i: int) -> tuple[int, int]:
        """(sh, sw) of image i's label planes, as index.csv records it."""
        row = self._rows[i]
        return row.sh, row.sw

    def category_present(self, i: int) -> set[str]:
        """Categories with any label in image i (a non-empty index.csv cell), over all the
        dataset's categories; NetDissect counts a unit's activation against a concept only on
        images where the concept's category is present."""
        return set(self._rows[i].present)

    def load_image(self, i: int) -> torch.Tensor:
        """Image i as a normalised 3 x H x W float tensor."""
        path = self.image_path(i)
        if not path.is_file():
            raise UserError(f"missing image {path} (index.csv line {self._rows[i].line})")
        # decoded as `ibd explain` decodes (transparency on white, 16-bit scaled) but not
        # turned by EXIF: the segmentation planes are aligned with the stored pixels
        rgb = load_rgb(path, upright=False)
        if self.image_size is not None:
            height, width = self.image_size
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(rgb, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
        return (tensor - self.mean) / self.std

    def load_mask(self, i: int) -> torch.Tensor:
        """Concept mask of image i: bool C x h x w, true where the concept is labelled."""
        row = self._rows[i]
        height, width = self.mask_size or (row.sh, row.sw)
        ys = nearest_indices(row.sh, height)
        xs = nearest_indices(row.sw, width)
        mask = np.zeros((len(self.concepts), height, width), dtype=bool)
        for category, items in row.cells:
            for item in items:
                if isinstance(item, int):
                    index = self._lut[item]
                    if index >= 0:
                        mask[index] = True
                    continue
                labels = self._plane(row, category, item)
                indices = self._lut[labels[np.ix_(ys, xs)]]
                hit = indices >= 0
                rr, cc = np.nonzero(hit)
                mask[indices[hit], rr, cc] = True
        return torch.from_numpy(mask)

    def load_sparse_mask(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The non-empty channels of `load_mask(i)`: (concept indices, ascending, K; bool
        K x h x w), without the C x h x w array (1,198 channels for full Broden)."""
        row = self._rows[i]
        height, width = self.mask_size or (row.sh, row.sw)
        ys, xs = nearest_indices(row.sh, height), nearest_indices(row.sw, width)
        found: dict[int, np.ndarray] = {}
        for category, items in row.cells:
            for item in items:
                if isinstance(item, int):
                    if self._lut[item] >= 0:
                        found[int(self._lut[item])] = np.ones((height, width), dtype=bool)
                    continue
                indices = self._lut[self._plane(row, category, item)[np.ix_(ys, xs)]]
                for index in np.unique(indices[indices >= 0]).tolist():
                    hit = indices == index
                    found[index] = found[index] | hit if index in found else hit
        order = sorted(found)
        masks = np.stack([found[c] for c in order]) if order else np.zeros((0, height, width), bool)
        return torch.tensor(order, dtype=torch.long), torch.from_numpy(masks)

    def _plane(self, row: _Row, category: str, name: str) -> np.ndarray:
        path = self.root / "images" / name
        where = f"index.csv line {row.line}, column {category}"
        if not path.is_file():
            raise UserError(f"missing segmentation file {path} ({where})")
        try:
            labels = decode_plane(path)
        except OSError as exc:
            raise UserError(f"cannot read segmentation file {path} ({where}): {exc}") from None
        if labels.shape != (row.sh, row.sw):
            raise UserError(
                f"segmentation file {path} is {labels.shape[0]}x{labels.shape[1]} but index.csv "
                f"line {row.line} says sh x sw = {row.sh}x{row.sw}"
            )
        if labels.max() >= len(self._lut) or (self._lut[labels] == _UNKNOWN).any():
            bad = [
                int(n) for n in np.unique(labels) if n >= len(self._lut) or self._lut[n] == _UNKNOWN
            ]
            raise UserError(
                f"segmentation file {path} ({where}) holds label number(s) "
                f"{', '.join(map(str, bad[:5]))} not in label.csv"
            )
        return labels

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self._rows):
            raise IndexError(i)
        return {
            "image": self.load_image(i),
            "mask": self.load_mask(i),
            "index": i,
            "path": str(self.image_path(i)),
        }
