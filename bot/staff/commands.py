"""Staff commands: parsing their arguments and wording the replies (no aiogram, no network)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot.amocrm.crm import CallAttachment, Talk
from bot.phones import MIN_PHONE_DIGITS, normalise_phone, phone_digits

TALK_USAGE = "Usage: /talk <talk id>\nExample: /talk 117"
CLOSE_USAGE = (
    "Usage: /close <talk id> [nps]\n"
    "Example: /close 117 (closes at once)\n"
    "Example: /close 117 nps (lets amoCRM's NPS bot run first)"
)
CALL_USAGE = (
    "Usage: /call <phone> <duration> [in|out] [status] [result text…]\n"
    "duration: 150, 2:30, 1:02:30 or 2m30s; direction: in or out (default out)\n"
    "status: 1 left_message, 2 call_back, 3 not_available, 4 talked, 5 wrong_number, "
    "6 no_answer, 7 busy; result text follows the status\n"
    "Example: /call +79161234567 2:30 out talked Agreed on delivery"
)

DIRECTIONS = {"in": "inbound", "inbound": "inbound", "out": "outbound", "outbound": "outbound"}
# https://www.amocrm.ru/developers/content/crm_platform/calls-api: call_status 1..7.
CALL_STATUSES: dict[int, tuple[str, ...]] = {
    1: ("left_message", "message", "voicemail"),
    2: ("call_back", "callback", "call_back_later", "later"),
    3: ("not_available", "unavailable"),
    4: ("talked", "success", "answered", "talk_happened", "ok"),
    5: ("wrong_number", "wrong"),
    6: ("no_answer", "not_reached", "failed"),
    7: ("busy",),
}
STATUS_LABELS = {
    1: "left a message",
    2: "call back later",
    3: "not available",
    4: "talk happened",
    5: "wrong number",
    6: "could not get through",
    7: "busy",
}
_STATUS_WORDS = {word: code for code, words in CALL_STATUSES.items() for word in words}
_UNITS = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_PHONE = re.compile(r"\+?[\d\-()\s.]+")
FULL_PHONE_DIGITS = 10  # a national number; with its country code it is 11 or 12
_PHONE_WORD = re.compile(r"\+?[\d\-().]*\d[\d\-().]*")
ENTITY_PATHS = {
    "contact": "contacts",
    "lead": "leads",
    "customer": "customers",
    "company": "companies",
}

HELP_TEXT = (
    "Staff commands:\n"
    "/talk <id> — a talk: state, contact, lead, times, NPS\n"
    "  /talk 117\n"
    "/close <id> [nps] — close a talk now, or let the NPS bot run first\n"
    "  /close 117\n"
    "  /close 117 nps\n"
    "/call <phone> <duration> [in|out] [status] [result…] — log a call in amoCRM\n"
    "  /call +79161234567 150\n"
    "  /call +7 916 123-45-67 150\n"
    "  /call +79161234567 2:30 in talked Asked about delivery\n"
    "  /call 89161234567 1m5s out busy\n"
    "  statuses: 1 left_message, 2 call_back, 3 not_available, 4 talked, 5 wrong_number, "
    "6 no_answer, 7 busy\n"
    "/status — bridge health\n"
    "/failed — dead-lettered jobs with their reasons\n"
    "/retry <id>|all — re-drive a dead-lettered job, or all of them\n"
    "  /retry 42\n"
    "/help — this list"
)


# Every command the bot answers; an operator's other `/word` gets "unknown command".
KNOWN_COMMANDS = frozenset({"talk", "close", "call", "status", "failed", "retry", "help", "start"})
_COMMAND = re.compile(r"/([A-Za-z0-9_]+)(?:@\w+)?(?:\s|$)")


def is_unknown_command(text: str | None) -> bool:
    """Whether `text` is a slash command (`/word`, `/word@bot …`) the bot does not know."""
    match = _COMMAND.match(text or "")
    return match is not None and match.group(1).lower() not in KNOWN_COMMANDS


def unknown_command_text(word: str) -> str:
    """The answer to an unknown command."""
    return f"Unknown command {word}, see /help"


class UsageError(ValueError):
    """The command's arguments are wrong; the message is what to tell the operator."""


@dataclass(frozen=True, slots=True)
class CloseCommand:
    """`/close <id> [nps]`."""

    talk_id: int
    force: bool


@dataclass(frozen=True, slots=True)
class CallCommand:
    """`/call <phone> <duration> [in|out] [status] [result…]`."""

    phone: str
    duration: int
    direction: str
    status: int | None
    result: str


def _words(args: str | None) -> list[str]:
    return (args or "").split()


def _talk_id(word: str | None, usage: str) -> int:
    if word is None:
        raise UsageError(f"Which talk? {usage}")
    if not word.isdigit() or int(word) <= 0:
        raise UsageError(f"Talk id must be a number, not {word!r}.\n{usage}")
    return int(word)


def parse_talk(args: str | None) -> int:
    """The talk id of `/talk <id>`."""
    words = _words(args)
    if len(words) > 1:
        raise UsageError(TALK_USAGE)
    return _talk_id(words[0] if words else None, TALK_USAGE)


def parse_close(args: str | None) -> CloseCommand:
    """`/close <id>` (force) or `/close <id> nps`."""
    words = _words(args)
    talk_id = _talk_id(words[0] if words else None, CLOSE_USAGE)
    rest = [word.lower() for word in words[1:]]
    if rest not in ([], ["nps"]):
        raise UsageError(f"Unexpected {' '.join(words[1:])!r}.\n{CLOSE_USAGE}")
    return CloseCommand(talk_id=talk_id, force=not rest)


def parse_duration(raw: str) -> int:
    """Seconds from `150`, `2:30`, `1:02:30` or `2m30s` / `1h2m` / `45s`."""
    text = raw.strip().lower()
    if text.isdigit():
        return int(text)
    if ":" in text:
        parts = text.split(":")
        if len(parts) in (2, 3) and all(part.isdigit() for part in parts):
            numbers = [int(part) for part in parts]
            if all(number < 60 for number in numbers[1:]):
                seconds = 0
                for number in numbers:
                    seconds = seconds * 60 + number
                return seconds
        raise UsageError(f"Cannot read the duration {raw!r}.\n{CALL_USAGE}")
    match = _UNITS.fullmatch(text)
    if text and match is not None and any(match.groups()):
        hours, minutes, seconds = (int(group or 0) for group in match.groups())
        return hours * 3600 + minutes * 60 + seconds
    raise UsageError(f"Cannot read the duration {raw!r}.\n{CALL_USAGE}")


def parse_status(raw: str) -> int | None:
    """A call_status 1–7 from its number or word; None when it is neither."""
    word = raw.lower().replace("-", "_")
    if word.isdigit():
        return int(word) if int(word) in CALL_STATUSES else None
    return _STATUS_WORDS.get(word)


def parse_phone(raw: str) -> str:
    """`+digits` from a phone as typed; at least seven digits."""
    phone = normalise_phone(raw) if _PHONE.fullmatch(raw) else None
    if phone is None:
        raise UsageError(
            f"{raw!r} is not a phone number (at least {MIN_PHONE_DIGITS} digits).\n{CALL_USAGE}"
        )
    return phone


def _split_phone(words: list[str]) -> tuple[str, list[str]]:
    """The phone as typed, which may span words (`+7 916 123-45-67`), and the words after it.

    A phone spans words only when it starts like one written in groups: with `+` or `(`, or
    with a 1–3 digit country or trunk code (`8 916 …`, `7 916 …`, `916 123 …`). Then words of
    digits and `- ( ) .` join it until it has a full number's ten digits; the word after it
    is always left for the duration. `1234567 150 4` stays phone, duration, status.
    """
    first = words[0]
    grouped = first.startswith(("+", "(")) or (first.isdigit() and len(first) <= 3)
    taken = 1
    while (
        grouped
        and taken < len(words) - 1
        and len(phone_digits(" ".join(words[:taken]))) < FULL_PHONE_DIGITS
        and _PHONE_WORD.fullmatch(words[taken])
    ):
        taken += 1
    return " ".join(words[:taken]), words[taken:]


def parse_call(args: str | None) -> CallCommand:
    """`/call <phone> <duration> [in|out] [status] [result…]`; the result needs a status first."""
    words = _words(args)
    if len(words) < 2:
        raise UsageError(f"Phone and duration are required.\n{CALL_USAGE}")
    raw_phone, words = _split_phone(words)
    phone = parse_phone(raw_phone)
    if not words:
        raise UsageError(f"Phone and duration are required.\n{CALL_USAGE}")
    duration = parse_duration(words[0])
    rest = words[1:]
    direction = "outbound"
    if rest and rest[0].lower() in DIRECTIONS:
        direction = DIRECTIONS[rest.pop(0).lower()]
        if rest and parse_status(rest[0]) is None:
            raise UsageError(f"Unknown call status {rest[0]!r}.\n{CALL_USAGE}")
    elif rest and parse_status(rest[0]) is None:
        raise UsageError(f"Unknown direction or call status {rest[0]!r}.\n{CALL_USAGE}")
    status = parse_status(rest.pop(0)) if rest else None
    return CallCommand(
        phone=phone, duration=duration, direction=direction, status=status, result=" ".join(rest)
    )


def entity_link(base_url: str, entity_type: str, entity_id: int) -> str:
    """The card of a contact, lead, customer or company in the account."""
    return f"{base_url}/{ENTITY_PATHS.get(entity_type, entity_type + 's')}/detail/{entity_id}"


def format_time(timestamp: int | None, timezone: str) -> str:
    """`2024-05-01 15:03:00 MSK` in the configured zone, or a dash."""
    if not timestamp:
        return "—"
    moment = datetime.fromtimestamp(timestamp, UTC).astimezone(ZoneInfo(timezone))
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def format_talk(talk: Talk, base_url: str, timezone: str) -> str:
    """The reply to `/talk`."""
    lines = [
        f"Talk {talk.id}: {'open' if talk.is_in_work else 'closed'}, "
        f"{'read' if talk.is_read else 'unread'}",
        f"Origin: {talk.origin or '—'}",
    ]
    for label, kind, entity_id in (
        ("Contact", "contact", talk.contact_id),
        ("Lead", "lead", talk.lead_id),
        ("Customer", "customer", talk.customer_id),
    ):
        if entity_id:
            lines.append(f"{label} {entity_id}: {entity_link(base_url, kind, entity_id)}")
    lines += [
        f"Created: {format_time(talk.created_at, timezone)}",
        f"Updated: {format_time(talk.updated_at, timezone)}",
        f"Missed: {format_time(talk.missed_at, timezone)}",
        f"NPS: {talk.rate if talk.rate is not None else '—'}",
    ]
    return "\n".join(lines)


def format_closed(command: CloseCommand) -> str:
    """The reply to an accepted `/close`."""
    if command.force:
        return f"Talk {command.talk_id}: closed (without NPS)."
    return f"Talk {command.talk_id}: closing; amoCRM's NPS bot runs first if it is enabled."


def format_call(command: CallCommand, attachment: CallAttachment, base_url: str) -> str:
    """Where amoCRM attached a logged call, or that it attached it nowhere."""
    summary = f"{command.direction} call {command.phone}, {format_duration(command.duration)}"
    if command.status is not None:
        summary += f", {STATUS_LABELS[command.status]}"
    if attachment.entity_type is None or attachment.entity_id is None:
        reason = "; ".join(attachment.errors) or "no contact or company has this phone"
        return f"Call not logged: amoCRM attached it nowhere ({reason}).\n{summary}"
    link = entity_link(base_url, attachment.entity_type, attachment.entity_id)
    return (
        f"Call logged to {attachment.entity_type} {attachment.entity_id}: {link}\n"
        f"{summary.capitalize()}"
    )


def format_age(seconds: float) -> str:
    """How long ago, roughly: `45 s`, `12 min`, `3 h 5 min`, `4 days`."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def format_duration(seconds: int) -> str:
    """`2:30`, `1:02:30`."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe_crm_failure(status: int, message: str, talk_id: int | None = None) -> str:
    """What an amoCRM error status means for the operator."""
    if status == 404 and talk_id is not None:
        return f"Talk {talk_id} not found."
    if status == 401:
        return (
            "amoCRM rejected the access token (401): check AMOCRM_ACCESS_TOKEN, or grant "
            f"OAuth access again. ({message})"
        )
    if status == 402:
        return f"The amoCRM account is not paid (402). ({message})"
    if status == 403:
        return (
            "No rights for this in amoCRM (403): the integration's user may not see it, or "
            f"the IP is blocked for too many requests. ({message})"
        )
    if status == 429:
        return "amoCRM is rate limiting the bridge (429); try again in a minute."
    return f"amoCRM error {status}: {message}"
