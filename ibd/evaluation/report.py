"""report.md of `ibd evaluate`: the tables and targets of docs/evaluate.md, as Markdown lines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ibd.evaluation import scoring as ev
from ibd.evaluation.completeness import ClassShare, Completeness
from ibd.evaluation.means import isnan, mean
from ibd.evaluation.pipeline import Results, Settings
from ibd.evaluation.reliance import Reliance
from ibd.evaluation.rules import RuleRows, rule_cells, rule_means
from ibd.evaluation.sanity import Row, Sanity, data_randomisation_section, first_passing
from ibd.evaluation.significance import significance_section
from ibd.evaluation.summary import Summary

PRECISION_TARGET = 0.8  # precision@k (lenient) the decomposition should reach
COMPLETENESS_HEADER = (
    "model",
    "images",
    "named concepts",
    "decomposition",
    "accuracy",
    "projected accuracy",
    "chance",
    "completeness",
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or isnan(value):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _rules_section(
    title: str,
    ranking: str,
    rows: RuleRows,
    k: int,
    missing: Sequence[str] = (),
    reliance: Reliance | None = None,
) -> list[str]:
    lines = [title, ""]
    lines += _table(
        [
            "class",
            "defining",
            f"top {k}",
            f"P@{k} lenient",
            f"R@{k} lenient",
            f"P@{k} strict",
            f"R@{k} strict",
        ],
        [rule_cells(c, m, ", ") for c, m in rows],
    )
    means = rule_means(rows)
    precision = means["precision_lenient"]
    verdict = "met" if precision >= PRECISION_TARGET else "not met"
    over = f", over {len(rows)} of {len(rows) + len(missing)} classes" if missing else ""
    lines += [
        "| **mean** | | | " + " | ".join(_fmt(value) for value in means.values()) + " |",
        "",
        f"Target precision@{k} (lenient) >= {PRECISION_TARGET}, {ranking}: {_fmt(precision)} "
        f"({verdict}{over}).",
        "",
    ]
    if reliance is not None and reliance.rows:
        own = rule_means(reliance.rows)["precision_lenient"]
        lines += [
            f"The model's own ranking, by counterfactual images ({reliance.fill}), scores "
            f"{_fmt(own)} against the same rules (last section).",
            "",
        ]
    if missing:
        lines += [
            f"Left out of the mean, no IBD explanation of the class: {', '.join(missing)}.",
            "",
        ]
    return lines


def _explanations_section(summary: Sequence[Summary], settings: Settings) -> list[str]:
    lines = [
        "## Explanations per model and method",
        "",
        f"present: the top component's concept is labelled in the image (n/a for class maps). "
        f"pointing: the top {settings.fraction:.0%} of the upsampled heatmap overlaps the "
        "concept's mask (CAM, Grad-CAM, random: the union of the class's defining concepts). "
        "in mask: the share of that region inside the mask; lift: in mask / the mask's share "
        "of the image (1 = chance). random: seeded control (seed "
        f"{settings.seed}).",
        "",
    ]
    header = ["model", "method", "n", "accuracy", "present", "pointing", "in mask", "lift"]
    lines += _table(
        header,
        [
            (
                s.model,
                s.method,
                s.explanations,
                s.accuracy,
                s.present,
                s.pointing,
                s.region_precision,
                s.lift,
            )
            for s in summary
        ],
    )
    if settings.faithfulness:
        lines += _faithfulness_section(summary, settings)
    return lines


def _faithfulness_section(summary: Sequence[Summary], settings: Settings) -> list[str]:
    curves = settings.curves
    saliency = "contribution-weighted sum" if settings.saliency == "sum" else "top component"
    start = "a blurred image" if curves.insertion_from == "blur" else "the mean colour"
    road = (
        f"ROAD (Rong et al. 2022): the class {curves.score} with the most (MoRF, lower is "
        "better) / least (LeRF, higher) relevant pixels imputed by noisy linear imputation "
        f"(noise {curves.road_noise:g}), mean over "
        + ", ".join(f"{p}" for p in curves.road_percentages)
        + " % removed; top-1: how often the class stays the model's top class (the paper's "
        "accuracy). "
        if curves.road
        else "ROAD not run (--no-road). "
    )
    lines = [
        "",
        "## Faithfulness to the model",
        "",
        f"Deletion (lower is better) / insertion (higher) AUC of the class {curves.score}, "
        f"{curves.steps} steps, deletion to the mean colour, insertion from {start} (RISE). "
        + road
        + "Average Drop (lower is better) / Increase in Confidence (higher), in %: the class "
        "probability on the image times its min-max normalised map against that on the image "
        f"(Grad-CAM++, as torch-cam). ibd/netdissect maps: {saliency}."
        + (
            f" Measured on the first {curves.limit} explanations of each model and method "
            "(--faithfulness-limit); n counts them all."
            if curves.limit is not None
            else ""
        ),
        "",
    ]
    header = ["model", "method", "n", "deletion AUC", "insertion AUC", "ROAD MoRF"]
    return [
        *lines,
        *_table(
            [*header, "ROAD LeRF", "MoRF top-1", "LeRF top-1", "Average Drop %", "Increase %"],
            [
                (
                    s.model,
                    s.method,
                    s.explanations,
                    s.deletion_auc,
                    s.insertion_auc,
                    s.road_morf,
                    s.road_lerf,
                    s.road_morf_top1,
                    s.road_lerf_top1,
                    s.average_drop,
                    s.increase_in_confidence,
                )
                for s in summary
            ],
        ),
    ]


def _pointing_game_section(summary: Sequence[Summary], fraction: float) -> list[str]:
    lines = [
        "",
        "## Concept pointing game",
        "",
        "One trial per (image, defining concept of the explained class present in it): the "
        "same trials for every method. IBD / Network Dissection answer with their component "
        "of that concept (shown: how often they have one; none is a miss), CAM, Grad-CAM and "
        "random with their one map. pointing: the map's maximum lies in the concept's mask "
        f"(Zhang et al. 2016); top {fraction:.0%} overlap: the overlap rule above.",
        "",
    ]
    lines += _table(
        ["model", "method", "trials", "shown", "pointing", f"top {fraction:.0%} overlap"],
        [
            (
                s.model,
                s.method,
                s.concept_trials,
                s.concept_shown if s.method not in ev.CLASS_MAP_METHODS else None,
                s.concept_pointing,
                s.concept_overlap,
            )
            for s in summary
        ],
    )
    lines.append("")
    return lines


def _pointing_targets(summary: Sequence[Summary]) -> list[str]:
    """Per model with both, IBD's concept pointing against CAM's."""
    lines = []
    by_key = {(s.model, s.method): s for s in summary}
    for model in sorted({s.model for s in summary}):
        if (model, "ibd") in by_key and (model, "cam") in by_key:
            ibd_s, cam_s = by_key[(model, "ibd")], by_key[(model, "cam")]
            ibd_p, cam_p = ibd_s.concept_pointing, cam_s.concept_pointing
            met = ibd_p is not None and cam_p is not None and ibd_p > cam_p
            verdict = "met" if met else "not met"
            lines.append(
                f"Target IBD pointing above CAM's on {model} (concept pointing game): "
                f"{_fmt(ibd_p)} vs {_fmt(cam_p)} ({verdict}); top-component overlap "
                f"{_fmt(ibd_s.pointing)} vs {_fmt(cam_s.pointing)}."
            )
    lines.append("")
    return lines


def _decomposition_sections(results: Results) -> list[str]:
    k = results.settings.k
    lines = []
    if results.coefficient_rows:
        lines += [
            "Lenient: a part of a defining object (sail for boat) counts as correct. Optional "
            "concepts count as wrong, even those that occur in few classes and so are evidence.",
            "",
        ]
        lines += _rules_section(
            f"## Class decomposition vs world rules (top {k} concepts by coefficient)",
            "by coefficient",
            results.coefficient_rows,
            k,
        )
    if results.contribution_rows:
        lines += _rules_section(
            f"## Class decomposition vs world rules (top {k} by mean contribution over the "
            "class's IBD explanations, eq. 9)",
            "by contribution",
            results.contribution_rows,
            k,
            results.missing,
            results.reliance,
        )
    return lines


def report(results: Results) -> list[str]:
    """The lines of report.md."""
    settings, summary = results.settings, results.summary
    lines = ["# Explanations against the concept world's ground truth", ""]
    lines += _decomposition_sections(results)
    if summary:
        lines += _explanations_section(summary, settings)
        lines += _pointing_game_section(summary, settings.fraction)
        lines += _pointing_targets(summary)
    if results.reliance is not None:
        lines += _reliance_section(results.reliance, summary, settings.k)
    if results.class_shares or results.completeness:
        lines += _completeness_section(summary, results.class_shares, results.completeness)
    if results.significance is not None:
        lines += significance_section(results.significance)
    for sanity in results.sanity:
        lines += _sanity_section(sanity)
    for randomised in results.data_randomisation:
        lines += data_randomisation_section(randomised)
    lines += [f"Note: {n}" for n in results.notes]
    return lines


def _completeness_section(
    summary: Sequence[Summary], shares: Sequence[ClassShare], found: Sequence[Completeness]
) -> list[str]:
    """The share of the logit the named concepts explain, and Yeh's completeness score."""
    lines = [
        "## Completeness of the named concepts",
        "",
        "Share of the logit: sum(contributions) / logit of each explanation (the rest is the "
        "residual), mean over the explanations; pooled: sum of contributions / sum of logits. "
        "Per (model, method): "
        + ", ".join(
            f"{s.model} {s.method} {_fmt(s.logit_share)}"
            for s in summary
            if s.logit_share is not None
        )
        + ".",
        "",
    ]
    ibd = [c for c in shares if c.method == "ibd"]
    if ibd:
        lines += _table(
            ["model", "class", "IBD explanations", "share of the logit", "pooled"],
            [(c.model, c.class_name, c.explanations, c.share, c.pooled_share) for c in ibd],
        )
        lines.append("")
    if found:
        lines += [
            "Completeness score (Yeh et al. 2020): eta = (accuracy with the pooled features "
            "projected onto the span of every concept the decomposition names - 1/K) / "
            "(accuracy - 1/K), on the images the model's IBD explanations explain, against "
            "their true classes.",
            "",
            *_table(
                COMPLETENESS_HEADER,
                [
                    (
                        c.model,
                        c.images,
                        len(c.concepts),
                        c.source or "n/a",
                        c.accuracy,
                        c.projected_accuracy,
                        c.random_accuracy,
                        c.eta,
                    )
                    for c in found
                ],
            ),
            "",
        ]
    return lines


def _similarities(row: Row | None) -> str:
    """Spearman of |map| / SSIM (/ concept-ranking Spearman where there is one)."""
    if row is None:
        return "n/a"
    shown = [row.values["spearman_abs"], row.values["ssim"]]
    if not isnan(row.values["concept_spearman"]):
        shown.append(row.values["concept_spearman"])
    return " / ".join(_fmt(v, 2) for v in shown)


def _sanity_section(sanity: Sanity) -> list[str]:
    margin = sanity.settings.margin
    lines = [
        f"## Sanity checks: {sanity.model} with random weights (Adebayo et al. 2018)",
        "",
        f"Similarity to the trained model's explanation over {sanity.images} images: Spearman "
        "of |map| / SSIM (/ Spearman of the concept ranking), 1 = unchanged. A step passes "
        "when its map measures (Spearman of |map| and of the signed map, SSIM) are at most the "
        f"method's random-pair level + {margin:g}; the concept ranking has its own verdict in "
        "sanity.csv (docs/evaluate.md, Sanity checks). Blocks from the top: "
        + ", ".join(sanity.blocks),
        "",
    ]
    rows = []
    for method in sanity.methods():
        mine = {(r.test, r.step): r for r in sanity.rows if r.method == method}
        logit = mine.get(("random_logit", 0))
        passing = first_passing(sanity, method)
        rows.append(
            (
                method,
                _similarities(mine.get(("random_pair", 0))),
                _similarities(mine.get(("cascading", 1))),
                _similarities(mine.get(("cascading", len(sanity.blocks)))),
                _similarities(logit),
                None if logit is None else sanity.passed(logit),
                "none" if passing is None else f"{passing.step} ({passing.block})",
            )
        )
    header = (
        "method",
        "random pair",
        "top block random",
        "all random",
        "random logit",
        "logit passes",
        "cascade passes from step",
    )
    return [
        *lines,
        *_table(header, rows),
        "",
        f"Table: sanity.csv; figure: sanity_{sanity.model}.png",
        "",
    ]


def _effects_section(reliance: Reliance, summary: Sequence[Summary]) -> list[str]:
    how = (
        "left out (what it covered shows through)" if reliance.fill == "remove" else "painted grey"
    )
    lines = [
        f"## What the models rely on: counterfactual images ({reliance.fill})",
        "",
        f"Each explained image drawn again with one concept it shows {how}, everything else "
        "the image's own; a concept's effect is the drop of the explained class's logit. "
        "effect: of the explanation's top concept (0 when the image does not show it); "
        "largest: it is the concept with the largest effect in the image; share: the mean "
        "effect / the mean largest effect. Chance: a concept the image shows, drawn at random.",
        "",
    ]
    header = ["model", "method", "measured", "effect", "effect (chance)", "largest"]
    lines += _table(
        [*header, "largest (chance)", "share"],
        [
            (
                s.model,
                s.method,
                s.cf_measured,
                s.cf_effect,
                s.cf_mean_effect,
                s.cf_hit,
                s.cf_chance,
                s.cf_share,
            )
            for s in summary
            if s.cf_measured
        ],
    )
    lines.append("")
    return lines


def _own_ranking_section(reliance: Reliance, k: int) -> list[str]:
    """The decomposed model's own top k per class against the rules and IBD's top k."""
    means = rule_means(reliance.rows)
    ranked = reliance.ranked[reliance.model or ""]
    lines = [
        f"### {reliance.model}'s own top {k} against the rules",
        "",
        f"Per class, concepts by mean effect over the images explained as the class; "
        f"shared: how many of IBD's top {k} (by mean contribution / by coefficient) are "
        f"among the model's top {k}.",
        "",
    ]
    header = ["class", "defining", f"model's top {k} (mean effect)", f"P@{k} lenient"]
    lines += _table(
        [*header, f"R@{k} lenient", "shared (contribution)", "shared (coefficient)"],
        [
            (
                cls.name,
                ", ".join(cls.defining),
                ", ".join(f"{c} {v:.2f}" for c, v in ranked[cls.name][:k]),
                match.precision_lenient,
                match.recall_lenient,
                *reliance.shared[cls.name],
            )
            for cls, match in reliance.rows
        ],
    )
    shared = [reliance.shared[c.name] for c, _ in reliance.rows]
    return [
        *lines,
        f"| **mean** | | | {_fmt(means['precision_lenient'])} | "
        f"{_fmt(means['recall_lenient'])} | {_fmt(mean(s[0] for s in shared))} | "
        f"{_fmt(mean(s[1] for s in shared))} |",
        "",
        f"Ranking its concepts exactly as it relies on them, an explanation of "
        f"{reliance.model} would score precision@{k} {_fmt(means['precision_lenient'])} "
        "(lenient) against the rules.",
        "",
    ]


def _reliance_section(reliance: Reliance, summary: Sequence[Summary], k: int) -> list[str]:
    lines = _effects_section(reliance, summary)
    if reliance.rows:
        lines += _own_ranking_section(reliance, k)
    return [
        *lines,
        f"The model's own precision@{k} (lenient) against the rules, per model: "
        + ", ".join(f"{m} {_fmt(p)}" for m, p in reliance.precision.items())
        + ".",
        "",
    ]
