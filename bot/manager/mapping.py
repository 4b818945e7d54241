"""Mapping of amojo outgoing message hooks (spec §3.2) to Telegram messages: plain code, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
)

from bot.amocrm.hook_model import MessageHook
from bot.common import ids
from bot.common.limits import TELEGRAM_CAPTION_LIMIT
from bot.common.telegram_text import split_text, utf16_length, well_formed
from bot.common.texts import Language, text

Keyboard = InlineKeyboardMarkup | ReplyKeyboardMarkup

# amojo message type → the Telegram method family that sends it.
MEDIA_KINDS = {
    "picture": "photo",
    "video": "video",
    "file": "document",
    "voice": "voice",
    "audio": "audio",
    "sticker": "sticker",
}
NO_CAPTION_KINDS = frozenset({"sticker"})
# The customer reads what stands in for a file by its type (catalogue `stand_in.<type>`).
TYPE_LABELS = frozenset({"picture", "video", "file", "voice", "audio", "sticker"})


@dataclass(frozen=True, slots=True)
class ManagerMessage:
    """The parts of an outgoing message hook the bridge uses."""

    amo_id: str
    type: str
    text: str
    media: str
    file_name: str
    file_size: int
    conversation_amo_id: str
    conversation_client_id: str | None
    receiver_amo_id: str | None
    receiver_phone: str
    markup: dict[str, Any] | None
    reply_to: dict[str, Any] | None
    media_group_id: str | None
    sent_at: float
    source_external_id: str | None = None

    dropped: tuple[str, ...] = ()
    recovered: bool = False  # read back from history: its hook never came

    @classmethod
    def from_hook(cls, hook: dict[str, Any]) -> ManagerMessage:
        """Read a stored hook (leniently: a field of the wrong type is dropped, never fatal).

        UnusableHook when it names no message id (the listener never stores such a hook).
        """
        read = MessageHook.parse(hook)
        return cls(
            amo_id=read.amo_id,
            type=read.type,
            text=well_formed(read.text),
            media=read.media,
            file_name=well_formed(read.file_name),
            file_size=read.file_size,
            conversation_amo_id=read.conversation_amo_id or "",
            conversation_client_id=read.conversation_client_id,
            receiver_amo_id=read.receiver_amo_id,
            receiver_phone=read.receiver_phone,
            markup=read.markup,
            reply_to=read.reply_to,
            media_group_id=read.media_group_id,
            sent_at=read.sent_at,
            source_external_id=read.source_external_id,
            dropped=read.dropped,
            recovered=read.recovered,
        )

    @property
    def media_kind(self) -> str | None:
        """Telegram media kind, or None for text."""
        return MEDIA_KINDS.get(self.type) if self.media else None

    def refused_text(self, caption: str, language: Language) -> str:
        """Text that stands in for media the bridge will not fetch: the caption and a note."""
        return self._stand_in(caption, text("stand_in.not_delivered", language), language)

    def link_text(self, caption: str, language: Language) -> str:
        """Text that stands in for media Telegram would not take: the caption and the link."""
        return self._stand_in(caption, self.media, language)

    def _stand_in(self, caption: str, what: str, language: Language) -> str:
        kind = self.type if self.type in TYPE_LABELS else "attachment"
        label = self.file_name or text(f"stand_in.{kind}", language)
        line = f"📎 {label}: {what}"
        return f"{caption}\n\n{line}" if caption else line


def _is_link(url: Any) -> bool:
    return isinstance(url, str) and url.startswith(("https://", "http://", "tg://"))


@dataclass(frozen=True, slots=True)
class Buttons:
    """A Telegram keyboard for a Salesbot/manager markup, plus link lines it could not hold."""

    keyboard: Keyboard | None = None
    extra_lines: list[str] = field(default_factory=list)


def keyboard_for(markup: dict[str, Any] | None, *, inline: bool = False) -> Buttons:
    """Text buttons → a one-time reply keyboard (a press comes back as the customer's text);
    link buttons → inline URL buttons. Telegram takes one keyboard per message, so when both
    kinds come together the text buttons win and the links are written into the text.

    `inline` (a Business chat, which takes no reply keyboard): text buttons become inline
    buttons whose press (`callback_query`, data `amo:<row>:<column>`) comes back as the
    customer's text, next to the link buttons."""
    rows = markup.get("buttons") if markup else None
    if not isinstance(rows, list):
        return Buttons()
    text_rows: list[list[KeyboardButton]] = []
    url_rows: list[list[InlineKeyboardButton]] = []
    for row in rows:
        if not isinstance(row, list):
            continue
        text_row, url_row = [], []
        for button in row:
            if not isinstance(button, dict):
                continue
            label = str(button.get("text") or "").strip()
            url = button.get("url")
            if _is_link(url):
                url_row.append(InlineKeyboardButton(text=label or str(url), url=str(url)))
            elif label:
                text_row.append(KeyboardButton(text=label))
        if text_row:
            text_rows.append(text_row)
        if url_row:
            url_rows.append(url_row)
    if inline and text_rows:
        pressed = [
            [
                InlineKeyboardButton(text=button.text, callback_data=f"{ids.BUTTON_DATA}{r}:{c}")
                for c, button in enumerate(row)
            ]
            for r, row in enumerate(text_rows)
        ]
        return Buttons(InlineKeyboardMarkup(inline_keyboard=pressed + url_rows))
    if text_rows:
        lines = [f"{b.text}: {b.url}" for row in url_rows for b in row]
        keyboard = ReplyKeyboardMarkup(
            keyboard=text_rows, resize_keyboard=True, one_time_keyboard=True
        )
        return Buttons(keyboard, lines)
    if url_rows:
        return Buttons(InlineKeyboardMarkup(inline_keyboard=url_rows))
    return Buttons()


@dataclass(frozen=True, slots=True)
class Part:
    """One Telegram message of a delivery: text, or media with an optional caption."""

    text: str
    media_kind: str | None = None


def plan_parts(message: ManagerMessage, extra_lines: list[str]) -> list[Part]:
    """The Telegram messages that carry one manager message, in order."""
    text = message.text.strip()
    if extra_lines:
        text = "\n".join([text, "", *extra_lines]) if text else "\n".join(extra_lines)
    kind = message.media_kind
    if kind is None:
        return [Part(chunk) for chunk in split_text(text)]
    if kind in NO_CAPTION_KINDS or utf16_length(text) > TELEGRAM_CAPTION_LIMIT:
        return [Part("", kind), *(Part(chunk) for chunk in split_text(text))]
    return [Part(text, kind)]
