"""Explain a model's decisions on image files with one method, producing the contract's records.

The methods share one loop (load a batch, one forward pass with the feature layer captured, a
backward pass only when the method needs gradients) and differ only in how they split the class
score into components. CAM and Grad-CAM give one component whose heatmap is the map
(`ibd.explain.cam`); its contribution is the map's spatial mean (w_k . GAP(A) for CAM). IBD and
Network Dissection split the score into concept or unit components (`ibd.explain.concepts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ibd.data.images import load_batch
from ibd.errors import UserError
from ibd.explain import cam as cam_lib
from ibd.explain.records import Component, Explanation
from ibd.nets.hooks import Forward, run
from ibd.nets.load import LoadedModel, final_linear


@dataclass
class Part:
    """One component of one sample's explanation, before it is written out."""

    label: str
    contribution: float
    heatmap: torch.Tensor
    extra: dict[str, float | int | str] | None = None


# Given the forward pass of a batch, each sample's components and residual (None: no residual).
Splitter = Callable[[Forward], list[tuple[list[Part], float | None]]]


def cam_splitter(loaded: LoadedModel, relu: bool = False) -> Splitter:
    refusal = (
        f"{loaded.name}: the logits are not a linear function of GAP('{loaded.layer}'), "
        "so CAM does not apply; use --method gradcam or a GAP variant (alexnet_gap, ...)"
    )
    try:
        weight, bias = final_linear(loaded.model)
    except UserError:  # no nn.Linear classifier at all (SqueezeNet)
        raise UserError(refusal) from None

    def split(fwd: Forward) -> list[tuple[list[Part], float | None]]:
        if not cam_lib.is_gap_linear(fwd.features, fwd.logits, weight, bias):
            raise UserError(refusal)
        maps = cam_lib.cam(fwd.features, weight, fwd.targets, relu=relu)
        means = cam_lib.cam(fwd.features, weight, fwd.targets).mean(dim=(1, 2))
        return [
            ([Part(loaded.classes[int(k)], float(m), mp)], None)
            for k, m, mp in zip(fwd.targets, means, maps, strict=True)
        ]

    return split


def gradcam_splitter(loaded: LoadedModel, relu: bool = False) -> Splitter:
    def split(fwd: Forward) -> list[tuple[list[Part], float | None]]:
        assert fwd.gradients is not None
        maps = cam_lib.gradcam(fwd.features, fwd.gradients, relu=relu)
        means = cam_lib.gradcam(fwd.features, fwd.gradients).mean(dim=(1, 2))
        return [
            ([Part(loaded.classes[int(k)], float(m), mp)], None)
            for k, m, mp in zip(fwd.targets, means, maps, strict=True)
        ]

    return split


def explain_images(
    loaded: LoadedModel,
    images: Sequence[str],
    method: str,
    splitter: Splitter,
    *,
    needs_gradients: bool,
    targets: Sequence[int] | int | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[list[Explanation], dict[str, np.ndarray]]:
    """Explain each image in `images` (paths, kept as given) with one method.

    `targets`: None for each image's top-1 class, one class for all, or one class per image."""
    if isinstance(targets, Sequence) and len(targets) != len(images):
        raise UserError(f"{len(targets)} targets for {len(images)} images")
    records: list[Explanation] = []
    heatmaps: dict[str, np.ndarray] = {}
    starts = range(0, len(images), batch_size)
    bar = tqdm(starts, desc=f"{method} {loaded.name}", unit="batch", disable=not progress)
    for start in bar:
        paths = list(images[start : start + batch_size])
        batch, _ = load_batch(paths, loaded.input_size, loaded.mean, loaded.std)
        batch = batch.to(loaded.device)
        batch_targets = (
            torch.as_tensor(targets[start : start + batch_size])
            if isinstance(targets, Sequence)
            else targets
        )
        fwd = run(loaded.model, loaded.layer, batch, batch_targets, gradients=needs_gradients)
        for offset, (parts, residual) in enumerate(splitter(fwd)):
            index = start + offset
            k = int(fwd.targets[offset])
            components = []
            for j, part in enumerate(parts):
                key = f"{index:05d}-{j}"
                heatmaps[key] = part.heatmap.detach().float().cpu().numpy()
                components.append(Component(part.label, part.contribution, key, part.extra or {}))
            probability = torch.softmax(fwd.logits[offset].float(), dim=0)[k]
            records.append(
                Explanation(
                    image=str(paths[offset]),
                    model=loaded.name,
                    method=method,
                    class_index=k,
                    class_name=loaded.classes[k],
                    score=float(fwd.logits[offset, k]),
                    components=components,
                    residual=residual,
                    heatmap_shape=(int(fwd.features.shape[2]), int(fwd.features.shape[3])),
                    extra={"probability": float(probability)},
                )
            )
    return records, heatmaps


def class_index(loaded: LoadedModel, target: str) -> int:
    """A class given by index or by name."""
    if target.isdigit() and int(target) < len(loaded.classes):
        return int(target)
    if target in loaded.classes:
        return loaded.classes.index(target)
    raise UserError(f"unknown class '{target}' for {loaded.name} ({len(loaded.classes)} classes)")


def image_paths(given: Sequence[str]) -> list[str]:
    """Image arguments with directories expanded to the images they hold (sorted)."""
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    out: list[str] = []
    for item in given:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
            if not found:
                raise UserError(f"no images in directory {path}")
            out.extend(str(p) for p in found)
        else:
            out.append(item)
    return out
