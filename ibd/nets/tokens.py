"""Layer outputs that are not N x D x H x W maps, seen as maps.

Explanations (paper section 2.3, eq. 12-14) work on a feature map A (N x D x H x W). Two other
layouts are common in today's classifiers:

- tokens, N x T x D: a vision transformer's encoder block outputs T = extra + H W tokens, the
  extra ones (class token, register or distillation tokens) in front of the patch grid, which is
  stored row by row;
- channels last, N x H x W x D: Swin's stages and ConvNeXt's block internals.

`detect` finds the layout from the output's shape and the input image's size (H_in x W_in): the
patch grid must be a plausible down-sampling of the input, H ~ H_in / s and W ~ W_in / s for one
stride s (within one position for padding), which also finds the grid of non-square inputs.
`to_map` turns such an output into N x D x H x W (extra tokens dropped) and `from_map` puts a map
back into the layer's layout (the extra tokens taken from the original output), so that a hook
can hand the rest of the network a tensor computed from the map: gradients with respect to the
map are then exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ibd.errors import UserError

MAP = "map"
CHANNELS_LAST = "channels_last"
TOKENS = "tokens"
# At most this many extra tokens in front of the grid (class + registers + distillation).
MAX_EXTRA_TOKENS = 16


@dataclass(frozen=True)
class Layout:
    """How a layer's output holds its feature map: `kind` is MAP, CHANNELS_LAST or TOKENS;
    `extra` the number of tokens in front of the grid (dropped); `grid` (H, W) of tokens."""

    kind: str = MAP
    extra: int = 0
    grid: tuple[int, int] = (0, 0)

    def describe(self) -> str:
        """One phrase for `ibd info` and messages."""
        if self.kind == TOKENS:
            h, w = self.grid
            dropped = f", {self.extra} extra token(s) in front dropped" if self.extra else ""
            return f"tokens N x T x D read as a {h} x {w} patch grid{dropped}"
        if self.kind == CHANNELS_LAST:
            return "channels last (N x H x W x D), read as N x D x H x W"
        return "feature map N x D x H x W"


def plausible_grid(h: int, w: int, input_size: tuple[int, int] | None) -> bool:
    """Whether an h x w grid can be the input down-sampled by one stride s: h ~ H_in / s and
    w ~ W_in / s, each within one position. Without an input size: a square grid."""
    if h < 1 or w < 1:
        return False
    if input_size is None:
        return h == w
    big_h, big_w = input_size
    if h > big_h or w > big_w:
        return False

    def strides(n: int, size: int) -> tuple[float, float]:
        return size / (n + 1), (size / (n - 1) if n > 1 else float("inf"))

    low_h, high_h = strides(h, big_h)
    low_w, high_w = strides(w, big_w)
    return max(low_h, low_w) < min(high_h, high_w)


def patch_grid(h: int, w: int, input_size: tuple[int, int] | None) -> bool:
    """Whether an h x w token grid is the input cut into p x p patches for one integer p
    (H_in // p == h and W_in // p == w, as a strided patch embedding does). Without an input
    size: a square grid."""
    if input_size is None:
        return h == w
    big_h, big_w = input_size
    return any(big_h // p == h and big_w // p == w for p in range(1, max(big_h, big_w) + 1))


def _token_grid(tokens: int, input_size: tuple[int, int] | None) -> tuple[int, int, int] | None:
    """(extra, H, W) for T tokens: the fewest extra tokens that leave a patch grid."""
    for extra in range(min(MAX_EXTRA_TOKENS, tokens - 1) + 1):
        cells = tokens - extra
        for h in range(1, cells + 1):
            if cells % h == 0 and patch_grid(h, cells // h, input_size):
                return extra, h, cells // h
    return None


def detect(shape: tuple[int, ...], input_size: tuple[int, int] | None, layer: str) -> Layout:
    """The layout of a layer output of this shape for an input of `input_size` (H_in, W_in).

    A 4-D output is channels-first unless only its middle two dimensions make a plausible grid
    (ambiguous shapes stay channels-first, as every CNN's are); a 3-D output is tokens."""
    if len(shape) == 4:
        if not plausible_grid(shape[2], shape[3], input_size) and plausible_grid(
            shape[1], shape[2], input_size
        ):
            return Layout(CHANNELS_LAST)
        return Layout(MAP)
    if len(shape) == 3:
        found = _token_grid(shape[1], input_size)
        if found is not None:
            extra, h, w = found
            return Layout(TOKENS, extra, (h, w))
        size = "x".join(map(str, input_size)) if input_size else "unknown"
        raise UserError(
            f"layer '{layer}' gives {tuple(shape)}: no patch grid of {shape[1]} tokens fits the "
            f"{size} input, so it is not a token map; choose another --layer"
        )
    raise UserError(
        f"layer '{layer}' gives {tuple(shape)}, not an N x D x H x W feature map "
        "(nor N x T x D tokens or N x H x W x D channels last)"
    )


def to_map(output: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The N x D x H x W map held by `output` (a view where the layout allows)."""
    if layout.kind == CHANNELS_LAST:
        return output.permute(0, 3, 1, 2)
    if layout.kind == TOKENS:
        h, w = layout.grid
        n, _, d = output.shape
        return output[:, layout.extra :].transpose(1, 2).reshape(n, d, h, w)
    return output


def from_map(features: torch.Tensor, output: torch.Tensor, layout: Layout) -> torch.Tensor:
    """`features` (N x D x H x W) in the layer's own layout, as new memory (an in-place operation
    downstream cannot reach `features`); extra tokens are copied from `output`."""
    if layout.kind == CHANNELS_LAST:
        return features.permute(0, 2, 3, 1).clone()
    if layout.kind == TOKENS:
        grid = features.flatten(2).transpose(1, 2)
        return torch.cat([output[:, : layout.extra].to(grid.dtype), grid], dim=1)
    return features.clone()
