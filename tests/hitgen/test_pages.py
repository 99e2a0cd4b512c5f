"""Task pages as HTML: well formed, the contract's form and placeholder, escaped, small."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from hitgen.cli import main

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Page(HTMLParser):
    """Parses a page, recording elements, text, comments, and any misnested tag."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = []
        self.comments: list[tuple[str, tuple[str, ...]]] = []
        self.text: list[tuple[str, tuple[str, ...]]] = []
        self.doctype = ""
        self.feed(html)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed {self.stack}")

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs), tuple(self.stack)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs), tuple(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_comment(self, data: str) -> None:
        self.comments.append((data, tuple(self.stack)))

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append((data, tuple(self.stack)))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a
            for t, a, _ in self.elements
            if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]

    def visible_text(self) -> str:
        """Text outside script/style, whitespace collapsed."""
        shown = (t for t, stack in self.text if "script" not in stack and "style" not in stack)
        return " ".join(" ".join(shown).split())


@pytest.fixture(scope="module")
def batch(shared_world, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pages") / "batch"
    assert main(["build", "--pair", "ibd,netdissect", "--model", "ref", "--n", "6", "--jobs", "1",
                 "--catch-rate", "0.25", "--explanations", str(shared_world.dir("ref", "ibd")),
                 str(shared_world.dir("ref", "netdissect")), "--out", str(out)]) == 0  # fmt: skip
    return out


def pages(batch: Path) -> list[tuple[dict, str]]:
    items = json.loads((batch / "manifest.json").read_text())["items"]
    return [(item, (batch / item["page"]).read_text(encoding="utf-8")) for item in items]


def test_pages_are_well_formed_with_the_contract_form(batch: Path) -> None:
    for item, html in pages(batch):
        page = Page(html)
        assert page.errors == [] and page.doctype.lower() == "doctype html"
        assert html.count("<!-- hit-config -->") == 1
        assert page.comments == [(" hit-config ", ("html", "head"))]
        assert page.find("html")[0]["lang"] == "en"
        ids = [a["id"] for _, a, _ in page.elements if "id" in a]
        assert len(ids) == len(set(ids))
        radios = page.find("input", type="radio")
        assert [r["value"] for r in radios] == ["1", "2", "3", "4", "5"]
        assert all(r["name"] == "choice" and "required" in r for r in radios)
        labels = {a["for"] for a in page.find("label")}
        assert {r["id"] for r in radios} | {"reason"} <= labels
        (textarea,) = page.find("textarea")
        assert textarea["name"] == "reason" and "required" in textarea
        assert len(page.find("fieldset")) == 1 and len(page.find("legend")) == 1
        assert page.find("input", type="hidden", name="assignmentId")
        assert page.find("meta", name="viewport")
        images = page.find("img")
        assert all(img["alt"] for img in images)
        first, second = item["first"], item["second"]
        a, b = (first, second) if item["robot_a"] == "first" else (second, first)
        assert [img["src"] for img in images] == [
            f"../{item['image']}",
            *(f"../{m}" for m in a["masks"]),
            *(f"../{m}" for m in b["masks"]),
        ]
        text = page.visible_text()
        cls = item["class_name"]
        assert "Which Robot Do You Trust?" in text and f"Both robots predicted: {cls}" in text
        line_a = f"{cls} because: " + " ".join(f"{i}. {c}" for i, c in enumerate(a["concepts"], 1))
        assert line_a in text
        for wording in ("Robot A seems clearly more reasonable than Robot B.",
                        "Both robots seem equally reasonable.",
                        "Robot B seems clearly more reasonable than Robot A.",
                        "Which robot is more reasonable?", "Explain your choice:"):  # fmt: skip
            assert wording in text, wording


def test_pages_fit_an_mturk_html_question(batch: Path) -> None:
    sizes = [len(html.encode("utf-8")) for _, html in pages(batch)]
    assert max(sizes) < 64 * 1024


def test_concept_names_are_shown_as_text_never_as_markup(world, tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script>'
    dirs = []
    for method in ("ibd", "cam"):
        source = world.dir("ref", method)
        entries = json.loads((source / "explanations.json").read_text())
        for entry in entries:
            entry["class_name"] = "bar & grill"
            entry["image"] = str((source / entry["image"]).resolve())
            if method == "ibd":
                entry["components"][1]["label"] = hostile
                entry["components"][1]["contribution"] = 99.0  # now ranked first
        target = tmp_path / method
        target.mkdir()
        (target / "explanations.json").write_text(json.dumps(entries))
        with np.load(source / "heatmaps.npz") as store:
            np.savez(target / "heatmaps.npz", **{k: store[k] for k in store.files})
        dirs.append(str(target))
    out = tmp_path / "b"
    assert main(["build", "--pair", "ibd,cam", "--model", "ref", "--n", "2", "--jobs", "1",
                 "--explanations", *dirs, "--catch-types", "", "--out", str(out)]) == 0  # fmt: skip
    for item, html in pages(out):
        assert item["first"]["concepts"][0] == hostile
        assert hostile not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        page = Page(html)
        assert page.errors == []
        assert len(page.find("script")) == 1  # only the page's own
        assert f"1. {hostile}" in page.visible_text()
        assert "bar & grill because:" in page.visible_text()
        alts = [img["alt"] for img in page.find("img")]
        assert any(hostile in alt for alt in alts)  # attribute escaped, value intact
