"""Heatmap -> highlight mask, as the paper's interface shows it (section 3.4, Fig. 5).

"Heatmaps are represented as simple masks that highlight the top 20% of pixels in the heatmap":

1. Upsample the raw feature-resolution heatmap H (h x w) bilinearly to the image size (Y x X):
   U = R_Y H R_X^T, where R_n (n x m) is the 1-D linear-interpolation matrix of
   `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`: output pixel i samples
   the input at s = max(0, (i + 0.5) * m / n - 0.5), i.e. weight 1 - (s - floor s) on floor s and
   s - floor s on min(floor s + 1, m - 1). (Checked against torch in the tests.)
2. The mask is the pixels with the largest U, about k = floor(0.2 * Y * X + 0.5) of them. With t
   the k-th largest value, pixels tied at t join or stay out together: the mask is U >= t, or
   U > t when that is closer to k pixels (and not empty), the rule of `ibd evaluate`'s pointing
   region (ibd/evaluation/scoring.py `top_region`). Ties at t are common: a ReLU'd or sparse map is
   exactly zero on most pixels, and taking some of them by position would draw a band along the top
   of the photo that the map does not point at. The map's minimum never joins when the map is not
   constant (it is "nowhere", whatever the count). So the mask covers 20% of the pixels only
   when the values allow; its actual coverage is recorded in the manifest (`mask_coverage`).
   A constant map points nowhere; it keeps its documented mask, the first k pixels in raster
   order (the top rows), so that every shown concept still has a 20% mask.
3. The picture keeps the mask's pixels unchanged, dims and desaturates every other pixel, and
   draws a two-pixel outline just outside the mask so small regions stay visible.
"""

from __future__ import annotations

import numpy as np

TOP_FRACTION = 0.2
DIM = 0.35  # brightness kept outside the mask
OUTLINE_RGB = (240, 228, 66)  # Okabe-Ito yellow: visible for every colour-vision type
OUTLINE_WIDTH = 2  # pixels; masks are shown at about half size on a laptop


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """R (n_out x n_in) with `R @ v` the linear upsampling of v (align_corners=False)."""
    scale = n_in / n_out
    source = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = source - low
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def upsample(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a 2-D heatmap to `size` = (height, width), in float64."""
    rows = interpolation_matrix(heatmap.shape[0], size[0])
    cols = interpolation_matrix(heatmap.shape[1], size[1])
    return rows @ heatmap.astype(np.float64) @ cols.T


def top_fraction_mask(values: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the largest values, about k = floor(fraction * N + 0.5) of them: values
    tied at the k-th largest are all in or all out (module docstring, step 2)."""
    flat = values.ravel()
    k = int(np.floor(fraction * flat.size + 0.5))
    if k == 0:
        return np.zeros(values.shape, dtype=bool)
    lowest = flat.min()
    if flat.max() == lowest:  # constant: no location to show (documented: the top rows)
        mask = np.zeros(flat.size, dtype=bool)
        mask[:k] = True
        return mask.reshape(values.shape)
    threshold = np.partition(flat, flat.size - k)[flat.size - k]
    above, region = values > threshold, values >= threshold
    if threshold == lowest:
        return above
    size_above, size = int(above.sum()), int(region.sum())
    return above if size_above > 0 and k - size_above < size - k else region


def heatmap_mask(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The top-20% mask of `heatmap` at image size (height, width)."""
    return top_fraction_mask(upsample(heatmap, size))


def _grow(mask: np.ndarray) -> np.ndarray:
    """`mask` and its 4-neighbours."""
    grown = mask.copy()
    grown[1:, :] |= mask[:-1, :]
    grown[:-1, :] |= mask[1:, :]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def _outline(mask: np.ndarray) -> np.ndarray:
    """The band of pixels outside `mask` within OUTLINE_WIDTH steps of it (4-neighbourhood)."""
    grown = mask
    for _ in range(OUTLINE_WIDTH):
        grown = _grow(grown)
    return grown & ~mask


def dimmed(photo: np.ndarray) -> np.ndarray:
    """The photo (H x W x 3 uint8) desaturated to its luma (BT.601) and dimmed to DIM."""
    luma = photo.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat((luma * DIM + 0.5).astype(np.uint8)[..., None], 3, axis=2)


def highlight(
    photo: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None
) -> np.ndarray:
    """The photo with `mask` shown as is and the rest dimmed (`background`: dimmed(photo))."""
    out = dimmed(photo) if background is None else background.copy()
    out[mask] = photo[mask]
    out[_outline(mask)] = OUTLINE_RGB
    return out
