"""The files `ibd evaluate` writes into its output directory (docs/evaluate.md, "Outputs"):
report.md, decomposition.csv, decomposition_by_contribution.csv, explanations.csv, summary.csv,
curves.csv, road.csv, counterfactual.csv, logit_shares.csv, completeness.csv and evaluate.json,
with the sanity checks sanity.csv and sanity_<model>.png (`ibd.evaluation.sanity`) and
data_randomisation_<model>.csv / .png, and with --significance significance.csv
(`ibd.evaluation.significance`). They
are the evaluation's end products: no stage of the project reads them back (a user's R or pandas
does), so each has a writer only.

In the CSV files a value not measured (None, nan) is an empty cell; in evaluate.json, null."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ibd.evaluation import scoring as ev
from ibd.evaluation.completeness import Completeness
from ibd.evaluation.faithfulness import BLUR_KERNEL, BLUR_SIGMA
from ibd.evaluation.means import isnan
from ibd.evaluation.pipeline import Results, Settings
from ibd.evaluation.reliance import Reliance
from ibd.evaluation.rules import RuleRows, rule_cells, rule_means
from ibd.evaluation.sanity import (
    DataRandomisation,
    Row,
    Sanity,
    write_data_randomisation_csv,
    write_data_randomisation_figure,
    write_figure,
    write_table,
)
from ibd.evaluation.significance import write_significance_csv
from ibd.evaluation.summary import Scored, Summary

RULE_COLUMNS = (
    "class",
    "defining",
    "top",
    "precision_lenient",
    "recall_lenient",
    "precision_strict",
    "recall_strict",
)
EXPLANATION_COLUMNS = (
    "model",
    "method",
    "image",
    "class_index",
    "class_name",
    "true_class",
    "top_label",
    "target",
    "present",
    "hit",
    "region_precision",
    "coverage",
    "lift",
    "concept_trials",
    "concept_shown",
    "concept_peak",
    "concept_overlap",
    "deletion_auc",
    "insertion_auc",
    "cf_effect",
    "cf_largest",
    "cf_hit",
    "cf_share",
    "cf_chance",
    "cf_mean_effect",
    "road_morf",
    "road_lerf",
    "road_morf_top1",
    "road_lerf_top1",
    "confidence",
    "explanation_map_confidence",
    "drop_in_confidence",
    "increase_in_confidence",
    "logit",
    "named_contribution",
    "logit_share",
)
ROAD_COLUMNS = ("model", "method", "percentage", "morf", "lerf", "morf_top1", "lerf_top1")
SHARE_COLUMNS = ("model", "method", "class", "explanations", "share", "pooled_share")
COMPLETENESS_COLUMNS = (
    "model",
    "images",
    "classes",
    "concepts",
    "named_concepts",
    "decomposition",
    "accuracy",
    "projected_accuracy",
    "random_accuracy",
    "completeness",
    "note",
)


def write_all(out: Path, results: Results, report: Sequence[str]) -> None:
    """Every output file of `results` into `out` (which must exist); a file with nothing to
    hold (no decomposition, no explanations, no counterfactuals) is not written."""
    (out / "report.md").write_text("\n".join(report) + "\n")
    for name, rows in (
        ("decomposition.csv", results.coefficient_rows),
        ("decomposition_by_contribution.csv", results.contribution_rows),
    ):
        if rows:
            write_rules_csv(out / name, rows)
    _write_explanation_files(out, results)
    if results.reliance is not None:
        write_counterfactual_csv(out / "counterfactual.csv", results.reliance)
    if results.completeness:
        write_completeness_csv(out / "completeness.csv", results.completeness)
    if results.sanity:
        write_table(out / "sanity.csv", results.sanity)
        for sanity in results.sanity:
            write_figure(out / f"sanity_{sanity.model}.png", sanity)
    if results.significance is not None:
        write_significance_csv(out / "significance.csv", results.significance)
    for randomised in results.data_randomisation:
        stem = f"data_randomisation_{randomised.model}"
        write_data_randomisation_csv(out / f"{stem}.csv", randomised)
        write_data_randomisation_figure(out / f"{stem}.png", randomised)
    # (further stages' files go here, each behind its own `if`)
    write_json(out / "evaluate.json", results)


def _write_explanation_files(out: Path, results: Results) -> None:
    """The per-explanation and per (model, method) files: explanations.csv, summary.csv,
    curves.csv, road.csv and logit_shares.csv."""
    if results.scored:
        write_explanations_csv(out / "explanations.csv", results.scored)
        write_summary_csv(out / "summary.csv", results.summary)
    if results.curves:
        write_curves_csv(out / "curves.csv", results)
        if any(c.road is not None for c in results.curves.values()):
            write_road_csv(out / "road.csv", results)
    if results.class_shares:
        write_shares_csv(out / "logit_shares.csv", results)


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None or isnan(v) else v for v in row])


def write_rules_csv(path: Path, rows: RuleRows) -> None:
    _write_csv(path, RULE_COLUMNS, [rule_cells(c, m, ";") for c, m in rows])


def _added_cells(s: Scored) -> tuple[Any, ...]:
    """ROAD, the confidence on the explanation map and the share of the logit."""
    road, found, share = s.road, s.confidence, s.logit_share
    return (
        *((None,) * 4 if road is None else (road.morf, road.lerf, road.morf_top1, road.lerf_top1)),
        *(
            (None,) * 4
            if found is None
            else (found.clean, found.masked, found.drop, found.increase)
        ),
        *((None,) * 3 if share is None else (share.logit, share.named, share.share)),
    )


def _explanation_cells(s: Scored) -> tuple[Any, ...]:
    i, truth, areas, top = s.item, s.truth, s.areas, s.top_effect
    g = truth.explanation
    counterfactual = (
        (None,) * 6
        if top is None
        else (top.effect, top.largest, top.hit, top.share, top.chance_hit, top.mean_effect)
    )
    return (
        i.model,
        i.method,
        str(i.image),
        i.class_index,
        i.class_name,
        i.true_class,
        i.top_label,
        g.target,
        g.present,
        g.hit,
        g.precision,
        g.coverage,
        g.lift,
        len(truth.trials),
        truth.shown,
        truth.peak,
        truth.overlap,
        None if areas is None else areas.deletion,
        None if areas is None else areas.insertion,
        *counterfactual,
        *_added_cells(s),
    )


def write_explanations_csv(path: Path, scored: Sequence[Scored]) -> None:
    _write_csv(path, EXPLANATION_COLUMNS, [_explanation_cells(s) for s in scored])


def write_summary_csv(path: Path, summary: Sequence[Summary]) -> None:
    _write_csv(path, [f.name for f in fields(Summary)], [asdict(s).values() for s in summary])


def write_curves_csv(path: Path, results: Results) -> None:
    _write_csv(
        path,
        ["model", "method", "fraction", "deletion", "insertion"],
        [
            (model, method, float(f), float(d), float(i))
            for (model, method), curves in sorted(results.curves.items())
            for f, d, i in zip(curves.fractions, curves.deletion, curves.insertion, strict=True)
        ],
    )


def write_road_csv(path: Path, results: Results) -> None:
    """road.csv: per model and method, the mean ROAD curves against the removal percentage."""
    rows = []
    for (model, method), curves in sorted(results.curves.items()):
        road = curves.road
        if road is None:
            continue
        columns = (road.morf, road.lerf, road.morf_top1, road.lerf_top1)
        rows += [
            (model, method, p, *(float(c[n]) for c in columns))
            for n, p in enumerate(road.percentages)
        ]
    _write_csv(path, ROAD_COLUMNS, rows)


def write_shares_csv(path: Path, results: Results) -> None:
    """logit_shares.csv: per model, method and class, the named share of the logit."""
    _write_csv(
        path,
        SHARE_COLUMNS,
        [
            (c.model, c.method, c.class_name, c.explanations, c.share, c.pooled_share)
            for c in results.class_shares
        ],
    )


def _completeness_cells(c: Completeness) -> tuple[Any, ...]:
    return (
        c.model,
        c.images,
        c.classes,
        len(c.concepts),
        ";".join(c.concepts),
        c.source,
        c.accuracy,
        c.projected_accuracy,
        c.random_accuracy,
        c.eta,
        c.note,
    )


def write_completeness_csv(path: Path, found: Sequence[Completeness]) -> None:
    """completeness.csv: per model, Yeh's completeness score and its parts."""
    _write_csv(path, COMPLETENESS_COLUMNS, [_completeness_cells(c) for c in found])


def write_counterfactual_csv(path: Path, reliance: Reliance) -> None:
    _write_csv(
        path,
        ["model", "class", "rank", "concept", "mean_effect"],
        [
            (model, class_name, rank, concept, value)
            for model, by_class in reliance.ranked.items()
            for class_name, ranked in by_class.items()
            for rank, (concept, value) in enumerate(ranked, start=1)
        ],
    )


def _json_safe(value: Any) -> Any:
    return None if isnan(value) else value


def _nested_json(value: Any) -> Any:
    """`value` with NaN as None at any depth (tuples as lists)."""
    if isinstance(value, dict):
        return {k: _nested_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nested_json(v) for v in value]
    return _json_safe(value)


def _match_json(match: ev.RuleMatch) -> dict[str, Any]:
    return {k: _json_safe(v) for k, v in vars(match).items() if k != "top"}


def _rules_json(rows: RuleRows) -> dict[str, Any]:
    return {
        "classes": [{"class": c.name, "top": list(m.top), **_match_json(m)} for c, m in rows],
        "mean": {k: _json_safe(v) for k, v in rule_means(rows).items()} if rows else None,
    }


def _settings_json(settings: Settings) -> dict[str, Any]:
    curves = settings.curves
    blur = f"gaussian blur {BLUR_KERNEL}/{BLUR_SIGMA:g}"
    return {
        "k": settings.k,
        "fraction": settings.fraction,
        "steps": curves.steps,
        "saliency": settings.saliency,
        "score": curves.score,
        "seed": settings.seed,
        "deletion_baseline": "mean colour",
        "insertion_baseline": blur if curves.insertion_from == "blur" else "mean colour",
        "road_percentages": list(curves.road_percentages) if curves.road else None,
        "road_noise": curves.road_noise if curves.road else None,
        "completeness": settings.completeness,
    }


def _completeness_json(results: Results) -> dict[str, Any]:
    return {
        "models": [
            dict(zip(COMPLETENESS_COLUMNS, map(_json_safe, _completeness_cells(c)), strict=True))
            for c in results.completeness
        ],
        "class_shares": [
            {k: _json_safe(v) for k, v in asdict(c).items()} for c in results.class_shares
        ],
    }


def _reliance_json(reliance: Reliance) -> dict[str, Any]:
    return {
        "fill": reliance.fill,
        "model": reliance.model,
        "classes": [
            {
                "class": c.name,
                "top": list(m.top),
                **_match_json(m),
                "shared_by_contribution": reliance.shared[c.name][0],
                "shared_by_coefficient": reliance.shared[c.name][1],
            }
            for c, m in reliance.rows
        ],
        "mean": {k: _json_safe(v) for k, v in rule_means(reliance.rows).items()}
        if reliance.rows
        else None,
        "precision_by_model": {m: _json_safe(p) for m, p in reliance.precision.items()},
    }


def _row_json(judged: Sanity | DataRandomisation, row: Row, **fields: Any) -> dict[str, Any]:
    """One row of a sanity check: its method, test, `fields`, every measure and the verdict."""
    return {
        "method": row.method,
        "test": row.test,
        **fields,
        **{m: _json_safe(v) for m, v in row.values.items()},
        "passes": judged.passed(row),
    }


def _sanity_json(sanity: Sanity) -> dict[str, Any]:
    return {
        "model": sanity.model,
        "blocks": sanity.blocks,
        "images": sanity.images,
        "seed": sanity.settings.seed,
        "margin": sanity.settings.margin,
        "rows": [_row_json(sanity, r, step=r.step, block=r.block) for r in sanity.rows],
    }


def _randomised_json(result: DataRandomisation) -> dict[str, Any]:
    return {
        "model": result.model,
        "randomised_model": result.randomised,
        "images": result.images,
        "seed": result.settings.seed,
        "margin": result.settings.margin,
        "skipped": list(result.skipped),
        "rows": [_row_json(result, r) for r in result.rows],
    }


def write_json(path: Path, results: Results) -> None:
    """evaluate.json: the settings, both decomposition rankings against the rules, the
    summaries and the counterfactual reliance (null when not drawn)."""
    document = {
        "settings": _settings_json(results.settings),
        "decomposition": _rules_json(results.coefficient_rows),
        "decomposition_by_contribution": {
            **_rules_json(results.contribution_rows),
            "missing_classes": list(results.missing),
        },
        "explanations": [{k: _json_safe(v) for k, v in asdict(s).items()} for s in results.summary],
        "counterfactual": None if results.reliance is None else _reliance_json(results.reliance),
        "completeness": _completeness_json(results),
    }
    if results.sanity:  # only with --sanity: the document is otherwise as before
        document["sanity"] = [_sanity_json(s) for s in results.sanity]
    if results.significance is not None:
        document["significance"] = _nested_json(asdict(results.significance))
    if results.data_randomisation:
        document["data_randomisation"] = [_randomised_json(r) for r in results.data_randomisation]
    path.write_text(json.dumps(document, indent=1) + "\n")
