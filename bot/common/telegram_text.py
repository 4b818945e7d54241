"""Text as Telegram counts and limits it (UTF-16 units, 4096 a message): both directions use it."""

from __future__ import annotations

import re

from bot.common.limits import TELEGRAM_TEXT_LIMIT

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def well_formed(text: str) -> str:
    """Text Telegram accepts: a lone UTF-16 surrogate (text cut inside an emoji) becomes U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def utf16_length(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> str:
    if utf16_length(text) <= limit:
        return text
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return text[:index]
    return text


def split_text(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Chunks of at most `limit`, cut at a paragraph, line or word boundary when there is one."""
    chunks: list[str] = []
    rest = text
    while utf16_length(rest) > limit:
        window = _prefix_within(rest, limit)
        cut, skip = len(window), 0  # no boundary at all: a hard cut, never inside a character
        for separator in ("\n\n", "\n"):
            position = window.rfind(separator)
            if position >= len(window) // 2:
                cut, skip = position, len(separator)
                break
        else:
            position = window.rfind(" ")
            if position > 0:
                cut, skip = position, 1
        chunk, rest = window[:cut], rest[cut + skip :]
        if chunk.strip():
            chunks.append(chunk)
    if rest.strip():
        chunks.append(rest)
    return chunks
