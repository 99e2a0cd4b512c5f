"""The boto3 MTurk client, sandbox by default; production needs a flag and a typed confirmation
(debug-versus-live confusion is a complaint against psiTurk)."""

from __future__ import annotations

from typing import Any, TextIO

import boto3

from hitserver.errors import UserError

REGION = "us-east-1"
SANDBOX_ENDPOINT = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
PRODUCTION_ENDPOINT = "https://mturk-requester.us-east-1.amazonaws.com"
CONFIRMATION = "production"


def make_client(production: bool) -> Any:
    """An MTurk client for the sandbox, or for the real marketplace when `production`."""
    endpoint = PRODUCTION_ENDPOINT if production else SANDBOX_ENDPOINT
    return boto3.client("mturk", region_name=REGION, endpoint_url=endpoint)


def confirm_production(action: str, answer_from: TextIO, prompt_to: TextIO) -> None:
    """Ask the user to type `production`; anything else stops the command."""
    prompt_to.write(
        f"About to {action} on the PRODUCTION MTurk marketplace (real workers, real money).\n"
        f"Type '{CONFIRMATION}' to continue: "
    )
    prompt_to.flush()
    if answer_from.readline().strip() != CONFIRMATION:
        raise UserError("production not confirmed; nothing was sent to MTurk")
