"""Parsing and wording of staff commands (no aiogram, no network)."""

from __future__ import annotations

import pytest

from bot.amocrm.crm_records import CallAttachment, Talk
from bot.staff.commands import (
    CallCommand,
    CloseCommand,
    UsageError,
    format_call,
    format_talk,
    is_unknown_command,
    parse_call,
    parse_close,
    parse_duration,
    parse_talk,
)

BASE = "https://example.amocrm.ru"


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("150", 150), ("2:30", 150), ("1:02:30", 3750), ("2m30s", 150), ("1h", 3600), ("45s", 45)],
)
def test_duration_forms(raw: str, seconds: int) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "2:75", "1:2:3:4", "abc", "2m30", "m", "-5", "1.5"])
def test_unreadable_durations(raw: str) -> None:
    with pytest.raises(UsageError, match="duration"):
        parse_duration(raw)


def test_talk_and_close_ids() -> None:
    assert parse_talk("117") == 117
    assert parse_close("117") == CloseCommand(117, force=True)
    assert parse_close("117 NPS") == CloseCommand(117, force=False)
    for bad in (None, "", "abc", "-3", "0", "117 118"):
        with pytest.raises(UsageError, match="/talk 117"):
            parse_talk(bad)
    for bad in (None, "x", "117 now"):
        with pytest.raises(UsageError, match="/close 117"):
            parse_close(bad)


def test_call_defaults_and_full_form() -> None:
    assert parse_call("89161234567 150") == CallCommand("+79161234567", 150, "outbound", None, "")
    assert parse_call("+7(916)123-45-67 2:30 in talked Asked about delivery") == CallCommand(
        "+79161234567", 150, "inbound", 4, "Asked about delivery"
    )
    assert parse_call("79161234567 1m out 7") == CallCommand("+79161234567", 60, "outbound", 7, "")
    assert parse_call("79161234567 0 inbound no-answer") == CallCommand(
        "+79161234567", 0, "inbound", 6, ""
    )
    assert parse_call("79161234567 10 busy call later").status == 7


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (None, "Phone and duration"),
        ("79161234567", "Phone and duration"),
        ("123456 150", "not a phone"),
        ("+7abc1234567 150", "not a phone"),
        ("79161234567 forever", "duration"),
        ("79161234567 150 sideways", "Unknown direction or call status"),
        ("79161234567 150 in 9", "Unknown call status"),
        ("79161234567 150 out great talk", "Unknown call status"),
    ],
)
def test_call_usage_errors(args: str | None, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint) as caught:
        parse_call(args)
    assert "Example: /call" in str(caught.value)


def test_talk_reply_in_the_configured_zone() -> None:
    talk = Talk(
        id=117,
        is_in_work=True,
        is_read=False,
        origin="telegram",
        contact_id=3102959,
        lead_id=15926745,
        customer_id=None,
        created_at=1700000000,
        updated_at=1700003600,
        missed_at=None,
        rate=9,
    )
    text = format_talk(talk, BASE, "Europe/Moscow", "en")
    assert text.splitlines() == [
        "Talk 117: open, unread",
        "Origin: telegram",
        f"Contact 3102959: {BASE}/contacts/detail/3102959",
        f"Lead 15926745: {BASE}/leads/detail/15926745",
        "Created: 2023-11-15 01:13:20 MSK",
        "Updated: 2023-11-15 02:13:20 MSK",
        "Missed: —",
        "NPS: 9",
    ]


def test_call_replies() -> None:
    command = CallCommand("+79161234567", 150, "inbound", 4, "ok")
    attached = format_call(command, CallAttachment(1, "lead", 15926745), BASE, "en")
    assert attached.startswith(f"Call logged to lead 15926745: {BASE}/leads/detail/15926745")
    assert "2:30" in attached
    assert "talk happened" in attached
    nowhere = format_call(command, CallAttachment(errors=["Entity not found"]), BASE, "en")
    assert nowhere.startswith("Call not logged: amoCRM attached it nowhere (Entity not found)")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("+7 916 123-45-67 2:30 in talked Agreed", ("+79161234567", 150, "inbound", 4, "Agreed")),
        ("+7 916 123-45-67 150", ("+79161234567", 150, "outbound", None, "")),
        ("8 (916) 123 45 67 90 in", ("+79161234567", 90, "inbound", None, "")),
        ("79161234567 150 4", ("+79161234567", 150, "outbound", 4, "")),
        ("+1 916 123-4567 1m5s", ("+19161234567", 65, "outbound", None, "")),
        # A phone in one piece never swallows the duration (7–9 digit numbers too).
        ("1234567 150 4", ("+1234567", 150, "outbound", 4, "")),
        ("612345678 120 4", ("+612345678", 120, "outbound", 4, "")),
        ("1234567 150 talked", ("+1234567", 150, "outbound", 4, "")),
        ("123-45-67 90 in", ("+1234567", 90, "inbound", None, "")),
    ],
)
def test_call_phone_may_be_written_with_spaces(args: str, expected: tuple[object, ...]) -> None:
    assert parse_call(args) == CallCommand(*expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        ("/tlak 117", True),
        ("/Stats@bridge_bot", True),
        ("/talk 117", False),
        ("/TALK 117", False),
        ("/retry@bridge_bot all", False),
        ("/start", False),
        ("hello /talk", False),
        ("/", False),
        (None, False),
    ],
)
def test_unknown_commands(text: str | None, unknown: bool) -> None:
    assert is_unknown_command(text) is unknown
