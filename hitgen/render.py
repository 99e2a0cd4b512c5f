"""HTML of a task page and of the batch index (Jinja2 templates in hitgen/templates, escaped)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jinja2

# The five answers, coded as in docs/contracts.md section 9, worded as in the paper's Fig. 5:
# (value, text before the emphasised word, emphasised word, text after)
LIKERT: tuple[tuple[int, str, str, str], ...] = (
    (1, "Robot A seems ", "clearly", " more reasonable than Robot B."),
    (2, "Robot A seems ", "slightly", " more reasonable than Robot B."),
    (3, "Both robots seem ", "equally", " reasonable."),
    (4, "Robot B seems ", "slightly", " more reasonable than Robot A."),
    (5, "Robot B seems ", "clearly", " more reasonable than Robot A."),
)


@dataclass(frozen=True)
class Reason:
    """One labelled mask as a robot shows it."""

    label: str
    src: str


@dataclass(frozen=True)
class Robot:
    key: str  # "a" | "b"
    reasons: tuple[Reason, ...]

    @property
    def letter(self) -> str:
        return self.key.upper()


@dataclass(frozen=True)
class IndexRow:
    item_id: str
    page: str
    image: str
    class_name: str


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hitgen", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def because_line(class_name: str, labels: list[str]) -> str:
    """The explanation as one line of text: "harbor because: 1. boat 2. water"."""
    return f"{class_name} because: " + " ".join(f"{i}. {x}" for i, x in enumerate(labels, 1))


def render_page(
    class_name: str, photo_src: str, photo_size: tuple[int, int], robot_a: Robot, robot_b: Robot
) -> str:
    """A complete task page; `photo_size` is (height, width); image sources are used as given."""
    choices = [
        {"value": value, "before": before, "strong": strong, "after": after}
        for value, before, strong, after in LIKERT
    ]
    return (
        _environment()
        .get_template("page.html")
        .render(
            class_name=class_name,
            photo={"src": photo_src, "height": photo_size[0], "width": photo_size[1]},
            robots=[robot_a, robot_b],
            choices=choices,
        )
    )


def render_index(batch: str, rows: list[IndexRow]) -> str:
    """A page listing the batch's items (no answers or catch-trial information on it)."""
    return _environment().get_template("index.html").render(batch=batch, rows=rows)
