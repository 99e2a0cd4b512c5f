"""The `analysis` commands end to end, from files in the real formats to written outputs."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import sqlalchemy as sa

from analysis.cli import main


@pytest.fixture
def study(files, make_item):
    """Two Fig. 8 comparisons and one Fig. 9 comparison, rated by three workers, one of whom
    fails both catch trials."""
    items = [make_item(f"cam-{k}", robot_a=("first", "second")[k % 2]) for k in range(4)]
    items += [make_item("cam-c0", expected=[3]), make_item("cam-c1", expected=[3])]
    files.manifest("cam", "method-vs-method", items)
    grad = [make_item(f"grad-{k}", second=("world_resnet", "gradcam")) for k in range(3)]
    files.manifest("grad", "method-vs-method", grad)
    mirror = [
        make_item(f"mir-{k}", first=("world_resnet", "ibd"), kind="model-vs-model",
                  second=("world_resnet_mirror", "ibd"))
        for k in range(3)
    ]  # fmt: skip
    files.manifest("mirror", "model-vs-model", mirror)
    rows = []
    for w in ("good1", "good2", "bad"):
        # Robot A alternates first/second, so choices 1, 5, 1, 5 all favour `first` clearly.
        rows += [("cam", f"cam-{k}", w, (1, 5)[k % 2]) for k in range(4)]
        rows += [("cam", f"cam-c{k}", w, 1 if w == "bad" else 3) for k in range(2)]
        rows += [("grad", f"grad-{k}", w, 3 if k < 2 or w == "bad" else 1) for k in range(3)]
        rows += [("mirror", f"mir-{k}", w, 2 if w == "bad" else 4) for k in range(3)]
    return files.ratings(rows), files.root / "batches"


def _args(study, *extra: str) -> list[str]:
    export, batches = study
    return ["--responses", str(export), "--manifest", str(batches), *extra]


def test_stats(study, tmp_path, capsys) -> None:
    out = tmp_path / "stats"
    assert main(["stats", *_args(study, "--out", str(out), "--resamples", "200")]) == 0
    table = pd.read_csv(out / "comparisons.csv")
    after = table[table["setting"] == "after exclusion"].set_index("comparison")
    assert list(after.index) == [
        "world_resnet: IBD vs CAM",
        "world_resnet: IBD vs Grad-CAM",
        "IBD: world_resnet vs world_resnet*",
    ]
    cam = after.loc["world_resnet: IBD vs CAM"]
    assert (cam["n_ratings"], cam["n_items"], cam["n_workers"]) == (8, 4, 2)
    assert (cam["n_clearly_more"], cam["preference_rate"]) == (8, 1.0)
    assert cam["sign_p"] == pytest.approx(2 / 2**8)
    grad = after.loc["world_resnet: IBD vs Grad-CAM"]
    assert (grad["ties"], grad["tie_rate"], grad["prefer_first"]) == (4, 4 / 6, 2)
    assert grad["sign_p"] == pytest.approx(0.5)
    # Holm over Fig. 8's two comparisons: 2 * 2/256, then max(that, 1 * 0.5).
    assert cam["sign_p_holm"] == pytest.approx(4 / 256)
    assert grad["sign_p_holm"] == pytest.approx(0.5)
    mirror = after.loc["IBD: world_resnet vs world_resnet*"]
    assert (mirror["n_slightly_less"], mirror["preference_rate"]) == (6, 0.0)
    everyone = table[table["setting"] == "all workers"].set_index("comparison")
    assert everyone.loc["IBD: world_resnet vs world_resnet*", "n_ratings"] == 9
    workers = pd.read_csv(out / "workers.csv").set_index("worker_id")
    assert workers["excluded"].to_dict() == {"bad": True, "good1": False, "good2": False}
    md = (out / "stats.md").read_text()
    assert "| world_resnet: IBD vs CAM | 8 (4 / 2) | 100% | 0% | 0% | 0% | 0% |" in md
    assert "Excluded: 1 worker(s): `bad`" in md
    assert "zero_method='zsplit'" in md
    assert "world_resnet: IBD vs CAM: N=8, prefer 1.00" in capsys.readouterr().out


def test_plot(study, tmp_path) -> None:
    out = tmp_path / "figs"
    assert main(["plot", *_args(study, "--out", str(out))]) == 0
    stems = ["fig8", "fig9", "position_bias", "workers"]
    stems += ["fig8_all_workers", "fig9_all_workers", "position_bias_all_workers"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}.{ext}" for s in stems for ext in ("png", "pdf")
    )


def test_report(study, tmp_path) -> None:
    out = tmp_path / "report"
    assert main(["report", *_args(study, "--out", str(out), "--resamples", "200")]) == 0
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 7
    assert "<td>world_resnet: IBD vs CAM</td><td>8 (4 / 2)</td>" in page
    assert "SIMULATED" not in page
    assert (out / "comparisons.csv").is_file() and (out / "fig8.pdf").is_file()


def test_no_answers_is_an_error(files, make_item, tmp_path, capsys) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    export = files.ratings([])
    rc = main(["stats", "--responses", str(export), "--manifest", str(files.root / "batches")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err == "analysis stats: error: no answers to analyse: 0 rating(s) read\n"


def test_defaults_read_ibd_home(study, files, tmp_path, monkeypatch) -> None:
    """No flags: manifests from $IBD_HOME/batches, answers from $IBD_HOME/hitserver.sqlite."""
    export, _ = study
    frame = pd.read_csv(export)
    engine = sa.create_engine(f"sqlite:///{files.root / 'hitserver.sqlite'}")
    frame.to_sql("responses", engine, index=False)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW ratings AS SELECT * FROM responses"))
    engine.dispose()
    monkeypatch.setenv("IBD_HOME", str(files.root))
    assert main(["plot"]) == 0
    assert (files.root / "figures" / "fig8.png").is_file()


def test_no_database_at_the_default_place(files, make_item, monkeypatch, capsys) -> None:
    files.manifest("b1", "method-vs-method", [make_item("i1")])
    monkeypatch.setenv("IBD_HOME", str(files.root))
    assert main(["stats"]) == 2
    assert "no answers to analyse: no --db or --responses given" in capsys.readouterr().err


def test_bad_input_is_one_line_without_traceback(files, tmp_path) -> None:
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    export = files.ratings([])
    cmd = [sys.executable, "-m", "analysis.cli", "plot", "--responses", str(export)]
    res = subprocess.run([*cmd, "--manifest", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.startswith(f"analysis plot: error: {bad}: not valid JSON")
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_no_manifest_at_the_default_place(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("IBD_HOME", str(tmp_path))
    assert main(["plot"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"analysis plot: error: no batch manifests in {tmp_path}/batches/*/ "
        "(give --manifest PATH)\n"
    )
