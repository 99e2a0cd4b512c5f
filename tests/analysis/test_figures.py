"""Figures from a small study: the right bars, labels, shares and titles, and real files."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import figures
from analysis.catch import ExclusionRule
from analysis.study import Sources, load

FIG8 = [("world_resnet", "cam"), ("world_resnet", "gradcam"), ("world_vgg", "netdissect")]
FIG9 = [("ibd", "world_alexnet"), ("ibd", "world_resnet_mirror"), ("cam", "world_alexnet")]


@pytest.fixture
def study_files(files, make_item):
    rows = []
    for net, other in FIG8:
        batch = f"m-{net}-{other}"
        items = [
            make_item(f"{batch}-{k}", robot_a=("first", "second")[k % 2], first=(net, "ibd"),
                      second=(net, other))
            for k in range(4)
        ]  # fmt: skip
        files.manifest(batch, "method-vs-method", items)
        # Choices 1, 2, 3, 1 with Robot A = first, second, first, second: s = +2, -1, 0, -2.
        rows += [(batch, it["id"], "w1", c) for it, c in zip(items, [1, 2, 3, 1], strict=True)]
    for method, other in FIG9:
        batch = f"r-{method}-{other}"
        items = [
            make_item(f"{batch}-{k}", first=("world_resnet", method), second=(other, method),
                      kind="model-vs-model")
            for k in range(2)
        ]  # fmt: skip
        files.manifest(batch, "model-vs-model", items)
        rows += [(batch, it["id"], "w2", 2) for it in items]
    return files.ratings(rows), files.root / "batches"


def _axes(chart: figures.Chart):
    fig = figures.draw(chart)
    return fig, fig.axes[0]


def test_fig8_bars_labels_and_shares(study_files) -> None:
    export, batches = study_files
    study = load(Sources(responses=export, manifests=(batches,)), ExclusionRule())
    chart = figures.comparison_chart(study, "fig8", "after exclusion")
    assert chart is not None and not chart.simulated
    fig, ax = _axes(chart)
    # One container per answer category, one bar per comparison in each.
    assert [c.get_label() for c in ax.containers] == [
        "clearly less", "slightly less", "equal", "slightly more", "clearly more",
    ]  # fmt: skip
    assert all(len(c) == len(FIG8) for c in ax.containers)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["CAM", "Grad-CAM", "NetDissect"]
    texts = {t.get_text() for t in ax.texts}
    assert {"world_resnet: IBD vs", "world_vgg: IBD vs", "N=4"} <= texts
    # s = +2, -1, 0, -2: a quarter each in clearly less, slightly less, equal, clearly more;
    # the equal segment is centred on 0, so the bar spans -5/8 .. +3/8.
    widths = [c.patches[0].get_width() for c in ax.containers]
    assert widths == pytest.approx([0.25, 0.25, 0.25, 0.0, 0.25])
    starts = [c.patches[0].get_x() for c in ax.containers]
    assert starts == pytest.approx([-0.625, -0.375, -0.125, 0.125, 0.125])
    assert "IBD vs other methods, same network" in fig._suptitle.get_text()
    assert "SIMULATED" not in fig._suptitle.get_text()


def test_fig9_labels_come_from_the_data(study_files) -> None:
    export, batches = study_files
    study = load(Sources(responses=export, manifests=(batches,)), ExclusionRule())
    chart = figures.comparison_chart(study, "fig9", "all workers")
    fig, ax = _axes(chart)
    assert all(len(c) == len(FIG9) for c in ax.containers)
    # IBD before CAM; the mirrored model is displayed with a star.
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "world_alexnet", "world_resnet*", "world_alexnet",
    ]  # fmt: skip
    assert {"IBD: world_resnet vs", "CAM: world_resnet vs"} <= {t.get_text() for t in ax.texts}
    # Choice 2 with Robot A = first: all "slightly more".
    assert [c.patches[0].get_width() for c in ax.containers] == [0, 0, 0, 1, 0]
    assert "world_resnet vs other models, same method" in fig._suptitle.get_text()


def test_simulated_answers_say_so_in_every_title(files, make_item) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1"), make_item("i2")])
    export = files.ratings([("b1", "i1", "w1", 1), ("b1", "i2", "w1", 4)], simulated=True)
    study = load(
        Sources(responses=export, manifests=(files.root / "batches",), include_simulated=True),
        ExclusionRule(),
    )
    charts = figures.charts(study)
    assert set(charts) == {
        "fig8", "position_bias", "fig8_all_workers", "position_bias_all_workers", "workers",
    }  # fmt: skip
    for chart in charts.values():
        assert "SIMULATED" in figures.draw(chart)._suptitle.get_text()


def test_position_and_worker_charts(study_files) -> None:
    export, batches = study_files
    study = load(Sources(responses=export, manifests=(batches,)), ExclusionRule())
    position = figures.position_chart(study, "all workers")
    assert [b.label for b in position.bars] == ["method-vs-method", "model-vs-model", "all"]
    # Raw choices, not scores: w1 answered 1, 2, 3, 1 per Fig. 8 batch; w2 always 2.
    assert position.bars[0].counts == (6, 3, 3, 0, 0)
    assert position.bars[1].counts == (0, 6, 0, 0, 0)
    assert position.bars[2].counts == (6, 9, 3, 0, 0)
    workers = figures.worker_chart(study)
    assert [(b.label, b.counts) for b in workers.bars] == [
        ("w1", (6, 3, 3, 0, 0)),
        ("w2", (0, 6, 0, 0, 0)),
    ]
    assert workers.bars[0].note == "N=12, no catch"


def test_files_are_written(study_files, tmp_path) -> None:
    export, batches = study_files
    study = load(Sources(responses=export, manifests=(batches,)), ExclusionRule())
    written = figures.save(figures.draw(figures.position_chart(study, "all workers")),
                           tmp_path / "out", "position_bias")  # fmt: skip
    png, pdf = written
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_wide_axes_tick_every_50_percent(files, make_item) -> None:
    """All ratings on one side: the axis reaches 100% each way, and 25% ticks would overlap."""
    items = [make_item(f"r-{k}", kind="model-vs-model", second=("world_alexnet", "ibd"))
             for k in range(2)]  # fmt: skip
    files.manifest("r", "model-vs-model", items)
    export = files.ratings([("r", "r-0", "w1", 1), ("r", "r-1", "w1", 1)])
    study = load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())
    _, ax = _axes(figures.comparison_chart(study, "fig9", "all workers"))
    assert list(ax.get_xticks()) == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100%", "50%", "0%", "50%", "100%"]


def test_comparison_without_ratings_is_an_empty_bar(files, make_item) -> None:
    files.manifest("cam", "method-vs-method", [make_item("c-0")])
    grad = [make_item("g-0", second=("world_resnet", "gradcam"))]
    files.manifest("grad", "method-vs-method", grad)
    export = files.ratings([("cam", "c-0", "w1", 1)])
    study = load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())
    chart = figures.comparison_chart(study, "fig8", "after exclusion")
    assert [(b.label, b.counts, b.note) for b in chart.bars] == [
        ("CAM", (0, 0, 0, 0, 1), ""),
        ("Grad-CAM", (0, 0, 0, 0, 0), "N=0, no ratings"),
    ]
    fig, ax = _axes(chart)
    assert "N=0, no ratings" in {t.get_text() for t in ax.texts}
    assert "no ratings are left" not in fig._suptitle.get_text()


def test_every_worker_excluded_says_no_ratings_are_left(files, make_item) -> None:
    files.manifest("b", "method-vs-method", [make_item("i0"), make_item("c0", expected=[3])])
    export = files.ratings([("b", "i0", "w1", 1), ("b", "c0", "w1", 1)])
    study = load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())
    chart = figures.comparison_chart(study, "fig8", "after exclusion")
    assert chart.subtitle == "1 of 1 workers excluded by catch trials; no ratings are left"
    assert [b.counts for b in chart.bars] == [(0, 0, 0, 0, 0)]


def test_worker_chart_tells_platforms_apart(files, make_item, make_row) -> None:
    files.manifest("b", "method-vs-method", [make_item("i0")])
    rows = [make_row("b", "i0", "w1", 1, 0), {**make_row("b", "i0", "w1", 5, 1),
                                              "platform": "prolific"}]  # fmt: skip
    export = files.root / "export.csv"
    pd.DataFrame(rows).to_csv(export, index=False)
    study = load(Sources(responses=export, manifests=(files.root / "batches",)), ExclusionRule())
    bars = figures.worker_chart(study).bars
    assert [(b.label, b.counts) for b in bars] == [
        ("local:w1", (1, 0, 0, 0, 0)),
        ("prolific:w1", (0, 0, 0, 0, 1)),
    ]
