"""Everything one analysis run works on: manifests + ratings -> scored ratings + workers.

Loading order: read the manifests, read the ratings (CSV export or database view), set aside
simulated and rejected answers unless asked to keep them, join and recode, compute each worker's
catch-trial pass rate and the exclusion rule's verdict. With no real answer left this stops with
an error: nothing is ever computed from made-up numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import catch, manifests, paths, ratings, scoring
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
    """Every kept rating of a known item, scored (see `scoring.score_ratings`)."""
    workers: pd.DataFrame
    """Per worker (index `worker_id`): catch counts, pass rate, `excluded`."""
    rule: catch.ExclusionRule
    source: str
    selection: ratings.Selection
    other_batches: tuple[str, ...]
    n_other_batches: int

    @property
    def simulated(self) -> bool:
        """Whether any analysed answer is simulated (figures then say so in their titles)."""
        return bool((self.ratings["simulated"] == 1).any())

    @property
    def excluded_workers(self) -> list[str]:
        return sorted(self.workers.index[self.workers["excluded"]])

    def subset(self, setting: str) -> pd.DataFrame:
        """The ratings analysed under a setting of `SETTINGS`."""
        if setting == "all workers":
            return self.ratings
        if setting == "after exclusion":
            return self.ratings[~self.ratings["worker_id"].isin(self.excluded_workers)]
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
    if selection.n_rejected_dropped:
        why.append(f"{selection.n_rejected_dropped} rejected left out (--include-rejected)")
    if scored.n_other_batches:
        why.append(f"{scored.n_other_batches} from batches without a given manifest")
    return "no answers to analyse: " + ", ".join(why)


def load(sources: Sources, rule: catch.ExclusionRule) -> Study:
    if sources.manifests:
        manifest_paths = manifests.find_manifests(sources.manifests)
    else:
        manifest_paths = paths.default_manifests()
        if not manifest_paths:
            where = paths.ibd_home() / "batches"
            raise UserError(f"no batch manifests in {where}/*/ (give --manifest PATH)")
    batches, items = manifests.read_manifests(manifest_paths)
    raw, source = _read_ratings(sources)
    selection = ratings.select(raw, sources.include_simulated, sources.include_rejected)
    scored = scoring.score_ratings(selection.ratings, items)
    real = scored.ratings[~scored.ratings["is_catch"]]
    if real.empty:
        raise UserError(_no_answers(selection, scored))
    workers = catch.pass_rates(scored.ratings)
    workers["excluded"] = catch.excluded(workers, rule)
    return Study(
        batches=batches,
        ratings=scored.ratings,
        workers=workers,
        rule=rule,
        source=source,
        selection=selection,
        other_batches=scored.other_batches,
        n_other_batches=scored.n_other_batches,
    )
