"""Diverging stacked bars in the style of the paper's Fig. 8 and Fig. 9, and two checks.

Each bar is one comparison: the share of ratings in each of the five categories, stacked
horizontally and shifted so that the middle ("equal") category is centred on zero. "More
reasonable" lies to the right (blue = clearly, green = slightly, as in the paper), "less
reasonable" to the left (yellow = slightly, orange = clearly), so a bar's balance shows at a
glance and bars compare along one axis. The position-bias figure draws the raw answers with
Robot A (the left picture) on the left; the per-worker figure does the same per worker.

Figures use matplotlib's object API (no pyplot state) and are sized for a paper column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import blended_transform_factory
from tqdm import tqdm

from analysis import comparisons, likert, paths
from analysis.ratings import WORKER
from analysis.study import Study

COLUMN_WIDTH_IN = 3.5
STYLE: dict[str, object] = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 7.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (searchable, editable)
    "svg.fonttype": "none",
}


@dataclass(frozen=True)
class Category:
    name: str
    colour: str
    dark: bool
    """Whether the colour is dark enough for white numbers on it."""


# Left to right on the axis; the middle one is centred on zero.
SCORE_CATEGORIES: tuple[Category, ...] = (
    Category(likert.SCORE_NAMES[-2], "#e66101", True),  # orange
    Category(likert.SCORE_NAMES[-1], "#f7c940", False),  # yellow
    Category(likert.SCORE_NAMES[0], "#cfcfcf", False),  # neutral grey
    Category(likert.SCORE_NAMES[1], "#5aae61", False),  # green
    Category(likert.SCORE_NAMES[2], "#2166ac", True),  # blue
)
SCORE_ORDER: tuple[int, ...] = (-2, -1, 0, 1, 2)

# Raw answers: Robot A on the left as on the page. Purple/green so that they are not read
# as "more/less reasonable" for a method.
CHOICE_CATEGORIES: tuple[Category, ...] = (
    Category(likert.CHOICE_NAMES[1], "#762a83", True),
    Category(likert.CHOICE_NAMES[2], "#c2a5cf", False),
    Category(likert.CHOICE_NAMES[3], "#cfcfcf", False),
    Category(likert.CHOICE_NAMES[4], "#a6dba0", False),
    Category(likert.CHOICE_NAMES[5], "#1b7837", True),
)


@dataclass(frozen=True)
class Bar:
    label: str
    counts: tuple[int, ...]
    """Ratings per category, in the categories' left-to-right order."""
    group: str = ""
    note: str = ""
    """Text right of the bar; `N=<total>` when empty."""
    flagged: bool = False
    """Drawn with a red label (an excluded worker)."""


@dataclass(frozen=True)
class Chart:
    title: str
    bars: list[Bar]
    categories: tuple[Category, ...]
    legend_title: str
    """What the categories say, e.g. 'IBD judged … reasonable than the other method'."""
    subtitle: str = ""
    simulated: bool = False
    notes: list[str] = field(default_factory=list)


def _layout(bars: Sequence[Bar]) -> tuple[list[float], list[tuple[float, str]]]:
    """y positions, top to bottom, with a header slot before each named group."""
    ys: list[float] = []
    headers: list[tuple[float, str]] = []
    y = 0.0
    previous: str | None = None
    for bar in bars:
        if bar.group and bar.group != previous:
            if previous is not None:
                y += 0.35
            headers.append((y, bar.group))
            y += 0.85
        previous = bar.group
        ys.append(y)
        y += 1.0
    return ys, headers


def _drop_crowded_numbers(fig: Figure, numbers: list[tuple[Text, Rectangle]]) -> None:
    """Remove a segment's percentage where it does not fit inside the segment."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out, so that extents are final
    renderer = canvas.get_renderer()
    for text, patch in numbers:
        if text.get_window_extent(renderer).width > 0.92 * patch.get_window_extent(renderer).width:
            text.remove()


def draw(chart: Chart) -> Figure:
    """The figure of one chart (not saved)."""
    bars = chart.bars
    ys, headers = _layout(bars)
    n_rows = (ys[-1] + 1) if ys else 1
    # Lines rather than one long title: the figure is only a paper column wide.
    title = "\n".join(
        [*(["SIMULATED answers (not people)"] if chart.simulated else []), chart.title]
        + ([chart.subtitle] if chart.subtitle else [])
    )
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(COLUMN_WIDTH_IN, 1.3 + 0.24 * n_rows), layout="constrained")
        ax = fig.add_subplot()
        counts = np.array([b.counts for b in bars], dtype=float).reshape(len(bars), -1)
        totals = counts.sum(axis=1, keepdims=True)
        shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        middle = len(chart.categories) // 2
        start = -(shares[:, :middle].sum(axis=1) + shares[:, middle] / 2)
        left = start
        numbers: list[tuple[Text, Rectangle]] = []
        for k, cat in enumerate(chart.categories):
            container = ax.barh(
                ys, shares[:, k], left=left, height=0.72, color=cat.colour, label=cat.name,
                edgecolor="white", linewidth=0.4,
            )  # fmt: skip
            for patch, y, x0, w in zip(container.patches, ys, left, shares[:, k], strict=True):
                if w >= 0.04:
                    text = ax.text(
                        x0 + w / 2, y, f"{100 * w:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if cat.dark else "black",
                    )  # fmt: skip
                    numbers.append((text, patch))
            left = left + shares[:, k]
        reach = max(0.5, float(np.abs(np.concatenate([start, left])).max()))
        ax.set_xlim(-reach - 0.03, reach + 0.03)
        # Beyond +-50% a tick every 25% crowds the labels of a column-wide axis together.
        step = 0.25 if reach <= 0.5 + 1e-9 else 0.5
        ticks = np.arange(-np.floor(reach / step) * step, reach + 1e-9, step)
        ax.set_xticks(ticks, [f"{abs(100 * t):.0f}%" for t in ticks])
        ax.axvline(0, color="#444444", linewidth=0.6, zorder=0)
        ax.set_yticks(ys, [b.label for b in bars])
        for tick, bar in zip(ax.get_yticklabels(), bars, strict=True):
            if bar.flagged:
                tick.set_color("#c00000")
        top = headers[0][0] if headers else 0.0
        ax.set_ylim(n_rows - 0.45, top - 0.6)
        side = blended_transform_factory(ax.transAxes, ax.transData)
        for y, name in headers:
            ax.text(-0.03, y, name, transform=side, ha="right", va="center", fontweight="bold")
        for y, bar in zip(ys, bars, strict=True):
            note = bar.note or f"N={sum(bar.counts)}"
            ax.text(1.01, y, note, transform=side, ha="left", va="center", fontsize=6.5)
        ax.tick_params(axis="y", length=0)
        for spine in ("top", "right", "left"):
            ax.spines[spine].set_visible(False)
        ax.set_xlabel("% of ratings")
        fig.suptitle(title, fontsize=STYLE["axes.titlesize"])
        fig.legend(
            loc="outside lower center", ncol=len(chart.categories), frameon=False,
            handlelength=0.9, columnspacing=0.6, handletextpad=0.25, title=chart.legend_title,
            title_fontsize=STYLE["legend.fontsize"],
        )  # fmt: skip
        _drop_crowded_numbers(fig, numbers)
    return fig


EXTENSIONS: tuple[str, ...] = ("png", "pdf")


def save(fig: Figure, out: Path, stem: str) -> list[Path]:
    """Write `stem.png` (300 dpi) and `stem.pdf` (vector) into `out`."""
    paths.make_output_dir(out)
    files = [out / f"{stem}.{ext}" for ext in EXTENSIONS]
    with matplotlib.rc_context(STYLE):
        for path in files:
            with paths.writing(path):
                fig.savefig(path, dpi=300, bbox_inches="tight", pad_inches=0.03)
    return files


def _setting_subtitle(study: Study, setting: str) -> str:
    n = len(study.workers)
    excluded = len(study.excluded_workers)
    if setting == "all workers":
        return f"all {n} workers, no exclusion"
    return f"{excluded} of {n} workers excluded by {_rules_used(study)}"


def _rules_used(study: Study) -> str:
    """ "catch trials" when only that rule removed anyone (or nobody was removed), else the
    rules that removed workers with their numbers ("catch trials 2, pasted reasons 1")."""
    table = study.exclusions
    if table is None:
        return "catch trials"
    rules = table[(table["rule"] != "any rule") & (table["workers_removed"] > 0)]
    if list(rules["rule"]) in ([], ["catch trials"]):
        return "catch trials"
    return ", ".join(f"{r['rule']} {r['workers_removed']}" for _, r in rules.iterrows())


def comparison_chart(study: Study, figure: str, setting: str) -> Chart | None:
    """Fig. 8 (`fig8`) or Fig. 9 (`fig9`) under a setting; None when the manifests make no
    comparison for it. A comparison without a rating left is an empty bar marked N=0."""
    ratings = study.subset(setting)
    bars: list[Bar] = []
    focus: list[str] = []
    simulated = False
    for comp, frame in comparisons.split(ratings, study.comparisons):
        if comp.figure != figure:
            continue
        counts = likert.score_counts(frame["s"])
        label = comp.against if comp.heading else comp.label
        note = "" if len(frame) else "N=0, no ratings"
        bars.append(Bar(label, tuple(counts[s] for s in SCORE_ORDER), comp.heading, note))
        if comp.focus not in focus:
            focus.append(comp.focus)
        simulated |= bool((frame["simulated"] == 1).any())
    if not bars:
        return None
    who = "/".join(focus)
    kind, fixed = ("method", "network") if figure == "fig8" else ("model", "method")
    subtitle = _setting_subtitle(study, setting)
    if not any(sum(bar.counts) for bar in bars):
        subtitle += "; no ratings are left"
    return Chart(
        title=f"{who} vs other {kind}s, same {fixed}",
        subtitle=subtitle,
        bars=bars,
        categories=SCORE_CATEGORIES,
        legend_title=f"{who} judged … reasonable than the other {kind}",
        simulated=simulated,
    )


def position_chart(study: Study, setting: str) -> Chart:
    """Raw answers (Robot A vs B) per experiment and over all, regardless of method."""
    real = study.subset(setting)
    real = real[~real["is_catch"]]
    frames = [(str(e), g) for e, g in real.groupby("experiment", sort=True)]
    bars = [
        Bar(name, tuple(likert.choice_counts(frame["choice"]).values()))
        for name, frame in [*frames, ("all", real)]
    ]
    return Chart(
        title="Position bias: Robot A (left) vs Robot B (right)",
        subtitle=_setting_subtitle(study, setting),
        bars=bars,
        categories=CHOICE_CATEGORIES,
        legend_title="Robot judged more reasonable (A = left picture)",
        simulated=bool((real["simulated"] == 1).any()),
    )


def worker_chart(study: Study) -> Chart:
    """Each worker's raw answers, with their catch results; excluded workers in red."""
    real = study.ratings[~study.ratings["is_catch"]]
    choices = pd.crosstab(real[WORKER], real["choice"]).reindex(
        index=study.workers.index, columns=list(likert.CHOICES), fill_value=0
    )
    bars = []
    for worker, row in study.workers.iterrows():
        catch = f"catch {row['n_catch_passed']}/{row['n_catch']}" if row["n_catch"] else "no catch"
        counts = tuple(int(choices.loc[worker, c]) for c in likert.CHOICES)
        bars.append(
            Bar(
                label=str(worker),
                counts=counts,
                note=f"N={sum(counts)}, {catch}" + (" ✗" if row["excluded"] else ""),
                flagged=bool(row["excluded"]),
            )
        )
    return Chart(
        title="Answers per worker",
        subtitle=_worker_subtitle(study),
        bars=bars,
        categories=CHOICE_CATEGORIES,
        legend_title="Robot judged more reasonable (A = left picture)",
        simulated=study.simulated,
    )


def _worker_subtitle(study: Study) -> str:
    used = _rules_used(study)
    if used == "catch trials":
        return f"red ✗: excluded (failed {study.rule.short()})"
    return f"red ✗: excluded by {used}"


SUFFIXES: dict[str, str] = {"after exclusion": "", "all workers": "_all_workers"}
PER_SETTING: tuple[str, ...] = (*comparisons.FIGURES.values(), "position_bias")
STEMS: tuple[str, ...] = (
    *(base + suffix for suffix in SUFFIXES.values() for base in PER_SETTING),
    "workers",
)
"""Every file stem that `write_all` may write."""


def charts(study: Study) -> dict[str, Chart]:
    """Every chart of a study by file stem: fig8, fig9, position_bias (after exclusion), the
    same with suffix `_all_workers` (no exclusion), and workers. Fig. 8 / Fig. 9 are left out
    when no given manifest makes one of their comparisons."""
    out: dict[str, Chart] = {}
    for setting, suffix in SUFFIXES.items():
        for figure in comparisons.FIGURES.values():
            chart = comparison_chart(study, figure, setting)
            if chart is not None:
                out[figure + suffix] = chart
        out["position_bias" + suffix] = position_chart(study, setting)
    out["workers"] = worker_chart(study)
    return out


def remove_stale(out: Path, drawn: Iterable[str]) -> list[Path]:
    """Delete the files of an earlier run under a stem that this run does not draw (say
    `fig9.png` when the manifests given now make no Fig. 9 comparison), so that `out` never
    mixes figures of two studies. Only this module's own file names are touched."""
    removed = []
    for stem in sorted(set(STEMS) - set(drawn)):
        for ext in EXTENSIONS:
            path = out / f"{stem}.{ext}"
            if path.is_file():
                with paths.writing(path):
                    path.unlink()
                removed.append(path)
    return removed


def write_all(study: Study, out: Path) -> dict[str, list[Path]]:
    """Draw and save every chart of `charts`, and remove the stale files of the stems it does
    not draw (`remove_stale`); returns the PNG and PDF paths by stem."""
    todo = charts(study)
    paths.make_output_dir(out)
    remove_stale(out, todo)
    return {
        stem: save(draw(chart), out, stem)
        for stem, chart in tqdm(todo.items(), desc="figures", unit="fig", leave=False)
    }
