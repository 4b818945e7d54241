"""`/link`: staff make deep links without a calculator — one per bot, with its QR code."""

from __future__ import annotations

import io

import segno

from bot.chat.notices import notice_job
from bot.common.bots import Bots
from bot.common.deeplinks import LinkRefused, make_payload, read_payload, readable
from bot.common.texts import Language, text
from storage import ChatKey, NewJob

QR_SCALE = 8


def parse_values(args: str | None) -> dict[str, str]:
    """`utm_source=vk utm_campaign=spring` as pairs; LinkRefused saying what is wrong."""
    values: dict[str, str] = {}
    for word in (args or "").split():
        key, sep, value = word.partition("=")
        if not sep or not key or not value:
            raise LinkRefused(f"{word!r} is not key=value")
        if key.lower() in values:
            raise LinkRefused(f"{key} is given twice")
        values[key.lower()] = value
    return values


def qr_png(url: str) -> bytes:
    """The URL as a QR code picture (PNG)."""
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="png", scale=QR_SCALE, border=2)
    return buffer.getvalue()


def link_jobs(
    chat: ChatKey, message_id: int, bots: Bots, args: str | None, language: Language
) -> list[NewJob]:
    """The answers to one `/link`: a picture with its link per bot, or why there is none."""
    try:
        payload = make_payload(parse_values(args))
    except LinkRefused as exc:
        reason = text("staff.link.usage", language, reason=str(exc))
        return [notice_job(chat, f"link:{message_id}:usage", reason)]
    line = text("start.from_link", language, source=readable(read_payload(payload)))
    jobs = []
    for key in bots.each_key():
        username = bots.usernames.get(key)
        label = bots.label(key)
        if not username:
            missing = text("staff.link.no_username", language, bot=label)
            jobs.append(notice_job(chat, f"link:{message_id}:{key}", missing))
            continue
        url = f"https://t.me/{username}?start={payload}"
        caption = text("staff.link.made", language, bot=f"@{username}", url=url, line=line)
        jobs.append(notice_job(chat, f"link:{message_id}:{key}", caption, photo=qr_png(url)))
    return jobs
