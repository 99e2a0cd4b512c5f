"""`hitserver prolific approve|reject`: review the study's submissions by the study's rules.

Rules, in order (the first that applies decides), with the thresholds of the study config's
`[exclusion]` table that `analysis` applies too (`--study-config FILE`; flags override): no
answers here (NO_DATA); more than `max_catch_fail` of the catch trials failed (FAILED_CHECK;
default the server's `catch_fail_fraction`); a median time per task under `min_seconds`
(TOO_QUICKLY); more than a fraction `max_pasted` of the reasons pasted rather than typed, of
those the task page sent telemetry with (LOW_EFFORT; a reason is pasted when `pasted_chars` >=
`pasted_share` x its length). Everything else is approved. The near-identical-reasons rule
compares workers with each other; `analysis` applies it, review does not. A rejection always carries
a category and a message the participant can read (Prolific requires at least 100 characters).

Dry-run by default: the decisions are printed and nothing is sent without `--send`. The
submission transition is idempotent on Prolific, so a decision is sent first and recorded
after; a run interrupted in between sends it again harmlessly.
"""

from __future__ import annotations

import json
import statistics
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select, update
from tqdm import tqdm

from hitserver.errors import UserError
from hitserver.models import ProlificSubmission
from hitserver.prolific.client import ProlificClient, ProlificError
from hitserver.prolific.studies import study_row
from hitserver.prolific.sync import Held, carry_review, held_sessions, require_synced
from hitserver.quality import PASTED_SHARE

SUBMISSIONS = "/api/v1/submissions/"
MIN_MESSAGE_CHARS = 100  # Prolific's minimum for a rejection message
CATEGORIES = (
    "TOO_QUICKLY", "TOO_SLOWLY", "FAILED_INSTRUCTIONS", "INCOMP_LONGITUDINAL", "FAILED_CHECK",
    "LOW_EFFORT", "MALINGERING", "NO_CODE", "BAD_CODE", "NO_DATA", "UNSUPP_DEVICE", "OTHER",
)  # fmt: skip
THANKS = "Thank you for taking part. We cannot approve this submission because "


@dataclass(frozen=True)
class Rules:
    catch_fail_fraction: float = 0.5
    min_median_seconds: float | None = None
    max_pasted: float | None = None  # fraction of the reasons with telemetry
    pasted_share: float = PASTED_SHARE


CONFIG_KEYS = {"max_catch_fail", "min_seconds", "max_pasted", "pasted_share"}
ANALYSIS_ONLY = {"max_near_identical", "similarity", "min_chars"}


def read_exclusion(path: Path) -> dict[str, float]:
    """The review's thresholds from a study config's `[exclusion]` table (.toml or .json)."""
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a valid study config ({exc})") from None
    table = data.get("exclusion", {}) if isinstance(data, dict) else None
    if not isinstance(table, dict):
        raise UserError(f"{path}: 'exclusion' must be a table")
    found: dict[str, float] = {}
    for key, value in table.items():
        if key not in CONFIG_KEYS | ANALYSIS_ONLY:
            raise UserError(f"{path}: exclusion.{key}: unknown setting")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise UserError(f"{path}: exclusion.{key}: must be a number >= 0, not {value!r}")
        if key in CONFIG_KEYS:
            found[key] = float(value)
    return found


def pasted_fraction(held: Held, share: float) -> float | None:
    """The fraction of the answers with telemetry whose reason was mostly pasted."""
    if not held.pastes:
        return None
    pasted = sum(1 for count, chars, length in held.pastes
                 if count > 0 and chars >= share * max(1, length))  # fmt: skip
    return pasted / len(held.pastes)


@dataclass(frozen=True)
class Decision:
    submission_id: str
    participant_id: str
    action: str  # APPROVE | REJECT
    category: str | None
    message: str | None
    why: str


@dataclass
class ReviewReport:
    decisions: list[Decision] = field(default_factory=list)
    sent: list[Decision] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def check_message(category: str, message: str) -> None:
    if category not in CATEGORIES:
        raise UserError(f"--category must be one of {', '.join(CATEGORIES)}")
    if len(message.strip()) < MIN_MESSAGE_CHARS:
        raise UserError(
            f"the rejection message must be at least {MIN_MESSAGE_CHARS} characters "
            "(Prolific shows it to the participant)"
        )


def _rejection(held: Held | None, rules: Rules) -> tuple[str, str, str] | None:
    """(category, message, why) of the first rule that rejects, or None."""
    if held is None or held.answers == 0:
        return (
            "NO_DATA",
            THANKS + "our study server received no answers from you in this session: no task "
            "of the study was answered.",
            "no answers",
        )
    failed = held.catch_total - held.catch_passed
    if held.catch_total and failed / held.catch_total > rules.catch_fail_fraction:
        return (
            "FAILED_CHECK",
            THANKS + f"{failed} of the {held.catch_total} attention-check tasks were answered "
            "against what they asked for, and the study accepts at most "
            f"{rules.catch_fail_fraction:.0%} of them failed.",
            f"failed {failed}/{held.catch_total} catch trials",
        )
    median = statistics.median(held.durations)
    if rules.min_median_seconds is not None and median < rules.min_median_seconds:
        return (
            "TOO_QUICKLY",
            THANKS + f"the tasks were answered too quickly to have been read: the median time "
            f"per task was {median:.0f} seconds, and the study needs at least "
            f"{rules.min_median_seconds:.0f} seconds.",
            f"median {median:.1f} s per task",
        )
    pasted = pasted_fraction(held, rules.pasted_share)
    if rules.max_pasted is not None and pasted is not None and pasted > rules.max_pasted:
        return (
            "LOW_EFFORT",
            THANKS + f"the explanation was pasted instead of typed in {pasted:.0%} of your "
            "tasks, and the study asks for an explanation in your own words in each of them.",
            f"{pasted:.0%} pasted reasons",
        )
    return None


def decide(submission_id: str, participant_id: str, held: Held | None, rules: Rules) -> Decision:
    rejection = _rejection(held, rules)
    if rejection is None:
        assert held is not None
        catch = f", {held.catch_passed}/{held.catch_total} catch trials" if held.catch_total else ""
        return Decision(
            submission_id, participant_id, "APPROVE", None, None, f"{held.answers} answers{catch}"
        )
    category, message, why = rejection
    check_message(category, message)
    return Decision(submission_id, participant_id, "REJECT", category, message, why)


def plan(engine: Engine, batch_name: str, rules: Rules) -> list[Decision]:
    """A decision for every submission awaiting review (as of the last sync)."""
    with engine.connect() as conn:
        row = study_row(conn, batch_name)
        require_synced(conn, row.id)
        held = held_sessions(conn, row.batch_id)
        waiting = conn.execute(
            select(ProlificSubmission.submission_id, ProlificSubmission.participant_id)
            .where(
                ProlificSubmission.prolific_study_id == row.id,
                ProlificSubmission.status == "AWAITING REVIEW",
            )
            .order_by(ProlificSubmission.completed_at, ProlificSubmission.submission_id)
        ).all()
    decisions = []
    for w in waiting:
        own = held.get((w.submission_id, w.participant_id))
        decisions.append(decide(w.submission_id, w.participant_id, own, rules))
    return decisions


def send(
    engine: Engine, client: ProlificClient, batch_name: str, decisions: list[Decision]
) -> ReviewReport:
    """Send each decision to Prolific, then record it (ours and the assignments)."""
    report = ReviewReport(decisions=list(decisions))
    with engine.connect() as conn:
        row = study_row(conn, batch_name)
    for decision in tqdm(decisions, desc="sending to Prolific", unit="submission", disable=None):
        body: dict[str, str] = {"action": decision.action}
        if decision.action == "REJECT":
            assert decision.category is not None and decision.message is not None
            body.update(message=decision.message, rejection_category=decision.category)
        try:
            client.request("POST", f"{SUBMISSIONS}{decision.submission_id}/transition/", body)
        except ProlificError as exc:
            report.failed.append(f"{decision.submission_id}: {exc}")
            continue
        status = "APPROVED" if decision.action == "APPROVE" else "REJECTED"
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(
                update(ProlificSubmission)
                .where(ProlificSubmission.submission_id == decision.submission_id)
                .values(
                    status=status,
                    decision=decision.action,
                    rejection_category=decision.category,
                    message=decision.message,
                    decided_at=now,
                )
            )
            key = (decision.submission_id, decision.participant_id)
            held = held_sessions(conn, row.batch_id).get(key)
            carry_review(conn, held, status, now)
        report.sent.append(decision)
    return report


def manual_rejection(
    engine: Engine, batch_name: str, submission_id: str, category: str, message: str
) -> Decision:
    """One rejection the researcher wrote; the submission must be awaiting review."""
    check_message(category, message)
    with engine.connect() as conn:
        row = study_row(conn, batch_name)
        found = conn.execute(
            select(ProlificSubmission.participant_id, ProlificSubmission.status).where(
                ProlificSubmission.submission_id == submission_id,
                ProlificSubmission.prolific_study_id == row.id,
            )
        ).first()
    if found is None:
        raise UserError(f"no submission {submission_id} in this study (hitserver prolific sync)")
    if found.status != "AWAITING REVIEW":
        raise UserError(f"submission {submission_id} is {found.status}, not AWAITING REVIEW")
    return Decision(
        submission_id, found.participant_id, "REJECT", category, message.strip(), "by hand"
    )
