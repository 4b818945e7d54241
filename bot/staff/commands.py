"""Staff commands: parsing their arguments and wording the replies (no aiogram, no network)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot.amocrm.crm_records import CallAttachment, Talk
from bot.common.phones import MIN_PHONE_DIGITS, normalise_phone, phone_digits
from bot.common.texts import TEXTS, Language, Phrase, phrase, text

TALK_USAGE = "staff.usage.talk"
CLOSE_USAGE = "staff.usage.close"
CALL_USAGE = "staff.usage.call"

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

# Every command the bot answers; an operator's other `/word` gets "unknown command".
KNOWN_COMMANDS = frozenset(
    {"talk", "close", "call", "status", "failed", "retry", "help", "link", "start"}
)
_COMMAND = re.compile(r"/([A-Za-z0-9_]+)(?:@\w+)?(?:\s|$)")


def command_of(text: str | None) -> str | None:
    """The command word of a `/word …` text (lower case), None for anything else."""
    match = _COMMAND.match(text or "")
    return match.group(1).lower() if match is not None else None


def is_unknown_command(text: str | None) -> bool:
    """Whether `text` is a slash command (`/word`, `/word@bot …`) the bot does not know."""
    match = _COMMAND.match(text or "")
    return match is not None and match.group(1).lower() not in KNOWN_COMMANDS


class UsageError(ValueError):
    """The command's arguments are wrong: what to tell the operator, then how to call it."""

    def __init__(self, complaint: Phrase | None, usage: str) -> None:
        self.complaint = complaint
        self.usage = usage  # the catalogue key of the command's usage
        super().__init__(self.text("en"))

    def text(self, language: Language) -> str:
        """The complaint and the usage, in the operator's language."""
        usage = text(self.usage, language)
        return f"{self.complaint.render(language)}\n{usage}" if self.complaint else usage


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
        raise UsageError(phrase("staff.which_talk"), usage)
    if not word.isdigit() or int(word) <= 0:
        raise UsageError(phrase("staff.talk_id_not_number", word=word), usage)
    return int(word)


def parse_talk(args: str | None) -> int:
    """The talk id of `/talk <id>`."""
    words = _words(args)
    if len(words) > 1:
        raise UsageError(None, TALK_USAGE)
    return _talk_id(words[0] if words else None, TALK_USAGE)


def parse_close(args: str | None) -> CloseCommand:
    """`/close <id>` (force) or `/close <id> nps`."""
    words = _words(args)
    talk_id = _talk_id(words[0] if words else None, CLOSE_USAGE)
    rest = [word.lower() for word in words[1:]]
    if rest not in ([], ["nps"]):
        raise UsageError(phrase("staff.unexpected", words=" ".join(words[1:])), CLOSE_USAGE)
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
        raise UsageError(phrase("staff.duration_unreadable", raw=raw), CALL_USAGE)
    match = _UNITS.fullmatch(text)
    if text and match is not None and any(match.groups()):
        hours, minutes, seconds = (int(group or 0) for group in match.groups())
        return hours * 3600 + minutes * 60 + seconds
    raise UsageError(phrase("staff.duration_unreadable", raw=raw), CALL_USAGE)


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
        raise UsageError(phrase("staff.not_a_phone", raw=raw, digits=MIN_PHONE_DIGITS), CALL_USAGE)
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
        raise UsageError(phrase("staff.phone_and_duration"), CALL_USAGE)
    raw_phone, words = _split_phone(words)
    phone = parse_phone(raw_phone)
    if not words:
        raise UsageError(phrase("staff.phone_and_duration"), CALL_USAGE)
    duration = parse_duration(words[0])
    rest = words[1:]
    direction = "outbound"
    if rest and rest[0].lower() in DIRECTIONS:
        direction = DIRECTIONS[rest.pop(0).lower()]
        if rest and parse_status(rest[0]) is None:
            raise UsageError(phrase("staff.unknown_status", word=rest[0]), CALL_USAGE)
    elif rest and parse_status(rest[0]) is None:
        raise UsageError(phrase("staff.unknown_direction_or_status", word=rest[0]), CALL_USAGE)
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


def format_talk(talk: Talk, base_url: str, timezone: str, language: Language) -> str:
    """The reply to `/talk`."""

    def say(key: str, **params: object) -> str:
        return text(key, language, **params)

    state = say("staff.talk.open" if talk.is_in_work else "staff.talk.closed")
    read = say("staff.talk.read" if talk.is_read else "staff.talk.unread")
    lines = [
        say("staff.talk.head", id=talk.id, state=state, read=read),
        say("staff.talk.origin", origin=talk.origin or "—"),
    ]
    for kind, entity_id in (
        ("contact", talk.contact_id),
        ("lead", talk.lead_id),
        ("customer", talk.customer_id),
    ):
        if entity_id:
            link = entity_link(base_url, kind, entity_id)
            lines.append(say(f"staff.talk.{kind}", id=entity_id, link=link))
    lines += [
        say("staff.talk.created", time=format_time(talk.created_at, timezone)),
        say("staff.talk.updated", time=format_time(talk.updated_at, timezone)),
        say("staff.talk.missed", time=format_time(talk.missed_at, timezone)),
        say("staff.talk.nps", rate=talk.rate if talk.rate is not None else "—"),
    ]
    return "\n".join(lines)


def format_closed(command: CloseCommand, language: Language) -> str:
    """The reply to an accepted `/close`."""
    return text("staff.closed" if command.force else "staff.closing", language, id=command.talk_id)


def format_call(
    command: CallCommand, attachment: CallAttachment, base_url: str, language: Language
) -> str:
    """Where amoCRM attached a logged call, or that it attached it nowhere."""
    summary = text(
        "staff.call.summary",
        language,
        direction=text(f"staff.call.{command.direction}", language),
        phone=command.phone,
        duration=format_duration(command.duration),
    )
    if command.status is not None:
        summary += f", {text(f'staff.call.status.{command.status}', language)}"
    if attachment.entity_type is None or attachment.entity_id is None:
        reason = "; ".join(attachment.errors) or text("staff.call.no_entity", language)
        return text("staff.call.not_logged", language, reason=reason, summary=summary)
    link = entity_link(base_url, attachment.entity_type, attachment.entity_id)
    return text(
        "staff.call.logged",
        language,
        entity=entity_word(attachment.entity_type, language),
        id=attachment.entity_id,
        link=link,
        summary=summary[:1].upper() + summary[1:],
    )


def entity_word(entity_type: str, language: Language) -> str:
    """`lead`, `сделка`: an amoCRM entity type as the operator reads it (unknown ones as is)."""
    key = f"staff.entity.{entity_type}"
    return text(key, language) if key in TEXTS else entity_type


def format_age(seconds: float, language: Language) -> str:
    """How long ago, roughly: `45 s`, `12 min`, `3 h 5 min`, `4 days`."""
    seconds = int(seconds)
    if seconds < 120:
        return text("units.seconds", language, n=seconds)
    if seconds < 7200:
        return text("units.minutes", language, n=seconds // 60)
    if seconds < 2 * 86400:
        hours, minutes = seconds // 3600, seconds % 3600 // 60
        return text("units.hours_minutes", language, hours=hours, minutes=minutes)
    return text("units.days", language, n=seconds // 86400)


def format_duration(seconds: int) -> str:
    """`2:30`, `1:02:30`."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe_crm_failure(
    status: int, message: str, language: Language, talk_id: int | None = None
) -> str:
    """What an amoCRM error status means for the operator."""
    if status == 404 and talk_id is not None:
        return text("staff.talk.not_found", language, id=talk_id)
    if status in (401, 402, 403, 429):
        return text(f"staff.crm.{status}", language, message=message)
    return text("staff.crm.other", language, status=status, message=message)
