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
        [f"{s}.{ext}" for s in stems for ext in ("png", "pdf")] + ["exclusions.csv"]
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


def test_confidence_level_is_written_where_intervals_are(study, tmp_path) -> None:
    out = tmp_path / "stats"
    args = _args(study, "--out", str(out), "--resamples", "200", "--confidence", "0.9")
    assert main(["stats", *args]) == 0
    md = (out / "stats.md").read_text()
    assert "95%" not in md
    assert "Prefer IBD [90% CI]" in md and "Mean s [90% CI]" in md
    assert "Share A [90% CI]" in md
    assert "Wilson 90% interval" in md and "a 90% cluster bootstrap interval" in md
    for name in ("comparisons.csv", "position_bias.csv"):
        assert set(pd.read_csv(out / name)["confidence"]) == {0.9}
    # The interval itself is the 90% one: k = 8 of n = 8, z = 1.644854.
    cam = pd.read_csv(out / "comparisons.csv").iloc[0]
    z = 1.6448536269514722
    assert cam["preference_ci_low"] == pytest.approx((8 + z * z / 2 - z * (z * z / 4) ** 0.5) /
                                                     (8 + z * z))  # fmt: skip


def test_unusual_level_is_written_exactly(study, tmp_path) -> None:
    out = tmp_path / "stats"
    args = _args(study, "--out", str(out), "--resamples", "200", "--confidence", "0.975")
    assert main(["stats", *args]) == 0
    assert "Prefer IBD [97.5% CI]" in (out / "stats.md").read_text()


@pytest.mark.parametrize("command", ["stats", "report"])
def test_negative_seed_is_one_line(study, tmp_path, command, capsys) -> None:
    assert main([command, *_args(study, "--out", str(tmp_path / "o"), "--seed", "-1")]) == 2
    assert capsys.readouterr().err == f"analysis {command}: error: --seed -1: must be 0 or more\n"


@pytest.mark.parametrize("command", ["plot", "stats", "report"])
def test_out_that_cannot_be_a_directory_is_one_line(study, tmp_path, command, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    assert main([command, *_args(study, "--out", str(afile))]) == 2
    assert capsys.readouterr().err == (
        f"analysis {command}: error: --out {afile}: exists and is not a directory\n"
    )
    below = afile / "sub"
    assert main([command, *_args(study, "--out", str(below))]) == 2
    assert capsys.readouterr().err == (
        f"analysis {command}: error: --out {below}: cannot create the directory: "
        f"{afile} is a file\n"
    )


def test_comparison_without_answers_is_listed_with_n_0(study, files, make_item, tmp_path) -> None:
    netd = [make_item(f"nd-{k}", second=("world_resnet", "netdissect")) for k in range(2)]
    files.manifest("netd", "method-vs-method", netd)
    out = tmp_path / "stats"
    assert main(["stats", *_args(study, "--out", str(out), "--resamples", "200")]) == 0
    table = pd.read_csv(out / "comparisons.csv")
    rows = table[table["comparison"] == "world_resnet: IBD vs NetDissect"]
    assert rows["setting"].tolist() == ["after exclusion", "all workers"]
    assert rows["n_ratings"].tolist() == [0, 0]
    assert rows["sign_p"].isna().all() and rows["sign_p_holm"].isna().all()
    # NetDissect sorts before CAM; Holm still counts the two defined p-values only.
    after = table[table["setting"] == "after exclusion"]
    assert after["comparison"].tolist()[:3] == [
        "world_resnet: IBD vs NetDissect",
        "world_resnet: IBD vs CAM",
        "world_resnet: IBD vs Grad-CAM",
    ]
    assert after.set_index("comparison").loc["world_resnet: IBD vs CAM", "sign_p_holm"] == (
        pytest.approx(4 / 256)
    )
    md = (out / "stats.md").read_text()
    assert "No answers (N=0) for comparison(s) that a manifest makes: " in md
    assert "`world_resnet: IBD vs NetDissect`" in md
    assert "| world_resnet: IBD vs NetDissect | 0 (0 / 0) | n/a | n/a | n/a | n/a | n/a |" in md


def _plot_files(out) -> set[str]:
    return {p.name for p in out.iterdir()}


def test_plot_removes_its_stale_figures(study, files, tmp_path) -> None:
    out = tmp_path / "figs"
    assert main(["plot", *_args(study, "--out", str(out))]) == 0
    assert {"fig9.png", "fig9.pdf", "fig9_all_workers.png"} <= _plot_files(out)
    (out / "notes.txt").write_text("mine")
    (out / "fig9.svg").write_text("mine too")
    # Now without the model-vs-model manifest: no Fig. 9 to draw, so the old one must go.
    export, batches = study
    args = ["--responses", str(export), "--manifest", str(batches / "cam"), "--manifest",
            str(batches / "grad"), "--out", str(out)]  # fmt: skip
    assert main(["plot", *args]) == 0
    names = _plot_files(out)
    assert not any(n.startswith("fig9") and n.endswith((".png", ".pdf")) for n in names)
    assert {"fig8.png", "fig8.pdf", "notes.txt", "fig9.svg"} <= names


def test_answer_columns_that_the_manifest_has_are_noted(study, tmp_path, capsys) -> None:
    export, _ = study
    frame = pd.read_csv(export, dtype=str, keep_default_na=False)
    frame["robot_a"] = "first"
    frame.to_csv(export, index=False)
    out = tmp_path / "stats"
    assert main(["stats", *_args(study, "--out", str(out), "--resamples", "200")]) == 0
    captured = capsys.readouterr()
    note = "column(s) robot_a of the answers ignored: the manifests' values are used"
    assert f"analysis stats: note: {note}\n" in captured.err
    assert note + "." in (out / "stats.md").read_text()
    # Still the manifest's placement: every rating favours `first` clearly.
    cam = pd.read_csv(out / "comparisons.csv").iloc[0]
    assert (cam["comparison"], cam["n_clearly_more"]) == ("world_resnet: IBD vs CAM", 8)


@pytest.mark.parametrize(("command", "blocked"), [("plot", "fig8.png"), ("stats", "stats.md")])
def test_a_file_that_cannot_be_written_is_one_line(study, tmp_path, command, blocked, capsys):
    out = tmp_path / "out"
    (out / blocked).mkdir(parents=True)  # a directory where the file should go
    assert main([command, *_args(study, "--out", str(out))]) == 2
    err = capsys.readouterr().err
    # (the progress bar, which stderr also shows, may be around the message)
    assert f"analysis {command}: error: {out / blocked}: cannot write: Is a directory\n" in err
    assert err.count("error:") == 1 and "Traceback" not in err
