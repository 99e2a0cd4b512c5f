"""Writing the statistics: CSV files for further analysis and one Markdown document for a paper."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import comparisons, exclusion, likert, paths, wilcoxon
from analysis.study import SETTINGS, Study
from analysis.summary import CHOICE_COLUMNS, SCORE_COLUMNS

CSV_NAMES: dict[str, str] = {
    "comparisons": "comparisons.csv",
    "position_bias": "position_bias.csv",
    "workers": "workers.csv",
}
EXCLUSIONS_CSV = "exclusions.csv"
MARKDOWN_NAME = "stats.md"


def _p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _num(x: float, fmt: str) -> str:
    return "n/a" if math.isnan(x) else format(x, fmt)


def _pct(count: int, total: int) -> str:
    return f"{100 * count / total:.0f}%" if total else "n/a"


def level(confidence: float) -> str:
    """An interval level as the tables write it: 0.95 -> '95%', 0.975 -> '97.5%'."""
    return f"{round(100 * confidence, 6):g}%"


def _interval(est: float, low: float, high: float, fmt: str) -> str:
    return f"{_num(est, fmt)} [{_num(low, fmt)}, {_num(high, fmt)}]"


def _row_cells(row: pd.Series) -> list[str]:
    n = int(row["n_ratings"])
    dist = [_pct(int(row[SCORE_COLUMNS[s]]), n) for s in likert.SCORES]
    marker = " †" if row["bootstrap_method"] == "percentile" else ""
    return [
        str(row["comparison"]),
        f"{n} ({row['n_items']} / {row['n_workers']})",
        *dist,
        _interval(
            row["preference_rate"], row["preference_ci_low"], row["preference_ci_high"], ".2f"
        ),
        f"{row['ties']} ({_pct(int(row['ties']), n)})",
        f"{_p(row['sign_p'])} ({_p(row['sign_p_holm'])})",
        _interval(row["mean_score"], row["mean_score_ci_low"], row["mean_score_ci_high"], "+.2f")
        + marker,
        f"{_p(row['wilcoxon_p'])} ({_p(row['wilcoxon_p_holm'])})",
        _num(row["alpha_ordinal"], ".2f"),
    ]


@dataclass(frozen=True)
class Section:
    """A heading with paragraphs and an optional table: rendered to Markdown or HTML."""

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    table_class: str = ""
    """A class for the HTML table (the report's style sheet knows `exclusions`)."""


def _comparison_section(
    table: pd.DataFrame, figure: str, setting: str, focus: str, confidence: float
) -> Section:
    rows = table[(table["figure"] == figure) & (table["setting"] == setting)]
    label = "Fig. 8" if figure == "fig8" else "Fig. 9"
    header = [
        "Comparison",
        "N (items / workers)",
        *(f"{name} (%)" for name in likert.SCORE_NAMES.values()),
        f"Prefer {focus} [{level(confidence)} CI]",
        "Ties",
        "p sign (Holm)",
        f"Mean s [{level(confidence)} CI]",
        "p Wilcoxon (Holm)",
        "α ordinal",
    ]
    heading = f"{label}: {comparisons.FIGURE_TITLES[figure]}, {setting}"
    # The rows stay even then: each comparison the manifests make is listed, with N=0.
    empty = [] if rows["n_ratings"].any() else ["No ratings are left under this setting."]
    return Section(heading, empty, header, [_row_cells(r) for _, r in rows.iterrows()])


def _focus(table: pd.DataFrame, figure: str) -> str:
    rows = table[table["figure"] == figure]
    names = []
    for _, r in rows.iterrows():
        comp = comparisons.Comparison(*(str(r[k]) for k in comparisons.KEY_COLUMNS))
        if comp.focus not in names:
            names.append(comp.focus)
    return "/".join(names) if names else "first"


def _position_section(table: pd.DataFrame, setting: str, confidence: float) -> Section:
    rows = table[table["setting"] == setting]
    header = [
        "Experiment",
        "N",
        *(f"{likert.CHOICE_NAMES[c]} (%)" for c in likert.CHOICES),
        f"Share A [{level(confidence)} CI]",
        "p sign",
        "Items with first as A",
    ]
    body = []
    for _, r in rows.iterrows():
        n = int(r["n_ratings"])
        body.append(
            [
                str(r["experiment"]),
                str(n),
                *(_pct(int(r[CHOICE_COLUMNS[c]]), n) for c in likert.CHOICES),
                _interval(r["share_a"], r["share_a_ci_low"], r["share_a_ci_high"], ".2f"),
                _p(r["sign_p"]),
                f"{r['n_items_first_left']} / {r['n_items']}",
            ]
        )
    return Section(f"Position bias (Robot A = left), {setting}", header=header, rows=body)


def _provenance(study: Study) -> list[str]:
    sel = study.selection
    lines = [
        f"Answers: `{study.source}`; manifests: "
        + ", ".join(f"`{b.name}`" for b in study.batches)
        + ".",
        f"{sel.n_read} rating(s) read; {len(study.ratings)} analysed "
        f"({int(study.ratings['is_catch'].sum())} of them catch trials).",
    ]
    if sel.n_simulated_kept:
        lines.append(
            f"**SIMULATED: {sel.n_simulated_kept} analysed rating(s) come from simulated raters "
            "(`--include-simulated`), not from people.**"
        )
    if sel.n_simulated_dropped:
        lines.append(f"{sel.n_simulated_dropped} simulated rating(s) left out.")
    if sel.n_rejected_dropped:
        lines.append(f"{sel.n_rejected_dropped} rating(s) of rejected assignments left out.")
    if study.n_other_batches:
        lines.append(
            f"{study.n_other_batches} rating(s) of batches without a given manifest left out: "
            + ", ".join(f"`{b}`" for b in study.other_batches)
            + "."
        )
    if study.ignored_columns:
        lines.append(ignored_columns_note(study.ignored_columns) + ".")
    if study.unanswered:
        lines.append(
            "No answers (N=0) for comparison(s) that a manifest makes: "
            + ", ".join(f"`{c.label}`" for c in study.unanswered)
            + "."
        )
    return lines


def ignored_columns_note(columns: tuple[str, ...]) -> str:
    """One line on answer columns that the manifests (or the analysis) provide instead."""
    return f"column(s) {', '.join(columns)} of the answers ignored: the manifests' values are used"


def _catch_lines(study: Study) -> list[str]:
    w = study.workers
    with_catch = int((w["n_catch"] > 0).sum())
    excluded = study.excluded_workers
    # Rejected catch answers count (study.py), so say so where they could change the totals.
    rejected = " (rejected assignments included)" if study.selection.n_rejected_dropped else ""
    lines = [
        f"{len(w)} worker(s); {with_catch} saw catch trials; "
        f"{int(w['n_catch_passed'].sum())} of {int(w['n_catch'].sum())} catch answers passed"
        f"{rejected}.",
        f"Exclusion rule: {study.rule.describe()}. "
        + ("Excluded by any rule (see Exclusions): " if _beyond_catch(study) else "Excluded: ")
        + f"{len(excluded)} worker(s)"
        + (": " + ", ".join(f"`{x}`" for x in excluded) if excluded else "")
        + ".",
    ]
    return lines


def _beyond_catch(study: Study) -> bool:
    """Whether a rule other than the catch trials caught anyone."""
    table = study.exclusions
    return table is not None and bool(
        (table[~table["rule"].isin(["catch trials", "any rule"])]["workers_flagged"] > 0).any()
    )


def exclusion_table(study: Study) -> pd.DataFrame:
    """`exclusion.report` with each rule's definition (thresholds included), as written to
    `exclusions.csv` and shown beside the figures."""
    table = study.exclusions
    if table is None:
        table = exclusion.report(study.workers, study.ratings[~study.ratings["is_catch"]])
    words = exclusion.definitions(study.rules, study.rule.max_fail)
    why_not = dict(study.not_applicable)
    names = dict(exclusion.RULES)
    definition = []
    for name in table["rule"]:
        suffix = next((k for k, v in names.items() if v == name), None)
        if suffix is None:
            definition.append("excluded by at least one rule")
        elif suffix in why_not:
            definition.append(f"not applicable: {why_not[suffix]}")
        else:
            definition.append(words[suffix])
    return table.assign(definition=definition)[["rule", "definition", *table.columns[1:]]]


def _exclusion_section(study: Study) -> Section:
    table = exclusion_table(study)
    n_workers = len(study.workers)
    n_ratings = int((~study.ratings["is_catch"]).sum())
    total = table.iloc[-1]
    return Section(
        "Exclusions",
        [
            f"Each rule removes every rating of a worker it catches. Of {n_workers} worker(s) "
            f"and {n_ratings} rating(s) (catch trials not counted), the rules removed "
            f"{total['workers_removed']} worker(s) and {total['ratings_removed']} rating(s); "
            "'flagged' counts what a rule catches on its own, 'removed' what it adds to the "
            "rules above it. The figures and tables 'after exclusion' leave these out; "
            "'all workers' keeps them."
        ],
        header=[
            "rule",
            "definition",
            "workers flagged",
            "ratings flagged",
            "workers removed",
            "ratings removed",
        ],
        rows=[
            [str(r["rule"]), str(r["definition"])] + [str(int(r[c])) for c in table.columns[2:]]
            for _, r in table.iterrows()
        ],
        table_class="exclusions",
    )


def methods_note(confidence: float) -> str:
    """The methods paragraph, at the interval level actually used."""
    pct = level(confidence)
    return (
        "s is each rating recoded toward the explanation of interest after undoing the "
        "left/right placement (+2 clearly more reasonable ... -2 clearly less). "
        f"Prefer: share of non-tied ratings favouring it, Wilson {pct} interval; ties are "
        "counted separately. p sign: exact two-sided binomial test of preferences against 1/2 "
        f"(ties dropped). Mean s: mean score with a {pct} cluster bootstrap interval over items "
        "(BCa; † percentile where BCa is undefined). p Wilcoxon: signed-rank test on per-item "
        f"mean scores, zero_method={wilcoxon.ZERO_METHOD!r}, normal approximation. Holm: "
        "corrected across the comparisons of the figure. α: Krippendorff's alpha, ordinal, over "
        "items rated by two or more workers."
    )


def document(
    study: Study, table: pd.DataFrame, bias: pd.DataFrame, confidence: float
) -> list[Section]:
    """The statistics as sections: provenance, catch trials, Fig. 8 and Fig. 9 under both
    settings, position bias, and a note on the methods (intervals at level `confidence`)."""
    sections = [
        Section("Data", _provenance(study)),
        Section("Catch trials", _catch_lines(study)),
        _exclusion_section(study),
    ]
    for figure in comparisons.FIGURE_TITLES:
        if table.empty or not (table["figure"] == figure).any():
            continue
        focus = _focus(table, figure)
        sections += [_comparison_section(table, figure, s, focus, confidence) for s in SETTINGS]
    sections += [_position_section(bias, s, confidence) for s in SETTINGS]
    sections.append(Section("Methods", [methods_note(confidence)]))
    return sections


def to_markdown(sections: list[Section], title: str = "Statistics") -> str:
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec.heading}", ""]
        for para in sec.paragraphs:
            lines += [para, ""]
        if sec.header:
            lines.append("| " + " | ".join(sec.header) + " |")
            lines.append("|" + "|".join("---" for _ in sec.header) + "|")
            lines += ["| " + " | ".join(r) + " |" for r in sec.rows]
            lines.append("")
    return "\n".join(lines)


def write(
    out: Path,
    study: Study,
    table: pd.DataFrame,
    bias: pd.DataFrame,
    workers: pd.DataFrame,
    confidence: float,
) -> list[Path]:
    """Write the CSV files and the Markdown document into `out`; returns the paths."""
    paths.make_output_dir(out)
    written = []
    for name, frame in (("comparisons", table), ("position_bias", bias), ("workers", workers)):
        path = out / CSV_NAMES[name]
        with paths.writing(path):
            frame.to_csv(path, index=False)
        written.append(path)
    path = out / EXCLUSIONS_CSV
    with paths.writing(path):
        exclusion_table(study).to_csv(path, index=False)
    written.append(path)
    md = out / MARKDOWN_NAME
    with paths.writing(md):
        md.write_text(to_markdown(document(study, table, bias, confidence)), encoding="utf-8")
    written.append(md)
    return written
