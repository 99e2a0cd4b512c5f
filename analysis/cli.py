"""`analysis` console script: `plot`, `stats` and `report` on collected answers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from analysis import __version__, paths
from analysis.errors import UserError
from ibd.errors import OneLineParser, run_command

if TYPE_CHECKING:
    from analysis.study import Study

SUBCOMMANDS: dict[str, str] = {
    "plot": "draw Fig. 8 and Fig. 9 style diverging bars",
    "stats": "statistics per comparison (CSV + Markdown)",
    "report": "one HTML page with figures and tables",
}

CAPTIONS: dict[str, str] = {
    "fig8": "Fig. 8: explanation methods compared on the same network",
    "fig9": "Fig. 9: models compared with the same explanation method",
    "position_bias": "Position bias: Robot A (left) vs Robot B (right)",
    "workers": "Answers per worker",
}


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _add_inputs(sp: argparse.ArgumentParser) -> None:
    src = sp.add_argument_group("answers and manifests")
    one = src.add_mutually_exclusive_group()
    one.add_argument(
        "--db",
        metavar="URL",
        help="SQLAlchemy URL of the HIT server database; its `ratings` view is read "
        "(default: sqlite:///$IBD_HOME/hitserver.sqlite)",
    )
    one.add_argument(
        "--responses", metavar="CSV", type=Path, help="ratings exported by `hitserver export`"
    )
    src.add_argument(
        "--manifest",
        metavar="PATH",
        type=Path,
        action="append",
        default=[],
        help="a batch manifest.json, or a directory searched for */manifest.json; repeatable "
        "(default: $IBD_HOME/batches/*/manifest.json)",
    )
    src.add_argument(
        "--include-simulated",
        action="store_true",
        help="analyse answers from simulated raters too (figures then say 'SIMULATED')",
    )
    src.add_argument(
        "--include-rejected",
        action="store_true",
        help="keep answers of assignments the requester rejected (left out by default)",
    )
    src.add_argument(
        "--max-catch-fail",
        metavar="FRACTION",
        type=_fraction,
        default=None,
        help="exclude workers who failed more than this fraction of their catch trials "
        "(default: the study config's, else 0.5; 1 excludes nobody); results are given with "
        "and without exclusion",
    )
    src.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="study config (.toml or .json) whose [exclusion] table sets the exclusion rules "
        "(minimum time per task, pasted and near-identical reasons; see docs/analysis.md)",
    )


def _add_stats_options(sp: argparse.ArgumentParser) -> None:
    st = sp.add_argument_group("statistics")
    st.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    st.add_argument(
        "--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)"
    )
    st.add_argument(
        "--confidence", type=_fraction, default=0.95, help="interval level (default 0.95)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="analysis")
    parser.add_argument("--version", action="version", version=f"analysis {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    defaults = {"plot": "figures", "stats": "stats", "report": "report"}
    for name, help_text in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        _add_inputs(sp)
        if name != "plot":
            _add_stats_options(sp)
        sp.add_argument(
            "--out",
            type=Path,
            default=None,
            help=f"output directory (default: $IBD_HOME/{defaults[name]})",
        )
        sp.set_defaults(default_out=defaults[name])
    return parser


def _study(args: argparse.Namespace) -> Study:
    # Imported here so that `--help` does not pay for pandas, scipy and matplotlib.
    from analysis import catch, exclusion, study, tables

    sources = study.Sources(
        db=args.db,
        responses=args.responses,
        manifests=tuple(args.manifest),
        include_simulated=args.include_simulated,
        include_rejected=args.include_rejected,
    )
    table = exclusion.read_config(args.config) if args.config is not None else {}
    max_fail = args.max_catch_fail
    if max_fail is None:
        max_fail = float(table.get("max_catch_fail", 0.5))
    loaded = study.load(sources, catch.ExclusionRule(max_fail), exclusion.rules_from(table))
    if loaded.ignored_columns:
        # Not an error (real exports carry extra columns), but the user should know.
        note = tables.ignored_columns_note(loaded.ignored_columns)
        print(f"analysis {args.command}: note: {note}", file=sys.stderr)
    return loaded


def _check_stats_options(args: argparse.Namespace) -> None:
    # numpy refuses a negative seed with a traceback deep inside the bootstrap.
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: must be 0 or more")
    if args.resamples < 100:
        raise UserError(f"--resamples {args.resamples}: use at least 100")
    if not 0.5 <= args.confidence < 1.0:
        raise UserError(f"--confidence {args.confidence}: must be in [0.5, 1)")


def _plot(args: argparse.Namespace, out: Path) -> list[Path]:
    from analysis import figures, tables

    s = _study(args)
    saved = figures.write_all(s, out)
    _print_exclusions(s)
    # What was excluded and why, beside the figures drawn "after exclusion".
    beside = out / tables.EXCLUSIONS_CSV
    with paths.writing(beside):
        tables.exclusion_table(s).to_csv(beside, index=False)
    return [path for paths_ in saved.values() for path in paths_] + [beside]


def _stats(args: argparse.Namespace, out: Path) -> list[Path]:
    from analysis import summary, tables

    _check_stats_options(args)
    s = _study(args)
    table = summary.comparison_table(s, args.seed, args.resamples, args.confidence)
    bias = summary.position_bias_table(s, args.confidence)
    written = tables.write(out, s, table, bias, summary.worker_table(s), args.confidence)
    _print_exclusions(s)
    for _, row in table[table["setting"] == "after exclusion"].iterrows():
        if row["n_ratings"] == 0:
            print(f"{row['comparison']}: N=0, no ratings left")
            continue
        print(
            f"{row['comparison']}: N={row['n_ratings']}, prefer {row['preference_rate']:.2f} "
            f"[{row['preference_ci_low']:.2f}, {row['preference_ci_high']:.2f}], "
            f"ties {row['ties']}, sign p={row['sign_p']:.3g} (Holm {row['sign_p_holm']:.3g})"
        )
    return written


def _print_exclusions(s: Study) -> None:
    from analysis import tables

    for _, row in tables.exclusion_table(s).iterrows():
        print(
            f"exclusion: {row['rule']}: removed {row['workers_removed']} worker(s), "
            f"{row['ratings_removed']} rating(s); {row['definition']}"
        )


def _caption(stem: str, s: Study) -> str:
    base = stem.removesuffix("_all_workers")
    if base == "workers":
        return CAPTIONS[base]
    if base != stem:
        return CAPTIONS[base] + " (all workers)"
    total = s.exclusions.iloc[-1] if s.exclusions is not None else None
    if total is None:
        return CAPTIONS[base] + " (after exclusion)"
    return (
        f"{CAPTIONS[base]} (after exclusion: {total['workers_removed']} of {len(s.workers)} "
        f"workers and {total['ratings_removed']} ratings removed; rules in the table below)"
    )


def _report(args: argparse.Namespace, out: Path) -> list[Path]:
    from analysis import figures, report, summary, tables

    _check_stats_options(args)
    s = _study(args)
    table = summary.comparison_table(s, args.seed, args.resamples, args.confidence)
    bias = summary.position_bias_table(s, args.confidence)
    written = tables.write(out, s, table, bias, summary.worker_table(s), args.confidence)
    _print_exclusions(s)
    pngs: dict[str, Path] = {}
    for stem, saved in figures.write_all(s, out).items():
        written += saved
        pngs[_caption(stem, s)] = saved[0]
    page = out / "report.html"
    sections = tables.document(s, table, bias, args.confidence)
    beside = tuple(sec for sec in sections if sec.heading == "Exclusions")
    rest = [sec for sec in sections if sec.heading != "Exclusions"]
    with paths.writing(page):
        page.write_text(report.page(rest, pngs, s.simulated, beside=beside), encoding="utf-8")
    return [page, *written]


RUNNERS: dict[str, Callable[[argparse.Namespace, Path], list[Path]]] = {
    "plot": _plot,
    "stats": _stats,
    "report": _report,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    out = args.out if args.out is not None else paths.ibd_home() / args.default_out

    def command() -> int:
        paths.check_output_dir(out)
        for path in RUNNERS[args.command](args, out):
            print(f"wrote {path}")
        return 0

    return run_command(f"analysis {args.command}", command, UserError)


if __name__ == "__main__":
    sys.exit(main())
