"""Deep-link payloads (`t.me/<bot>?start=<payload>`): where a customer came from.

Telegram allows 64 characters of `A-Z a-z 0-9 _ -` (Bot API, `/start` deep linking). Two
forms are read (DESIGN.md, *Where a lead came from*):
- base64url without padding of a query string (`utm_source=vk&utm_campaign=spring`);
- `key-value` pairs joined by `__`, key and value split at the first `-`
  (`utm_source-vk__utm_campaign-spring`).
Anything else is kept as the raw payload only. Pure functions: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
PAYLOAD_LIMIT = 64  # Telegram's limit for a deep link's start parameter
PAYLOAD_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
VALUE_LIMIT = 100  # a decoded value longer than this is kept in the raw payload only
_RAW_LIMIT = 200  # what of a payload is stored and shown


def _plain(value: str) -> bool:
    """A value that may go into a field or a note line as it is (nothing that forges a line)."""
    return 0 < len(value) <= VALUE_LIMIT and value.isprintable()


@dataclass(frozen=True, slots=True)
class Touch:
    """One deep-link payload as read: its form, the UTM values, other pairs."""

    raw: str
    form: str  # "query" (base64url of a query string), "pairs", or "raw"
    utm: dict[str, str] = field(default_factory=dict)
    other: dict[str, str] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, str]:
        """Every decoded pair, the UTM ones first."""
        return {**self.utm, **self.other}


def _split(pairs: list[tuple[str, str]], raw: str, form: str) -> Touch | None:
    if not pairs or any(not _KEY.fullmatch(key) or not _plain(value) for key, value in pairs):
        return None
    utm = {key: value for key, value in pairs if key in UTM_KEYS}
    other = {key: value for key, value in pairs if key not in UTM_KEYS}
    return Touch(raw, form, utm, other)


def _as_query(raw: str) -> Touch | None:
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if "=" not in decoded or not decoded.isprintable():
        return None
    try:
        pairs = parse_qsl(decoded, keep_blank_values=False, strict_parsing=True)
    except ValueError:
        return None
    return _split(pairs, raw, "query")


def _as_pairs(raw: str) -> Touch | None:
    parts = raw.split("__")
    if any("-" not in part for part in parts):
        return None
    return _split([tuple(part.split("-", 1)) for part in parts], raw, "pairs")  # type: ignore[misc]


def is_deep_link(payload: str) -> bool:
    """Whether a `/start` argument can be a deep link's payload (Telegram's alphabet, ≤ 64)."""
    return len(payload) <= PAYLOAD_LIMIT and PAYLOAD_CHARS.fullmatch(payload) is not None


def read_payload(raw: str) -> Touch:
    """What a `/start` payload says (never fails: unreadable means raw only)."""
    raw = "".join(c if c.isprintable() else "?" for c in raw.strip()[:_RAW_LIMIT])
    if not PAYLOAD_CHARS.fullmatch(raw):
        return Touch(raw, "raw")
    # Pairs naming a UTM key are taken as pairs: a short pairs payload may happen to decode as
    # base64 too, never into a query string that names one.
    pairs = _as_pairs(raw)
    if pairs is not None and pairs.utm:
        return pairs
    return _as_query(raw) or pairs or Touch(raw, "raw")


def readable(touch: Touch) -> str:
    """The payload as a short line for amoCRM: the campaign, then where it ran (or raw)."""
    utm = touch.utm
    if not utm:
        return touch.raw
    main = utm.get("utm_campaign") or utm.get("utm_content") or utm.get("utm_term") or ""
    where = ", ".join(utm[key] for key in ("utm_source", "utm_medium") if key in utm)
    if main and where:
        return f"{main} ({where})"
    return main or where


class LinkRefused(ValueError):
    """The values cannot make a deep link (the reason is the message)."""


def make_payload(values: dict[str, str]) -> str:
    """The shortest payload that reads back as `values`; LinkRefused past Telegram's limit."""
    if not values:
        raise LinkRefused("no values: give key=value pairs, e.g. utm_source=vk")
    for key in values:
        if not _KEY.fullmatch(key):
            raise LinkRefused(f"{key!r} is not a key (lower-case letters, digits, _)")
    candidates = []
    if all(PAYLOAD_CHARS.fullmatch(v) and "__" not in v for v in values.values()):
        candidates.append("__".join(f"{key}-{value}" for key, value in values.items()))
    query = urlencode(values).encode()
    candidates.append(base64.urlsafe_b64encode(query).decode().rstrip("="))
    readable_back = [c for c in candidates if read_payload(c).values == values]
    if not readable_back:
        raise LinkRefused("these values cannot be carried in a deep link")
    payload = min(readable_back, key=len)
    if len(payload) > PAYLOAD_LIMIT:
        raise LinkRefused(
            f"the payload would be {len(payload)} characters; Telegram allows {PAYLOAD_LIMIT}: "
            "use shorter values or fewer keys"
        )
    return payload
