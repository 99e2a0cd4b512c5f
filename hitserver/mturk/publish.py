"""`hitserver mturk publish`: one HIT type, then one HIT per item with MaxAssignments = N.

Each HIT carries the item id in RequesterAnnotation and a UniqueRequestToken derived from the
manifest's hash, the item and the marketplace, so re-running after a network failure never
creates a second HIT for an item (MTurk answers HitAlreadyExists with the HIT's id instead).
Every created HIT is committed at once, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import Engine, insert, select
from tqdm import tqdm

from hitserver.errors import UserError
from hitserver.models import Batch, Item, MturkHit
from hitserver.mturk.questions import external_question, html_question
from hitserver.pages import fill

APPROVAL_RATE = "000000000000000000L0"
NUMBER_APPROVED = "00000000000000000040"
LOCALE = "00000000000000000071"
HIT_ID_RE = re.compile(r"\b([A-Z0-9]{30})\b")


@dataclass(frozen=True)
class HitSettings:
    """What a HIT looks like to workers and who may take it."""

    title: str
    description: str
    reward: str
    keywords: str = "image, explanation, survey, robot"
    assignment_duration_s: int = 1800
    lifetime_s: int = 7 * 24 * 3600
    auto_approval_delay_s: int = 3 * 24 * 3600
    frame_height: int = 0
    min_approval_rate: int | None = 95
    min_approved: int | None = 100
    locales: tuple[str, ...] = ("US",)
    exclude_qualification: str | None = None
    external_url: str | None = None
    image_base_url: str | None = None


@dataclass(frozen=True)
class PublishReport:
    hit_type_id: str
    created: int
    existing: int


def qualifications(settings: HitSettings) -> list[dict[str, Any]]:
    """System qualifications (MTurk's documented ids) and an optional exclusion qualification:
    workers holding it (e.g. everyone from an earlier batch) cannot even see the HITs."""
    requirements: list[dict[str, Any]] = []
    if settings.min_approval_rate is not None:
        requirements.append(
            {
                "QualificationTypeId": APPROVAL_RATE,
                "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [settings.min_approval_rate],
                "ActionsGuarded": "Accept",
            }
        )
    if settings.min_approved is not None:
        requirements.append(
            {
                "QualificationTypeId": NUMBER_APPROVED,
                "Comparator": "GreaterThanOrEqualTo",
                "IntegerValues": [settings.min_approved],
                "ActionsGuarded": "Accept",
            }
        )
    if settings.locales:
        requirements.append(
            {
                "QualificationTypeId": LOCALE,
                "Comparator": "In",
                "LocaleValues": [{"Country": country} for country in settings.locales],
                "ActionsGuarded": "Accept",
            }
        )
    if settings.exclude_qualification:
        requirements.append(
            {
                "QualificationTypeId": settings.exclude_qualification,
                "Comparator": "DoesNotExist",
                "ActionsGuarded": "DiscoverPreviewAndAccept",
            }
        )
    return requirements


def request_token(manifest_sha256: str, item_key: str, production: bool) -> str:
    """Deterministic UniqueRequestToken (64 hex characters, MTurk's limit)."""
    market = "production" if production else "sandbox"
    return hashlib.sha256(f"{manifest_sha256}:{item_key}:{market}".encode()).hexdigest()


def _question(settings: HitSettings, batch: Any, item: Any) -> tuple[str, str]:
    if settings.external_url:
        url = f"{settings.external_url.rstrip('/')}/mturk/items/{item.key}"
        return "external", external_question(url, settings.frame_height)
    if not settings.image_base_url or not settings.image_base_url.startswith("https://"):
        raise UserError(
            "give --external-url https://YOUR-SERVER, or --html with --image-base-url "
            "https://... where BATCH/images/ is published"
        )
    html = (Path(batch.path) / item.page).read_text(encoding="utf-8")
    base = f"{settings.image_base_url.rstrip('/')}/{batch.name}/pages/"
    return "html", html_question(fill(html, base, None), settings.frame_height, item.key)


def _existing_hit(client: Any, exc: ClientError, item_key: str) -> str | None:
    """The HIT a repeated UniqueRequestToken refers to, checked against the item id."""
    error = exc.response.get("Error", {})
    text = f"{error.get('Code', '')} {error.get('Message', '')}"
    if "HitAlreadyExists" not in text:
        return None
    match = HIT_ID_RE.search(error.get("Message", ""))
    if match is None:
        return None
    hit = client.get_hit(HITId=match.group(1))["HIT"]
    return match.group(1) if hit.get("RequesterAnnotation") == item_key else None


def publish(
    engine: Engine,
    client: Any,
    batch_name: str,
    settings: HitSettings,
    *,
    production: bool,
    show_progress: bool = True,
) -> PublishReport:
    with engine.connect() as conn:
        batch = conn.execute(
            select(
                Batch.id, Batch.name, Batch.path, Batch.manifest_sha256, Batch.assignments_per_item
            ).where(Batch.name == batch_name)
        ).first()
        if batch is None:
            raise UserError(f"no batch {batch_name!r} is loaded (hitserver load BATCH first)")
        other = conn.execute(
            select(MturkHit.hit_id)
            .join(Item, Item.id == MturkHit.item_id)
            .where(Item.batch_id == batch.id, MturkHit.production != production)
            .limit(1)
        ).scalar()
        if other is not None:
            raise UserError(
                f"batch {batch_name!r} already has HITs on the "
                f"{'sandbox' if production else 'production'} marketplace in this database; "
                "keep sandbox pilots and the real study in separate databases (--db)"
            )
        items = conn.execute(
            select(Item.id, Item.key, Item.page)
            .where(Item.batch_id == batch.id)
            .order_by(Item.position)
        ).all()
        published = dict(
            conn.execute(
                select(MturkHit.item_id, MturkHit.hit_type_id)
                .join(Item, Item.id == MturkHit.item_id)
                .where(Item.batch_id == batch.id, MturkHit.production == production)
            ).all()
        )
    todo = [item for item in items if item.id not in published]
    if not todo:
        return PublishReport(next(iter(published.values()), ""), 0, len(published))
    questions = [_question(settings, batch, item) for item in todo]

    hit_type_id = client.create_hit_type(
        AutoApprovalDelayInSeconds=settings.auto_approval_delay_s,
        AssignmentDurationInSeconds=settings.assignment_duration_s,
        Reward=settings.reward,
        Title=settings.title,
        Keywords=settings.keywords,
        Description=settings.description,
        QualificationRequirements=qualifications(settings),
    )["HITTypeId"]

    for item, (kind, question) in tqdm(
        list(zip(todo, questions, strict=True)),
        desc=f"publishing {batch_name}",
        unit="HIT",
        disable=not show_progress,
    ):
        try:
            hit_id = client.create_hit_with_hit_type(
                HITTypeId=hit_type_id,
                MaxAssignments=batch.assignments_per_item,
                LifetimeInSeconds=settings.lifetime_s,
                Question=question,
                RequesterAnnotation=item.key,
                UniqueRequestToken=request_token(batch.manifest_sha256, item.key, production),
            )["HIT"]["HITId"]
        except ClientError as exc:
            found = _existing_hit(client, exc, item.key)
            if found is None:
                raise UserError(f"MTurk refused the HIT for {item.key}: {exc}") from exc
            hit_id = found
        with engine.begin() as conn:
            conn.execute(
                insert(MturkHit),
                {
                    "hit_id": hit_id,
                    "item_id": item.id,
                    "production": production,
                    "hit_type_id": hit_type_id,
                    "question": kind,
                    "created_at": datetime.now(UTC),
                },
            )
    return PublishReport(hit_type_id, len(todo), len(published))
