"""Reading photos and writing the task's PNG files (byte-identical for identical pixels)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hitgen.errors import UserError

# zlib level 1: ~10% larger files than level 3 at two thirds of the encoding time (level 6: 1.5-3x
# slower again); encoding is most of the rendering time (benchmarks/render_speed.py)
PNG_COMPRESS_LEVEL = 1


def load_photo(path: Path, max_side: int | None) -> np.ndarray:
    """RGB pixels (H x W x 3 uint8), shrunk (Lanczos) so that neither side exceeds `max_side`."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None
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
