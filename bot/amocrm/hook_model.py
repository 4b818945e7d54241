"""An outgoing message hook (spec §3.2) read once, leniently, into a typed model.

amojo sends a hook once and never again, so a hook that is signed but odd must still be
delivered as far as it can be: each field that has not the documented type is dropped (and
named in `dropped`), never a reason to refuse the hook. Only the message's own id is required:
without it nothing can be delivered, nor a delivery status reported. Real hooks omit keys, carry
`null` for "" and digits as strings (spec §3.1), so those are read as meant.

The listener stores `as_hook()` (the canonical, bounded form); the worker reads stored hooks
with the same `parse`, so a hook stored by an older version is read just as leniently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Bounds of what is kept of the free-form parts (buttons, quotes): a hook is small.
MAX_BUTTON_ROWS = 100
MAX_BUTTONS_PER_ROW = 20
MAX_TEXT_CHARS = 64 * 1024
MESSAGE_TYPES = frozenset(
    {"text", "picture", "video", "file", "voice", "audio", "sticker", "location", "contact"}
)
_QUOTE_KEYS = ("id", "msgid", "client_id", "type", "text")


class UnusableHook(ValueError):
    """Nothing of the hook can be delivered or reported: it names no message."""


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _earlier_drops(hook: dict[str, Any]) -> list[str]:
    """What the listener dropped before storing a hook (kept in its canonical form)."""
    dropped = hook.get("dropped")
    if not isinstance(dropped, list):
        return []
    return [str(item)[:200] for item in dropped[:50] if isinstance(item, str)]


class _Reader:
    """Reads typed fields of one hook, remembering which ones it had to drop."""

    def __init__(self) -> None:
        self.dropped: list[str] = []

    def _drop(self, where: str, value: Any) -> None:
        if value is not None and value != "":
            self.dropped.append(where)

    def text(self, obj: dict[str, Any], key: str, where: str) -> str:
        """A string field; numbers are taken as their digits, anything else is dropped."""
        value = obj.get(key)
        if isinstance(value, str):
            return value[:MAX_TEXT_CHARS]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self._drop(where, value)
        return ""

    def optional(self, obj: dict[str, Any], key: str, where: str) -> str | None:
        """A string field that may be missing (an empty one counts as missing)."""
        return self.text(obj, key, where) or None

    def number(self, obj: dict[str, Any], key: str, where: str) -> float:
        """A non-negative number; a string of digits counts, anything else is 0."""
        value = obj.get(key)
        if isinstance(value, bool):
            self._drop(where, value)
            return 0.0
        if isinstance(value, int | float) and 0 <= value < float("inf"):  # NaN fails too
            return float(min(value, 2**53))
        digits = value.strip() if isinstance(value, str) else ""
        if digits.isascii() and digits.isdigit() and len(digits) <= 16:
            return float(min(int(digits), 2**53))
        self._drop(where, value)
        return 0.0

    def member(self, obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        """An object field ({} when missing; dropped when it is something else)."""
        value = obj.get(key)
        if isinstance(value, dict):
            return value
        self._drop(where, value)
        return {}

    def buttons(self, markup: Any, where: str) -> dict[str, Any] | None:
        """Salesbot buttons: rows of {text, url}; anything else in them is dropped."""
        if markup is None:
            return None
        if not isinstance(markup, dict):
            self._drop(where, markup)
            return None
        rows = markup.get("buttons")
        if not isinstance(rows, list):
            self._drop(f"{where}.buttons", rows)
            return None
        kept: list[list[dict[str, str]]] = []
        for row in rows[:MAX_BUTTON_ROWS]:
            if not isinstance(row, list):
                self._drop(f"{where}.buttons[]", row)
                continue
            buttons = []
            for button in row[:MAX_BUTTONS_PER_ROW]:
                item = _object(button)
                label = self.text(item, "text", f"{where}.buttons[][].text")
                url = self.optional(item, "url", f"{where}.buttons[][].url")
                if label or url:
                    buttons.append({"text": label, **({"url": url} if url else {})})
            kept.append(buttons)
        result: dict[str, Any] = {"buttons": kept}
        mode = markup.get("mode")
        if isinstance(mode, str):
            result["mode"] = mode[:64]
        return result

    def quote(self, reply_to: Any, where: str) -> dict[str, str] | None:
        """The quoted message of a reply: its ids (and short text), as strings."""
        if reply_to is None:
            return None
        message = _object(reply_to).get("message") if isinstance(reply_to, dict) else None
        if not isinstance(message, dict):
            self._drop(where, reply_to)
            return None
        quote = {key: self.text(message, key, f"{where}.message.{key}") for key in _QUOTE_KEYS}
        kept = {key: value for key, value in quote.items() if value}
        return kept or None


@dataclass(frozen=True, slots=True)
class MessageHook:
    """What an outgoing message hook says, every field of its documented type."""

    amo_id: str
    type: str
    text: str
    media: str
    thumbnail: str
    file_name: str
    file_size: int
    conversation_amo_id: str | None
    conversation_client_id: str | None
    receiver_amo_id: str | None
    receiver_client_id: str | None
    receiver_phone: str
    sender_id: str | None
    markup: dict[str, Any] | None
    reply_to: dict[str, str] | None
    media_group_id: str | None
    timestamp: float
    time: float
    account_id: str
    source_external_id: str | None = None
    recovered: bool = False
    dropped: tuple[str, ...] = ()

    @classmethod
    def parse(cls, hook: Any) -> MessageHook:
        """Read a message hook; UnusableHook when it names no message."""
        read = _Reader()
        envelope = read.member(_object(hook), "message", "message")
        message = read.member(envelope, "message", "message.message")
        amo_id = read.optional(message, "id", "message.message.id")
        if amo_id is None:
            raise UnusableHook("message.message.id must be a non-empty string")
        conversation = read.member(envelope, "conversation", "message.conversation")
        receiver = read.member(envelope, "receiver", "message.receiver")
        sender = read.member(envelope, "sender", "message.sender")
        source = read.member(envelope, "source", "message.source")
        media = read.text(message, "media", "message.message.media")
        kind = read.text(message, "type", "message.message.type")
        if kind not in MESSAGE_TYPES:
            if kind:
                read.dropped.append("message.message.type")
            kind = "file" if media else "text"
        msec = read.number(envelope, "msec_timestamp", "message.msec_timestamp")
        seconds = read.number(envelope, "timestamp", "message.timestamp")
        outer = _object(hook)
        return cls(
            amo_id=amo_id,
            type=kind,
            text=read.text(message, "text", "message.message.text"),
            media=media,
            thumbnail=read.text(message, "thumbnail", "message.message.thumbnail"),
            file_name=read.text(message, "file_name", "message.message.file_name"),
            file_size=int(read.number(message, "file_size", "message.message.file_size")),
            conversation_amo_id=read.optional(conversation, "id", "message.conversation.id"),
            conversation_client_id=read.optional(
                conversation, "client_id", "message.conversation.client_id"
            ),
            receiver_amo_id=read.optional(receiver, "id", "message.receiver.id"),
            receiver_client_id=read.optional(receiver, "client_id", "message.receiver.client_id"),
            receiver_phone=read.text(receiver, "phone", "message.receiver.phone"),
            sender_id=read.optional(sender, "id", "message.sender.id"),
            markup=read.buttons(message.get("markup"), "message.message.markup"),
            reply_to=read.quote(message.get("reply_to"), "message.message.reply_to"),
            media_group_id=read.optional(
                message, "media_group_id", "message.message.media_group_id"
            ),
            timestamp=msec / 1000 if msec else seconds,
            time=read.number(outer, "time", "time"),
            account_id=read.text(outer, "account_id", "account_id"),
            source_external_id=read.optional(source, "external_id", "message.source.external_id"),
            recovered=outer.get("recovered") is True,
            dropped=tuple(dict.fromkeys([*_earlier_drops(outer), *read.dropped])),
        )

    @property
    def sent_at(self) -> float:
        """When amoCRM sent it (unix seconds; 0 when the hook does not say)."""
        return self.timestamp or self.time

    def as_hook(self) -> dict[str, Any]:
        """The canonical v2 hook: what the listener stores (read back by `parse`)."""
        message: dict[str, Any] = {
            "id": self.amo_id,
            "type": self.type,
            "text": self.text,
            "media": self.media,
            "thumbnail": self.thumbnail,
            "file_name": self.file_name,
            "file_size": self.file_size,
        }
        if self.markup is not None:
            message["markup"] = self.markup
        if self.reply_to is not None:
            message["reply_to"] = {"message": self.reply_to}
        if self.media_group_id is not None:
            message["media_group_id"] = self.media_group_id
        conversation: dict[str, str] = {}
        if self.conversation_amo_id is not None:
            conversation["id"] = self.conversation_amo_id
        if self.conversation_client_id is not None:
            conversation["client_id"] = self.conversation_client_id
        receiver: dict[str, Any] = {"phone": self.receiver_phone}
        if self.receiver_amo_id is not None:
            receiver["id"] = self.receiver_amo_id
        if self.receiver_client_id is not None:
            receiver["client_id"] = self.receiver_client_id
        envelope: dict[str, Any] = {
            "receiver": receiver,
            "sender": {"id": self.sender_id} if self.sender_id else {},
            "conversation": conversation,
            "timestamp": int(self.timestamp),
            "msec_timestamp": int(self.timestamp * 1000),
            "message": message,
        }
        if self.source_external_id is not None:
            envelope["source"] = {"external_id": self.source_external_id}
        hook: dict[str, Any] = {
            "account_id": self.account_id,
            "time": int(self.time),
            "message": envelope,
        }
        if self.recovered:
            hook["recovered"] = True
        if self.dropped:
            hook["dropped"] = list(self.dropped)
        return hook
