"""The loop every explanation method shares, and the base class of the explainers.

An explainer (`ibd.CAM`, `ibd.GradCAM`, `ibd.IBD`, `ibd.NetDissect`) is a small object that knows
its method's name, whether it needs the gradient of the class score (`needs_gradients`) and how
to split one batch's class scores into components (`split`). Calling it runs the shared loop:
the images in batches, one forward pass with the feature layer captured (and one backward pass
only when the method needs gradients), the split, and one `Explanation` per image.

The capture hook is registered for each forward pass and removed when it returns or raises
(`ibd.nets.hooks`), so nothing stays on the network between calls, and two explainers on one
network do not see each other. Each call runs the network in eval mode and restores its mode
after; `with explainer:` holds eval mode for the whole block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from tqdm import tqdm

from ibd.errors import UserError
from ibd.explain.records import Component, Explanation
from ibd.nets.hooks import Forward, eval_mode, run
from ibd.nets.load import LoadedModel
from ibd.nets.model import Images, Item, Targets, class_indices, items


@dataclass
class Part:
    """One component of one sample's explanation, as a method computes it."""

    label: str
    contribution: float
    heatmap: torch.Tensor
    extra: dict[str, Any] | None = None


# One sample's components and residual (None: the method has none).
Split = tuple[list[Part], float | None]


class Explainer(ABC):
    """Explains a model's decisions with one method: `explainer(images, targets=None)`.

    images: a preprocessed N x 3 x H x W tensor (normalised as the model expects), a PIL image,
    an image path, or a list of them (PIL images and files are resized to the model's input size
    and normalised with its mean and std). targets: None for each image's top-1 class, one class
    (index or name) for all, or one per image. Returns one `Explanation` per image, in order."""

    method: ClassVar[str]
    needs_gradients: bool = False

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self._block: ExitStack | None = None

    @abstractmethod
    def split(self, fwd: Forward) -> list[Split]:
        """Each sample's components and residual, from one batch's forward pass."""

    def __call__(
        self,
        images: Images,
        targets: Targets = None,
        *,
        batch_size: int = 16,
        progress: bool = False,
    ) -> list[Explanation]:
        return explain(self, images, targets, batch_size=batch_size, progress=progress)

    def __enter__(self) -> Explainer:
        self._block = ExitStack()
        self._block.enter_context(eval_mode(self.model.model))
        return self

    def __exit__(self, *_: object) -> None:
        if self._block is not None:
            self._block.close()
            self._block = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model.name}, layer={self.model.layer!r})"


def explain(
    explainer: Explainer,
    images: Images,
    targets: Targets = None,
    *,
    batch_size: int = 16,
    progress: bool = False,
) -> list[Explanation]:
    """The shared loop (see the module docstring). Heatmap keys are `<image number>-<rank>`,
    the image number counted from 0 over the whole call."""
    model = explainer.model
    todo = items(model, images)
    if not todo:
        raise UserError("no images to explain")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    chosen = class_indices(model, targets, len(todo))
    records: list[Explanation] = []
    starts = range(0, len(todo), batch_size)
    bar = tqdm(starts, desc=f"{explainer.method} {model.name}", unit="batch", disable=not progress)
    with eval_mode(model.model):
        for start in bar:
            chunk = todo[start : start + batch_size]
            batch_targets = (
                torch.as_tensor(chosen[start : start + batch_size])
                if isinstance(chosen, list)
                else chosen
            )
            fwd = run(
                model.model,
                model.layer,
                _stack(model, chunk),
                batch_targets,
                gradients=explainer.needs_gradients,
            )
            records.extend(_records(explainer, fwd, chunk, start))
    return records


def _stack(model: LoadedModel, chunk: list[Item]) -> torch.Tensor:
    tensors = [item.tensor(model) for item in chunk]
    if len({tuple(t.shape) for t in tensors}) > 1:
        sizes = sorted({"x".join(map(str, t.shape)) for t in tensors})
        raise UserError(f"images explained together must have one size, got {', '.join(sizes)}")
    return torch.stack(tensors).to(model.device)


def _records(
    explainer: Explainer, fwd: Forward, chunk: list[Item], start: int
) -> list[Explanation]:
    model = explainer.model
    shape = (int(fwd.features.shape[2]), int(fwd.features.shape[3]))
    out = []
    for offset, (parts, residual) in enumerate(explainer.split(fwd)):
        index = start + offset
        k = int(fwd.targets[offset])
        components = [
            # a copy: a view would keep the whole batch's features alive
            Component(p.label, p.contribution, f"{index:05d}-{j}", dict(p.extra or {}),
                      p.heatmap.detach().float().clone())
            for j, p in enumerate(parts)
        ]  # fmt: skip
        probability = torch.softmax(fwd.logits[offset].float(), dim=0)[k]
        out.append(
            Explanation(
                image=chunk[offset].id,
                model=model.name,
                method=explainer.method,
                class_index=k,
                class_name=model.classes[k],
                score=float(fwd.logits[offset, k]),
                components=components,
                residual=residual,
                heatmap_shape=shape,
                extra={"probability": float(probability)},
                picture=chunk[offset].picture,
            )
        )
    return out


def feature_probe(model: LoadedModel) -> tuple[int, bool]:
    """The feature layer's channel count D, and whether the model's logits are W GAP(A) + b
    (`ibd.nets.heads.inspect`: checked numerically on seeded random inputs). A head without an
    `nn.Linear` (SqueezeNet's 1x1-convolution classifier) is not: its explanations take the
    gradient route (eq. 12)."""
    from ibd.nets import heads

    head = heads.inspect(model.model, model.layer, model.input_size)
    return head.channels, head.gap_linear
