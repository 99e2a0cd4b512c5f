"""A gallery of an explanations directory: one PNG per explanation and a static `index.html`.

It reads only the contract files (`explanations.json` + `heatmaps.npz`, docs/contracts.md) and
the images they name, so it can draw any method's explanations, ours or a user's own, after the
fact: `ibd explain --render` calls it on the directory it has just written.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ibd.data.images import load_rgb
from ibd.errors import UserError
from ibd.explain import records
from ibd.explain.render import NOT_SIGNIFICANT_MARK, picture_of_record, render, share

RENDER_DIR = "render"
INDEX = "index.html"


def _name(index: int, image: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(image).stem)[:60] or "image"
    return f"{index:05d}-{stem}.png"


def _caption(record: dict[str, Any]) -> str:
    terms = ", ".join(
        f"{c['label']} {share(float(c['contribution']), float(record['score']))}"
        + (f" {NOT_SIGNIFICANT_MARK}" if c.get("significant") is False else "")
        for c in record["components"][:3]
    )
    because = f" because: {terms}" if record["method"] in ("ibd", "netdissect") else ""
    return f"{record['class_name']}{because}"


def _page(title: str, rows: list[tuple[str, str, str]]) -> str:
    figures = "\n".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}" loading="lazy">'
        f"<figcaption><b>{html.escape(caption)}</b><br><span>{html.escape(image)}</span>"
        "</figcaption></figure>"
        for src, caption, image in rows
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
figure {{ margin: 0 0 1.5rem 0; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption span {{ color: #777; font-size: 0.85rem; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
{figures}
</body></html>
"""


def write_gallery(out_dir: str | Path, *, progress: bool = True, **options: Any) -> Path:
    """Render every explanation in `out_dir` to `out_dir/render/*.png` and write
    `out_dir/index.html` listing them; returns the index's path. `options` go to `render`
    (style, top, size, fraction, alpha)."""
    out = Path(out_dir)
    found, heatmaps = records.read(out)
    if not found:
        raise UserError(f"{out} holds no explanations to render")
    folder = out / RENDER_DIR
    folder.mkdir(exist_ok=True)
    rows: list[tuple[str, str, str]] = []
    for index, record in enumerate(tqdm(found, desc="render", unit="image", disable=not progress)):
        image = load_rgb(record["image"])
        name = _name(index, str(record["image"]))
        render(picture_of_record(record, heatmaps), image, **options).save(folder / name)
        rows.append((f"{RENDER_DIR}/{name}", _caption(record), str(record["image"])))
    first = found[0]
    title = f"{first['method']} explanations of {first['model']} ({len(found)} images)"
    index_path = out / INDEX
    index_path.write_text(_page(title, rows), encoding="utf-8")
    return index_path
