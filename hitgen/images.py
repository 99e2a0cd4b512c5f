"""Reading photos and writing the task's PNG files (byte-identical for identical pixels).

A photo is decoded exactly as `ibd explain` decodes it (ibd/data/images.py `load_rgb`), because the
heatmaps an explanation carries are in the coordinates of that decoded picture: EXIF orientation
is applied, transparency is composited on white, and 16-bit images are rescaled by their peak.
Decoding it any other way would put every mask in the wrong place (hitgen may import nothing of
ibd but its command-line errors, tests/test_boundaries.py, so the steps are repeated here;
tests/hitgen/test_images.py compares the two pixel for pixel).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hitgen.errors import UserError

# zlib level 1: ~10% larger files than level 3 at two thirds of the encoding time (level 6: 1.5-3x
# slower again); encoding is most of the rendering time (benchmarks/render_speed.py)
PNG_COMPRESS_LEVEL = 1
TRANSPARENT_MODES = ("RGBA", "LA", "PA")
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I")


def decode_photo(path: Path) -> Image.Image:
    """The photo at `path` as an upright RGB image, decoded as ibd's `load_rgb` does."""
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable image ({reason})") from None
    if image.mode in TRANSPARENT_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    elif image.mode in WIDE_GREY_MODES:
        # Pillow's own conversion clips 16-bit values at 255; ibd scales by the peak instead
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        image = Image.fromarray((array / peak * 255).astype(np.uint8))
    return image.convert("RGB")


def load_photo(
    path: Path, max_side: int | None, expected: tuple[tuple[tuple[int, int], str], ...] = ()
) -> np.ndarray:
    """RGB pixels (H x W x 3 uint8), shrunk (Lanczos) so that neither side exceeds `max_side`.

    `expected` holds ((height, width), where) for each explanation that states the decoded
    photo's size (its optional `image_size`); a different size means the explanation's heatmaps
    are not in this picture's coordinates, so it is refused rather than drawn misplaced.
    """
    rgb = decode_photo(path)
    for (height, width), where in expected:
        if (rgb.height, rgb.width) != (height, width):
            raise UserError(
                f"{where}: image_size is [{height}, {width}] but {path} decodes to "
                f"[{rgb.height}, {rgb.width}] (height, width, after EXIF orientation)"
            )
    if max_side is not None and max(rgb.size) > max_side:
        scale = max_side / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG encoding without metadata (no time stamps), so equal pixels give equal bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
