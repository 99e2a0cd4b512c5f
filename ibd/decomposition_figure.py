"""The paper's Fig. 3: how a network composes its classes from concepts.

Classes on the left, concepts on the right, one link per term of each class's decomposition
w_k = s_1 q_{c_1} + ... + s_n q_{c_n} + r_k (paper eq. 3-6), its thickness proportional to the
coefficient s (the largest shown coefficient gets the thickest line). Each class is labelled with
its residual fraction ||r_k||^2 / ||w_k||^2, the part of the class the concepts leave unexplained.
Concepts are placed at the mean height of the classes that use them, so links cross little.
A term whose entry says `"significant": false` (its p-value against random directions, Holm-
corrected within the class, is above alpha: `ibd.significance`) is drawn as a thin grey dashed
link, and a note at the bottom says so; terms without the field are drawn as before.

It reads the decompose.json contract (docs/contracts.md), so any decomposition can be drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ibd.errors import UserError


def _strongest(entry: dict, top: int) -> dict:
    """The class entry with only its `top` largest coefficients (ties kept in file order)."""
    ranked = sorted(entry["concepts"], key=lambda c: -float(c["coefficient"]))
    return {**entry, "concepts": ranked[:top]}


def _classes(
    document: Mapping[str, Any], names: Sequence[str] | None, limit: int, top: int
) -> list[dict]:
    try:
        entries = [_strongest(dict(e), top) for e in document["classes"]]
        by_name = {str(e["name"]): e for e in entries}
    except (KeyError, TypeError) as exc:
        raise UserError(f"not a decompose.json document: {type(exc).__name__} {exc}") from None
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UserError(f"classes not in the decomposition: {', '.join(unknown)}")
        return [by_name[n] for n in names]
    return entries[:limit]


def _layout(classes: list[dict]) -> tuple[list[str], dict[str, float]]:
    """Concept names in drawing order (by the mean row of their classes) and their heights."""
    rows: dict[str, list[int]] = {}
    for row, entry in enumerate(classes):
        for concept in entry["concepts"]:
            rows.setdefault(str(concept["name"]), []).append(row)
    order = sorted(rows, key=lambda name: (sum(rows[name]) / len(rows[name]), name))
    count = max(len(order), 1)
    height = max(len(classes), 1)
    return order, {name: (i + 0.5) * height / count for i, name in enumerate(order)}


_NOT_SIGNIFICANT = "0.72"  # matplotlib grey level of a link that is not significant


def _link_style(concept: Mapping[str, Any], colour: Any, width: float) -> dict[str, Any]:
    """Line options of one link: the class's colour, as thick as its coefficient; a term that
    is not significant is thin, grey and dashed."""
    if concept.get("significant") is False:
        return {
            "color": _NOT_SIGNIFICANT,
            "linewidth": min(width, 1.2),
            "linestyle": (0, (4, 3)),
            "alpha": 0.9,
        }
    return {"color": colour, "linewidth": width, "alpha": 0.75, "solid_capstyle": "butt"}


def draw_decomposition(
    document: Mapping[str, Any],
    out: str | Path,
    *,
    classes: Sequence[str] | None = None,
    limit: int = 16,
    top: int = 4,
    title: str | None = None,
) -> Path:
    """Draw the decompositions of `classes` (default: the first `limit`), each with its `top`
    largest coefficients, to a PNG at `out`."""
    if top < 1 or limit < 1:
        raise UserError(f"top and limit must be at least 1, got top={top}, limit={limit}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = _classes(document, classes, limit, top)
    if not shown:
        raise UserError("the decomposition has no classes to draw")
    order, heights = _layout(shown)
    peak = max((float(c["coefficient"]) for e in shown for c in e["concepts"]), default=1.0)
    peak = peak if peak > 0 else 1.0
    rows = max(len(shown), len(order))
    fig, ax = plt.subplots(figsize=(8.5, 0.9 + 0.34 * rows))
    colours = plt.get_cmap("tab20")
    for row, entry in enumerate(shown):
        y = len(shown) - 0.5 - row  # first class on top
        label = f"{entry['name']}  (residual {100 * float(entry['residual_fraction']):.0f}%)"
        ax.text(-0.02, y * rows / len(shown), label, ha="right", va="center", fontsize=9)
        for concept in entry["concepts"]:
            s = float(concept["coefficient"])
            target = (len(shown) - heights[str(concept["name"])]) * rows / len(shown)
            ax.plot(
                [0.0, 1.0],
                [y * rows / len(shown), target],
                **_link_style(concept, colours(row % 20), 0.4 + 7.0 * max(s, 0.0) / peak),
            )
    for name in order:
        ax.text(1.02, (len(shown) - heights[name]) * rows / len(shown), name, ha="left",
                va="center", fontsize=9)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, rows)
    ax.axis("off")
    model = document.get("meta", {}).get("model") if isinstance(document, Mapping) else None
    of = f" of {model}" if model else ""
    ax.set_title(title or f"Class decompositions{of}: the {top} largest coefficients per class",
                 fontsize=11)
    bottom = 0.02
    if any(c.get("significant") is False for e in shown for c in e["concepts"]):
        alpha = document.get("meta", {}).get("significance", {}).get("alpha", 0.05)
        note = f"grey dashed: not significant (n.s.; Holm within the class, alpha {alpha})"
        fig.text(0.5, 0.1 / (0.9 + 0.34 * rows), note, ha="center", fontsize=8, color="0.45")
        bottom = 0.35 / (0.9 + 0.34 * rows)
    fig.subplots_adjust(left=0.3, right=0.8, top=1 - 0.45 / (0.9 + 0.34 * rows), bottom=bottom)
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
