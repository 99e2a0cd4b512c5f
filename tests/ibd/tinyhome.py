"""A tiny $IBD_HOME for the tests of `ibd explain` and the Python API: a ResNet18 checkpoint
(3 classes, 96 px input, so layer4 is 512 x 3 x 3) whose class weights are positive mixtures of
a 12-concept basis plus noise, that basis, a tally labelling its 512 units, and 3 images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from basisfiles import write_basis
from PIL import Image

from ibd.nets import architectures
from ibd.nets.load import save_checkpoint

CLASSES = ["harbor", "beach", "forest"]
CONCEPTS = [f"concept{c}" for c in range(12)]
IMAGES = [f"imgs/{i}.png" for i in range(3)]


def standardised(rows: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit length, as a basis' q (docs/contracts.md 5)."""
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build(home: Path) -> Path:
    """Write the tiny home into `home` (models/tiny.pt, basis/tiny.npz, dissect/tiny/tally.csv,
    imgs/*.png); returns `home`."""
    rng = np.random.default_rng(0)
    q = standardised(rng.normal(size=(12, 512))).astype(np.float32).astype(np.float64)
    torch.manual_seed(0)
    net = architectures.get("resnet18").build(3)
    mix = np.where(rng.random((3, 12)) < 0.4, rng.random((3, 12)), 0.0)
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor(mix @ q + 0.01 * rng.normal(size=(3, 512))))
        net.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    save_checkpoint(
        home / "models" / "tiny.pt",
        net,
        arch="resnet18",
        classes=CLASSES,
        layer="layer4",
        input_size=(96, 96),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    (home / "basis").mkdir()
    write_basis(home / "basis" / "tiny.npz", q, layer="layer4")
    units = "".join(f"{u},object,{CONCEPTS[u % 12]},{u / 1000}\n" for u in range(1, 513))
    (home / "dissect" / "tiny").mkdir(parents=True)
    (home / "dissect" / "tiny" / "tally.csv").write_text("unit,category,label,score\n" + units)
    (home / "imgs").mkdir()
    for i in range(3):
        array = (rng.random((70 + 10 * i, 90, 3)) * 255).astype(np.uint8)
        Image.fromarray(array).save(home / IMAGES[i])
    return home
