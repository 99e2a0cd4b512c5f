"""Do the significant concepts match the concept world's rules better than all of them?

`ibd decompose --significance` gives every term of a class decomposition (paper eq. 3-6) a
Monte-Carlo p-value against random directions, Holm-corrected within the class, and
`ibd explain --method ibd --significance` every shown component of an explanation (eq. 9-11);
`ibd.significance` and docs/significance.md define them. Scored here against the world's rules
(`ibd.evaluation.scoring`), per class:

- n = the number of terms, n_sig = the number significant (p_adjusted <= alpha);
- precision@k of the top-k terms by coefficient (all terms), and of the top-k *significant*
  terms by coefficient (`scoring.match_rules`, lenient and strict; NaN for a class without a
  significant term), so the table shows whether keeping only the significant terms keeps the
  right ones.

Per model, over its IBD explanations of world classes: the share of shown components that are
significant, and the share of components naming a concept that is correct for the explained
class (lenient: a defining concept or one of its parts) among all components and among the
significant ones.

Inputs are plain: a decompose.json path, the `World` of `scoring.read_world`, and explanation
records (`ibd.explain.records.read`) or explanation directories. Outputs: a
`SignificanceResult`, its report lines (`significance_section`) and its CSV
(`write_significance_csv`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibd.decomposition import Decomposition
from ibd.errors import UserError
from ibd.evaluation import scoring as ev
from ibd.evaluation.means import mean
from ibd.explain import records as explanation_records

CSV_COLUMNS = (
    "scope",
    "name",
    "components",
    "significant",
    "share_significant",
    "top_all",
    "top_significant",
    "precision_all",
    "precision_significant",
    "precision_strict_all",
    "precision_strict_significant",
)


@dataclass(frozen=True)
class ClassRow:
    """One class of the decomposition: its terms, how many are significant, and precision@k
    (lenient and strict) of its top-k terms and of its top-k significant terms."""

    name: str
    components: int
    significant: int
    top_all: tuple[str, ...]
    top_significant: tuple[str, ...]
    precision_all: float
    precision_significant: float
    precision_strict_all: float
    precision_strict_significant: float


@dataclass(frozen=True)
class ExplanationRow:
    """One model's IBD explanations: components shown, how many carry a p-value (`tested`)
    and are significant, and the share naming a correct concept (lenient) among all and among
    the significant components (NaN when there are none)."""

    model: str
    explanations: int
    components: int
    tested: int
    significant: int
    correct_all: float
    correct_significant: float


@dataclass(frozen=True)
class SignificanceResult:
    """Everything `significance_section` and `write_significance_csv` report."""

    source: str
    k: int
    alpha: float | None
    classes: tuple[ClassRow, ...]
    explanations: tuple[ExplanationRow, ...] = ()

    @property
    def components(self) -> int:
        return sum(c.components for c in self.classes)

    @property
    def significant(self) -> int:
        return sum(c.significant for c in self.classes)


def _top(pairs: Sequence[tuple[str, float]], k: int) -> list[str]:
    return [name for name, _ in sorted(pairs, key=lambda p: -p[1])[:k]]


def _precisions(top: Sequence[str], cls: ev.WorldClass, world: ev.World) -> tuple[float, float]:
    """(lenient, strict) precision@k of `top` (NaN when it is empty: nothing to score)."""
    if not top:
        return math.nan, math.nan
    match = ev.match_rules(top, cls.defining, world.parts, len(top))
    return match.precision_lenient, match.precision_strict


def class_rows(decompose_json: str | Path, world: ev.World, k: int = 3) -> tuple[ClassRow, ...]:
    """Each world class of a decompose.json with p-values, scored (module docstring)."""
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    dec = Decomposition.load(decompose_json)
    if dec.significant is None:
        raise UserError(
            f"{decompose_json} has no p-values: run `ibd decompose --significance` first"
        )
    index = {name: n for n, name in enumerate(dec.class_names)}
    rows = []
    for cls in world.classes:
        if cls.name not in index:
            raise UserError(f"{decompose_json} has no class '{cls.name}' of world.json")
        n = index[cls.name]
        terms = [(dec.concept_names[c], s) for c, s in dec.terms(n)]
        flags = [bool(f) for f in dec.significant[n, : len(terms)]]
        top_all = _top(terms, k)
        top_sig = _top([t for t, f in zip(terms, flags, strict=True) if f], k)
        lenient_all, strict_all = _precisions(top_all, cls, world)
        lenient_sig, strict_sig = _precisions(top_sig, cls, world)
        rows.append(
            ClassRow(
                cls.name,
                len(terms),
                sum(flags),
                tuple(top_all),
                tuple(top_sig),
                lenient_all,
                lenient_sig,
                strict_all,
                strict_sig,
            )
        )
    return tuple(rows)


def _component_counts(
    record: Mapping[str, Any], world: ev.World | None
) -> tuple[int, int, int, int, int]:
    """(components, tested, significant, correct, correct and significant) of one record."""
    cls = world.by_name(str(record.get("class_name"))) if world is not None else None
    correct_set = ev.lenient_correct(cls.defining, world.parts) if cls and world else set()
    counts = [0, 0, 0, 0, 0]
    for component in record.get("components") or []:
        try:
            fields = explanation_records.component_significance(component)
        except ValueError as exc:
            raise UserError(f"explanation of {record.get('image')}: {exc}") from None
        correct = str(component.get("label")) in correct_set
        significant = fields.get("significant") is True
        for j, add in enumerate(
            (True, "significant" in fields, significant, correct, correct and significant)
        ):
            counts[j] += int(add)
    return counts[0], counts[1], counts[2], counts[3], counts[4]


def explanation_rows(
    found: Iterable[Mapping[str, Any]], world: ev.World | None = None
) -> tuple[ExplanationRow, ...]:
    """Per model, its IBD records' components: shown, tested, significant, and (with the
    world) the share naming a correct concept among all and among the significant ones."""
    totals: dict[str, list[int]] = {}
    for record in found:
        if record.get("method") != "ibd":
            continue
        counts = _component_counts(record, world)
        acc = totals.setdefault(str(record.get("model")), [0] * 6)
        acc[0] += 1
        for j, value in enumerate(counts):
            acc[j + 1] += value

    def share(part: int, whole: int) -> float:
        return part / whole if whole and world is not None else math.nan

    return tuple(
        ExplanationRow(model, n, comps, tested, sig, share(cor, comps), share(cor_sig, sig))
        for model, (n, comps, tested, sig, cor, cor_sig) in sorted(totals.items())
    )


def read_explanations(directories: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The records of explanation directories (`ibd.explain.records.read`), concatenated."""
    found: list[dict[str, Any]] = []
    for directory in directories:
        records, _ = explanation_records.read(directory)
        if not isinstance(records, list):
            raise UserError(f"{Path(directory) / 'explanations.json'} is not a list")
        found.extend(r for r in records if isinstance(r, dict))
    return found


def evaluate_significance(
    decompose_json: str | Path,
    world: ev.World,
    *,
    k: int = 3,
    explanations: Iterable[Mapping[str, Any]] = (),
) -> SignificanceResult:
    """The decomposition's classes (`class_rows`) and the explanations' models
    (`explanation_rows`; records, e.g. `read_explanations(dirs)`)."""
    alpha = Decomposition.load(decompose_json).meta.get("significance", {}).get("alpha")
    return SignificanceResult(
        source=str(decompose_json),
        k=k,
        alpha=float(alpha) if isinstance(alpha, (int, float)) else None,
        classes=class_rows(decompose_json, world, k),
        explanations=explanation_rows(explanations, world),
    )


def _fmt(value: float) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.3f}"


def _class_lines(result: SignificanceResult) -> list[str]:
    k = result.k
    lines = [
        f"| class | terms | significant | top {k} (all) | P@{k} | top {k} (significant) | "
        f"P@{k} significant |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result.classes:
        lines.append(
            f"| {c.name} | {c.components} | {c.significant} | {', '.join(c.top_all)} | "
            f"{_fmt(c.precision_all)} | {', '.join(c.top_significant) or '-'} | "
            f"{_fmt(c.precision_significant)} |"
        )
    scored = [c for c in result.classes if not math.isnan(c.precision_significant)]
    lines += [
        "",
        f"Mean P@{k} (lenient) of all top-{k} terms: "
        f"{_fmt(mean(c.precision_all for c in result.classes))}; of the top-{k} significant "
        f"terms: {_fmt(mean(c.precision_significant for c in scored))} over the {len(scored)} "
        f"classes with a significant term (strict: "
        f"{_fmt(mean(c.precision_strict_all for c in result.classes))} and "
        f"{_fmt(mean(c.precision_strict_significant for c in scored))}).",
    ]
    return lines


def _explanation_lines(result: SignificanceResult) -> list[str]:
    if not result.explanations:
        return []
    lines = [
        "",
        "IBD explanations (Holm per image): components shown, significant, and the share "
        "naming a correct concept (lenient) among all and among the significant ones.",
        "",
        "| model | explanations | components | tested | significant | share significant | "
        "correct (all) | correct (significant) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in result.explanations:
        share = e.significant / e.tested if e.tested else math.nan
        lines.append(
            f"| {e.model} | {e.explanations} | {e.components} | {e.tested} | {e.significant} | "
            f"{_fmt(share)} | {_fmt(e.correct_all)} | {_fmt(e.correct_significant)} |"
        )
    return lines


def significance_section(result: SignificanceResult) -> list[str]:
    """Markdown lines for report.md: a heading, the per-class table and the means, and the
    explanations' shares when there are any."""
    alpha = f"alpha {result.alpha}" if result.alpha is not None else "the file's alpha"
    share = result.significant / result.components if result.components else math.nan
    lines = [
        "## Significance of the concepts",
        "",
        f"From `{result.source}`: {result.significant} of {result.components} terms "
        f"({_fmt(share)}) beat random directions (Holm within each class, {alpha}; "
        "docs/significance.md). Precision@k against the rules, of all terms and of the "
        "significant ones:",
        "",
    ]
    return lines + _class_lines(result) + _explanation_lines(result) + [""]


def _csv_rows(result: SignificanceResult) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for c in result.classes:
        rows.append(
            (
                "class",
                c.name,
                c.components,
                c.significant,
                c.significant / c.components if c.components else math.nan,
                ";".join(c.top_all),
                ";".join(c.top_significant),
                c.precision_all,
                c.precision_significant,
                c.precision_strict_all,
                c.precision_strict_significant,
            )
        )
    for e in result.explanations:
        share = e.significant / e.tested if e.tested else math.nan
        rows.append(
            ("explanations", e.model, e.components, e.significant, share, "", "",
             e.correct_all, e.correct_significant, "", "")
        )  # fmt: skip
    return rows


def write_significance_csv(path: str | Path, result: SignificanceResult) -> Path:
    """One row per class (scope `class`) and per model's explanations (scope `explanations`,
    whose precisions are the shares of correct components among all and among the
    significant); columns CSV_COLUMNS, NaN written as empty."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for row in _csv_rows(result):
                writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out
