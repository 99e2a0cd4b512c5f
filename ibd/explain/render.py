"""Pictures of one explanation in the style of the paper's Fig. 1 and Fig. 4.

A picture is one row of panels, each the same size, with a caption under it:

    [input image]  [class map]  [term 1]  [term 2]  [term 3]  [residual]
     harbor (0.91)    CAM        boat 31%  water 22%  sky 9%    38%

- The input image, captioned with the predicted class and its probability (Fig. 4's "normalized
  prediction score in parentheses"), or the raw score when no probability is known.
- The class map: CAM's or Grad-CAM's map for those methods. For IBD and Network Dissection it is
  the sum of the listed terms' maps, each scaled so that its mean is its contribution
  (s_i q_i^T A for IBD, paper eq. 9-11; w_ki A_i for a unit, eq. 14), i.e. the part of the CAM
  map the named concepts explain; a caller holding the full CAM map can pass it instead.
- The top terms, each heatmap drawn over the image with its label and its share of the score,
  contribution / score, as in Fig. 1 and 4.
- IBD and Network Dissection add the residual's share (score minus the listed contributions).
- A component whose record says `"significant": false` (its Monte-Carlo p-value against random
  directions, Holm-corrected over the image's components, is above alpha: `ibd.significance`)
  is captioned in light grey with "n.s." after its share; one without the field is drawn as
  before.

Two ways to show a heatmap: `style="overlay"` blends a colour map over the image (the authors'
code: JET at 50%); `style="mask"` keeps the top 20% of the heatmap's pixels and dims the rest, as
the paper's human study showed each heatmap (section 3.4). Heatmaps are upsampled bilinearly from
feature resolution to the image (the image was resized to the model's input without cropping, so
the feature grid covers the whole image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ibd.errors import UserError
from ibd.explain import records
from ibd.explain.maps import upsample

STYLES = ("overlay", "mask")
CLASS_MAP_LABELS = {"cam": "CAM", "gradcam": "Grad-CAM"}
_MARGIN = 8
_GAP = 6
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_MUTED = (110, 110, 110)
_RESIDUAL = (235, 235, 235)
_NOT_SIGNIFICANT = (165, 165, 165)
NOT_SIGNIFICANT_MARK = "n.s."


@dataclass(frozen=True)
class Term:
    """One drawn component: its label, contribution to the score, raw heatmap (h x w) and
    whether it is significant (None: not tested)."""

    label: str
    contribution: float
    heatmap: np.ndarray
    significant: bool | None = None


@dataclass(frozen=True)
class Picture:
    """Everything one explanation's picture shows, independent of where it came from."""

    method: str
    model: str
    class_name: str
    score: float
    probability: float | None
    terms: tuple[Term, ...]
    residual: float | None
    class_map: np.ndarray | None = None


class _ComponentLike(Protocol):
    label: str
    contribution: float
    heatmap: Any


class _ExplanationLike(Protocol):
    method: str
    model: str
    class_name: str
    score: float
    residual: float | None
    components: Sequence[_ComponentLike]


def _array(heatmap: Any) -> np.ndarray:
    if isinstance(heatmap, torch.Tensor):
        heatmap = heatmap.detach().float().cpu().numpy()
    array = np.asarray(heatmap, dtype=np.float32)
    if array.ndim != 2:
        raise UserError(f"a heatmap must be 2-D (h x w), got shape {tuple(array.shape)}")
    return array


def _significant(fields: Mapping[str, Any] | None) -> bool | None:
    """A component's `significant` field (docs/contracts.md 4), None when absent."""
    try:
        return records.component_significance(fields).get("significant")
    except ValueError as exc:
        raise UserError(f"explanation component: {exc}") from None


def picture_of(explanation: _ExplanationLike, class_map: Any = None) -> Picture:
    """A Picture of an explanation object (the Python API's `ibd.Explanation`)."""
    probability = getattr(explanation, "probability", None)
    if class_map is None:
        class_map = getattr(explanation, "class_map", None)
    return Picture(
        method=explanation.method,
        model=explanation.model,
        class_name=explanation.class_name,
        score=float(explanation.score),
        probability=None if probability is None else float(probability),
        terms=tuple(
            Term(
                c.label,
                float(c.contribution),
                _array(c.heatmap),
                _significant(getattr(c, "extra", None)),
            )
            for c in explanation.components
        ),
        residual=None if explanation.residual is None else float(explanation.residual),
        class_map=None if class_map is None else _array(class_map),
    )


def picture_of_record(record: Mapping[str, Any], heatmaps: Mapping[str, np.ndarray]) -> Picture:
    """A Picture of one explanations.json record and its heatmaps.npz (docs/contracts.md)."""
    try:
        terms = tuple(
            Term(
                str(c["label"]),
                float(c["contribution"]),
                _array(heatmaps[c["heatmap"]]),
                _significant(c),
            )
            for c in record["components"]
        )
        residual = record.get("residual")
        probability = record.get("probability")
        return Picture(
            method=str(record["method"]),
            model=str(record["model"]),
            class_name=str(record["class_name"]),
            score=float(record["score"]),
            probability=None if probability is None else float(probability),
            terms=terms,
            residual=None if residual is None else float(residual),
        )
    except KeyError as exc:
        raise UserError(f"explanation record lacks {exc} (or its heatmap is missing)") from None


def explained_map(picture: Picture) -> np.ndarray | None:
    """The class map a picture shows: the given one, the method's own single map (CAM,
    Grad-CAM), else the listed terms' maps each scaled so its mean is its contribution."""
    if picture.class_map is not None:
        return picture.class_map
    if not picture.terms:
        return None
    if picture.method in CLASS_MAP_LABELS:
        return picture.terms[0].heatmap
    total = np.zeros_like(picture.terms[0].heatmap, dtype=np.float64)
    for term in picture.terms:
        mean = float(term.heatmap.mean())
        # a map whose mean is ~0 carries no scale (its contribution is ~0 too): leave it out
        if abs(mean) > 1e-6 * max(float(np.abs(term.heatmap).max()), 1e-12):
            total += term.heatmap * (term.contribution / mean)
    return total.astype(np.float32)


def share(contribution: float, score: float) -> str:
    """A contribution as a percentage of the score (Fig. 1, Fig. 4), or the raw value when the
    score is too close to 0 for a share to mean anything."""
    if abs(score) < 1e-6 or not math.isfinite(contribution / score):
        return f"{contribution:+.2f}"
    return f"{100.0 * contribution / score:.0f}%"


def fit(image: Image.Image, size: int) -> Image.Image:
    """The image resized to `size` x `size` (the model saw it resized without cropping, so the
    heatmaps cover the whole image: stretch it the same way)."""
    return image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)


def _upsampled(heatmap: np.ndarray, size: int) -> np.ndarray:
    return upsample(torch.from_numpy(heatmap)[None].float(), (size, size))[0].numpy()


def _jet(values: np.ndarray) -> np.ndarray:
    """The JET colour map of values in [0, 1] as H x W x 3 floats (the authors' overlay)."""
    four = 4.0 * values[..., None]
    red = np.clip(np.minimum(four - 1.5, -four + 4.5), 0.0, 1.0)
    green = np.clip(np.minimum(four - 0.5, -four + 3.5), 0.0, 1.0)
    blue = np.clip(np.minimum(four + 0.5, -four + 2.5), 0.0, 1.0)
    return np.concatenate([red, green, blue], axis=-1)


def overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5) -> Image.Image:
    """The heatmap, min-max scaled, in JET blended over the image with weight `alpha`."""
    heat = _upsampled(heatmap, image.width)
    low, high = float(heat.min()), float(heat.max())
    scaled = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    base = np.asarray(image, dtype=np.float32) / 255.0
    blended = (1.0 - alpha) * base + alpha * _jet(scaled)
    return Image.fromarray(np.uint8(np.clip(blended, 0.0, 1.0) * 255.0 + 0.5))


def top_mask(heatmap: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the `fraction` of pixels with the largest values (pixels tied with the
    k-th largest join it, so a flat map is all in or all out)."""
    flat = heatmap.reshape(-1)
    k = max(1, math.floor(fraction * flat.size + 0.5))
    threshold = np.partition(flat, flat.size - k)[flat.size - k]
    return heatmap >= threshold


def masked(image: Image.Image, heatmap: np.ndarray, *, fraction: float = 0.2) -> Image.Image:
    """The image with only the top `fraction` of the heatmap's pixels at full brightness (the
    paper's human-study display); the rest dimmed to a quarter."""
    keep = top_mask(_upsampled(heatmap, image.width), fraction)
    base = np.asarray(image, dtype=np.float32)
    dimmed = np.where(keep[..., None], base, 0.25 * base + 0.75 * 40.0)
    return Image.fromarray(np.uint8(np.clip(dimmed, 0.0, 255.0) + 0.5))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _clip(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


@dataclass(frozen=True)
class _Panel:
    image: Image.Image | None  # None: a text-only panel (the residual)
    caption: str
    detail: str
    muted: bool = False  # a component that is not significant: greyed, marked "n.s."


def _panels(
    picture: Picture, image: Image.Image, *, style: str, top: int, fraction: float, alpha: float
) -> list[_Panel]:
    def draw(heatmap: np.ndarray) -> Image.Image:
        if style == "mask":
            return masked(image, heatmap, fraction=fraction)
        return overlay(image, heatmap, alpha=alpha)

    prediction = (
        f"({picture.probability:.2f})"
        if picture.probability is not None
        else f"(score {picture.score:.2f})"
    )
    panels = [_Panel(image, picture.class_name, prediction)]
    class_map = explained_map(picture)
    if class_map is not None:
        label = CLASS_MAP_LABELS.get(picture.method, "class map")
        detail = "" if picture.method in CLASS_MAP_LABELS else "named terms"
        panels.append(_Panel(draw(class_map), label, detail))
    if picture.method not in CLASS_MAP_LABELS:
        for term in picture.terms[:top]:
            detail = share(term.contribution, picture.score)
            muted = term.significant is False
            if muted:
                detail = f"{detail} {NOT_SIGNIFICANT_MARK}"
            panels.append(_Panel(draw(term.heatmap), term.label, detail, muted))
        if picture.residual is not None:
            panels.append(_Panel(None, "residual", share(picture.residual, picture.score)))
    return panels


def _fonts(size: int) -> tuple[Any, Any]:
    return _font(max(12, size // 12)), _font(max(11, size // 14))


def panel_origin(index: int, size: int) -> tuple[int, int]:
    """Top-left corner (x, y) of panel `index` (0 = the input image) in a rendered picture."""
    title_font, _ = _fonts(size)
    return _MARGIN + index * (size + _GAP), _MARGIN + title_font.size + 10


def render(
    picture: Picture,
    image: Image.Image,
    *,
    style: str = "overlay",
    top: int = 3,
    size: int = 192,
    fraction: float = 0.2,
    alpha: float = 0.5,
) -> Image.Image:
    """The picture as one RGB image: a title line, then a row of `size` x `size` panels with
    captions (see the module docstring)."""
    if style not in STYLES:
        raise UserError(f"unknown style '{style}': choose one of {', '.join(STYLES)}")
    if top < 1 or size < 32 or not 0.0 < fraction <= 1.0 or not 0.0 <= alpha <= 1.0:
        raise UserError(
            "render needs top >= 1, size >= 32, 0 < fraction <= 1 and 0 <= alpha <= 1"
        )
    panels = _panels(
        picture, fit(image, size), style=style, top=top, fraction=fraction, alpha=alpha
    )
    title_font, caption_font = _fonts(size)
    line = caption_font.size + 4
    _, top_y = panel_origin(0, size)
    width = 2 * _MARGIN + len(panels) * size + (len(panels) - 1) * _GAP
    height = top_y + size + 2 * line + _MARGIN
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title = f"{picture.method.upper()} · {picture.model} · {picture.class_name}"
    draw.text((_MARGIN, _MARGIN), _clip(draw, title, title_font, width - 2 * _MARGIN), _TEXT,
              font=title_font)
    for i, panel in enumerate(panels):
        x, _ = panel_origin(i, size)
        if panel.image is None:  # the residual: its share written large in a grey box
            draw.rectangle([x, top_y, x + size - 1, top_y + size - 1], fill=_RESIDUAL)
            draw.text((x + size // 2, top_y + size // 2), panel.detail, _MUTED,
                      font=_font(max(14, size // 6)), anchor="mm")
        else:
            canvas.paste(panel.image, (x, top_y))
        y = top_y + size + 3
        ink, detail_ink = (_NOT_SIGNIFICANT, _NOT_SIGNIFICANT) if panel.muted else (_TEXT, _MUTED)
        draw.text((x, y), _clip(draw, panel.caption, caption_font, size), ink, font=caption_font)
        draw.text((x, y + line), _clip(draw, panel.detail, caption_font, size), detail_ink,
                  font=caption_font)
    return canvas


def render_explanation(
    image: Image.Image, explanation: _ExplanationLike, *, class_map: Any = None, **options: Any
) -> Image.Image:
    """Render an `ibd.Explanation` over the image it explains (options as `render`)."""
    return render(picture_of(explanation, class_map), image, **options)
