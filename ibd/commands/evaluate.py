"""`ibd evaluate [--world DIR] [--decomposition FILE] [--explanations DIR ...] [model flags]
[--out DIR] [--k 3]`: score explanations against the concept world's ground truth.

What runs in which order: `ibd.evaluation.pipeline`; the measures: docs/evaluate.md. The
networks for the faithfulness measures, the counterfactual images and the completeness score
are the model flags' one, else $IBD_HOME/models/<model>.pt for every model the explanations name.

Writes OUT/report.md (printed too), summary.csv, decomposition.csv,
decomposition_by_contribution.csv, explanations.csv (one row per explanation), curves.csv (mean
deletion / insertion curves), road.csv (mean ROAD curves), counterfactual.csv (each model's mean
effect per class and concept), logit_shares.csv (the named share of the logit per class),
completeness.csv (Yeh's completeness score per model) and evaluate.json; with --sanity also
sanity.csv and sanity_<model>.png (the model-randomisation sanity checks), with
--data-randomisation data_randomisation_<model>.csv / .png, with --significance
significance.csv.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ibd import paths
from ibd.commands.modelargs import add_model_flags, device_from, load_from_args
from ibd.errors import UserError
from ibd.evaluation.counterfactual import FILLS
from ibd.evaluation.curves import CurveSettings
from ibd.evaluation.outputs import write_all
from ibd.evaluation.pipeline import ModelLoader, Settings, evaluate
from ibd.evaluation.report import report
from ibd.evaluation.road import NOISE, PAPER_PERCENTAGES, PERCENTAGES
from ibd.evaluation.sanity import MARGIN, SanityInputs, SanitySettings
from ibd.evaluation.scoring import POINTING_FRACTION
from ibd.nets.load import LoadedModel, load_model


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world", help="concept world directory (default: $IBD_HOME/world)")
    parser.add_argument(
        "--decomposition",
        help="decompose.json to check against the rules "
        "(default: $IBD_HOME/decompose/world_resnet.json, skipped if absent)",
    )
    parser.add_argument(
        "--explanations",
        nargs="+",
        metavar="DIR",
        help="explanation directories (default: every $IBD_HOME/explanations/<model>/<method>/)",
    )
    parser.add_argument("--out", help="output directory (default: $IBD_HOME/evaluate)")
    parser.add_argument("--k", type=int, default=3, help="top-k concepts per class (default 3)")
    parser.add_argument(
        "--fraction",
        type=float,
        default=POINTING_FRACTION,
        help="pointing: the heatmap's top fraction that must overlap the mask (default 0.2)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N explanations per DIR")
    faith = parser.add_argument_group(
        "faithfulness (deletion / insertion, ROAD, Average Drop / Increase in Confidence)"
    )
    faith.add_argument("--steps", type=int, default=20, help="pixel steps per curve (default 20)")
    faith.add_argument(
        "--saliency",
        choices=("sum", "top"),
        default="sum",
        help="ibd/netdissect map: contribution-weighted sum of the components' normalised "
        "heatmaps (default) or the top component's heatmap",
    )
    faith.add_argument(
        "--score",
        choices=("probability", "logit"),
        default="probability",
        help="the class score the curves record (default: softmax probability, as RISE)",
    )
    faith.add_argument(
        "--insertion-from",
        choices=("blur", "mean"),
        default="blur",
        help="insertion starts from a blurred copy (default, as RISE) or the mean colour",
    )
    faith.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed (>= 0) of the random-heatmap control, ROAD's imputation noise and the "
        "sanity checks",
    )
    faith.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass")
    faith.add_argument(
        "--no-faithfulness",
        action="store_true",
        help="skip the faithfulness measures (deletion / insertion, ROAD, Average Drop / "
        "Increase in Confidence)",
    )
    faith.add_argument(
        "--road-percentages",
        default=",".join(map(str, PERCENTAGES)),
        metavar="P,P,...",
        help="ROAD: the percentages of pixels removed, integers from 1 to 99 (default "
        f"{','.join(map(str, PERCENTAGES))}, as pytorch-grad-cam's ROADCombined; the paper's "
        f"figures use {','.join(map(str, PAPER_PERCENTAGES))}, at two to three times the cost)",
    )
    faith.add_argument(
        "--road-noise",
        type=float,
        default=NOISE,
        help=f"ROAD: standard deviation of the imputation noise (default {NOISE}, the paper's)",
    )
    faith.add_argument("--no-road", action="store_true", help="skip ROAD (its slowest part)")
    faith.add_argument(
        "--faithfulness-limit",
        type=int,
        metavar="N",
        help="measure faithfulness on the first N explanations of each model and method only "
        "(default: all; the other checks still read every explanation)",
    )
    complete = parser.add_argument_group("completeness and significance of the named concepts")
    complete.add_argument(
        "--no-completeness",
        action="store_true",
        help="skip Yeh's completeness score of each IBD-explained model's decomposition (the "
        "share of the logit, read from the explanation files, is always reported)",
    )
    complete.add_argument(
        "--significance",
        action="store_true",
        help="score the p-values of the decomposition's terms and of the IBD explanations' "
        "components (from `ibd decompose --significance` / `ibd explain --significance`) "
        "against the rules: significance.csv and a report section",
    )
    counter = parser.add_argument_group("counterfactual images")
    counter.add_argument(
        "--counterfactual",
        choices=(*FILLS, "none"),
        help="take each shown concept out of the explained images: paint it grey (default, "
        "when the world can draw its images again; the deletion curves' mean colour) or remove "
        "it (what it covers shows through)",
    )
    sanity = parser.add_argument_group("sanity checks (model-parameter randomisation)")
    sanity.add_argument(
        "--sanity",
        action="store_true",
        help="randomise each explained model's weights (cascading from the classifier down, "
        "and one block at a time) and explain a random other class: sanity.csv, "
        "sanity_<model>.png and a report section",
    )
    sanity.add_argument(
        "--data-randomisation",
        action="append",
        default=[],
        metavar="MODEL=SHUFFLED",
        help="with --sanity: compare MODEL's explanations with those of the same network trained "
        "on shuffled labels (SHUFFLED: a model name under $IBD_HOME/models or a .pt path; its "
        "own basis and tally under $IBD_HOME); repeatable",
    )
    sanity.add_argument(
        "--sanity-images", type=int, default=16, help="images per model (default 16, at least 2)"
    )
    sanity.add_argument(
        "--sanity-margin",
        type=float,
        default=MARGIN,
        help=f"a step passes within this of the random-pair similarity (default {MARGIN})",
    )
    sanity.add_argument(
        "--basis",
        help="IBD's basis.npz, for the sanity checks and the completeness score "
        "(default: $IBD_HOME/basis/MODEL.npz)",
    )
    sanity.add_argument(
        "--tally", help="NetDissect's tally.csv (default: $IBD_HOME/dissect/MODEL/tally.csv)"
    )
    add_model_flags(parser)


def _sanity_inputs(args: argparse.Namespace) -> SanityInputs | None:
    if not args.sanity:
        return None
    if args.sanity_images < 2:
        raise UserError(f"--sanity-images must be at least 2, got {args.sanity_images}")
    if args.sanity_margin < 0:
        raise UserError(f"--sanity-margin must be >= 0, got {args.sanity_margin}")
    return SanityInputs(
        SanitySettings(seed=args.seed, margin=args.sanity_margin, batch_size=args.batch_size),
        images=args.sanity_images,
        basis=Path(args.basis) if args.basis else None,
        tally=Path(args.tally) if args.tally else None,
    )


def _check(args: argparse.Namespace) -> None:
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    if not 0 < args.fraction <= 1:
        raise UserError(f"--fraction must lie in (0, 1], got {args.fraction}")
    if args.steps < 1 or args.batch_size < 1:
        raise UserError("--steps and --batch-size must be at least 1")
    for flag, value in (("--limit", args.limit), ("--faithfulness-limit", args.faithfulness_limit)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.road_noise < 0:
        raise UserError(f"--road-noise must be >= 0, got {args.road_noise}")


def road_percentages(text: str) -> tuple[int, ...]:
    """--road-percentages: comma-separated integers from 1 to 99, sorted, without repeats."""
    try:
        found = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        found = []
    if not found or not all(1 <= p <= 99 for p in found):
        raise UserError(
            f"--road-percentages must be integers from 1 to 99 separated by commas, got {text!r}"
        )
    return tuple(sorted(set(found)))


def _randomisation_pairs(args: argparse.Namespace) -> tuple[tuple[str, Path], ...]:
    """--data-randomisation MODEL=SHUFFLED: (MODEL, the shuffled-label checkpoint), checked."""
    if args.data_randomisation and not args.sanity:
        raise UserError("--data-randomisation is one of the sanity checks: add --sanity")
    pairs = []
    for text in args.data_randomisation:
        model, _, shuffled = text.partition("=")
        if not model or not shuffled:
            raise UserError(f"--data-randomisation takes MODEL=SHUFFLED, got {text!r}")
        path = Path(shuffled)
        if path.suffix != ".pt":
            path = paths.model_path(shuffled)
        if not path.is_file():
            raise UserError(f"--data-randomisation: no checkpoint {path}")
        pairs.append((model, path))
    return tuple(pairs)


def settings_from(args: argparse.Namespace) -> Settings:
    """The evaluation's settings from the flags (checked)."""
    _check(args)
    return Settings(
        k=args.k,
        fraction=args.fraction,
        limit=args.limit,
        saliency=args.saliency,
        seed=args.seed,
        faithfulness=not args.no_faithfulness,
        curves=CurveSettings(
            score=args.score,
            steps=args.steps,
            insertion_from=args.insertion_from,
            batch_size=args.batch_size,
            road=not args.no_road,
            road_percentages=road_percentages(args.road_percentages),
            road_noise=args.road_noise,
            limit=args.faithfulness_limit,
        ),
        counterfactual=args.counterfactual,
        sanity=_sanity_inputs(args),
        completeness=not args.no_completeness,
        basis=Path(args.basis) if args.basis else None,
        significance=args.significance,
        data_randomisation=_randomisation_pairs(args),
    )


def _explanation_dirs(given: Sequence[str] | None) -> list[Path]:
    if given:
        return [Path(d) for d in given]
    root = paths.home() / "explanations"
    return sorted(p.parent for p in root.glob("*/*/explanations.json"))


def _model_loader(args: argparse.Namespace) -> ModelLoader:
    """The networks for the curves and counterfactuals: the model flags' one, else each named
    model's checkpoint under $IBD_HOME/models (missing ones are reported and skipped)."""

    def load(names: Sequence[str]) -> dict[str, LoadedModel]:
        if args.arch or args.weights:
            loaded = load_from_args(args)
            if loaded.name not in names:
                raise UserError(
                    f"the explanations are of {', '.join(names)}, not {loaded.name}: pass "
                    "--name to say which model the weights are"
                )
            return {loaded.name: loaded}
        device = device_from(args.device)
        found = {}
        for name in names:
            path = paths.model_path(name)
            if path.is_file():
                found[name] = load_model(None, path, device=device, name=name)
            else:
                print(
                    f"ibd evaluate: no checkpoint {path}; no faithfulness measures, "
                    f"counterfactuals or completeness score for {name}"
                )
        return found

    return load


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    world = Path(args.world) if args.world else paths.world_dir()
    out = Path(args.out) if args.out else paths.home() / "evaluate"
    decomposition = Path(args.decomposition) if args.decomposition else paths.decompose_path()
    given = args.decomposition or decomposition.exists()
    dirs = _explanation_dirs(args.explanations)
    if not dirs and not given:
        raise UserError(
            f"nothing to evaluate: no {decomposition} and no explanation directories under "
            f"{paths.home() / 'explanations'} (run `ibd decompose` / `ibd explain`)"
        )
    results = evaluate(world, decomposition if given else None, dirs, settings, _model_loader(args))
    out.mkdir(parents=True, exist_ok=True)
    lines = report(results)
    write_all(out, results, lines)
    print("\n".join(lines))
    print(f"\nwritten to {out}")
    return 0
