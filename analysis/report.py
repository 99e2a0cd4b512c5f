"""One self-contained HTML page with every figure and table of a study."""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime
from pathlib import Path

from analysis import __version__
from analysis.tables import Section

CSS = """
body { font-family: system-ui, sans-serif; max-width: 84rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.banner { background: #fff3cd; border: 1px solid #e0b100; padding: .6rem 1rem; font-weight: bold; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { width: 30rem; max-width: 100%; }
figcaption { font-size: .85rem; color: #555; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0; }
th, td { border: 1px solid #ccc; padding: .2rem .45rem; text-align: right; }
td { white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; }
th { background: #f3f3f3; }
table.exclusions td:first-child { white-space: nowrap; }
table.exclusions td:nth-child(2), table.exclusions th:nth-child(2) { text-align: left;
       white-space: normal; min-width: 22rem; }
"""


def _section_html(sec: Section) -> list[str]:
    out = [f"<h2>{html.escape(sec.heading)}</h2>"]
    out += [f"<p>{html.escape(p).replace('**', '')}</p>" for p in sec.paragraphs]
    if sec.header:
        css = f' class="{html.escape(sec.table_class)}"' if sec.table_class else ""
        out.append(f"<table{css}><thead><tr>")
        out += [f"<th>{html.escape(h)}</th>" for h in sec.header]
        out.append("</tr></thead><tbody>")
        for row in sec.rows:
            out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        out.append("</tbody></table>")
    return out


def _figure_html(png: Path, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    pdf = png.with_suffix(".pdf").name
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f'<figcaption>{html.escape(caption)} (<a href="{html.escape(pdf)}">PDF</a>)'
        "</figcaption></figure>"
    )


def page(
    sections: list[Section],
    figures: dict[str, Path],
    simulated: bool,
    title: str = "Which Robot Do You Trust? Results",
    beside: tuple[Section, ...] = (),
) -> str:
    """The HTML text: a banner when answers are simulated, the figures (PNG embedded, PDF
    linked) with the `beside` sections right under them (what was excluded), then the
    statistics sections."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{html.escape(title)}</h1>"]
    if simulated:
        body.append(
            '<p class="banner">SIMULATED: these results include answers from simulated raters, '
            "not from people.</p>"
        )
    body.append(f"<p>Made by analysis {__version__} on {stamp}.</p>")
    body.append("<h2>Figures</h2>")
    body += [_figure_html(png, caption) for caption, png in figures.items()]
    for sec in beside:
        body += _section_html(sec)
    for sec in sections:
        body += _section_html(sec)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
