"""Training scene classifiers: the concept world's models (one per role of the paper's Fig. 9)
and any architecture on an image folder.

Training minimises the cross-entropy of the softmax over the K class logits with AdamW and a
one-cycle learning-rate schedule (warm-up then cosine decay). Images are augmented by random
horizontal flips, so that the mirrored reference (every kernel flipped: it computes roughly
model(flip(x))) keeps the reference's accuracy, and by random shifts of up to `shift` pixels.

World models also learn from near misses (`ibd.world.nearmiss`): training images drawn again
without one of their class's defining concepts, with the target the world's rules give them
(uniform when no class admits them). Each step adds half a batch of them, and the loss is

    CE(z, y) + near_misses x CE(z', t)

over the batch's images z and near misses z' with targets t, so the model cannot read a class
from a shortcut that skips one of its defining concepts.

World models are cached: a checkpoint records its training settings, seed and the world's
fingerprint, and is reused as long as all three match.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from ibd import paths
from ibd.data import scenes
from ibd.data.images import load_rgb
from ibd.errors import UserError
from ibd.nets import architectures
from ibd.nets.load import (
    CHECKPOINT_FORMAT,
    final_linear_name,
    read_weights,
    save_checkpoint,
    standard_keys,
)
from ibd.nets.mirror import mirror
from ibd.world import nearmiss
from ibd.world.nearmiss import NearMisses
from ibd.world.writer import fingerprint

REFERENCE = "world_resnet"
MIRROR = "world_resnet_mirror"
ROLES = (REFERENCE, MIRROR, "world_vgg", "world_alexnet", "world_vit")
SHUFFLED = "world_resnet_shuffled"
# roles trained only when named (`ibd train --arch NAME`), not by a plain `ibd train`
EXTRA_ROLES = (SHUFFLED,)
# roles whose network is another role's architecture
ROLE_ARCHITECTURES = {SHUFFLED: REFERENCE}
# the stream of the seed that permutes the labels (`shuffled_labels`)
LABEL_STREAM = 3


@dataclass(frozen=True)
class TrainSettings:
    """What a trained model depends on (besides its data)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    flip: bool = True
    shift: int = 8
    seed: int = 0
    near_misses: float = 0.0  # weight of the near-miss loss (world models only)
    shuffle_labels: bool = False  # train on the labels permuted by the seed (`shuffled_labels`)

    def to_json(self) -> dict[str, Any]:
        """The settings as recorded in a checkpoint; `shuffle_labels` only when set, so the
        records of models trained before it existed still match (and their caches hold)."""
        out = asdict(self)
        if not self.shuffle_labels:
            del out["shuffle_labels"]
        return out


# Budgets per role: the weaker roles get smaller networks and shorter training, as AlexNet and
# VGG16 are weaker than ResNet50 in the paper.
ROLE_SETTINGS: dict[str, TrainSettings] = {
    REFERENCE: TrainSettings(epochs=10, lr=3e-3, near_misses=1.0),
    "world_vgg": TrainSettings(epochs=6, lr=3e-3, near_misses=1.0),
    "world_alexnet": TrainSettings(epochs=3, lr=1.5e-3, near_misses=1.0),
    # a transformer: AdamW's usual ViT weight decay and a lower peak rate than the CNNs
    "world_vit": TrainSettings(epochs=12, lr=1e-3, weight_decay=0.05, near_misses=1.0),
    # labels permuted: nothing to generalise, so no augmentation and no weight decay, which
    # would only slow the memorising, and smaller batches for more steps in the same time
    # (docs/world.md, "A model trained on shuffled labels")
    SHUFFLED: TrainSettings(
        epochs=20,
        batch_size=32,
        lr=2e-3,
        weight_decay=0.0,
        flip=False,
        shift=0,
        shuffle_labels=True,
    ),
}

# Near misses of the world's training images at an input size, drawn at most once per call of
# `train_roles` (the roles share them).
NearMissSource = Callable[[tuple[int, int]], NearMisses]


@dataclass
class ImageSet:
    """Images in memory as uint8 N x 3 x H x W with their class indices."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())

    def batches(
        self, size: int, gen: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) batches, shuffled by `gen` (in order when None)."""
        order = _order(len(self), gen)
        for start in range(0, len(self), size):
            idx = order[start : start + size]
            yield self.images[idx], self.labels[idx]


def _order(n: int, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)


class _Files(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[Path, int]], size: tuple[int, int]) -> None:
        self.items, self.size = items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        return torch.from_numpy(_load_rgb(path, self.size)).permute(2, 0, 1), label


@dataclass
class FolderImages:
    """Image files read batch by batch (an image folder can be larger than memory)."""

    items: list[tuple[Path, int]]
    size: tuple[int, int]
    workers: int = 2

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([k for _, k in self.items], dtype=torch.long)

    def batches(
        self, size: int, gen: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = torch.utils.data.DataLoader(
            _Files(self.items, self.size),
            batch_size=size,
            sampler=_order(len(self), gen).tolist(),
            num_workers=self.workers,
        )
        yield from loader


Images = ImageSet | FolderImages


# -- data ------------------------------------------------------------------------------------


def read_scenes(world: Path) -> tuple[list[str], list[tuple[str, str, int]]]:
    """Class names (index order) and (image path, split, class index) rows of scenes.csv."""
    table = scenes.read(world)
    rows = [(s.image, s.split, s.class_index) for s in table]
    return scenes.class_names(table, world), rows


def _load_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """H x W x 3 uint8 pixels, decoded as `ibd explain` decodes the image (`images.load_rgb`:
    EXIF orientation, transparency on white, 16-bit scaled), resized (bilinear) to `size`."""
    rgb = load_rgb(path)
    if rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_world_split(
    world: Path, split: str, size: tuple[int, int], progress: bool = True
) -> ImageSet:
    """All images of one scenes.csv split, in file order."""
    _, rows = read_scenes(world)
    chosen = [(p, k) for p, s, k in rows if s == split]
    if not chosen:
        raise UserError(f"{world / 'scenes.csv'} has no '{split}' images")
    array = np.empty((len(chosen), size[0], size[1], 3), dtype=np.uint8)
    for n, (rel, _) in enumerate(
        tqdm(chosen, desc=f"load {split}", disable=not progress, leave=False)
    ):
        path = world / rel
        if not path.is_file():
            raise UserError(f"missing image {path} (listed in scenes.csv)")
        array[n] = _load_rgb(path, size)
    images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor([k for _, k in chosen], dtype=torch.long))


def shuffled_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """The labels permuted by a seeded permutation pi of the images: y'_i = y_pi(i), pi drawn
    by numpy's `default_rng([seed, LABEL_STREAM])`. Every class keeps its count; an image keeps
    its own label only by chance (about 1 / classes of them)."""
    order = np.random.default_rng([seed, LABEL_STREAM]).permutation(int(labels.numel()))
    return labels[torch.from_numpy(order)]


def training_set(
    world: Path, size: tuple[int, int], settings: TrainSettings, progress: bool = True
) -> ImageSet:
    """The world's train split as a model learns it: its labels permuted by the training seed
    when `settings.shuffle_labels` (`shuffled_labels`), else as they are."""
    train = load_world_split(world, "train", size, progress)
    if settings.shuffle_labels:
        train = ImageSet(train.images, shuffled_labels(train.labels, settings.seed))
    return train


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def scan_image_folder(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """torchvision ImageFolder layout: one sub-folder per class holding its images."""
    if not folder.is_dir():
        raise UserError(f"image folder not found: {folder}")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise UserError(f"{folder} needs one sub-folder per class (at least two)")
    items = [
        (path, k)
        for k, name in enumerate(classes)
        for path in sorted((folder / name).rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    ]
    if not items:
        raise UserError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return classes, items


def load_image_folder(
    folder: Path, size: tuple[int, int], seed: int
) -> tuple[list[str], dict[str, FolderImages]]:
    """Train/val/test sets from an image folder: a `train/` sub-folder (with `val/` and `test/`
    beside it when present; without `val/`, 20% of `train/` is held out by a seeded
    permutation), else the folder itself, one sub-folder per class, split 80/20 the same way."""
    split_dirs = {s: folder / s for s in ("train", "val", "test") if (folder / s).is_dir()}
    if split_dirs and "train" not in split_dirs:
        given = ", ".join(f"{s}/" for s in split_dirs)
        raise UserError(f"{folder} has {given} but no train/ folder")
    sets: dict[str, list[tuple[Path, int]]] = {}
    classes, items = scan_image_folder(split_dirs.get("train", folder))
    for split in ("val", "test"):
        if split in split_dirs:
            other, sets[split] = scan_image_folder(split_dirs[split])
            if other != classes:
                raise UserError(f"{split_dirs[split]} has other classes than {split_dirs['train']}")
    if "val" in sets:
        sets["train"] = items
    else:
        order = np.random.default_rng(seed).permutation(len(items))
        cut = max(1, round(0.8 * len(items)))
        sets["train"] = [items[i] for i in order[:cut]]
        sets["val"] = [items[i] for i in order[cut:]] or sets["train"][:1]
    loaded = {split: FolderImages(items, size) for split, items in sets.items()}
    return classes, loaded


# -- training --------------------------------------------------------------------------------


class Normalise(nn.Module):
    def __init__(self, mean: Iterable[float], std: Iterable[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self.mean) / self.std


def augment(images: torch.Tensor, flip: bool, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips (probability 1/2 each) and shifts of up to +-shift pixels
    (edge pixels repeated), per image."""
    n = images.shape[0]
    if flip:
        flipped = torch.rand(n, generator=gen) < 0.5
        images = torch.where(flipped.view(n, 1, 1, 1), images.flip(-1), images)
    if shift > 0:
        height, width = images.shape[-2:]
        padded = F.pad(images.float(), (shift, shift, shift, shift), mode="replicate")
        offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen)
        images = torch.stack(
            [
                padded[i, :, dy : dy + height, dx : dx + width]
                for i, (dy, dx) in enumerate(offsets.tolist())
            ]
        )
    return images


@torch.no_grad()
def predict(
    model: nn.Module, norm: Normalise, data: Images, device: torch.device, batch_size: int = 200
) -> torch.Tensor:
    """Predicted class indices for every image of `data`."""
    model.eval()
    out = []
    for images, _ in data.batches(batch_size, None):
        out.append(model(norm(images.to(device))).argmax(1).cpu())
    return torch.cat(out)


def accuracy(model: nn.Module, norm: Normalise, data: Images, device: torch.device) -> float:
    return float((predict(model, norm, data, device) == data.labels).float().mean())


def fit(
    model: nn.Module,
    norm: Normalise,
    train: Images,
    settings: TrainSettings,
    device: torch.device,
    desc: str = "train",
    progress: bool = True,
    near: NearMisses | None = None,
) -> None:
    """Minimise cross-entropy on `train` for `settings.epochs` epochs (AdamW, one-cycle) over
    the parameters that require gradients; with `near` and `settings.near_misses` > 0, plus
    that weight times the cross-entropy of half a batch of near misses to their targets."""
    extra = near if settings.near_misses > 0 else None
    if settings.near_misses > 0 and (extra is None or len(extra) == 0):
        raise ValueError("near_misses > 0 needs near-miss images")
    gen = torch.Generator().manual_seed(settings.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps = settings.epochs * math.ceil(len(train) / settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.lr, total_steps=steps, pct_start=0.2
    )
    bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
    model.to(device)
    try:
        for _ in range(settings.epochs):
            _train_mode(model)
            for images, labels in train.batches(settings.batch_size, gen):
                n, targets = len(images), None
                if extra is not None:
                    pick = torch.randint(len(extra), (max(1, n // 2),), generator=gen)
                    images = torch.cat([images, extra.images[pick]])
                    targets = extra.targets[pick].to(device)
                x = norm(augment(images, settings.flip, settings.shift, gen).to(device))
                logits = model(x)
                loss = F.cross_entropy(logits[:n], labels.to(device))
                if targets is not None:
                    loss = loss + settings.near_misses * F.cross_entropy(logits[n:], targets)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
    finally:
        bar.close()


def _train_mode(model: nn.Module) -> None:
    """Training mode, except for batch-norm layers whose parameters are frozen (`--train
    head`): their running statistics belong to the kept layers and must not drift either."""
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        frozen = bool(params) and not any(p.requires_grad for p in params)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and frozen:
            module.eval()


def check_output(out: Path) -> None:
    """Fail before training when the checkpoint `out` could not be written afterwards."""
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; name the checkpoint file")
    paths.check_creatable(out)


# -- the world's models ----------------------------------------------------------------------


def held_out_accuracy(
    model: nn.Module,
    norm: Normalise,
    world: Path,
    size: tuple[int, int],
    device: torch.device,
    progress: bool = True,
) -> dict[str, float]:
    """Accuracy on the world's val and test splits (those that hold images)."""
    _, rows = read_scenes(world)
    present = {split for _, split, _ in rows}
    return {
        split: accuracy(model, norm, load_world_split(world, split, size, progress), device)
        for split in ("val", "test")
        if split in present
    }


def _training_record(arch: str, settings: TrainSettings, world: Path) -> dict[str, Any]:
    return {"arch": arch, "settings": settings.to_json(), "world": fingerprint(world)}


def _recorded(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable file is simply not a valid cache entry
        return None
    return obj.get("training") if isinstance(obj, dict) else None


def trained_on(path: Path, world: Path, arch: str, seed: int) -> bool:
    """True when `path` holds an `arch` model trained on this world with this seed (whatever
    its epochs or learning rate)."""
    record = _recorded(path)
    return (
        isinstance(record, dict)
        and record.get("arch") == arch
        and record.get("world") == fingerprint(world)
        and (record.get("settings") or {}).get("seed") == seed
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def near_miss_source(world: Path, progress: bool = True) -> NearMissSource:
    """Near misses of the world's training images, drawn on first use at each input size."""

    @functools.cache
    def at(size: tuple[int, int]) -> NearMisses:
        _, rows = read_scenes(world)
        train = [i for i, (_, split, _) in enumerate(rows) if split == "train"]  # row = index
        return nearmiss.draw(world, train, size, progress=progress)

    return at


def train_world_model(
    world: Path,
    arch: str,
    out: Path,
    settings: TrainSettings,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    near_misses: NearMissSource | None = None,
) -> dict[str, Any]:
    """Train `arch` (an architecture, or a role of `ROLE_ARCHITECTURES` built as its
    architecture) on the world's train split and save it to `out` with its val and test
    accuracy (and, with shuffled labels, `train_accuracy` on them), unless `out` already holds
    a model trained the same way on the same world. Near misses (when `settings.near_misses`
    > 0) come from `near_misses`, by default drawn now. Returns the checkpoint's accuracy,
    whether it was reused and (when trained) the model."""
    spec = architectures.get(ROLE_ARCHITECTURES.get(arch, arch))
    if settings.shuffle_labels and settings.near_misses > 0:
        raise UserError("near misses follow the world's rules: not with shuffled labels")
    record = _training_record(arch, settings, world)
    check_output(out)
    if not force and _recorded(out) == record:
        meta = torch.load(out, map_location="cpu", weights_only=True)
        log(f"{arch}: up to date ({out}), accuracy {_fmt(meta['accuracy'])}")
        return {"accuracy": meta["accuracy"], "reused": True, "seconds": 0.0}
    classes, _ = read_scenes(world)
    dev = torch.device(device)
    torch.manual_seed(settings.seed)
    model = spec.build(len(classes))
    norm = Normalise(spec.mean, spec.std).to(dev)
    train = training_set(world, spec.input_size, settings, progress)
    near = None
    if settings.near_misses > 0:
        near = (near_misses or near_miss_source(world, progress))(spec.input_size)
    start = time.perf_counter()
    fit(model, norm, train, settings, dev, desc=arch, progress=progress, near=near)
    seconds = time.perf_counter() - start
    acc = held_out_accuracy(model, norm, world, spec.input_size, dev, progress)
    extra: dict[str, Any] = {}
    if settings.shuffle_labels:  # how far it memorised the labels it was given
        extra["train_accuracy"] = accuracy(model, norm, train, dev)
        log(f"{arch}: accuracy on its shuffled training labels {extra['train_accuracy']:.3f}")
    save_checkpoint(
        out,
        model.cpu(),
        arch=spec.name,
        classes=classes,
        layer=spec.layer,
        input_size=spec.input_size,
        mean=spec.mean,
        std=spec.std,
        seed=settings.seed,
        accuracy=acc,
        # the result is reproducible for a seed and a torch thread count (CPU reductions are
        # split by thread), so the count is recorded beside the seed
        extra={
            "training": record,
            "train_seconds": round(seconds, 1),
            "threads": torch.get_num_threads(),
            **extra,
        },
    )
    log(f"{arch}: trained in {seconds:.0f} s, accuracy {_fmt(acc)} -> {out}")
    return {"accuracy": acc, "reused": False, "seconds": seconds, "model": model.eval()}


def mirror_world_model(
    world: Path,
    reference: Path,
    out: Path,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Save `mirror(reference)` (every kernel flipped left-right) to `out` with its own
    accuracy, arch "world_resnet" and `mirrored: true`; reused while the reference file is
    unchanged."""
    ref = read_weights(reference, allow_pickle=False)
    if not isinstance(ref, dict) or ref.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{reference} is not a checkpoint written by `ibd train`")
    record = {"mirror_of": file_sha256(reference), "world": fingerprint(world)}
    check_output(out)
    if not force and _recorded(out) == record:
        meta = torch.load(out, map_location="cpu", weights_only=True)
        log(f"{MIRROR}: up to date ({out}), accuracy {_fmt(meta['accuracy'])}")
        return {"accuracy": meta["accuracy"], "reused": True, "seconds": 0.0}
    spec = architectures.get(ref["arch"])
    model = spec.build(ref["num_classes"])
    model.load_state_dict(ref["state_dict"])
    twin = mirror(model)
    dev = torch.device(device)
    norm = Normalise(ref["mean"], ref["std"]).to(dev)
    size = tuple(ref["input_size"])
    twin.to(dev)
    acc = held_out_accuracy(twin, norm, world, size, dev, progress)
    save_checkpoint(
        out,
        twin.cpu(),
        arch=ref["arch"],
        classes=ref["classes"],
        layer=ref["layer"],
        input_size=size,
        mean=tuple(ref["mean"]),
        std=tuple(ref["std"]),
        seed=ref["seed"],
        accuracy=acc,
        mirrored=True,
        extra={"training": record},
    )
    log(f"{MIRROR}: mirrored {reference.name}, accuracy {_fmt(acc)} -> {out}")
    return {"accuracy": acc, "reused": False, "seconds": 0.0}


def train_roles(
    world: Path,
    models: Path,
    roles: Iterable[str] = ROLES,
    device: str = "cpu",
    force: bool = False,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    settings: dict[str, TrainSettings] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train (or reuse) each role's model into `models/<role>.pt` with `settings` per role
    (default `ROLE_SETTINGS`), all with training seed `seed`. `roles` may name the extra roles
    (`EXTRA_ROLES`) beside the default ones."""
    budgets = settings or ROLE_SETTINGS
    near = near_miss_source(world, progress)
    results: dict[str, dict[str, Any]] = {}
    roles = list(roles)
    known = (*ROLES, *EXTRA_ROLES)
    unknown = [r for r in roles if r not in known]
    if unknown:
        raise UserError(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(known)}")
    if MIRROR in roles and REFERENCE not in roles:
        roles.insert(roles.index(MIRROR), REFERENCE)
    for role in roles:
        out = models / f"{role}.pt"
        if role == MIRROR:
            results[role] = mirror_world_model(
                world, models / f"{REFERENCE}.pt", out, device, force, progress, log
            )
        else:
            results[role] = train_world_model(
                world,
                role,
                out,
                replace(budgets[role], seed=seed),
                device,
                force,
                progress,
                log,
                near_misses=near,
            )
    return results


def _fmt(acc: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in acc.items())


# -- any architecture on an image folder -----------------------------------------------------


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters trained by `--train head`: a GAP variant's new layers, otherwise the
    final linear layer."""
    from ibd.nets import gapnets

    if isinstance(model, gapnets.GapNet):
        return list(gapnets.head_parameters(model))
    return list(model.get_submodule(final_linear_name(model)).parameters())


def init_from(model: nn.Module, path: Path) -> list[str]:
    """Copy the tensors of a state dict or checkpoint at `path` whose names and shapes match
    `model` (a GAP variant takes torchvision's whole conv trunk); returns the names copied."""
    from ibd.nets import gapnets

    obj = read_weights(path, allow_pickle=False)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds no state dict")
    state = standard_keys(obj)
    own = model.state_dict()
    if isinstance(model, gapnets.GapNet):
        gapnets.load_trunk(model, state)
        copied = gapnets.trunk_names(model)
    else:
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(fitting, strict=False)
        copied = [k for k in own if k in fitting]
    if not copied:
        raise UserError(f"no tensor of {path} fits the model (wrong architecture?)")
    return copied


def _head_names(model: nn.Module) -> set[str]:
    """State-dict names of the tensors that `--train head` trains."""
    head = {id(p) for p in head_parameters(model)}
    return {name for name, p in model.named_parameters() if id(p) in head}


def train_folder(
    folder: Path,
    arch: str,
    out: Path,
    settings: TrainSettings,
    init: Path | None = None,
    train_part: str = "all",
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train `arch` on an image folder (see `load_image_folder`) and save a checkpoint."""
    if train_part not in ("head", "all"):
        raise UserError(f"--train must be 'head' or 'all', not '{train_part}'")
    check_output(out)
    spec = architectures.get(arch)
    classes, sets = load_image_folder(folder, spec.input_size, settings.seed)
    torch.manual_seed(settings.seed)
    model = spec.build(len(classes))
    if init is not None:
        copied = init_from(model, init)
        log(f"{arch}: initialised {len(copied)} tensors from {init}")
        # `--train head` keeps every other tensor as it is: all of them must come from the file
        # (but for batch-norm step counters, which files saved before PyTorch 0.4 lack)
        kept = set(copied) | _head_names(model)
        left = [
            k
            for k in model.state_dict()
            if k not in kept and not k.endswith(".num_batches_tracked")
        ]
        if train_part == "head" and left:
            more = f" (+{len(left) - 4} more)" if len(left) > 4 else ""
            raise UserError(
                f"--train head keeps the layers below the head, but {init} does not hold "
                f"{', '.join(left[:4])}{more} (wrong architecture?)"
            )
    if train_part == "head":
        keep = {id(p) for p in head_parameters(model)}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
    dev = torch.device(device)
    norm = Normalise(spec.mean, spec.std).to(dev)
    fit(model, norm, sets["train"], settings, dev, desc=arch, progress=progress)
    acc = {
        split: accuracy(model, norm, data, dev) for split, data in sets.items() if split != "train"
    }
    layer = spec.layer or architectures.default_layer(model)
    save_checkpoint(
        out,
        model.cpu(),
        arch=arch,
        classes=classes,
        layer=layer,
        input_size=spec.input_size,
        mean=spec.mean,
        std=spec.std,
        seed=settings.seed,
        accuracy=acc,
        extra={
            "training": {
                "arch": arch,
                "settings": settings.to_json(),
                "data": str(folder),
                "init_from": str(init) if init else None,
                "train": train_part,
            },
            "threads": torch.get_num_threads(),
        },
    )
    log(f"{arch}: accuracy {_fmt(acc)} -> {out}")
    return {"accuracy": acc}
