"""`hitserver prolific bonus`: a bonus for every approved submission, paid exactly once.

Prolific's bonuses take two calls: `POST /api/v1/submissions/bonus-payments/` sets up a bulk
payment (`study_id`, `csv_bonuses` = "<submission id>,<amount>" lines) without paying it, and
`POST /api/v1/bulk-bonus-payments/{id}/pay/` pays it. The pay call is not idempotent: sent
twice, it pays twice. So:

1. the bonus and its lines (one per submission at most: the primary key) are committed before
   the set-up call; a set-up whose answer was lost is simply made again (an unpaid set-up costs
   nothing) and its id recorded;
2. `pay_requested_at` is committed before the pay call, claimed with a conditional UPDATE, and
   a bonus with it set is never paid again by this tool;
3. a pay call answered with a refusal (4xx, or rate limiting that outlasted the retries) was not
   carried out: the claim is withdrawn so a later run pays; one whose answer was lost (timeout,
   5xx) stays claimed, and later runs check the submissions' `bonus_payments` to confirm it.

Dry-run by default (`--send` to act).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from tqdm import tqdm

from hitserver.errors import UserError
from hitserver.models import ProlificBonus, ProlificBonusLine, ProlificSubmission
from hitserver.prolific.client import ProlificClient, ProlificError, Unsure
from hitserver.prolific.studies import study_row
from hitserver.prolific.sync import require_synced

SET_UP = "/api/v1/submissions/bonus-payments/"
PAY = "/api/v1/bulk-bonus-payments/{}/pay/"
SUBMISSION = "/api/v1/submissions/{}/"
MAX_BONUS_CENTS = 100_00


@dataclass
class BonusReport:
    planned: list[tuple[str, str]] = field(default_factory=list)  # (submission, participant)
    cents: int = 0
    created: list[str] = field(default_factory=list)
    paid: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def amount_text(cents: int) -> str:
    """Prolific's CSV amounts are in the currency's main unit: 125 cents -> "1.25"."""
    return f"{cents // 100}.{cents % 100:02d}"


def _candidates(engine: Engine, study_row_id: int) -> list[Any]:
    with engine.connect() as conn:
        require_synced(conn, study_row_id)
        return list(
            conn.execute(
                select(ProlificSubmission.submission_id, ProlificSubmission.participant_id)
                .outerjoin(
                    ProlificBonusLine,
                    ProlificBonusLine.submission_id == ProlificSubmission.submission_id,
                )
                .where(
                    ProlificSubmission.prolific_study_id == study_row_id,
                    ProlificSubmission.status == "APPROVED",
                    ProlificBonusLine.submission_id.is_(None),
                )
                .order_by(ProlificSubmission.submission_id)
            ).all()
        )


def _record_new(engine: Engine, study_row_id: int, rows: list[Any], cents: int) -> None:
    csv = "".join(f"{r.submission_id},{amount_text(cents)}\n" for r in rows)
    with engine.begin() as conn:
        bonus_id = conn.execute(
            insert(ProlificBonus).returning(ProlificBonus.id),
            {
                "prolific_study_id": study_row_id,
                "csv_bonuses": csv,
                "amount_cents": cents * len(rows),
                "created_at": datetime.now(UTC),
            },
        ).scalar_one()
        conn.execute(
            insert(ProlificBonusLine),
            [{"submission_id": r.submission_id, "bonus_id": bonus_id, "amount_cents": cents}
             for r in rows],
        )  # fmt: skip


def _bonuses(engine: Engine, study_row_id: int) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(ProlificBonus)
                .where(ProlificBonus.prolific_study_id == study_row_id)
                .order_by(ProlificBonus.id)
            ).all()
        )


def _set_up(engine: Engine, client: ProlificClient, study_id: str, bonus: Any) -> str:
    answer = client.request(
        "POST", SET_UP, {"study_id": study_id, "csv_bonuses": bonus.csv_bonuses}
    )
    bulk_id = str(answer["id"])
    with engine.begin() as conn:
        conn.execute(
            update(ProlificBonus).where(ProlificBonus.id == bonus.id).values(bulk_id=bulk_id)
        )
    return bulk_id


def _claim(engine: Engine, bonus_id: int) -> bool:
    """Commit that the pay call is about to be made; False if someone made it already."""
    with engine.begin() as conn:
        done = conn.execute(
            update(ProlificBonus)
            .where(ProlificBonus.id == bonus_id, ProlificBonus.pay_requested_at.is_(None))
            .values(pay_requested_at=datetime.now(UTC))
        )
        return done.rowcount == 1


def _pay(
    engine: Engine, client: ProlificClient, bonus_id: int, bulk_id: str, report: BonusReport
) -> None:
    if not _claim(engine, bonus_id):
        return
    try:
        client.request("POST", PAY.format(bulk_id), safe=False)
    except Unsure as exc:
        report.notes.append(
            f"bonus {bulk_id}: the pay call was made but its answer was lost ({exc}); it will not "
            "be made again: later runs check the submissions' bonus payments"
        )
        return
    except ProlificError:
        with engine.begin() as conn:  # refused, so not paid: a later run may pay it
            conn.execute(
                update(ProlificBonus)
                .where(ProlificBonus.id == bonus_id)
                .values(pay_requested_at=None)
            )
        raise
    with engine.begin() as conn:
        conn.execute(
            update(ProlificBonus)
            .where(ProlificBonus.id == bonus_id)
            .values(paid_at=datetime.now(UTC))
        )
    report.paid.append(bulk_id)


def _confirm(engine: Engine, client: ProlificClient, bonus: Any, report: BonusReport) -> None:
    """Whether every line of a paid bonus shows on its submission's `bonus_payments`."""
    with engine.connect() as conn:
        lines = conn.execute(
            select(ProlificBonusLine.submission_id, ProlificBonusLine.amount_cents).where(
                ProlificBonusLine.bonus_id == bonus.id
            )
        ).all()
    for line in tqdm(
        lines, desc=f"checking bonus {bonus.bulk_id}", unit="submission", disable=None
    ):
        payments = client.get(SUBMISSION.format(line.submission_id)).get("bonus_payments") or []
        if line.amount_cents not in payments:
            if bonus.paid_at is None:
                report.notes.append(
                    f"bonus {bonus.bulk_id}: not (yet) shown as paid on Prolific; the pay call "
                    f"was made at {bonus.pay_requested_at:%Y-%m-%d %H:%M} UTC and is not repeated"
                )
            return
    with engine.begin() as conn:
        conn.execute(
            update(ProlificBonus)
            .where(ProlificBonus.id == bonus.id)
            .values(confirmed_at=datetime.now(UTC))
        )
    report.confirmed.append(str(bonus.bulk_id))


def bonus(
    engine: Engine, client: ProlificClient, batch_name: str, cents: int, *, send: bool
) -> BonusReport:
    if not 1 <= cents <= MAX_BONUS_CENTS:
        raise UserError(f"--cents must be between 1 and {MAX_BONUS_CENTS}")
    with engine.connect() as conn:
        row = study_row(conn, batch_name)
    report = BonusReport(cents=cents)
    fresh = _candidates(engine, row.id)
    report.planned = [(r.submission_id, r.participant_id) for r in fresh]
    if not send:
        return report
    if fresh:
        _record_new(engine, row.id, fresh, cents)
    for bonus_row in _bonuses(engine, row.id):
        bulk_id = bonus_row.bulk_id
        if bulk_id is None:
            bulk_id = _set_up(engine, client, row.study_id, bonus_row)
            report.created.append(bulk_id)
        if bonus_row.pay_requested_at is None:
            _pay(engine, client, bonus_row.id, bulk_id, report)
    for bonus_row in _bonuses(engine, row.id):
        if bonus_row.pay_requested_at is not None and bonus_row.confirmed_at is None:
            _confirm(engine, client, bonus_row, report)
    return report
