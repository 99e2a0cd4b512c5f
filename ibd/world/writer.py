"""Writing the concept world to disk in Broden's format (docs/contracts.md 3).

Files (all under the output directory):

- `images/<n>.jpg` the photo; `images/<n>_color.png`, `<n>_object.png`, `<n>_part_1.png` label
  planes (R + 256 * G), at the image size;
- `index.csv`, `label.csv`, `category.csv`, `c_<category>.csv` as in Broden, with categories
  color, object, part (per pixel) and scene (a whole-image label number);
- `world.json` (classes and their rules, concepts, settings) and `scenes.csv` (splits).

Every image is a pure function of (seed, image number), rendered in a process pool; the files
are byte-identical for the same seed and settings whatever the number of processes.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from ibd.data import scenes as scene_table
from ibd.data.broden import encode_plane
from ibd.errors import UserError
from ibd.paths import check_creatable
from ibd.world.canvas import Canvas
from ibd.world.rules import CLASSES, SceneClass
from ibd.world.scenes import render
from ibd.world.vocabulary import COLOURS, OBJECTS, PARTS, PARTS_OF

WORLD_FORMAT = "concept-world-1"
# Bump when a change to the generator changes its output, so cached worlds are rebuilt.
GENERATOR_VERSION = 3  # 3: snowfield, coast and desert gained a third defining concept
CATEGORIES = ("color", "object", "part", "scene")
SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.1), ("test", 0.1), ("explain", 0.1))


@dataclass(frozen=True)
class WorldSettings:
    """Everything the world's files depend on."""

    seed: int = 0
    images: int = 3000
    image_size: int = 112
    min_pixels: int = 40  # visible pixels each defining concept must have
    noise: float = 8.0  # largest standard deviation of the sensor noise, in 0..255 units
    jpeg_quality: int = 90
    splits: tuple[tuple[str, float], ...] = SPLIT_FRACTIONS
    generator: int = GENERATOR_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["splits"] = {name: fraction for name, fraction in self.splits}
        return data

    @classmethod
    def of_world(cls, root: str | Path) -> WorldSettings:
        """The settings a built world records in its world.json."""
        path = Path(root) / "world.json"
        try:
            data = dict(json.loads(path.read_text(encoding="utf-8"))["settings"])
            data["splits"] = tuple((str(k), float(v)) for k, v in data["splits"].items())
            settings = cls(**data)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{path} is not a concept world's world.json ({exc})") from None
        if settings.generator != GENERATOR_VERSION:
            raise UserError(
                f"{root} was built by world generator {settings.generator}, this is generator "
                f"{GENERATOR_VERSION}: rebuild it (`ibd world build --force`)"
            )
        return settings


@dataclass(frozen=True)
class Label:
    number: int
    name: str
    category: str


def labels(classes: Iterable[SceneClass] = CLASSES) -> list[Label]:
    """Broden labels of the world, numbered 1.. in category order color, object, part, scene."""
    names = (
        [(n, "color") for n in COLOURS]
        + [(n, "object") for n in OBJECTS]
        + [(n, "part") for n in PARTS]
        + [(c.name, "scene") for c in classes]
    )
    seen = Counter(n for n, _ in names)
    clashes = [n for n, k in seen.items() if k > 1]
    if clashes:
        raise ValueError(f"label names used twice: {', '.join(clashes)}")
    return [Label(k, name, cat) for k, (name, cat) in enumerate(names, start=1)]


def assign_splits(settings: WorldSettings, num_classes: int) -> list[tuple[int, str]]:
    """(class index, split) per image: image i shows class i mod K; within each class a seeded
    permutation gives the first 70% of its images to train, then val, test, explain."""
    rng = np.random.default_rng([settings.seed, 7919])
    plan: list[tuple[int, str]] = [(i % num_classes, "") for i in range(settings.images)]
    for k in range(num_classes):
        members = [i for i in range(settings.images) if i % num_classes == k]
        order = rng.permutation(len(members))
        bounds = np.cumsum([f for _, f in settings.splits]) * len(members)
        for rank, position in enumerate(order):
            split_index = int(np.searchsorted(bounds, rank, side="right"))
            split = settings.splits[min(split_index, len(settings.splits) - 1)][0]
            plan[members[position]] = (k, split)
    return plan


@dataclass
class _Job:
    settings: WorldSettings
    images: Path


_JOB: _Job | None = None


def _init(job: _Job) -> None:
    global _JOB
    _JOB = job


def image_name(i: int) -> str:
    return f"{i:05d}"


@functools.cache
def _label_numbers() -> dict[str, int]:
    return {label.name: label.number for label in labels(CLASSES)}


def render_image(
    settings: WorldSettings,
    i: int,
    hide: frozenset[str] = frozenset(),
    fill: tuple[float, float, float] | None = None,
) -> tuple[Canvas, np.ndarray]:
    """Image i of the world `settings` describe: its canvas and its photo before JPEG coding,
    or with `hide` (and `fill`) the photo's counterfactual (`ibd.world.scenes.render`)."""
    rng = np.random.default_rng([settings.seed, i])
    scene_class = CLASSES[i % len(CLASSES)]  # as `assign_splits` deals them
    return render(
        scene_class,
        rng,
        settings.image_size,
        _label_numbers(),
        settings.min_pixels,
        settings.noise,
        hide,
        fill,
    )


GREY = (124.0, 116.0, 104.0)  # 255 x the ImageNet mean: a normalised input of about 0


def as_jpeg(photo: np.ndarray, quality: int) -> Image.Image:
    """`photo` (H x W x 3 uint8) coded as the world writes its images, decoded again."""
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="JPEG", quality=quality, optimize=False)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _render_one(i: int) -> dict[str, Any]:
    """Render and write image i; returns its per-label pixel counts for label.csv."""
    assert _JOB is not None
    job = _JOB
    cv, photo = render_image(job.settings, i)
    stem = image_name(i)
    Image.fromarray(photo).save(
        job.images / f"{stem}.jpg", quality=job.settings.jpeg_quality, optimize=False
    )
    counts: dict[str, dict[int, int]] = {}
    for category, plane in (("color", cv.colour), ("object", cv.object), ("part", cv.part)):
        values, freq = np.unique(plane, return_counts=True)
        counts[category] = {int(v): int(c) for v, c in zip(values, freq, strict=True) if v}
        if counts[category]:
            suffix = "part_1" if category == "part" else category
            encode_plane(plane).save(job.images / f"{stem}_{suffix}.png", optimize=False)
    return counts


def _write_csv(path: Path, header: list[str], rows: Iterable[Iterable[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _concepts_json(table: list[Label]) -> list[dict[str, Any]]:
    part_of: dict[str, list[str]] = {}
    for obj, parts in PARTS_OF.items():
        for p in parts:
            part_of.setdefault(p, []).append(obj)
    out = []
    for label in table:
        entry: dict[str, Any] = {
            "name": label.name,
            "category": label.category,
            "number": label.number,
            "parts": list(PARTS_OF.get(label.name, ())) if label.category == "object" else [],
        }
        if label.category == "part":
            entry["part_of"] = part_of[label.name]
        out.append(entry)
    return out


def _write_tables(
    root: Path,
    settings: WorldSettings,
    table: list[Label],
    plan: list[tuple[int, str]],
    results: list[dict[str, dict[int, int]]],
    classes: tuple[SceneClass, ...],
) -> None:
    pixels = settings.image_size * settings.image_size
    numbers = {label.name: label.number for label in table}
    frequency: Counter[int] = Counter()
    coverage: Counter[int] = Counter()
    index_rows = []
    scene_rows = []
    for i, ((k, split), counts) in enumerate(zip(plan, results, strict=True)):
        stem = image_name(i)
        scene_number = numbers[classes[k].name]
        for per_category in counts.values():
            for number, count in per_category.items():
                frequency[number] += 1
                coverage[number] += count / pixels
        frequency[scene_number] += 1
        coverage[scene_number] += 1.0
        cells = [
            f"{stem}_color.png" if counts["color"] else "",
            f"{stem}_object.png" if counts["object"] else "",
            f"{stem}_part_1.png" if counts["part"] else "",
            str(scene_number),
        ]
        size = settings.image_size
        broden_split = "train" if split == "train" else "val"
        index_rows.append([f"{stem}.jpg", broden_split, size, size, size, size, *cells])
        scene_rows.append([f"images/{stem}.jpg", split, k, classes[k].name])

    _write_csv(
        root / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", *CATEGORIES], index_rows
    )
    _write_csv(
        root / "label.csv",
        ["number", "name", "category", "frequency", "coverage", "syns"],
        [
            [
                lb.number,
                lb.name,
                f"{lb.category}({frequency[lb.number]})",
                frequency[lb.number],
                f"{coverage[lb.number]:.4f}",
                lb.name,
            ]
            for lb in table
        ],
    )
    images_with = {
        category: sum(1 for counts in results if counts.get(category)) for category in CATEGORIES
    }
    images_with["scene"] = len(results)
    _write_csv(
        root / "category.csv",
        ["name", "first", "last", "count", "frequency"],
        [
            [
                category,
                min(lb.number for lb in table if lb.category == category),
                max(lb.number for lb in table if lb.category == category),
                sum(1 for lb in table if lb.category == category),
                images_with[category],
            ]
            for category in CATEGORIES
        ],
    )
    for category in CATEGORIES:
        members = [lb for lb in table if lb.category == category]
        _write_csv(
            root / f"c_{category}.csv",
            ["code", "number", "name", "frequency", "coverage"],
            [
                [code, lb.number, lb.name, frequency[lb.number], f"{coverage[lb.number]:.4f}"]
                for code, lb in enumerate(members, start=1)
            ],
        )
    scene_table.write(root, scene_rows)
    world = {
        "format": WORLD_FORMAT,
        "seed": settings.seed,
        "image_size": [settings.image_size, settings.image_size],
        "classes": [c.to_json() for c in classes],
        "concepts": _concepts_json(table),
        "settings": settings.to_json(),
    }
    # written last: its presence marks a complete world
    (root / "world.json").write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")


def worker_count(requested: int | None) -> int:
    """`requested` processes (at least 1), by default one per CPU this process may use."""
    if requested is not None:
        return max(1, requested)
    return max(1, len(os.sched_getaffinity(0)))


def is_current(out: Path, settings: WorldSettings) -> bool:
    """True when `out` holds a complete world built with exactly these settings."""
    try:
        world = json.loads((out / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return world.get("format") == WORLD_FORMAT and world.get("settings") == settings.to_json()


def build(
    out: str | Path,
    settings: WorldSettings = WorldSettings(),
    *,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> bool:
    """Write the world to `out`; returns False when `out` already holds this exact world (and
    `force` is not set). A previous world in `out` is replaced only once the new one is
    complete; a directory that is not a world is never touched."""
    out = Path(out)
    if settings.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, not {settings.seed}")
    if settings.images < len(CLASSES):
        raise UserError(f"--images must be at least {len(CLASSES)} (one per class)")
    if not 32 <= settings.image_size <= 1024:
        raise UserError("the image size must lie in 32..1024")
    if out.exists() and not force and is_current(out, settings):
        return False
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "world.json").is_file())
    ):
        raise UserError(f"{out} exists and is not a concept world; choose another --out")
    check_creatable(out)
    tmp = out.with_name(f".{out.name}.building-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    table = labels(CLASSES)
    plan = assign_splits(settings, len(CLASSES))
    job = _Job(settings, tmp / "images")
    try:
        results = _render_all(job, worker_count(workers), progress)
        _write_tables(tmp, settings, table, plan, results, CLASSES)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        # swap by renames: at every moment one complete world lies at `out` or beside it
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return True


def _render_all(job: _Job, workers: int, progress: bool) -> list[dict[str, dict[int, int]]]:
    n = job.settings.images
    return process_map(_render_one, range(n), n, workers, "world", progress, _init, (job,))


def process_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    total: int,
    workers: int,
    desc: str,
    progress: bool,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    chunksize: int = 16,
) -> list[Any]:
    """[fn(item) for item in items], in order, in `workers` processes (in this one when 1),
    with a progress bar; `initializer(*initargs)` runs first in every process."""
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress)
    results = []
    try:
        if workers == 1:
            if initializer is not None:
                initializer(*initargs)
            for item in items:
                results.append(fn(item))
                bar.update()
            return results
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with context.Pool(workers, initializer=initializer, initargs=initargs) as pool:
            for result in pool.imap(fn, items, chunksize=chunksize):
                results.append(result)
                bar.update()
        return results
    finally:
        bar.close()


def fingerprint(root: str | Path) -> str:
    """sha256 of world.json and scenes.csv: identifies a world's content (every file is a
    function of what world.json records)."""
    digest = hashlib.sha256()
    for name in ("world.json", "scenes.csv"):
        path = Path(root) / name
        if not path.is_file():
            raise UserError(
                f"{root} is not a concept world: {name} is missing (run ibd world build)"
            )
        digest.update(path.read_bytes())
    return digest.hexdigest()
