"""MTurk question XML: ExternalQuestion, HTMLQuestion, and the QuestionFormAnswers that come
back in `list_assignments_for_hit`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from hitserver.errors import UserError

EXTERNAL_NS = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/"
    "ExternalQuestion.xsd"
)
HTML_NS = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2011-11-11/HTMLQuestion.xsd"
)
ANSWERS_NS = (
    "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2005-10-01/"
    "QuestionFormAnswers.xsd"
)
MAX_QUESTION_BYTES = 64 * 1024


def external_question(url: str, frame_height: int) -> str:
    if not url.startswith("https://"):
        raise UserError(f"ExternalQuestion URL must use https:// (MTurk refuses others): {url}")
    return (
        f'<ExternalQuestion xmlns="{EXTERNAL_NS}">'
        f"<ExternalURL>{escape(url)}</ExternalURL>"
        f"<FrameHeight>{frame_height}</FrameHeight>"
        "</ExternalQuestion>"
    )


def html_question(html: str, frame_height: int, where: str) -> str:
    """The page inside CDATA (a `]]>` in the page is split across two CDATA sections)."""
    body = html.replace("]]>", "]]]]><![CDATA[>")
    question = (
        f'<HTMLQuestion xmlns="{HTML_NS}">'
        f"<HTMLContent><![CDATA[{body}]]></HTMLContent>"
        f"<FrameHeight>{frame_height}</FrameHeight>"
        "</HTMLQuestion>"
    )
    size = len(question.encode("utf-8"))
    if size > MAX_QUESTION_BYTES:
        raise UserError(
            f"{where}: the HTMLQuestion is {size} bytes, over MTurk's 64 KB; "
            "publish with --external-url instead"
        )
    return question


def parse_answers(xml: str) -> dict[str, str]:
    """QuestionIdentifier -> answer text (FreeText, or SelectionIdentifiers joined by '|')."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"answer is not valid XML ({exc})") from exc
    ns = {"q": ANSWERS_NS}
    answers: dict[str, str] = {}
    for answer in root.findall("q:Answer", ns):
        identifier = answer.findtext("q:QuestionIdentifier", default="", namespaces=ns)
        free = answer.find("q:FreeText", ns)
        if free is not None:
            answers[identifier] = free.text or ""
        else:
            selections = answer.findall("q:SelectionIdentifier", ns)
            answers[identifier] = "|".join(s.text or "" for s in selections)
    return answers
