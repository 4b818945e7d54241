"""What the amoCRM REST API answers, read into records: talks, calls, chat message events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Talk:
    """A talk as `GET /api/v4/talks/{id}` describes it (spec §8.1)."""

    id: int
    is_in_work: bool
    is_read: bool
    origin: str
    contact_id: int | None
    lead_id: int | None
    customer_id: int | None
    created_at: int | None
    updated_at: int | None
    missed_at: int | None
    rate: int | None


def _first_id(embedded: dict[str, Any], key: str) -> int | None:
    items = embedded.get(key) or []
    if items and isinstance(items[0], dict) and items[0].get("id") is not None:
        return int(items[0]["id"])
    return None


def int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_talk(data: dict[str, Any]) -> Talk:
    """A Talk from its hal+json body."""
    embedded = data.get("_embedded") or {}
    entity_id = int_or_none(data.get("entity_id"))
    entity_type = data.get("entity_type")
    lead_id = _first_id(embedded, "leads")
    customer_id = _first_id(embedded, "customers")
    if entity_type == "lead" and lead_id is None:
        lead_id = entity_id
    if entity_type == "customer" and customer_id is None:
        customer_id = entity_id
    return Talk(
        id=int(data["talk_id"]),
        is_in_work=bool(data.get("is_in_work")),
        is_read=bool(data.get("is_read")),
        origin=str(data.get("origin") or ""),
        contact_id=_first_id(embedded, "contacts") or int_or_none(data.get("contact_id")),
        lead_id=lead_id,
        customer_id=customer_id,
        created_at=int_or_none(data.get("created_at")),
        updated_at=int_or_none(data.get("updated_at")),
        missed_at=int_or_none(data.get("missed_at")),
        rate=int_or_none(data.get("rate")),
    )


@dataclass(frozen=True, slots=True)
class NewCall:
    """One call for `POST /api/v4/calls` (spec §8.2)."""

    phone: str
    duration: int
    direction: str
    source: str
    uniq: str
    call_status: int | None = None
    call_result: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The request item."""
        item: dict[str, Any] = {
            "phone": self.phone,
            "duration": self.duration,
            "direction": self.direction,
            "source": self.source,
            "uniq": self.uniq,
            "request_id": "0",
        }
        if self.call_status is not None:
            item["call_status"] = self.call_status
        if self.call_result:
            item["call_result"] = self.call_result
        return item


@dataclass(frozen=True, slots=True)
class CallAttachment:
    """Where amoCRM put a logged call; `entity_type` None means nowhere."""

    call_id: int | None = None
    entity_type: str | None = None
    entity_id: int | None = None
    errors: list[str] = field(default_factory=list)


def _describe_error(error: Any) -> str:
    if isinstance(error, dict):
        inner = error.get("errors")
        if inner is not None:
            inner_list = inner if isinstance(inner, list) else [inner]
            return "; ".join(_describe_error(item) for item in inner_list)
        parts = [str(error[k]) for k in ("title", "code", "path", "detail") if error.get(k)]
        return ": ".join(parts) or str(error)
    return str(error)


def parse_call_attachment(data: Any) -> CallAttachment:
    """Where the first call of a `POST /api/v4/calls` answer went (and any errors)."""
    if not isinstance(data, dict):
        return CallAttachment(errors=[str(data)[:300]])
    errors = [_describe_error(e) for e in data.get("errors") or []]
    calls = (data.get("_embedded") or {}).get("calls") or []
    if not calls or not isinstance(calls[0], dict):
        return CallAttachment(errors=errors)
    call = calls[0]
    entity_type = call.get("entity_type")
    entity_id = int_or_none(call.get("entity_id"))
    return CallAttachment(
        call_id=int_or_none(call.get("id")),
        entity_type=str(entity_type) if entity_type and entity_id else None,
        entity_id=entity_id if entity_type else None,
        errors=errors,
    )


EVENTS_PAGE_LIMIT = 100  # events-and-notes.md: at most 100 a page


@dataclass(frozen=True, slots=True)
class ChatMessageEvent:
    """An `outgoing_chat_message` event: a manager's (or Salesbot's) message exists."""

    message_id: str
    created_at: float
    contact_id: int | None  # `linked_talk_contact_id`, or the entity when it is the contact
    lead_id: int | None  # the entity when it is a lead (its contact may be asked of it)


def parse_chat_message_event(event: Any) -> ChatMessageEvent | None:
    """A chat message event as documented (value_after[0].message.id), read defensively.

    Where `linked_talk_contact_id` sits is not shown in the docs: the event and its
    `_embedded` are both looked at.
    """
    if not isinstance(event, dict):
        return None
    after = event.get("value_after")
    first = after[0] if isinstance(after, list) and after and isinstance(after[0], dict) else {}
    message = first.get("message")
    message_id = message.get("id") if isinstance(message, dict) else None
    if not isinstance(message_id, str) or not message_id:
        return None
    embedded = event.get("_embedded")
    inner = embedded.get("linked_talk_contact_id") if isinstance(embedded, dict) else None
    contact = int_or_none(event.get("linked_talk_contact_id")) or int_or_none(inner)
    entity_type, entity_id = event.get("entity_type"), int_or_none(event.get("entity_id"))
    if contact is None and entity_type == "contact":
        contact = entity_id
    created = event.get("created_at")
    return ChatMessageEvent(
        message_id=message_id,
        created_at=float(created) if isinstance(created, int | float) else 0.0,
        contact_id=contact,
        lead_id=entity_id if entity_type == "lead" else None,
    )
