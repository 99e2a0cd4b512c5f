"""Building a batch: explanations -> pairs -> planned items -> images, pages, manifest, CSV.

Two steps, so that a run of several batches can check them all before writing any:
`plan_batch` reads the explanations and decides every item, the batch name and its directory;
`write_batch` renders them (hitgen/output.py: staged, moved into place when complete).
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from hitgen import __version__
from hitgen.errors import UserError
from hitgen.explanations import MAX_HEATMAPS, Explanation, load_explanations
from hitgen.images import data_uri, load_photo, png_bytes
from hitgen.masks import dimmed, heatmap_mask, highlight
from hitgen.output import (
    MANIFEST_FORMAT,
    check_target,
    discard_staging,
    move_into_place,
    prepare_staging,
)
from hitgen.pairing import Pair, Skipped, image_key, join_on_image
from hitgen.plan import ItemPlan, Shown, plan_items
from hitgen.render import IndexRow, Reason, Robot, because_line, render_index, render_page
from hitgen.spec import (
    METHOD_VS_METHOD,
    BatchSpec,
    Source,
    command_line,
    default_batch_name,
    out_dir,
)

MTURK_PAGE_LIMIT = 64 * 1024  # bytes of an HTMLQuestion


@dataclass(frozen=True)
class ItemJob:
    """Everything needed to render one item's files, independent of every other item."""

    directory: Path  # the batch directory being written
    number: str
    item_id: str
    photo_path: Path
    class_name: str
    robot_a: Shown
    robot_b: Shown
    max_side: int | None
    standalone: bool
    # ((height, width), where) of each explanation that states the decoded photo's size
    expected_sizes: tuple[tuple[tuple[int, int], str], ...] = ()

    @property
    def photo(self) -> str:
        return f"images/{self.number}.png"

    def masks(self, key: str) -> list[str]:
        shown = self.robot_a if key == "a" else self.robot_b
        return [f"images/{self.number}-{key}-{i}.png" for i in range(len(shown.components))]

    @property
    def page(self) -> str:
        return f"pages/{self.item_id}.html"


def render_item(job: ItemJob) -> tuple[int, dict[str, np.ndarray]]:
    """Write the item's photo, masks and page; return the page's size in bytes and the boolean
    masks shown, by mask image path."""
    photo = load_photo(job.photo_path, job.max_side, job.expected_sizes)
    size = (photo.shape[0], photo.shape[1])
    background = dimmed(photo)
    encoded: dict[str, bytes] = {job.photo: png_bytes(photo)}
    shown_masks: dict[str, np.ndarray] = {}
    robots = []
    for key, shown in (("a", job.robot_a), ("b", job.robot_b)):
        reasons = []
        for component, path in zip(shown.components, job.masks(key), strict=True):
            mask = heatmap_mask(component.heatmap, size)
            shown_masks[path] = mask
            encoded[path] = png_bytes(highlight(photo, mask, background))
            reasons.append(Reason(component.label, path))
        robots.append(Robot(key, tuple(reasons)))
    for path, data in encoded.items():
        (job.directory / path).write_bytes(data)

    def src(path: str) -> str:
        return data_uri(encoded[path]) if job.standalone else f"../{path}"

    robot_a, robot_b = (
        Robot(r.key, tuple(Reason(x.label, src(x.src)) for x in r.reasons)) for r in robots
    )
    html = render_page(job.class_name, src(job.photo), size, robot_a, robot_b).encode("utf-8")
    (job.directory / job.page).write_bytes(html)
    return len(html), shown_masks


def _render_all(jobs: list[ItemJob], workers: int) -> list[tuple[int, dict[str, np.ndarray]]]:
    progress = tqdm(total=len(jobs), desc="rendering tasks", unit="item", disable=None)
    with progress:
        if workers <= 1:
            results = []
            for job in jobs:
                results.append(render_item(job))
                progress.update()
            return results
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for result in pool.map(render_item, jobs, chunksize=4):
                results.append(result)
                progress.update()
            return results


def write_masks(path: Path, masks: dict[str, np.ndarray]) -> None:
    """`masks.npz`: every shown top-20% mask (bool, image size) under its mask image's path.

    Written as an .npz that `numpy.load` reads, with fixed zip timestamps (numpy's own savez
    stamps the current time), so rebuilding a batch stays byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(masks):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(masks[name], dtype=bool))
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def _side(
    shown: Shown, class_name: str, masks: list[str], coverage: dict[str, float]
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "model": shown.model,
        "method": shown.method,
        "class_name": class_name,
        "concepts": [c.label for c in shown.components],
        "masks": masks,
        # fraction of the photo each mask covers: 0.2 unless ties at the threshold forbid it
        "mask_coverage": [coverage[m] for m in masks],
    }
    if shown.wrong_from is not None:
        record["wrong_from"] = shown.wrong_from
    return record


def _item_record(plan: ItemPlan, job: ItemJob, coverage: dict[str, float]) -> dict[str, Any]:
    a_is_first = plan.robot_a == "first"
    first_key, second_key = ("a", "b") if a_is_first else ("b", "a")
    catch = None
    if plan.catch_type is not None:
        catch = {"type": plan.catch_type, "expected_choices": plan.expected_choices}
        if plan.catch_type == "wrong":
            catch["wrong_side"] = "second"
    base = plan.pair.first
    return {
        "id": job.item_id,
        "kind": plan.kind,
        "image": job.photo,
        "source_image": base.image,
        "class_index": base.class_index,
        "class_name": base.class_name,
        "first": _side(plan.first, base.class_name, job.masks(first_key), coverage),
        "second": _side(plan.second, base.class_name, job.masks(second_key), coverage),
        "robot_a": plan.robot_a,
        "catch": catch,
        "page": job.page,
    }


def _csv(records: list[dict[str, Any]]) -> str:
    """MTurk requester-site input: one row per item with the variables a layout can use."""
    header = ["item_id", "page", "image", "class_name"]
    for key in ("robot_a", "robot_b"):
        header.append(f"{key}_explanation")
        header += [f"{key}_concept_{i}" for i in range(1, MAX_HEATMAPS + 1)]
        header += [f"{key}_mask_{i}" for i in range(1, MAX_HEATMAPS + 1)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        row = [record["id"], record["page"], record["image"], record["class_name"]]
        a_side = record[record["robot_a"]]
        b_side = record["second" if record["robot_a"] == "first" else "first"]
        for side in (a_side, b_side):
            pad = [""] * (MAX_HEATMAPS - len(side["concepts"]))
            row.append(because_line(record["class_name"], side["concepts"]))
            row += side["concepts"] + pad
            row += side["masks"] + pad
        writer.writerow(row)
    return buffer.getvalue()


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _load_side(source: Source) -> list[Explanation]:
    explanations = load_explanations(source.directory, source.model, source.method)
    models = sorted({e.model for e in explanations})
    if len(models) > 1:
        raise UserError(
            f"{source.directory}: explanations of several models ({', '.join(models)}); "
            f"say which with --model"
        )
    return explanations


def _wanted(images: tuple[Path, ...]) -> dict[str, str]:
    """The listed images by identity (as `image_key`), each with its path as listed."""
    wanted: dict[str, str] = {}
    for image in images:
        if not image.is_file():
            raise UserError(f"images: {image} not found")
        wanted.setdefault(os.path.realpath(image), str(image))
    return wanted


def _restrict(explanations: list[Explanation], wanted: dict[str, str] | None) -> list[Explanation]:
    if wanted is None:
        return explanations
    return [e for e in explanations if image_key(e) in wanted]


def _expected_sizes(pair: Pair) -> tuple[tuple[tuple[int, int], str], ...]:
    return tuple(
        (e.image_size, e.origin) for e in (pair.first, pair.second) if e.image_size is not None
    )


@dataclass(frozen=True)
class BatchPlan:
    """A batch decided in full, nothing written yet."""

    spec: BatchSpec
    batch: str
    target: Path
    models: tuple[str, str]
    items: list[ItemPlan]
    skipped: list[Skipped]
    n_pairs: int  # shared decisions the items were drawn from
    unexplained: list[str]  # listed (--images) images that no side explains


@dataclass(frozen=True)
class BuildResult:
    directory: Path
    batch: str
    items: int
    catch: int
    skipped: list[Skipped]
    largest_page: int


def plan_batch(spec: BatchSpec, home: Path, force: bool = False) -> BatchPlan:
    """Read the explanations `spec` names and decide the batch: its items, name and directory
    (checked: an existing directory must be a batch, replaced only with `force`)."""
    firsts = _load_side(spec.first)
    seconds = _load_side(spec.second)
    models = (firsts[0].model, seconds[0].model)
    if spec.experiment == METHOD_VS_METHOD and models[0] != models[1]:
        raise UserError(
            f"method vs method compares one model, but the explanations are of {models[0]} "
            f"and {models[1]}"
        )
    if spec.experiment == METHOD_VS_METHOD:
        names = (spec.first.method, spec.second.method)
        disagreeing = "methods"
    else:
        names = models
        disagreeing = "models"
    wanted = _wanted(spec.images) if spec.images is not None else None
    pairs, skipped = join_on_image(
        _restrict(firsts, wanted), _restrict(seconds, wanted), *names, disagreeing
    )
    unexplained: list[str] = []
    if wanted is not None:
        explained = {image_key(e) for e in (*firsts, *seconds)}
        unexplained = [shown for key, shown in wanted.items() if key not in explained]
        skipped += [Skipped(image, "no explanation") for image in unexplained]
    if not pairs:
        reasons = "; ".join(sorted({s.reason for s in skipped})[:3]) or "no images"
        raise UserError(f"no image has a shared decision of {names[0]} and {names[1]} ({reasons})")
    items = plan_items(
        pairs, seconds, spec.experiment, spec.n, spec.catch_rate, spec.catch_types, spec.seed
    )
    batch = spec.batch or default_batch_name(
        spec.experiment, (models[0], spec.first.method), (models[1], spec.second.method)
    )
    target = out_dir(spec, batch, home)
    check_target(target, force)
    return BatchPlan(spec, batch, target, models, items, skipped, len(pairs), unexplained)


def _jobs(plan: BatchPlan, directory: Path) -> list[ItemJob]:
    width = max(4, len(str(len(plan.items))))
    jobs = []
    for index, item in enumerate(plan.items, 1):
        number = f"{index:0{width}d}"
        a, b = (item.first, item.second) if item.robot_a == "first" else (item.second, item.first)
        jobs.append(
            ItemJob(
                directory=directory,
                number=number,
                item_id=f"{plan.batch}-{number}",
                photo_path=item.pair.first.image_path,
                class_name=item.pair.first.class_name,
                robot_a=a,
                robot_b=b,
                max_side=plan.spec.max_side,
                standalone=plan.spec.standalone,
                expected_sizes=_expected_sizes(item.pair),
            )
        )
    return jobs


def _write_files(plan: BatchPlan, staging: Path, workers: int) -> int:
    """Render every file of the batch into `staging`; return the largest page's size."""
    jobs = _jobs(plan, staging)
    rendered = _render_all(jobs, workers)
    masks = {path: mask for _, shown in rendered for path, mask in shown.items()}
    write_masks(staging / "masks.npz", masks)
    coverage = {path: float(mask.mean()) for path, mask in masks.items()}
    records = [
        _item_record(item, job, coverage) for item, job in zip(plan.items, jobs, strict=True)
    ]
    spec = plan.spec
    manifest = {
        "format": MANIFEST_FORMAT,
        "batch": plan.batch,
        "experiment": spec.experiment,
        "focus": {"method": spec.first.method, "model": plan.models[0]},
        "seed": spec.seed,
        "version": __version__,
        "created_with": command_line(spec, plan.models),
        "skipped": [{"image": s.image, "reason": s.reason} for s in plan.skipped],
        "items": records,
    }
    (staging / "manifest.json").write_text(_dump(manifest), encoding="utf-8")
    (staging / "input.csv").write_text(_csv(records), encoding="utf-8")
    rows = [IndexRow(j.item_id, j.page, j.photo, j.class_name) for j in jobs]
    (staging / "index.html").write_text(render_index(plan.batch, rows), encoding="utf-8")
    return max(size for size, _ in rendered)


def write_batch(
    plan: BatchPlan, force: bool = False, workers: int = 1, log: TextIO | None = None
) -> BuildResult:
    """Render the planned batch into its directory; `log` (a file) receives one-line notes.

    Any failure to write (a path through a regular file, a full disk, no permission) is a
    one-line UserError naming the path, and leaves neither a partial batch nor the staging
    directory; a replaced batch stays in place until the new one is complete."""
    target = plan.target
    try:
        staging = prepare_staging(target, force)
        largest_page = _write_files(plan, staging, workers)
        move_into_place(staging, target)
    except OSError as exc:
        discard_staging(target)
        path = exc.filename if exc.filename is not None else target
        raise UserError(
            f"{path}: cannot write the batch {target} ({exc.strerror or exc})"
        ) from None
    except BaseException:
        discard_staging(target)
        raise

    result = BuildResult(
        directory=target,
        batch=plan.batch,
        items=len(plan.items),
        catch=sum(p.catch_type is not None for p in plan.items),
        skipped=plan.skipped,
        largest_page=largest_page,
    )
    if log is not None:
        for line in _notes(result, plan):
            print(line, file=log)
    return result


def build(
    spec: BatchSpec, home: Path, force: bool = False, workers: int = 1, log: TextIO | None = None
) -> BuildResult:
    """Plan and write the batch `spec` describes; `log` (a file) receives one-line notes."""
    return write_batch(plan_batch(spec, home, force), force, workers, log)


def _notes(result: BuildResult, plan: BatchPlan) -> Iterator[str]:
    spec = plan.spec
    yield (
        f"hitgen build: wrote {result.directory} ({result.items} items, {result.catch} catch "
        f"trial(s), from {plan.n_pairs} shared decisions)"
    )
    if plan.n_pairs < spec.n:
        yield f"hitgen build: only {plan.n_pairs} images available, fewer than --n {spec.n}"
    if plan.unexplained:
        listed = ", ".join(plan.unexplained[:3]) + (", ..." if len(plan.unexplained) > 3 else "")
        yield (
            f"hitgen build: {len(plan.unexplained)} listed image(s) have no explanation on "
            f"either side ({listed}); left out"
        )
    if result.skipped:
        counts: dict[str, int] = {}
        for skip in result.skipped:
            kind = skip.reason.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
        yield f"hitgen build: skipped {len(result.skipped)} images ({summary}; see manifest.json)"
    if not spec.standalone and result.largest_page > MTURK_PAGE_LIMIT:
        yield (
            f"hitgen build: warning: a page is {result.largest_page} bytes, over MTurk's "
            f"{MTURK_PAGE_LIMIT}-byte HTMLQuestion limit"
        )
