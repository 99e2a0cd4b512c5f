"""MTurk through botocore's Stubber (real client, real parameter validation, no network) and
response fixtures in MTurk's format (tests/hitserver/fixtures)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from sqlalchemy import Engine, text

from hitserver.database import make_engine, upgrade
from hitserver.errors import UserError
from hitserver.loading import load_batch
from hitserver.mturk import sync as sync_module
from hitserver.mturk.client import SANDBOX_ENDPOINT
from hitserver.mturk.publish import HitSettings, publish
from hitserver.mturk.questions import MAX_QUESTION_BYTES, parse_answers
from hitserver.mturk.review import PAST, approve, balance, expire, reject
from hitserver.mturk.sync import sync

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HIT1 = "3SNR5F7R92QUAS0TF0GGAOKTGM0EIX"
HIT2 = "3X0EMNLXEPMYCAGHAHLDZ6V5ZAJPVK"
HIT_TYPE = "3HITTYPE0000000000000000000001"
EXCLUDE = "3EXCLUDEPREVIOUS00000000000001"
STATUSES = ["Submitted", "Approved", "Rejected"]
SETTINGS = HitSettings(
    title="Which robot?",
    description="Compare two explanations.",
    reward="0.10",
    external_url="https://study.example.org",
)
EXPECTED_QUALIFICATIONS = [
    {
        "QualificationTypeId": "000000000000000000L0",
        "Comparator": "GreaterThanOrEqualTo",
        "IntegerValues": [95],
        "ActionsGuarded": "Accept",
    },
    {
        "QualificationTypeId": "00000000000000000040",
        "Comparator": "GreaterThanOrEqualTo",
        "IntegerValues": [100],
        "ActionsGuarded": "Accept",
    },
    {
        "QualificationTypeId": "00000000000000000071",
        "Comparator": "In",
        "LocaleValues": [{"Country": "US"}],
        "ActionsGuarded": "Accept",
    },
    {
        "QualificationTypeId": EXCLUDE,
        "Comparator": "DoesNotExist",
        "ActionsGuarded": "DiscoverPreviewAndAccept",
    },
]


def recorded(name: str) -> dict[str, Any]:
    """A fixture response with its timestamps as datetimes (what botocore returns)."""
    body = json.loads((FIXTURES / name).read_text())
    for assignment in body.get("Assignments", []):
        for key, value in assignment.items():
            if key.endswith("Time"):
                assignment[key] = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return body


@pytest.fixture
def client() -> Any:
    return boto3.client(
        "mturk",
        region_name="us-east-1",
        endpoint_url=SANDBOX_ENDPOINT,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def engine(db_url: str, write_batch, tmp_path: Path) -> Engine:
    engine = make_engine(db_url)
    upgrade(engine)
    load_batch(engine, write_batch(tmp_path, "mb", 2), assignments_per_item=3)
    yield engine
    engine.dispose()


def manifest_sha(tmp_path: Path) -> str:
    return hashlib.sha256((tmp_path / "mb" / "manifest.json").read_bytes()).hexdigest()


def external(item: str) -> str:
    return (
        '<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkData'
        'Schemas/2006-07-14/ExternalQuestion.xsd"><ExternalURL>https://study.example.org/mturk/'
        f"items/{item}</ExternalURL><FrameHeight>0</FrameHeight></ExternalQuestion>"
    )


def stub_publish(stubber: Stubber, tmp_path: Path, hits: list[str]) -> None:
    stubber.add_response(
        "create_hit_type",
        {"HITTypeId": HIT_TYPE},
        {
            "AutoApprovalDelayInSeconds": 259200,
            "AssignmentDurationInSeconds": 1800,
            "Reward": "0.10",
            "Title": "Which robot?",
            "Keywords": "image, explanation, survey, robot",
            "Description": "Compare two explanations.",
            "QualificationRequirements": EXPECTED_QUALIFICATIONS,
        },
    )
    for number, hit in enumerate(hits, start=1):
        item = f"mb-{number:04d}"
        token = hashlib.sha256(f"{manifest_sha(tmp_path)}:{item}:sandbox".encode()).hexdigest()
        stubber.add_response(
            "create_hit_with_hit_type",
            {"HIT": {"HITId": hit, "HITTypeId": HIT_TYPE}},
            {
                "HITTypeId": HIT_TYPE,
                "MaxAssignments": 3,
                "LifetimeInSeconds": 604800,
                "Question": external(item),
                "RequesterAnnotation": item,
                "UniqueRequestToken": token,
            },
        )


def published(engine: Engine, client: Any, tmp_path: Path) -> None:
    settings = HitSettings(**{**SETTINGS.__dict__, "exclude_qualification": EXCLUDE})
    with Stubber(client) as stubber:
        stub_publish(stubber, tmp_path, [HIT1, HIT2])
        report = publish(engine, client, "mb", settings, production=False, show_progress=False)
        stubber.assert_no_pending_responses()
    assert (report.hit_type_id, report.created, report.existing) == (HIT_TYPE, 2, 0)


def test_publish_one_hit_type_one_hit_per_item_and_never_twice(engine, client, tmp_path):
    published(engine, client, tmp_path)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.key, h.hit_id, h.hit_type_id, h.question, h.production FROM mturk_hits h "
                "JOIN items i ON i.id = h.item_id ORDER BY i.key"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("mb-0001", HIT1, HIT_TYPE, "external", False),
        ("mb-0002", HIT2, HIT_TYPE, "external", False),
    ]
    # Everything is published: a second run calls nothing (the stubber has no responses).
    with Stubber(client):
        again = publish(engine, client, "mb", SETTINGS, production=False, show_progress=False)
    assert (again.created, again.existing) == (0, 2)


def test_a_retried_hit_is_found_by_its_request_token(engine, client, tmp_path):
    token = hashlib.sha256(f"{manifest_sha(tmp_path)}:mb-0001:sandbox".encode()).hexdigest()
    with Stubber(client) as stubber:
        stubber.add_response("create_hit_type", {"HITTypeId": HIT_TYPE})
        stubber.add_client_error(
            "create_hit_with_hit_type",
            service_error_code="RequestError",
            service_message=f"The HIT with ID {HIT1} already exists. "
            "(AWS.MechanicalTurk.HitAlreadyExists)",
            expected_params={
                "HITTypeId": HIT_TYPE,
                "MaxAssignments": 3,
                "LifetimeInSeconds": 604800,
                "Question": external("mb-0001"),
                "RequesterAnnotation": "mb-0001",
                "UniqueRequestToken": token,
            },
        )
        stubber.add_response(
            "get_hit", {"HIT": {"HITId": HIT1, "RequesterAnnotation": "mb-0001"}}, {"HITId": HIT1}
        )
        stubber.add_response("create_hit_with_hit_type", {"HIT": {"HITId": HIT2}})
        publish(engine, client, "mb", SETTINGS, production=False, show_progress=False)
        stubber.assert_no_pending_responses()
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT hit_id FROM mturk_hits ORDER BY hit_id")
        ).scalars().all() == [
            HIT1,
            HIT2,
        ]


def test_html_question_embeds_the_page_and_respects_64kb(engine, client, tmp_path):
    settings = HitSettings(
        title="t", description="d", reward="0.05", image_base_url="https://cdn.example.org/b"
    )
    with Stubber(client) as stubber:
        stubber.add_response("create_hit_type", {"HITTypeId": HIT_TYPE})
        questions = []
        for hit in (HIT1, HIT2):
            stubber.add_response("create_hit_with_hit_type", {"HIT": {"HITId": hit}})
        original = client.create_hit_with_hit_type

        def capture(**kwargs: Any) -> Any:
            questions.append(kwargs["Question"])
            return original(**kwargs)

        client.create_hit_with_hit_type = capture
        publish(engine, client, "mb", settings, production=False, show_progress=False)
    assert len(questions) == 2
    assert questions[0].startswith('<HTMLQuestion xmlns="http://mechanicalturk.amazonaws.com/')
    assert '<base href="https://cdn.example.org/b/mb/pages/">' in questions[0]
    assert 'id="hit-config"' not in questions[0]
    assert "ASSIGNMENT_ID_NOT_AVAILABLE" in questions[0]  # the page's own MTurk logic

    (tmp_path / "mb" / "pages" / "mb-0002.html").write_text(
        "<html><head><!-- hit-config --></head><body>" + "x" * MAX_QUESTION_BYTES + "</body></html>"
    )
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM mturk_hits"))
    with pytest.raises(UserError, match="mb-0002: the HTMLQuestion is .* over MTurk's 64 KB"):
        publish(engine, client, "mb", settings, production=False, show_progress=False)


def test_publish_refusals(engine, client, tmp_path):
    with pytest.raises(UserError, match="no batch 'nope'"):
        publish(engine, client, "nope", SETTINGS, production=False, show_progress=False)
    plain = HitSettings(title="t", description="d", reward="1", external_url="http://insecure")
    with pytest.raises(UserError, match="https"):
        publish(engine, client, "mb", plain, production=False, show_progress=False)
    published(engine, client, tmp_path)
    with pytest.raises(UserError, match="separate databases"):
        publish(engine, client, "mb", SETTINGS, production=True, show_progress=False)


def stub_sync(stubber: Stubber) -> None:
    base = {"MaxResults": 100, "AssignmentStatuses": STATUSES}
    stubber.add_response(
        "list_assignments_for_hit",
        recorded("list_assignments_hit1_page1.json"),
        {"HITId": HIT1, **base},
    )
    stubber.add_response(
        "list_assignments_for_hit",
        recorded("list_assignments_hit1_page2.json"),
        {"HITId": HIT1, **base, "NextToken": "page-2-token"},
    )
    stubber.add_response(
        "list_assignments_for_hit", recorded("list_assignments_hit2.json"), {"HITId": HIT2, **base}
    )


def test_sync_follows_pages_and_stores_what_mturk_has(engine, client, tmp_path):
    published(engine, client, tmp_path)
    with Stubber(client) as stubber:
        stub_sync(stubber)
        report = sync(engine, client, "mb", production=False, show_progress=False)
        stubber.assert_no_pending_responses()
    assert (report.fetched, report.added, report.updated, report.unchanged) == (6, 5, 0, 0)
    assert len(report.problems) == 1
    assert "3EO896NRAWVGM8M4HWKXQ2V3JHLJT5" in report.problems[0]
    assert "choice" in report.problems[0]
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT item_id, worker_id, platform, platform_assignment_id, choice, reason, "
                "accepted_at, submitted_at, duration_s, status FROM ratings "
                "ORDER BY item_id, submitted_at"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("mb-0001", "A1EXAMPLEWORKER1", "mturk", "3AMYWKA6YBLU92KSOGLNT786ESXO6Q", 4,
         "Robot B names the boat & the water.", "2026-03-02T10:00:00.000Z",
         "2026-03-02T10:00:42.000Z", 42.0, "submitted"),
        ("mb-0001", "A2EXAMPLEWORKER2", "mturk", "3BQU611VFPJEKYIKKY5HGR4J4XH991", 2,
         "A's masks <cover> the sky.", "2026-03-02T10:01:00.000Z", "2026-03-02T10:01:30.000Z",
         30.0, "approved"),
        ("mb-0001", "A3EXAMPLEWORKER3", "mturk", "3CFVK00FWLLY0VAFBQK0GZMDE8P6L9", 3,
         "Both look the same to me.", "2026-03-02T10:02:00.000Z", "2026-03-02T10:02:10.000Z",
         10.0, "submitted"),
        ("mb-0002", "A4EXAMPLEWORKER4", "mturk", "3DR23U6WE6J4RU3Q2LUQUHBG1NTET1", 1, "asdf",
         "2026-03-02T11:00:00.000Z", "2026-03-02T11:00:03.000Z", 3.0, "rejected"),
        ("mb-0002", "A1EXAMPLEWORKER1", "mturk", "3FK0YFRIJ0VMJ6V7LV0NAT1H8RDVTD", 5,
         "B, clearly: it shows the harbor.", "2026-03-02T11:02:00.000Z",
         "2026-03-02T11:02:55.000Z", 55.0, "submitted"),
    ]  # fmt: skip
    with engine.connect() as conn:
        slots = conn.execute(
            text("SELECT count(*) FROM item_slots WHERE holder IS NOT NULL")
        ).scalar()
    assert slots == 4  # the rejected answer holds no slot

    # Syncing again changes nothing; an approval made on MTurk arrives on the next sync.
    with Stubber(client) as stubber:
        stub_sync(stubber)
        again = sync(engine, client, "mb", production=False, show_progress=False)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 5)


def test_approve_reject_expire_balance(engine, client, tmp_path):
    published(engine, client, tmp_path)
    with Stubber(client) as stubber:
        stub_sync(stubber)
        sync(engine, client, "mb", production=False, show_progress=False)
    with Stubber(client) as stubber:
        stubber.add_response(
            "reject_assignment",
            {},
            {"AssignmentId": "3CFVK00FWLLY0VAFBQK0GZMDE8P6L9", "RequesterFeedback": "Too short."},
        )
        reject(engine, client, "3CFVK00FWLLY0VAFBQK0GZMDE8P6L9", "Too short.")
        for assignment in ("3AMYWKA6YBLU92KSOGLNT786ESXO6Q", "3FK0YFRIJ0VMJ6V7LV0NAT1H8RDVTD"):
            stubber.add_response(
                "approve_assignment",
                {},
                {"AssignmentId": assignment, "RequesterFeedback": "Thank you!"},
            )
        report = approve(engine, client, "mb", feedback="Thank you!")
        for hit in (HIT1, HIT2):
            stubber.add_response("update_expiration_for_hit", {}, {"HITId": hit, "ExpireAt": PAST})
        expired = expire(engine, client, "mb", production=False)
        stubber.add_response("get_account_balance", {"AvailableBalance": "10000.00"}, {})
        assert balance(client) == "10000.00"
        stubber.assert_no_pending_responses()
    assert report.done == ["3AMYWKA6YBLU92KSOGLNT786ESXO6Q", "3FK0YFRIJ0VMJ6V7LV0NAT1H8RDVTD"]
    assert expired.done == [HIT1, HIT2]
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(text("SELECT platform_assignment_id, status FROM ratings")).all()
        )
    assert statuses == {
        "3AMYWKA6YBLU92KSOGLNT786ESXO6Q": "approved",
        "3BQU611VFPJEKYIKKY5HGR4J4XH991": "approved",
        "3CFVK00FWLLY0VAFBQK0GZMDE8P6L9": "rejected",
        "3DR23U6WE6J4RU3Q2LUQUHBG1NTET1": "rejected",
        "3FK0YFRIJ0VMJ6V7LV0NAT1H8RDVTD": "approved",
    }
    with pytest.raises(UserError, match="is rejected, not submitted"):
        reject(engine, client, "3CFVK00FWLLY0VAFBQK0GZMDE8P6L9", "again")
    with pytest.raises(UserError, match="feedback is required"):
        reject(engine, client, "3AMYWKA6YBLU92KSOGLNT786ESXO6Q", " ")


def test_parse_answers_reads_externalsubmit_xml() -> None:
    xml = (FIXTURES / "answer_externalsubmit.xml").read_text()
    assert parse_answers(xml) == {"choice": "4", "reason": "Robot B names the boat & the water."}
    with pytest.raises(ValueError, match="not valid XML"):
        parse_answers("<QuestionFormAnswers")


def listing(name: str, statuses: dict[str, str], extra: list[dict[str, Any]] = ()) -> dict:
    """A recorded `list_assignments_for_hit` page as MTurk shows it later: some assignments in
    another status (an approval sets ApprovalTime), `extra` assignments first."""
    page = recorded(name)
    for assignment in page["Assignments"]:
        status = statuses.get(assignment["AssignmentId"])
        if status is not None:
            assignment["AssignmentStatus"] = status
            if status == "Approved":
                assignment["ApprovalTime"] = datetime.fromisoformat("2026-03-06T08:00:00+00:00")
    page["Assignments"] = [*extra, *page["Assignments"]]
    page["NumResults"] = len(page["Assignments"])
    return page


def sync_later(engine: Engine, client: Any, statuses: dict[str, str], extra=()) -> Any:
    """A second `sync`, MTurk now showing `statuses` (and `extra` assignments first on HIT1's
    page); every stubbed call must be made."""
    base = {"MaxResults": 100, "AssignmentStatuses": STATUSES}
    with Stubber(client) as stubber:
        stubber.add_response(
            "list_assignments_for_hit",
            listing("list_assignments_hit1_page1.json", statuses, list(extra)),
            {"HITId": HIT1, **base},
        )
        stubber.add_response(
            "list_assignments_for_hit",
            listing("list_assignments_hit1_page2.json", statuses),
            {"HITId": HIT1, **base, "NextToken": "page-2-token"},
        )
        stubber.add_response(
            "list_assignments_for_hit",
            listing("list_assignments_hit2.json", statuses),
            {"HITId": HIT2, **base},
        )
        report = sync(engine, client, "mb", production=False, show_progress=False)
        stubber.assert_no_pending_responses()
    return report


def synced_then_rejected(engine: Engine, client: Any, tmp_path: Path) -> None:
    """Published and synced; then 3CFVK... (worker A3, item mb-0001) rejected here and on
    MTurk, which frees its slot. 3DR23... (mb-0002) was rejected on MTurk before the sync."""
    published(engine, client, tmp_path)
    with Stubber(client) as stubber:
        stub_sync(stubber)
        sync(engine, client, "mb", production=False, show_progress=False)
        stubber.add_response(
            "reject_assignment",
            {},
            {"AssignmentId": "3CFVK00FWLLY0VAFBQK0GZMDE8P6L9", "RequesterFeedback": "Too short."},
        )
        reject(engine, client, "3CFVK00FWLLY0VAFBQK0GZMDE8P6L9", "Too short.")
        stubber.assert_no_pending_responses()


def slot_rows(engine: Engine) -> list[tuple[Any, ...]]:
    """(MTurk assignment, status, holds its slot, approved_at) of every MTurk assignment."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT a.platform_assignment_id, a.status, s.holder IS NOT NULL, a.approved_at "
                "FROM assignments a LEFT JOIN item_slots s "
                "ON s.item_id = a.item_id AND s.slot = a.slot AND s.holder = a.id "
                "ORDER BY a.platform_assignment_id"
            )
        ).all()
    return [(r[0], r[1], bool(r[2]), str(r[3])[:19] if r[3] else None) for r in rows]


def test_a_rejection_overturned_on_mturk_takes_a_slot_again(engine, client, tmp_path):
    synced_then_rejected(engine, client, tmp_path)
    overturned = {
        "3CFVK00FWLLY0VAFBQK0GZMDE8P6L9": "Approved",
        "3DR23U6WE6J4RU3Q2LUQUHBG1NTET1": "Approved",
    }
    report = sync_later(engine, client, overturned)
    assert (report.fetched, report.added, report.updated, report.unchanged) == (6, 0, 2, 3)
    assert len(report.problems) == 1 and "3EO896NRAWVGM8M4HWKXQ2V3JHLJT5" in report.problems[0]
    assert slot_rows(engine) == [
        ("3AMYWKA6YBLU92KSOGLNT786ESXO6Q", "submitted", True, None),
        ("3BQU611VFPJEKYIKKY5HGR4J4XH991", "approved", True, "2026-03-03 09:00:00"),
        ("3CFVK00FWLLY0VAFBQK0GZMDE8P6L9", "approved", True, "2026-03-06 08:00:00"),
        ("3DR23U6WE6J4RU3Q2LUQUHBG1NTET1", "approved", True, "2026-03-06 08:00:00"),
        ("3FK0YFRIJ0VMJ6V7LV0NAT1H8RDVTD", "submitted", True, None),
    ]
    with engine.connect() as conn:
        held = conn.execute(
            text("SELECT count(*) FROM item_slots WHERE holder IS NOT NULL")
        ).scalar()
    assert held == 5


def test_an_overturned_rejection_without_a_free_slot_is_reported(engine, client, tmp_path):
    synced_then_rejected(engine, client, tmp_path)
    # Before MTurk shows the approval, a new worker took the slot the rejection freed.
    newcomer = {
        **recorded("list_assignments_hit1_page1.json")["Assignments"][0],
        "AssignmentId": "3NEWCOMER00000000000000000000X",
        "WorkerId": "A6EXAMPLEWORKER6",
    }
    report = sync_later(engine, client, {"3CFVK00FWLLY0VAFBQK0GZMDE8P6L9": "Approved"}, [newcomer])
    # The newcomer is added, the rest of HIT1 and all of HIT2 still sync.
    assert (report.fetched, report.added, report.updated, report.unchanged) == (7, 1, 0, 4)
    assert report.problems[0] == (
        f"HIT {HIT1}: assignment 3CFVK00FWLLY0VAFBQK0GZMDE8P6L9: approved on MTurk after it was "
        "rejected here, but every slot of its item is taken now; it stays rejected here"
    )
    assert len(report.problems) == 2  # and the malformed answer of HIT2, as always
    rows = {row[0]: row[1:3] for row in slot_rows(engine)}
    assert rows["3CFVK00FWLLY0VAFBQK0GZMDE8P6L9"] == ("rejected", False)
    assert rows["3NEWCOMER00000000000000000000X"] == ("submitted", True)


def test_a_database_refusal_is_not_retried_and_the_sync_goes_on(
    engine, client, tmp_path, monkeypatch
):
    synced_then_rejected(engine, client, tmp_path)
    calls: list[str] = []

    def approve_without_a_slot(conn, assignment_id, item_id, status, now) -> bool:
        # What sync did before reinstate existed: a CHECK violation, not a lost race.
        calls.append(assignment_id)
        conn.execute(
            text("UPDATE assignments SET status = 'approved', approved_at = :t WHERE id = :id"),
            {"t": now, "id": assignment_id},
        )
        return True

    monkeypatch.setattr(sync_module, "reinstate", approve_without_a_slot)
    report = sync_later(engine, client, {"3CFVK00FWLLY0VAFBQK0GZMDE8P6L9": "Approved"})
    assert len(calls) == 1  # refused at once, not retried until "busy"
    assert (report.fetched, report.added, report.updated, report.unchanged) == (6, 0, 0, 4)
    refused = report.problems[0]
    assert refused.startswith(
        f"HIT {HIT1}: assignment 3CFVK00FWLLY0VAFBQK0GZMDE8P6L9: the database refused it ("
    )
    assert "ck_assignments_holds_slot" in refused and refused.endswith("); not stored")
    assert {row[0]: row[1] for row in slot_rows(engine)}["3CFVK00FWLLY0VAFBQK0GZMDE8P6L9"] == (
        "rejected"
    )


def test_the_mturk_command_says_it_closed(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from hitserver.cli import main

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["mturk", "approve", "typo", "--db", db]) == 2
    captured = capsys.readouterr()
    assert captured.out.strip() == (
        "hitserver mturk: Amazon Mechanical Turk closed on 2026-09-30; this is its sandbox, "
        "kept for tests and demos"
    )
    assert captured.err.strip() == "hitserver mturk: error: no batch named 'typo' is loaded"
    argv = ["mturk", "publish", "mb", "--reward", "0.10", "--external-url", "https://a.org"]
    assert main([*argv, "--production", "--db", db]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before anything else
    assert captured.err.strip() == (
        "hitserver mturk: error: Amazon Mechanical Turk closed on 2026-09-30; --production is "
        "refused (real studies: hitserver prolific ...)"
    )
