"""Everything one analysis run works on: manifests + ratings -> scored ratings + workers.

Loading order: read the manifests, read the ratings (CSV export or database view), set aside
simulated answers unless asked to keep them, join and recode, label each worker (keyed by
platform and worker id), compute each worker's catch-trial pass rate and the exclusion rule's
verdict, and only then set aside the answers of rejected assignments unless asked to keep them:
a requester who rejects the assignments a worker failed (the usual MTurk workflow) must not
thereby hide the failures from the exclusion rule. With no real answer left this stops with an
error: nothing is ever computed from made-up numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import catch, comparisons, exclusion, manifests, paths, ratings, scoring
from analysis.errors import UserError

SETTINGS: tuple[str, str] = ("after exclusion", "all workers")
"""Every result is given twice: with the exclusion rule applied, and with every worker."""


@dataclass(frozen=True)
class Sources:
    """Where the answers and manifests come from (the command line's view)."""

    db: str | None = None
    responses: Path | None = None
    manifests: tuple[Path, ...] = ()
    include_simulated: bool = False
    include_rejected: bool = False


@dataclass(frozen=True)
class Study:
    batches: list[manifests.Batch]
    ratings: pd.DataFrame
    """Every analysed rating of a known item, scored (see `scoring.score_ratings`), with the
    worker's label in column `worker` (`ratings.label_workers`)."""
    workers: pd.DataFrame
    """Per analysed worker (index `worker`, the label): `worker_id` (and `platform` where the
    answers have it), catch counts and pass rate over all their non-simulated catch answers,
    rejected ones included, the quality measures (`exclusion.measures`), one
    `excluded_<rule>` column per rule (`exclusion.RULES`) and `excluded` (any rule)."""
    rule: catch.ExclusionRule
    source: str
    selection: ratings.Selection
    other_batches: tuple[str, ...]
    n_other_batches: int
    comparisons: tuple[comparisons.Comparison, ...] = ()
    """Every comparison the manifests make, answered or not, in display order."""
    ignored_columns: tuple[str, ...] = ()
    """Columns of the answers that the manifests provide, so the answers' copies were ignored."""
    rules: exclusion.Rules = field(default_factory=exclusion.Rules)
    exclusions: pd.DataFrame | None = None
    """What each exclusion rule flagged and removed (`exclusion.report`)."""
    not_applicable: tuple[tuple[str, str], ...] = ()
    """(rule suffix, why) for each rule the answers lack the columns for."""

    @property
    def simulated(self) -> bool:
        """Whether any analysed answer is simulated (figures then say so in their titles)."""
        return bool((self.ratings["simulated"] == 1).any())

    @property
    def excluded_workers(self) -> list[str]:
        return sorted(self.workers.index[self.workers["excluded"]])

    @property
    def unanswered(self) -> list[comparisons.Comparison]:
        """Comparisons that a manifest makes but that no analysed rating answers."""
        answered = {comp for comp, _ in comparisons.split(self.ratings)}
        return [comp for comp in self.comparisons if comp not in answered]

    def subset(self, setting: str) -> pd.DataFrame:
        """The ratings analysed under a setting of `SETTINGS`."""
        if setting == "all workers":
            return self.ratings
        if setting == "after exclusion":
            return self.ratings[~self.ratings[ratings.WORKER].isin(self.excluded_workers)]
        raise ValueError(f"unknown setting {setting!r}")


def _read_ratings(sources: Sources) -> tuple[pd.DataFrame, str]:
    if sources.db and sources.responses:
        raise UserError("give either --db or --responses, not both")
    if sources.responses is not None:
        return ratings.read_csv(sources.responses), str(sources.responses)
    if sources.db:
        return ratings.read_database(sources.db), sources.db
    default = paths.default_database()
    if not default.is_file():
        raise UserError(
            f"no answers to analyse: no --db or --responses given and no {default} "
            "(collect answers with hitserver first)"
        )
    return ratings.read_database(f"sqlite:///{default.resolve()}"), str(default)


def _no_answers(selection: ratings.Selection, scored: scoring.Scored) -> str:
    why = [f"{selection.n_read} rating(s) read"]
    if selection.n_simulated_dropped:
        why.append(f"{selection.n_simulated_dropped} simulated left out (--include-simulated)")
    if scored.n_other_batches:
        why.append(f"{scored.n_other_batches} from batches without a given manifest")
    if selection.n_rejected_dropped:
        why.append(f"{selection.n_rejected_dropped} rejected left out (--include-rejected)")
    return "no answers to analyse: " + ", ".join(why)


def _workers(
    scored: pd.DataFrame,
    analysed: pd.DataFrame,
    rule: catch.ExclusionRule,
    rules: exclusion.Rules,
) -> pd.DataFrame:
    """The workers who have an analysed rating, with the catch results of every catch answer
    they gave and the quality measures of every answer (`scored` still holds the rejected
    ones), and each rule's verdict."""
    rates = catch.pass_rates(scored)
    rates = rates.join(exclusion.measures(scored, rules))
    rates["excluded_catch"] = catch.excluded(rates, rule)
    rates = rates.join(exclusion.verdicts(rates, rules))
    rates["excluded"] = rates[[f"excluded_{suffix}" for suffix, _ in exclusion.RULES]].any(axis=1)
    id_columns = [c for c in ("worker_id", ratings.PLATFORM) if c in scored.columns]
    identity = scored.drop_duplicates(ratings.WORKER).set_index(ratings.WORKER)[id_columns]
    table = pd.concat([identity, rates], axis=1, join="inner")
    return table.loc[sorted(analysed[ratings.WORKER].unique())]


def load(
    sources: Sources, rule: catch.ExclusionRule, rules: exclusion.Rules | None = None
) -> Study:
    rules = rules if rules is not None else exclusion.Rules()
    if sources.manifests:
        manifest_paths = manifests.find_manifests(sources.manifests)
    else:
        manifest_paths = paths.default_manifests()
        if not manifest_paths:
            where = paths.ibd_home() / "batches"
            raise UserError(f"no batch manifests in {where}/*/ (give --manifest PATH)")
    batches, items = manifests.read_manifests(manifest_paths)
    raw, source = _read_ratings(sources)
    pool = ratings.drop_simulated(raw, sources.include_simulated)
    scored = scoring.score_ratings(pool, items)
    rated = scored.ratings.assign(**{ratings.WORKER: ratings.label_workers(scored.ratings)})
    rejected = ratings.is_rejected(rated)
    analysed = rated if sources.include_rejected else rated[~rejected].reset_index(drop=True)
    ratings.check_one_rating_per_item(analysed, source)
    selection = ratings.Selection(
        n_read=len(raw),
        n_simulated_dropped=len(raw) - len(pool),
        n_rejected_dropped=0 if sources.include_rejected else int(rejected.sum()),
        n_simulated_kept=int((analysed["simulated"] == 1).sum()),
    )
    if analysed[~analysed["is_catch"]].empty:
        raise UserError(_no_answers(selection, scored))
    workers = _workers(rated, analysed, rule, rules)
    why_not = exclusion.applicable(rated)
    return Study(
        batches=batches,
        ratings=analysed,
        workers=workers,
        rule=rule,
        rules=rules,
        exclusions=exclusion.report(workers, analysed[~analysed["is_catch"]]),
        not_applicable=tuple((k, v) for k, v in why_not.items() if v is not None),
        source=source,
        selection=selection,
        other_batches=scored.other_batches,
        n_other_batches=scored.n_other_batches,
        comparisons=comparisons.from_items(items),
        ignored_columns=scored.ignored_columns,
    )
