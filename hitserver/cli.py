"""`hitserver` console script."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hitserver import __version__
from hitserver.errors import UserError
from ibd.errors import OneLineParser, run_command

SUBCOMMANDS: dict[str, str] = {
    "load": "import a task batch into the database",
    "run": "serve the batches (127.0.0.1 by default)",
    "export": "write every rating as CSV (tidy or MTurk wide format)",
    "prolific": "Prolific: publish|sync|approve|reject|bonus|status|pause|start|stop",
    "mturk": "MTurk (closed on 2026-09-30; sandbox only): publish | sync | approve | reject | ...",
    "simulate": "answer tasks over HTTP with simulated raters (flagged; demos and tests)",
    "hash-password": "print a hash of an admin password for HITSERVER_ADMIN_PASSWORD_HASH",
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        help="database URL (default $HITSERVER_DATABASE_URL, else sqlite:///$IBD_HOME/"
        "hitserver.sqlite)",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")


def _settings(args: argparse.Namespace) -> Any:
    from hitserver.config import load_settings

    return load_settings(config_file=args.config, database_url=args.db)


def _engine(args: argparse.Namespace) -> Any:
    from hitserver.database import make_engine, upgrade

    engine = make_engine(_settings(args).database_url)
    upgrade(engine)
    return engine


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1..65535)")
    return value


# --- load ---------------------------------------------------------------------------------


def _configure_load(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batches", nargs="+", metavar="BATCH", help="hitgen batch directory")
    parser.add_argument(
        "--assignments",
        type=_positive,
        required=True,
        metavar="N",
        help="distinct workers per item",
    )
    parser.add_argument(
        "--max-per-worker", type=_positive, metavar="K", help="at most K items per worker"
    )
    _common(parser)


def _run_load(args: argparse.Namespace) -> int:
    from hitserver.loading import load_batch

    engine = _engine(args)
    for batch_dir in args.batches:
        result = load_batch(
            engine,
            batch_dir,
            assignments_per_item=args.assignments,
            max_items_per_worker=args.max_per_worker,
        )
        if result.added:
            print(
                f"loaded {result.batch}: {result.items} items x {result.assignments_per_item} "
                "workers"
            )
        else:
            print(f"{result.batch}: already loaded, nothing added")
    return 0


# --- run ----------------------------------------------------------------------------------


def _configure_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=_positive, default=2, help="gunicorn processes")
    parser.add_argument("--threads", type=_positive, default=8, help="threads per process")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    _common(parser)


def _run_run(args: argparse.Namespace) -> int:
    import dataclasses
    import secrets

    from hitserver.database import make_engine, upgrade
    from hitserver.serve import serve

    settings = _settings(args).with_dev_secrets()
    settings.check_can_serve()
    upgrade(make_engine(settings.database_url))
    if not settings.production and not settings.admin_token:
        settings = dataclasses.replace(settings, admin_token=secrets.token_urlsafe(24))
    url = f"http://{args.host}:{args.port}"
    mode = "PRODUCTION" if settings.production else "development (set HITSERVER_ENV=production)"
    print(f"hitserver: {mode}; database {settings.database_url}", file=sys.stderr)
    print(f"hitserver: workers open {url}/work", file=sys.stderr)
    print(f"hitserver: admin at {url}/admin/", file=sys.stderr)
    if not settings.production:
        print(f"hitserver: admin bearer token (this run): {settings.admin_token}", file=sys.stderr)
        try:
            loopback = ipaddress.ip_address(args.host).is_loopback
        except ValueError:
            loopback = args.host == "localhost"
        if not loopback:
            print(
                "hitserver: warning: development mode on a non-loopback address",
                file=sys.stderr,
            )
    serve(
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        access_log=args.access_log,
    )
    return 0


# --- export -------------------------------------------------------------------------------


def _configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("tidy", "wide"), default="tidy")
    parser.add_argument("--batch", help="only this batch")
    parser.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    _common(parser)


def _run_export(args: argparse.Namespace) -> int:
    from hitserver.export import export, require_batch

    engine = _engine(args)
    with engine.connect() as conn:
        if args.batch is not None:
            require_batch(conn, args.batch)  # before --out is created
        if args.out:
            try:
                with open(args.out, "w", newline="", encoding="utf-8") as handle:
                    count = export(conn, handle, args.format, args.batch)
            except OSError as exc:
                raise UserError(f"cannot write {args.out}: {exc.strerror}") from exc
            print(f"wrote {count} ratings to {args.out}", file=sys.stderr)
        else:
            export(conn, sys.stdout, args.format, args.batch)
    return 0


# --- hash-password ------------------------------------------------------------------------


def _configure_hash(parser: argparse.ArgumentParser) -> None:
    parser.description = "Reads the password (twice on a terminal, once from a pipe)."


def _run_hash(_args: argparse.Namespace) -> int:
    from werkzeug.security import generate_password_hash

    if sys.stdin.isatty():
        password = getpass.getpass("admin password: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 12:
        raise UserError("use at least 12 characters")
    print(generate_password_hash(password))
    return 0


# --- mturk --------------------------------------------------------------------------------


def _configure_mturk(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--production",
            action="store_true",
            help="refused: Amazon Mechanical Turk closed on 2026-09-30 (sandbox only)",
        )
        _common(p)
        return p

    p = action("publish", "create one HIT per item of a loaded batch")
    p.add_argument("batch", help="batch name (as loaded)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--external-url", metavar="URL", help="ExternalQuestion: https://your-server (public)"
    )
    where.add_argument(
        "--image-base-url",
        metavar="URL",
        help="HTMLQuestion: https://... where the batch directory is published",
    )
    p.add_argument("--reward", required=True, help="USD per assignment, e.g. 0.10")
    p.add_argument("--title", default="Which robot's explanation is more reasonable?")
    p.add_argument(
        "--description",
        default="Look at a picture and two robots' explanations; say which is more reasonable.",
    )
    p.add_argument("--keywords", default="image, explanation, survey, robot")
    p.add_argument("--duration", type=_positive, default=1800, metavar="S")
    p.add_argument("--lifetime", type=_positive, default=7 * 24 * 3600, metavar="S")
    p.add_argument("--auto-approve", type=_positive, default=3 * 24 * 3600, metavar="S")
    p.add_argument("--min-approval-rate", type=int, default=95, metavar="PCT")
    p.add_argument("--min-approved", type=int, default=100, metavar="N")
    p.add_argument("--locale", default="US", help="comma-separated country codes, or 'any'")
    p.add_argument("--exclude-qualification", metavar="QUAL_ID")
    p.add_argument("--no-qualifications", action="store_true", help="sandbox tests")

    p = action("sync", "fetch submitted answers into the database")
    p.add_argument("batch")
    p = action("approve", "approve the batch's submitted assignments")
    p.add_argument("batch")
    p.add_argument("--feedback")
    p.add_argument(
        "--skip-failed-catch",
        action="store_true",
        help="leave workers who failed more than catch_fail_fraction of catch trials",
    )
    p = action("reject", "reject one assignment")
    p.add_argument("assignment", metavar="MTURK_ASSIGNMENT_ID")
    p.add_argument("--feedback", required=True)
    p = action("expire", "expire every HIT of the batch now")
    p.add_argument("batch")
    action("balance", "show the account balance (checks credentials)")


MTURK_CLOSED = "Amazon Mechanical Turk closed on 2026-09-30"


def _run_mturk(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    if args.production:
        raise UserError(
            f"{MTURK_CLOSED}; --production is refused (real studies: hitserver prolific ...)"
        )
    print(f"hitserver mturk: {MTURK_CLOSED}; this is its sandbox, kept for tests and demos")
    try:
        return _mturk_action(args)
    except (BotoCoreError, ClientError) as exc:
        raise UserError(f"MTurk: {exc}") from exc


def _mturk_publish(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.mturk import publish

    no_quals = args.no_qualifications
    hit = publish.HitSettings(
        title=args.title,
        description=args.description,
        reward=args.reward,
        keywords=args.keywords,
        assignment_duration_s=args.duration,
        lifetime_s=args.lifetime,
        auto_approval_delay_s=args.auto_approve,
        min_approval_rate=None if no_quals else args.min_approval_rate,
        min_approved=None if no_quals else args.min_approved,
        locales=()
        if no_quals or args.locale == "any"
        else tuple(c.strip() for c in args.locale.split(",") if c.strip()),
        exclude_qualification=args.exclude_qualification,
        external_url=args.external_url,
        image_base_url=args.image_base_url,
    )
    done = publish.publish(engine, client, args.batch, hit, production=args.production)
    print(
        f"sandbox: HIT type {done.hit_type_id}; {done.created} HITs created, "
        f"{done.existing} already published"
    )


def _mturk_sync(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.mturk import sync

    report = sync.sync(engine, client, args.batch, production=args.production)
    print(
        f"sandbox: {report.fetched} assignments fetched: {report.added} added, "
        f"{report.updated} updated, {report.unchanged} unchanged"
    )
    for problem in report.problems:
        print(f"hitserver mturk sync: warning: {problem}", file=sys.stderr)


def _mturk_approve(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.mturk import review

    outcome = review.approve(
        engine,
        client,
        args.batch,
        feedback=args.feedback,
        skip_failed_catch=_settings(args).catch_fail_fraction if args.skip_failed_catch else None,
    )
    print(
        f"sandbox: {len(outcome.done)} approved, {len(outcome.skipped)} left for review, "
        f"{len(outcome.failed)} failed"
    )
    for failure in outcome.failed:
        print(f"hitserver mturk approve: warning: {failure}", file=sys.stderr)


def _mturk_reject(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.mturk import review

    review.reject(engine, client, args.assignment, args.feedback)
    print(f"sandbox: rejected {args.assignment}")


def _mturk_expire(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.mturk import review

    outcome = review.expire(engine, client, args.batch, production=args.production)
    print(f"sandbox: {len(outcome.done)} HITs expired, {len(outcome.failed)} failed")
    for failure in outcome.failed:
        print(f"hitserver mturk expire: warning: {failure}", file=sys.stderr)


MTURK: dict[str, Callable[[argparse.Namespace, Any, Any], None]] = {
    "publish": _mturk_publish,
    "sync": _mturk_sync,
    "approve": _mturk_approve,
    "reject": _mturk_reject,
    "expire": _mturk_expire,
}


def _mturk_action(args: argparse.Namespace) -> int:
    from hitserver.mturk import client as mturk_client
    from hitserver.mturk import review

    client = mturk_client.make_client(args.production)
    if args.action == "balance":
        print(f"sandbox balance: ${review.balance(client)}")
        return 0
    MTURK[args.action](args, _engine(args), client)
    return 0


# --- prolific -----------------------------------------------------------------------------

PROLIFIC_ACTIONS = ("MANUALLY_REVIEW", "AUTOMATICALLY_APPROVE", "REQUEST_RETURN")


def _filter(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, values = text.partition("=")
    chosen = tuple(v.strip() for v in values.split(",") if v.strip())
    if not sep or not name.strip() or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r} is not FILTER_ID=VALUE[,VALUE...]")
    return name.strip(), chosen


def _devices(text: str) -> tuple[str, ...]:
    from hitserver.prolific.studies import DEVICES

    chosen = tuple(d.strip() for d in text.split(",") if d.strip())
    if not chosen or any(d not in DEVICES for d in chosen):
        raise argparse.ArgumentTypeError(f"{text!r}: give a comma list of {', '.join(DEVICES)}")
    return chosen


def _configure_prolific(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("batch", help="batch name (as loaded)")
        _common(p)
        return p

    p = action("publish", "create the batch's study (once) and publish it")
    p.add_argument(
        "--reward-cents", type=_positive, required=True, metavar="N",
        help="reward per participant, in cents of your Prolific account's currency",
    )  # fmt: skip
    p.add_argument(
        "--estimated-minutes", type=_positive, required=True, metavar="M",
        help="estimated completion time shown to participants",
    )  # fmt: skip
    p.add_argument("--places", type=_positive, required=True, metavar="P", help="participants")
    p.add_argument("--url", required=True, help="public https:// address of hitserver run")
    p.add_argument(
        "--title", default="Which robot's explanation is more reasonable?",
        help="the study's public name",
    )  # fmt: skip
    p.add_argument("--description", help="what participants read before they start")
    p.add_argument(
        "--device-compatibility", type=_devices, default=("desktop",), metavar="LIST",
        help="comma list of desktop, tablet, mobile (default desktop)",
    )  # fmt: skip
    p.add_argument(
        "--filter", type=_filter, action="append", default=[], metavar="ID=V1,V2",
        help="a Prolific select filter, e.g. current-country-of-residence=1 (repeatable)",
    )  # fmt: skip
    p.add_argument("--completed-action", choices=PROLIFIC_ACTIONS, default="MANUALLY_REVIEW")
    p.add_argument(
        "--failed-action", choices=PROLIFIC_ACTIONS, default="MANUALLY_REVIEW",
        help="what Prolific does with the failed-catch-trials code",
    )  # fmt: skip
    p.add_argument("--draft", action="store_true", help="create the draft, do not publish")
    action("sync", "pull the study's submissions; report mismatches both ways")
    for name, text in (("approve", "approve"), ("reject", "reject")):
        p = action(name, f"{text} the submissions awaiting review, by the rules (dry run)")
        p.add_argument(
            "--study-config", metavar="FILE",
            help="study config whose [exclusion] table sets the thresholds (as for analysis)",
        )  # fmt: skip
        p.add_argument("--min-seconds", type=float, metavar="S", help="reject a median under S")
        p.add_argument(
            "--max-pasted", type=float, metavar="F",
            help="reject more than a fraction F of the reasons pasted",
        )  # fmt: skip
        p.add_argument("--send", action="store_true", help="send the decisions to Prolific")
    p.add_argument("--submission", metavar="ID", help="reject this one submission by hand")
    p.add_argument("--category", help="with --submission: Prolific's rejection category")
    p.add_argument("--message", help="with --submission: at least 100 characters")
    p = action("bonus", "a bonus for every approved submission, paid once (dry run)")
    p.add_argument("--cents", type=_positive, required=True, metavar="N", help="per submission")
    p.add_argument("--send", action="store_true", help="set up and pay the bonus")
    action("status", "the study's status on Prolific and here")
    action("pause", "pause the study (no new participants)")
    action("start", "resume a paused study")
    action("stop", "stop the study for good (it goes to review)")


def _prolific_client() -> Any:
    from hitserver.prolific.client import ProlificClient

    return ProlificClient.from_env()


def _prolific_publish(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.prolific import studies

    settings = _settings(args)
    if not settings.prolific_completion_code or not settings.prolific_failed_code:
        raise UserError(
            "set prolific_completion_code and prolific_failed_code (HITSERVER_PROLIFIC_"
            "COMPLETION_CODE, HITSERVER_PROLIFIC_FAILED_CODE): the server redirects with them"
        )
    extra = {"description": args.description} if args.description else {}
    study = studies.StudySettings(
        url=args.url,
        reward_cents=args.reward_cents,
        estimated_minutes=args.estimated_minutes,
        places=args.places,
        completion_code=settings.prolific_completion_code,
        failed_code=settings.prolific_failed_code,
        title=args.title,
        devices=args.device_compatibility,
        filters=tuple(args.filter),
        completed_action=args.completed_action,
        failed_action=args.failed_action,
        **extra,
    )
    done = studies.publish(engine, client, args.batch, study, draft=args.draft)
    how = "created" if done.created else "found again" if done.found_again else "already known"
    print(f"Prolific study {done.study_id} ({how}): {done.status}")
    for note in done.notes:
        print(f"hitserver prolific publish: note: {note}", file=sys.stderr)


def _prolific_sync(args: argparse.Namespace, engine: Any, client: Any) -> Any:
    from hitserver.prolific import sync

    report = sync.sync(engine, client, args.batch)
    print(
        f"{report.fetched} submissions on Prolific: {report.added} new, {report.updated} "
        f"changed, {report.unchanged} unchanged; here {report.approved_here} approved and "
        f"{report.rejected_here} rejected to match; {len(report.problems)} mismatches"
    )
    for problem in report.problems:
        print(f"hitserver prolific: mismatch: {problem}", file=sys.stderr)
    return report


def _review_rules(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from hitserver.prolific import review

    table = review.read_exclusion(Path(args.study_config)) if args.study_config else {}
    pick = {"min_seconds": args.min_seconds, "max_pasted": args.max_pasted}
    table.update({k: v for k, v in pick.items() if v is not None})
    return review.Rules(
        catch_fail_fraction=table.get("max_catch_fail", _settings(args).catch_fail_fraction),
        min_median_seconds=table.get("min_seconds"),
        max_pasted=table.get("max_pasted"),
        pasted_share=table.get("pasted_share", review.PASTED_SHARE),
    )


def _prolific_review(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.prolific import review

    _prolific_sync(args, engine, client)
    if args.action == "reject" and args.submission:
        decisions = [
            review.manual_rejection(
                engine, args.batch, args.submission, args.category or "", args.message or ""
            )
        ]
    else:
        if args.action == "reject" and (args.category or args.message):
            raise UserError("--category and --message go with --submission")
        rules = _review_rules(args)
        wanted = "APPROVE" if args.action == "approve" else "REJECT"
        decisions = [d for d in review.plan(engine, args.batch, rules) if d.action == wanted]
    for d in decisions:
        detail = f" {d.category}: {d.message}" if d.action == "REJECT" else ""
        print(f"{d.action} {d.submission_id} (participant {d.participant_id}; {d.why}){detail}")
    if not args.send:
        print(f"dry run: {len(decisions)} to {args.action}; add --send to send them")
        return
    report = review.send(engine, client, args.batch, decisions)
    print(f"{len(report.sent)} sent, {len(report.failed)} failed")
    for failure in report.failed:
        print(f"hitserver prolific {args.action}: warning: {failure}", file=sys.stderr)


def _prolific_bonus(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.prolific import bonus

    _prolific_sync(args, engine, client)
    report = bonus.bonus(engine, client, args.batch, args.cents, send=args.send)
    total = bonus.amount_text(args.cents * len(report.planned))
    if not args.send:
        print(
            f"dry run: {len(report.planned)} approved submissions without a bonus; "
            f"{bonus.amount_text(args.cents)} each, {total} in all; add --send to pay"
        )
        return
    print(
        f"{len(report.planned)} new bonuses ({total}); {len(report.created)} set up, "
        f"{len(report.paid)} paid, {len(report.confirmed)} confirmed on the submissions"
    )
    for note in report.notes:
        print(f"hitserver prolific bonus: warning: {note}", file=sys.stderr)


def _prolific_status(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.prolific import studies
    from hitserver.prolific.bonus import amount_text

    got = studies.status(engine, client, args.batch)
    print(
        f"Prolific study {got.study_id} ({got.internal_name}): {got.status}, "
        f"{got.places_taken} of {got.places} places taken"
    )
    synced = ", ".join(f"{count} {status}" for status, count in got.submissions.items())
    print(
        f"here, as of the last sync: {synced or 'no submissions'}; bonuses paid "
        f"{amount_text(got.bonuses_paid_cents)}"
    )


def _prolific_change(args: argparse.Namespace, engine: Any, client: Any) -> None:
    from hitserver.prolific import studies

    status = studies.change(engine, client, args.batch, args.action.upper())
    print(f"Prolific study of {args.batch}: {status}")


PROLIFIC: dict[str, Callable[[argparse.Namespace, Any, Any], Any]] = {
    "publish": _prolific_publish,
    "sync": _prolific_sync,
    "approve": _prolific_review,
    "reject": _prolific_review,
    "bonus": _prolific_bonus,
    "status": _prolific_status,
    "pause": _prolific_change,
    "start": _prolific_change,
    "stop": _prolific_change,
}


def _run_prolific(args: argparse.Namespace) -> int:
    client = _prolific_client()
    PROLIFIC[args.action](args, _engine(args), client)
    return 0


# --- simulate -----------------------------------------------------------------------------


def _configure_simulate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "batches",
        nargs="*",
        metavar="BATCH",
        help="batch directories being served (default $IBD_HOME/batches/*)",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running server")
    parser.add_argument("--raters", type=_positive, default=40, help="simulated raters (40)")
    parser.add_argument("--world", help="the concept world (default $IBD_HOME/world)")
    parser.add_argument("--seed", type=int, default=0, help="raters' random seed (0)")
    parser.add_argument(
        "--careless",
        type=float,
        default=0.1,
        help="fraction of careless raters answering at random (0.1)",
    )
    parser.add_argument("--max-items", type=_positive, default=1000, help="per rater")
    parser.add_argument("--threads", type=_positive, default=8, help="concurrent raters (8)")


def _run_simulate(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from hitserver.simulate import simulate

    home = Path(os.environ.get("IBD_HOME") or "ibd-data")
    batches = [Path(b) for b in args.batches] or sorted(
        p.parent for p in (home / "batches").glob("*/manifest.json")
    )
    if not batches:
        raise UserError(f"no batches given and none in {home / 'batches'}")
    if not 0 <= args.careless <= 1:
        raise UserError("--careless must be between 0 and 1")
    outcome = simulate(
        args.url,
        batches,
        Path(args.world) if args.world else home / "world",
        raters=args.raters,
        seed=args.seed,
        careless_rate=args.careless,
        max_items=args.max_items,
        threads=args.threads,
    )
    print(f"{outcome.answered} simulated answers from {len(outcome.by_worker)} raters")
    if outcome.errors:
        raise UserError(f"{len(outcome.errors)} failed requests, first: {outcome.errors[0]}")
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = {
    "load": (_configure_load, _run_load),
    "run": (_configure_run, _run_run),
    "export": (_configure_export, _run_export),
    "prolific": (_configure_prolific, _run_prolific),
    "mturk": (_configure_mturk, _run_mturk),
    "hash-password": (_configure_hash, _run_hash),
    "simulate": (_configure_simulate, _run_simulate),
}


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hitserver")
    parser.add_argument("--version", action="version", version=f"hitserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        COMMANDS[name][0](sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return run_command(
        f"hitserver {args.command}", lambda: COMMANDS[args.command][1](args), UserError
    )


if __name__ == "__main__":
    sys.exit(main())
