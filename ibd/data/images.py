"""Image files in, normalised tensors out, with the per-model preprocessing of `LoadedModel`.

Any mode Pillow reads (grayscale, palette, RGBA, CMYK, 16-bit) becomes RGB; transparency is
composited on white; EXIF orientation is applied. The image is resized to the model's input size
without cropping (as the authors' IBD code does) and normalised with the model's own mean/std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ibd.errors import UserError


def load_rgb(path: str | Path, *, upright: bool = True) -> Image.Image:
    """The image at `path` as an RGB Pillow image, turned upright by its EXIF orientation unless
    `upright` is false (a Broden image, whose segmentation is aligned with the stored pixels)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened) if upright else opened.copy()
    except Image.DecompressionBombError as exc:
        raise UserError(f"{path} is too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a readable image ({reason})") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        image = Image.fromarray((array / peak * 255).astype(np.uint8))
    return image.convert("RGB")


def to_tensor(
    image: Image.Image,
    size: tuple[int, int],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> torch.Tensor:
    """3 x H x W float tensor: resized (bilinear, no crop) to `size` = (H, W), then
    (x / 255 - mean) / std per channel."""
    height, width = size
    resized = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (tensor - mean_t) / std_t


def load_batch(
    paths: list[str | Path],
    size: tuple[int, int],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """N x 3 x H x W batch and each image's original (H, W)."""
    images = [load_rgb(p) for p in paths]
    batch = torch.stack([to_tensor(im, size, mean, std) for im in images])
    return batch, [(im.height, im.width) for im in images]
