"""`hitserver prolific` against a real HTTP stand-in for Prolific's API
(tests/hitserver/prolific_standin.py): the client's retries and one-line errors, publishing
once, sync with mismatches both ways, review by the rules, bonuses paid exactly once. The
participants answer through the app's real `/prolific` entry (Flask test client)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import prolific_participant as participant
import prolific_standin as standin_module
import pytest
from sqlalchemy import Engine, select, text

from hitserver.cli import main
from hitserver.errors import UserError
from hitserver.loading import load_batch
from hitserver.models import ProlificBonus, ProlificStudy
from hitserver.prolific import bonus as bonus_module
from hitserver.prolific import review, studies
from hitserver.prolific.client import ProlificClient, ProlificError, Unsure
from hitserver.prolific.sync import sync

HERE = Path(__file__).resolve().parent
OK, FAIL = "OK-CODE-1", "FAIL-CODE-1"
SETTINGS = studies.StudySettings(
    url="https://study.example.org",
    reward_cents=150,
    estimated_minutes=5,
    places=6,
    completion_code=OK,
    failed_code=FAIL,
)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def standin() -> Any:
    with standin_module.running_standin(page_size=2) as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(standin: Any, sleeps: Sleeps) -> ProlificClient:
    return ProlificClient(
        standin_module.TOKEN, standin.url, timeout_s=1.0, backoff_s=0.01, sleep=sleeps
    )


@pytest.fixture
def app(make_app, write_batch, tmp_path: Path) -> Any:
    app = make_app(prolific_completion_code=OK, prolific_failed_code=FAIL)
    batch = write_batch(tmp_path, "pb", 3, catch={1: [1, 2]})
    load_batch(app.extensions["hitserver"].engine, batch, assignments_per_item=4)
    return app


@pytest.fixture
def engine(app: Any) -> Engine:
    return app.extensions["hitserver"].engine


# --- the client ----------------------------------------------------------------------------


def test_a_wrong_token_is_one_line(standin: Any) -> None:
    wrong = ProlificClient("not-the-token", standin.url, sleep=Sleeps())
    with pytest.raises(ProlificError) as refused:
        wrong.get("/api/v1/studies/")
    assert str(refused.value) == (
        "Prolific refused the API token (401) for GET /api/v1/studies/: check PROLIFIC_API_TOKEN"
    )
    assert standin.calls("GET", "/api/v1/studies/") == 1  # not retried


def test_field_errors_are_one_line(client: ProlificClient, standin: Any) -> None:
    with pytest.raises(ProlificError) as refused:
        client.request("POST", "/api/v1/studies/", {"name": "x", "reward": "150", "colour": 1})
    message = str(refused.value)
    assert "\n" not in message and refused.value.status == 400
    assert message.startswith("Prolific refused POST /api/v1/studies/ (400): ")
    for part in (
        "colour: Unknown field.",
        "reward: Must be a positive integer.",
        "description: This field is required.",
        "completion_codes: This field is required.",
    ):
        assert part in message
    assert standin.state.studies == {}


def test_429_waits_for_retry_after(client: ProlificClient, standin: Any, sleeps: Sleeps) -> None:
    standin.inject("GET", "/api/v1/studies/$", status=429, retry_after="3", count=2)
    assert client.get("/api/v1/studies/") == {"results": []}
    assert sleeps == [3.0, 3.0]
    assert standin.calls("GET", "/api/v1/studies/$") == 3


def test_5xx_backs_off_then_gives_up(client: ProlificClient, standin: Any, sleeps: Sleeps) -> None:
    standin.inject("GET", "/api/v1/studies/$", status=500, count=100)
    with pytest.raises(ProlificError) as gave_up:
        client.get("/api/v1/studies/")
    assert str(gave_up.value) == (
        "Prolific: GET /api/v1/studies/: gave up after 5 attempts (HTTP 500)"
    )
    assert sleeps == [0.01, 0.02, 0.04, 0.08]


def test_a_timeout_is_retried_for_a_safe_request(client: ProlificClient, standin: Any) -> None:
    standin.inject("GET", "/api/v1/studies/$", delay_s=1.5)
    assert client.get("/api/v1/studies/") == {"results": []}
    assert standin.calls("GET", "/api/v1/studies/$") == 2


def test_an_unsafe_request_is_not_repeated_after_a_5xx(
    client: ProlificClient, standin: Any
) -> None:
    standin.inject("POST", "/api/v1/studies/$", status=503)
    with pytest.raises(Unsure) as unsure:
        client.request("POST", "/api/v1/studies/", {}, safe=False)
    assert "may or may not have been done" in str(unsure.value)
    assert standin.calls("POST", "/api/v1/studies/$") == 1


def test_settings_from_the_environment() -> None:
    with pytest.raises(UserError, match="set PROLIFIC_API_TOKEN"):
        ProlificClient.from_env({})
    assert ProlificClient.from_env({"PROLIFIC_API_TOKEN": "t"}).base_url == (
        "https://api.prolific.com"
    )
    with pytest.raises(UserError, match="must use https://"):
        ProlificClient.from_env({"PROLIFIC_API_TOKEN": "t", "PROLIFIC_API_URL": "http://x.org"})


# --- publish, status, pause, start, stop ---------------------------------------------------


def test_publish_creates_one_study_and_publishes_it(
    engine: Engine, client: ProlificClient, standin: Any
) -> None:
    done = studies.publish(engine, client, "pb", SETTINGS)
    assert (done.created, done.found_again, done.status) == (True, False, "ACTIVE")
    [study] = standin.state.studies.values()
    assert study["id"] == done.study_id
    assert study["external_study_url"] == (
        "https://study.example.org/prolific?PROLIFIC_PID={{%PROLIFIC_PID%}}"
        "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}&batch=pb"
    )
    assert study["completion_codes"] == [
        {"code": OK, "code_type": "COMPLETED", "actions": [{"action": "MANUALLY_REVIEW"}]},
        {"code": FAIL, "code_type": "FAILED_ATTENTION_CHECK",
         "actions": [{"action": "MANUALLY_REVIEW"}]},
    ]  # fmt: skip
    assert (study["reward"], study["estimated_completion_time"]) == (150, 5)
    assert (study["total_available_places"], study["prolific_id_option"]) == (6, "url_parameters")

    again = studies.publish(engine, client, "pb", SETTINGS)
    assert (again.study_id, again.created, again.status) == (done.study_id, False, "ACTIVE")
    assert len(standin.state.studies) == 1
    assert standin.calls("POST", "/api/v1/studies/$") == 1
    assert standin.calls("POST", r"/api/v1/studies/\w+/transition/") == 1


def test_a_lost_create_answer_finds_the_draft_again(
    engine: Engine, client: ProlificClient, standin: Any
) -> None:
    standin.inject("POST", "/api/v1/studies/$", drop=True)
    done = studies.publish(engine, client, "pb", SETTINGS, draft=True)
    assert (done.created, done.found_again, done.status) == (False, True, "UNPUBLISHED")
    assert list(standin.state.studies) == [done.study_id]
    with engine.connect() as conn:
        assert conn.execute(select(ProlificStudy.study_id)).scalar() == done.study_id


def test_a_crash_between_create_and_record_is_recovered(
    engine: Engine, client: ProlificClient, standin: Any
) -> None:
    # The pending row was committed, the draft created, and then the process died.
    row = studies._pending_row(engine, "pb", SETTINGS)
    assert (row.study_id, row.status) == (None, "PENDING")
    created = client.request("POST", "/api/v1/studies/", json.loads(row.request))
    done = studies.publish(engine, client, "pb", SETTINGS)
    assert (done.study_id, done.created, done.found_again) == (created["id"], False, True)
    assert len(standin.state.studies) == 1
    assert standin.state.studies[created["id"]]["status"] == "ACTIVE"


def test_draft_status_pause_start_stop(engine: Engine, client: ProlificClient, standin: Any):
    draft = studies.publish(engine, client, "pb", SETTINGS, draft=True)
    assert draft.status == "UNPUBLISHED"
    assert studies.status(engine, client, "pb").status == "UNPUBLISHED"
    assert studies.publish(engine, client, "pb", SETTINGS).status == "ACTIVE"
    assert studies.change(engine, client, "pb", "PAUSE") == "PAUSED"
    assert studies.change(engine, client, "pb", "PAUSE") == "PAUSED"  # already: no call
    assert standin.calls("POST", r"/api/v1/studies/\w+/transition/") == 2
    assert studies.change(engine, client, "pb", "START") == "ACTIVE"
    standin.enter(draft.study_id, "p1")
    got = studies.status(engine, client, "pb")
    assert (got.status, got.places_taken, got.places) == ("ACTIVE", 1, 6)
    assert studies.change(engine, client, "pb", "STOP") == "AWAITING REVIEW"
    with pytest.raises(UserError, match="cannot pause"):
        studies.change(engine, client, "pb", "PAUSE")
    with engine.connect() as conn:
        assert conn.execute(select(ProlificStudy.status)).scalar() == "AWAITING REVIEW"


def test_publish_refusals(engine: Engine, client: ProlificClient) -> None:
    with pytest.raises(UserError, match="no batch 'nope' is loaded"):
        studies.publish(engine, client, "nope", SETTINGS)
    plain = studies.StudySettings(**{**SETTINGS.__dict__, "url": "http://study.example.org"})
    with pytest.raises(UserError, match="public https://"):
        studies.publish(engine, client, "pb", plain)
    with pytest.raises(UserError, match="has no Prolific study"):
        studies.status(engine, client, "pb")


# --- sync, review, bonus -------------------------------------------------------------------


def enter_and_answer(app: Any, standin: Any, study_id: str, pid: str, choice: int) -> tuple:
    sid, url = standin.enter(study_id, pid)
    code = participant.answer_all(
        participant.flask_transport(app), url, choice, f"{pid} reads the picture"
    )
    return sid, code


def statuses(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT platform_assignment_id, status FROM assignments "
                "ORDER BY platform_assignment_id, status"
            )
        ).all()
    found: dict[str, list[str]] = {}
    for session, status in rows:
        found.setdefault(session, []).append(status)
    return found


@pytest.fixture
def study(app: Any, engine: Engine, client: ProlificClient, standin: Any) -> dict[str, str]:
    """Published; `good1` and `good2` pass the catch trial, `bad` fails it, `ghost` finished on
    Prolific without answering here, `lost` answered here but never came back to Prolific,
    `browsing` started and did nothing."""
    study_id = studies.publish(engine, client, "pb", SETTINGS).study_id
    sids = {"study": study_id}
    for pid, choice in (("good1", 1), ("bad", 5), ("good2", 2)):
        sid, code = enter_and_answer(app, standin, study_id, pid, choice)
        assert code == (FAIL if pid == "bad" else OK)
        assert standin.complete(sid, code) == "AWAITING REVIEW"
        sids[pid] = sid
    sids["ghost"], _ = standin.enter(study_id, "ghost")
    standin.complete(sids["ghost"], OK)
    sids["lost"], url = standin.enter(study_id, "lost")
    participant.answer_all(participant.flask_transport(app), url, 1, "lost reads it")
    sids["browsing"], _ = standin.enter(study_id, "browsing")
    return sids


def test_sync_pages_and_reports_mismatches_both_ways(
    engine: Engine, client: ProlificClient, standin: Any, study: dict[str, str]
) -> None:
    report = sync(engine, client, "pb", show_progress=False)
    assert (report.fetched, report.added, report.updated, report.unchanged) == (6, 6, 0, 0)
    assert standin.calls("GET", r"/api/v1/studies/\w+/submissions/") == 3  # pages of 2
    assert report.problems == [
        f"Prolific submission {study['ghost']} (participant ghost, AWAITING REVIEW) has no "
        "answers here",
        f"participant lost (session {study['lost']}): 3 answers here, but Prolific shows it "
        "as ACTIVE",
    ]
    again = sync(engine, client, "pb", show_progress=False)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 6)


def test_review_by_the_rules_dry_run_then_send(
    engine: Engine, client: ProlificClient, standin: Any, study: dict[str, str]
) -> None:
    with pytest.raises(UserError, match="run hitserver prolific sync first"):
        review.plan(engine, "pb", review.Rules())
    sync(engine, client, "pb", show_progress=False)
    plan = review.plan(engine, "pb", review.Rules(catch_fail_fraction=0.5))
    by = {d.participant_id: d for d in plan}
    assert set(by) == {"good1", "good2", "bad", "ghost"}
    assert (by["good1"].action, by["good1"].why) == ("APPROVE", "3 answers, 1/1 catch trials")
    assert (by["bad"].action, by["bad"].category) == ("REJECT", "FAILED_CHECK")
    assert by["bad"].message is not None and len(by["bad"].message) >= 100
    assert "1 of the 1 attention-check tasks" in by["bad"].message
    assert (by["ghost"].action, by["ghost"].category) == ("REJECT", "NO_DATA")
    assert standin.calls("POST", r"/api/v1/submissions/") == 0  # planning sends nothing

    approvals = [d for d in plan if d.action == "APPROVE"]
    sent = review.send(engine, client, "pb", approvals)
    assert (len(sent.sent), sent.failed) == (2, [])
    rejections = [d for d in plan if d.action == "REJECT"]
    assert len(review.send(engine, client, "pb", rejections).sent) == 2
    subs = standin.state.submissions
    assert subs[study["good1"]]["status"] == subs[study["good2"]]["status"] == "APPROVED"
    assert subs[study["bad"]]["status"] == "REJECTED"
    assert subs[study["bad"]]["rejection_category"] == "FAILED_CHECK"
    assert subs[study["ghost"]]["rejection_category"] == "NO_DATA"
    here = statuses(engine)
    assert here[study["good1"]] == ["approved"] * 3
    assert here[study["bad"]] == ["rejected"] * 3  # their slots are free for others
    assert here[study["lost"]] == ["submitted"] * 3
    # Both sides agree now; the same decisions again change nothing.
    assert review.plan(engine, "pb", review.Rules()) == []
    assert review.send(engine, client, "pb", approvals).failed == []


def test_quick_answers_are_rejected_too_quickly(
    engine: Engine, client: ProlificClient, study: dict[str, str]
) -> None:
    sync(engine, client, "pb", show_progress=False)
    plan = review.plan(engine, "pb", review.Rules(min_median_seconds=3600))
    assert {d.participant_id: d.category for d in plan} == {
        "good1": "TOO_QUICKLY", "good2": "TOO_QUICKLY", "bad": "FAILED_CHECK", "ghost": "NO_DATA",
    }  # fmt: skip


def test_a_review_made_on_prolific_is_carried_over(
    engine: Engine, client: ProlificClient, standin: Any, study: dict[str, str]
) -> None:
    standin.state.submissions[study["good1"]]["status"] = "APPROVED"
    standin.state.submissions[study["bad"]]["status"] = "REJECTED"
    report = sync(engine, client, "pb", show_progress=False)
    assert (report.approved_here, report.rejected_here) == (1, 1)
    here = statuses(engine)
    assert (here[study["good1"]], here[study["bad"]]) == (["approved"] * 3, ["rejected"] * 3)


def test_manual_rejection_needs_a_readable_reason(
    engine: Engine, client: ProlificClient, study: dict[str, str]
) -> None:
    sync(engine, client, "pb", show_progress=False)
    with pytest.raises(UserError, match="at least 100 characters"):
        review.manual_rejection(engine, "pb", study["good1"], "LOW_EFFORT", "bad")
    with pytest.raises(UserError, match="--category must be one of"):
        review.manual_rejection(engine, "pb", study["good1"], "MEAN", "x" * 120)
    with pytest.raises(UserError, match="is ACTIVE, not AWAITING REVIEW"):
        review.manual_rejection(engine, "pb", study["lost"], "LOW_EFFORT", "x" * 120)


def approve_all(engine: Engine, client: ProlificClient) -> None:
    sync(engine, client, "pb", show_progress=False)
    plan = review.plan(engine, "pb", review.Rules())
    review.send(engine, client, "pb", [d for d in plan if d.action == "APPROVE"])


def test_bonus_dry_run_then_paid_once(
    engine: Engine, client: ProlificClient, standin: Any, study: dict[str, str]
) -> None:
    approve_all(engine, client)
    dry = bonus_module.bonus(engine, client, "pb", 50, send=False)
    assert sorted(p for _, p in dry.planned) == ["good1", "good2"]
    assert standin.state.bonuses == {}
    paid = bonus_module.bonus(engine, client, "pb", 50, send=True)
    assert (len(paid.created), len(paid.paid), len(paid.confirmed)) == (1, 1, 1)
    [bulk] = standin.state.bonuses.values()
    assert sorted(standin.state.payments) == sorted(
        [(bulk["id"], study["good1"], 50), (bulk["id"], study["good2"], 50)]
    )
    again = bonus_module.bonus(engine, client, "pb", 50, send=True)
    assert (again.planned, again.created, again.paid) == ([], [], [])
    assert standin.calls("POST", r"/api/v1/bulk-bonus-payments/") == 1


def test_a_lost_pay_answer_is_never_paid_twice(
    engine: Engine, client: ProlificClient, standin: Any, study: dict[str, str]
) -> None:
    approve_all(engine, client)
    standin.inject("POST", r"/api/v1/bulk-bonus-payments/\w+/pay/", drop=True)
    first = bonus_module.bonus(engine, client, "pb", 75, send=True)
    assert first.paid == [] and "answer was lost" in first.notes[0]
    assert len(standin.state.payments) == 2  # Prolific did pay
    for _ in range(2):
        later = bonus_module.bonus(engine, client, "pb", 75, send=True)
        assert later.paid == []
    assert standin.calls("POST", r"/api/v1/bulk-bonus-payments/") == 1
    assert len(standin.state.payments) == 2
    with engine.connect() as conn:
        row = conn.execute(select(ProlificBonus)).one()
    assert row.pay_requested_at is not None and row.confirmed_at is not None


def test_a_refused_pay_call_is_made_again_later(
    engine: Engine, client: ProlificClient, standin: Any, study: dict[str, str]
) -> None:
    approve_all(engine, client)
    standin.inject("POST", r"/api/v1/bulk-bonus-payments/\w+/pay/", status=400)
    with pytest.raises(ProlificError, match="400"):
        bonus_module.bonus(engine, client, "pb", 75, send=True)
    assert standin.state.payments == []
    with engine.connect() as conn:
        assert conn.execute(select(ProlificBonus.pay_requested_at)).scalar() is None
    retried = bonus_module.bonus(engine, client, "pb", 75, send=True)
    assert (retried.created, len(retried.paid)) == ([], 1)
    assert len(standin.state.payments) == 2


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, standin: Any) -> None:
    monkeypatch.setenv("PROLIFIC_API_TOKEN", standin_module.TOKEN)
    monkeypatch.setenv("PROLIFIC_API_URL", standin.url)
    monkeypatch.setenv("HITSERVER_PROLIFIC_COMPLETION_CODE", OK)
    monkeypatch.setenv("HITSERVER_PROLIFIC_FAILED_CODE", FAIL)


PUBLISH = [
    "prolific", "publish", "pb", "--reward-cents", "150", "--estimated-minutes", "5",
    "--places", "6", "--url", "https://study.example.org",
]  # fmt: skip


def test_cli_errors_are_one_line(
    app: Any, db_url: str, env: None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv("PROLIFIC_API_TOKEN")
    assert main(["prolific", "status", "pb", "--db", db_url]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "hitserver prolific: error: set PROLIFIC_API_TOKEN to your Prolific API token"
    ]
    monkeypatch.setenv("PROLIFIC_API_TOKEN", "wrong")
    assert main([*PUBLISH, "--db", db_url]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "hitserver prolific: error: Prolific refused the API token (401) for GET "
        "/api/v1/studies/: check PROLIFIC_API_TOKEN"
    ]
    monkeypatch.delenv("HITSERVER_PROLIFIC_FAILED_CODE")
    assert main([*PUBLISH, "--db", db_url]) == 2
    assert "set prolific_completion_code and prolific_failed_code" in capsys.readouterr().err


def test_cli_publish_twice_and_dry_runs(
    app: Any, db_url: str, env: None, standin: Any, capsys: Any
) -> None:
    assert main([*PUBLISH, "--filter", "current-country-of-residence=1,2", "--db", db_url]) == 0
    [study] = standin.state.studies.values()
    assert capsys.readouterr().out.strip() == f"Prolific study {study['id']} (created): ACTIVE"
    assert study["filters"] == [
        {"filter_id": "current-country-of-residence", "selected_values": ["1", "2"]}
    ]
    assert main([*PUBLISH, "--db", db_url]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"Prolific study {study['id']} (already known): ACTIVE"
    assert "settings it was created with are kept" in out.err
    assert len(standin.state.studies) == 1
    sid, url = standin.enter(study["id"], "pp1")
    code = participant.answer_all(participant.flask_transport(app), url, 1, "the boat")
    standin.complete(sid, code)
    assert main(["prolific", "approve", "pb", "--db", db_url]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2:] == [
        f"APPROVE {sid} (participant pp1; 3 answers, 1/1 catch trials)",
        "dry run: 1 to approve; add --send to send them",
    ]
    assert standin.state.submissions[sid]["status"] == "AWAITING REVIEW"
    assert main(["prolific", "approve", "pb", "--send", "--db", db_url]) == 0
    assert capsys.readouterr().out.strip().endswith("1 sent, 0 failed")
    assert main(["prolific", "bonus", "pb", "--cents", "25", "--db", db_url]) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith(
            "dry run: 1 approved submissions without a bonus; 0.25 each, 0.25 in all; "
            "add --send to pay"
        )
    )
    assert main(["prolific", "bonus", "pb", "--cents", "25", "--send", "--db", db_url]) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith("1 new bonuses (0.25); 1 set up, 1 paid, 1 confirmed on the submissions")
    )
    assert standin.state.submissions[sid]["bonus_payments"] == [25]
    assert main(["prolific", "reject", "pb", "--submission", sid, "--category", "OTHER",
                 "--message", "short", "--db", db_url]) == 2  # fmt: skip
    assert "at least 100 characters" in capsys.readouterr().err
    assert main(["prolific", "stop", "pb", "--db", db_url]) == 0
    assert capsys.readouterr().out.strip() == "Prolific study of pb: COMPLETED"  # all reviewed


def test_the_study_configs_exclusion_table_sets_the_rules(
    app: Any, db_url: str, env: None, standin: Any, tmp_path: Path, capsys: Any
) -> None:
    assert main([*PUBLISH, "--db", db_url]) == 0
    [study] = standin.state.studies.values()
    reason = "copied from somewhere else entirely"
    pasted = {"paste_count": 1, "pasted_chars": len(reason), "reason_chars": len(reason)}
    typed = {"paste_count": 0, "pasted_chars": 0, "reason_chars": 30}
    sids = {}
    for pid, choice, telemetry in (("paster", 1, pasted), ("typist", 5, typed)):
        sid, url = standin.enter(study["id"], pid)
        transport = participant.flask_transport(app)
        standin.complete(sid, participant.answer_all(transport, url, choice, reason, telemetry))
        sids[pid] = sid
    config = tmp_path / "study.toml"
    config.write_text("[exclusion]\nmax_catch_fail = 1.0\nmax_pasted = 0.0\nsimilarity = 0.9\n")
    capsys.readouterr()
    assert main(["prolific", "reject", "pb", "--study-config", str(config), "--db", db_url]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith(
        f"REJECT {sids['paster']} (participant paster; 100% pasted reasons) LOW_EFFORT: Thank you"
    )
    assert lines[2] == "dry run: 1 to reject; add --send to send them"  # typist failed 1/1 <= 1.0
    assert main(["prolific", "approve", "pb", "--study-config", str(config), "--db", db_url]) == 0
    assert f"APPROVE {sids['typist']} (participant typist" in capsys.readouterr().out
    config.write_text("[exclusion]\nmax_catch_fail = 1.0\nbogus = 1\n")
    assert main(["prolific", "reject", "pb", "--study-config", str(config), "--db", db_url]) == 2
    assert capsys.readouterr().err.strip().endswith("exclusion.bogus: unknown setting")


def test_lost_answers_to_transitions_are_harmless(
    engine: Engine, client: ProlificClient, standin: Any, study: dict[str, str]
) -> None:
    # The study was published already; now its pause is carried out but the answer is lost.
    standin.inject("POST", r"/api/v1/studies/\w+/transition/", drop=True)
    assert studies.change(engine, client, "pb", "PAUSE") == "PAUSED"
    assert standin.calls("POST", r"/api/v1/studies/\w+/transition/") == 3  # publish + 2
    sync(engine, client, "pb", show_progress=False)
    [good] = [d for d in review.plan(engine, "pb", review.Rules()) if d.participant_id == "good1"]
    standin.inject("POST", r"/api/v1/submissions/\w+/transition/", drop=True)
    sent = review.send(engine, client, "pb", [good])
    assert (len(sent.sent), sent.failed) == (1, [])
    assert standin.calls("POST", r"/api/v1/submissions/\w+/transition/") == 2
    assert standin.state.submissions[study["good1"]]["status"] == "APPROVED"


def test_a_borrowed_session_id_is_not_merged_with_its_owner(
    app: Any, engine: Engine, client: ProlificClient, standin: Any, study: dict[str, str]
) -> None:
    """Prolific gives each submission its own SESSION_ID, but our server lets a second PID enter
    with a copied one (a shared SESSION_ID locks nobody out). Prolific's review of the owner's
    submission must reach the owner's answers only, and the copy's answers are reported."""
    standin.state.submissions[study["bad"]]["status"] = "REJECTED"
    assert sync(engine, client, "pb", show_progress=False).rejected_here == 1  # slots freed
    sid = study["good1"]
    template = standin.state.studies[study["study"]]["external_study_url"]
    url = (
        template.replace("{{%PROLIFIC_PID%}}", "copycat")
        .replace("{{%STUDY_ID%}}", study["study"])
        .replace("{{%SESSION_ID%}}", sid)
    )
    participant.answer_all(participant.flask_transport(app), url, 1, "copycat reads it too")
    standin.state.submissions[sid]["status"] = "APPROVED"
    report = sync(engine, client, "pb", show_progress=False)
    assert report.approved_here == 1
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT w.platform_worker_id, a.status FROM assignments a "
                "JOIN workers w ON w.id = a.worker_id WHERE a.platform_assignment_id = :sid"
            ),
            {"sid": sid},
        ).all()
    by_worker: dict[str, list[str]] = {}
    for worker, status in rows:
        by_worker.setdefault(worker, []).append(status)
    assert by_worker == {"good1": ["approved"] * 3, "copycat": ["submitted"] * 3}
    assert (
        f"participant copycat (session {sid}): 3 answers here, but Prolific lists that session "
        "for participant good1" in report.problems
    )
