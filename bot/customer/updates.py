"""Bot API answers read one update at a time, so one unreadable update never stops intake.

aiogram validates a whole `getUpdates` answer at once: a single update it cannot read (a type
Telegram shipped before aiogram knew it, an older local Bot API server) fails the batch, and
polling retries the same offset forever. Here a failing batch is read update by update; an
update that does not validate loses only the fields that fail (the event keeps the rest and a
note of what was dropped, `UNREADABLE`), so it is still bridged (as a stand-in when its content
was dropped) and confirmed. Errors never carry the answer's content: it holds customers' names,
texts and phones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import ClientDecodeError
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import Update
from pydantic import ValidationError

logger = logging.getLogger(__name__)

# The extra field an event object carries when fields of it were dropped (their names).
UNREADABLE = "bridge_unreadable"
# Fields an event cannot lose: without them there is no message to bridge.
_REQUIRED = frozenset({"message_id", "date", "chat", "update_id"})
_MAX_REPAIRS = 25
# Fields that say who wrote a message: when one was unreadable, nobody is taken at their word
# (a forwarded "/close 1" must not run as the operator's own command).
AUTHORSHIP_FIELDS = frozenset(
    {
        "forward_origin",
        "external_reply",
        "via_bot",
        "sender_chat",
        "sender_business_bot",
        "from",
        "is_automatic_forward",
    }
)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An update aiogram could not read as Telegram sent it: which, and what was dropped."""

    update_id: int
    kind: str
    dropped: tuple[str, ...]


def describe_errors(error: ValidationError, limit: int = 5) -> str:
    """Where validation failed and why, without the values (they are customers' data)."""
    parts = [
        f"{'.'.join(str(part) for part in item['loc']) or 'answer'}: {item['type']}"
        for item in error.errors(include_url=False, include_input=False, include_context=False)
    ]
    more = f" (+{len(parts) - limit} more)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


def _redacted(message: str, original: Exception, data: Any) -> ClientDecodeError:
    """aiogram's decode error with neither the answer nor the values in it (both get logged)."""
    if isinstance(original, ValidationError):
        original = ValueError(describe_errors(original))
    size = len(data) if isinstance(data, str | bytes) else None
    return ClientDecodeError(
        message, original, f"<{size if size is not None else 'an'} answer not logged>"
    )


def read_update(raw: Any, bot: Bot) -> tuple[Update | None, Unreadable | None]:
    """One raw update as aiogram's Update, dropping the fields that do not validate.

    An update nothing of which can be read is a bare `Update(update_id)`: it carries no event,
    but its id is confirmed like any other. (update, None) when it validated as it was; None
    for an item that is not an update at all.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("update_id"), int):
        return None, None
    update_id = raw["update_id"]
    kind = next((str(key) for key in raw if key != "update_id"), "?")
    candidate = dict(raw)
    dropped: list[str] = []
    for _ in range(_MAX_REPAIRS):
        try:
            update = Update.model_validate(candidate, context={"bot": bot})
        except ValidationError as exc:
            if _drop_failing_fields(candidate, exc, dropped):
                continue
            break
        return update, (Unreadable(update_id, kind, tuple(dropped)) if dropped else None)
    return Update(update_id=update_id), Unreadable(update_id, kind, ())


def _drop_failing_fields(
    candidate: dict[str, Any], exc: ValidationError, dropped: list[str]
) -> bool:
    """Remove each failing field of the update's event object; False when none can go."""
    progress = False
    for item in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = item["loc"]
        if len(loc) < 2 or not isinstance(loc[0], str) or not isinstance(loc[1], str):
            continue
        event = candidate.get(loc[0])
        if not isinstance(event, dict) or loc[1] not in event or loc[1] in _REQUIRED:
            continue
        event = dict(event)  # the raw answer stays as Telegram sent it
        del event[loc[1]]
        event[UNREADABLE] = [*event.get(UNREADABLE, []), loc[1]]
        candidate[loc[0]] = event
        dropped.append(f"{loc[0]}.{loc[1]}")
        progress = True
    return progress


class UpdateReadingSession(AiohttpSession):
    """aiohttp session whose getUpdates answers are read update by update."""

    def __init__(
        self, *, on_unreadable: Callable[[Bot, Unreadable], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.on_unreadable = on_unreadable

    def check_response(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        status_code: int,
        content: str,
    ) -> Response[TelegramType]:
        """aiogram's check; a getUpdates answer it cannot read is read one update at a time."""
        try:
            return super().check_response(bot, method, status_code, content)
        except ClientDecodeError as exc:
            answer = exc.data
            if not isinstance(answer, dict) or answer.get("ok") is not True:
                raise _redacted(exc.message, exc.original, content) from None
            result = answer.get("result")
            if not isinstance(method, GetUpdates) or not isinstance(result, list):
                # Telegram did what was asked (a message sent, a connection told): the answer
                # is read without what this aiogram cannot, never taken for a failure.
                return self._lenient(bot, method, answer, exc, content)
        updates: list[Update] = []
        for raw in result:
            update, unreadable = read_update(raw, bot)
            if update is not None:
                updates.append(update)
            if unreadable is not None:
                what = ", ".join(unreadable.dropped)
                logger.warning(
                    "update %d (%s) of bot %d: aiogram cannot read %s; %s",
                    unreadable.update_id,
                    unreadable.kind,
                    bot.id,
                    what or "it",
                    "bridged without them" if what else "confirmed, nothing of it bridged",
                )
                if self.on_unreadable is not None:
                    self.on_unreadable(bot, unreadable)
        return Response[list[Update]](ok=True, result=updates)  # type: ignore[return-value]

    def _lenient(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        answer: dict[str, Any],
        exc: ClientDecodeError,
        content: str,
    ) -> Response[TelegramType]:
        answer = dict(answer)
        dropped: list[str] = []
        response_type = Response[method.__returning__]  # type: ignore[name-defined]
        for _ in range(_MAX_REPAIRS):
            try:
                response: Response[TelegramType] = response_type.model_validate(
                    answer, context={"bot": bot}
                )
            except ValidationError as failed:
                if _drop_in_result(answer, failed, dropped):
                    continue
                raise _redacted(exc.message, failed, content) from None
            logger.warning(
                "%s of bot %d done; its answer read without %s (aiogram cannot read them)",
                type(method).__name__,
                bot.id,
                ", ".join(dict.fromkeys(dropped)),
            )
            return response
        raise _redacted(exc.message, exc.original, content) from None


def _drop_in_result(answer: dict[str, Any], exc: ValidationError, dropped: list[str]) -> bool:
    """Remove each failing field of an answer's result object (or of each in a list)."""
    progress = False
    for item in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = list(item["loc"])
        if not loc or loc[0] != "result":
            continue
        result: Any = answer.get("result")
        rest = loc[1:]
        index: int | None = None
        if isinstance(result, list) and rest and isinstance(rest[0], int):
            if not 0 <= rest[0] < len(result):
                continue
            index, rest = rest[0], rest[1:]
        target = result if index is None else result[index]
        if not isinstance(target, dict) or not rest or not isinstance(rest[0], str):
            continue
        if rest[0] not in target or rest[0] in _REQUIRED:
            continue
        target = {key: value for key, value in target.items() if key != rest[0]}
        target[UNREADABLE] = [*target.get(UNREADABLE, []), rest[0]]
        if index is None:
            answer["result"] = target
        else:
            answer["result"] = [*result[:index], target, *result[index + 1 :]]
        dropped.append(rest[0])
        progress = True
    return progress


def dropped_fields(event: object) -> list[str]:
    """The fields of an event object that were dropped because aiogram could not read them."""
    extra = getattr(event, "model_extra", None) or {}
    value = extra.get(UNREADABLE)
    return [str(item) for item in value] if isinstance(value, list) else []
