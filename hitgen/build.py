"""Building a batch: explanations -> pairs -> planned items -> images, pages, manifest, CSV.

The batch is written into a temporary sibling directory and moved into place at the end, so a
failed build never leaves half a batch, and an existing batch is replaced only with `force`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
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
from hitgen.pairing import Skipped, image_key, join_on_image
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

MANIFEST_FORMAT = "hitgen-manifest-1"
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
    photo = load_photo(job.photo_path, job.max_side)
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


def _side(shown: Shown, class_name: str, masks: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "model": shown.model,
        "method": shown.method,
        "class_name": class_name,
        "concepts": [c.label for c in shown.components],
        "masks": masks,
    }
    if shown.wrong_from is not None:
        record["wrong_from"] = shown.wrong_from
    return record


def _item_record(plan: ItemPlan, job: ItemJob) -> dict[str, Any]:
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
        "first": _side(plan.first, base.class_name, job.masks(first_key)),
        "second": _side(plan.second, base.class_name, job.masks(second_key)),
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


def _restrict(
    explanations: list[Explanation], images: tuple[Path, ...] | None
) -> list[Explanation]:
    if images is None:
        return explanations
    wanted = set()
    for image in images:
        if not image.is_file():
            raise UserError(f"images: {image} not found")
        wanted.add(os.path.realpath(image))
    return [e for e in explanations if image_key(e) in wanted]


def _prepare_directory(target: Path, force: bool) -> Path:
    if target.exists():
        is_batch = (target / "manifest.json").is_file()
        if not target.is_dir() or (any(target.iterdir()) and not is_batch):
            raise UserError(f"{target}: exists and is not a hitgen batch; choose another --out")
        if is_batch and not force:
            raise UserError(f"{target}: batch exists (use --force to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.hitgen-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    (staging / "pages").mkdir()
    return staging


def _move_into_place(staging: Path, target: Path) -> None:
    old = target.parent / f".{target.name}.hitgen-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class BuildResult:
    directory: Path
    batch: str
    items: int
    catch: int
    skipped: list[Skipped]
    largest_page: int


def build(
    spec: BatchSpec, home: Path, force: bool = False, workers: int = 1, log: TextIO | None = None
) -> BuildResult:
    """Build the batch `spec` describes; `log` (a file) receives one-line notes."""
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
    pairs, skipped = join_on_image(
        _restrict(firsts, spec.images), _restrict(seconds, spec.images), *names, disagreeing
    )
    if not pairs:
        reasons = "; ".join(sorted({s.reason for s in skipped})[:3]) or "no images"
        raise UserError(f"no image has a shared decision of {names[0]} and {names[1]} ({reasons})")
    plans = plan_items(
        pairs, seconds, spec.experiment, spec.n, spec.catch_rate, spec.catch_types, spec.seed
    )

    batch = spec.batch or default_batch_name(
        spec.experiment, (models[0], spec.first.method), (models[1], spec.second.method)
    )
    target = out_dir(spec, batch, home)
    staging = _prepare_directory(target, force)
    try:
        width = max(4, len(str(len(plans))))
        jobs = []
        for index, plan in enumerate(plans, 1):
            number = f"{index:0{width}d}"
            a, b = (
                (plan.first, plan.second) if plan.robot_a == "first" else (plan.second, plan.first)
            )
            jobs.append(
                ItemJob(
                    directory=staging,
                    number=number,
                    item_id=f"{batch}-{number}",
                    photo_path=plan.pair.first.image_path,
                    class_name=plan.pair.first.class_name,
                    robot_a=a,
                    robot_b=b,
                    max_side=spec.max_side,
                    standalone=spec.standalone,
                )
            )
        rendered = _render_all(jobs, workers)
        sizes = [size for size, _ in rendered]
        write_masks(staging / "masks.npz", {k: v for _, m in rendered for k, v in m.items()})
        records = [_item_record(plan, job) for plan, job in zip(plans, jobs, strict=True)]
        manifest = {
            "format": MANIFEST_FORMAT,
            "batch": batch,
            "experiment": spec.experiment,
            "focus": {"method": spec.first.method, "model": models[0]},
            "seed": spec.seed,
            "version": __version__,
            "created_with": command_line(spec, models),
            "skipped": [{"image": s.image, "reason": s.reason} for s in skipped],
            "items": records,
        }
        (staging / "manifest.json").write_text(_dump(manifest), encoding="utf-8")
        (staging / "input.csv").write_text(_csv(records), encoding="utf-8")
        rows = [IndexRow(j.item_id, j.page, j.photo, j.class_name) for j in jobs]
        (staging / "index.html").write_text(render_index(batch, rows), encoding="utf-8")
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    result = BuildResult(
        directory=target,
        batch=batch,
        items=len(plans),
        catch=sum(p.catch_type is not None for p in plans),
        skipped=skipped,
        largest_page=max(sizes),
    )
    if log is not None:
        for line in _notes(result, spec, len(pairs)):
            print(line, file=log)
    return result


def _notes(result: BuildResult, spec: BatchSpec, n_pairs: int) -> Iterator[str]:
    yield (
        f"hitgen build: wrote {result.directory} ({result.items} items, {result.catch} catch "
        f"trial(s), from {n_pairs} shared decisions)"
    )
    if n_pairs < spec.n:
        yield f"hitgen build: only {n_pairs} images available, fewer than --n {spec.n}"
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
