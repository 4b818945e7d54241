"""Update middlewares."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiogram import BaseMiddleware, Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramConflictError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import GetUpdates, TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import TelegramObject, Update
from aiogram.types.update import UpdateTypeLookupError

from bot.common.bots import Bots
from bot.common.health import TELEGRAM, describe_exception
from bot.common.metrics import Metrics
from bot.common.texts import phrase
from bot.customer.intake import Intake
from storage import StorageError, is_outage

logger = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class DurableIntakeMiddleware(BaseMiddleware):
    """Retry a handler that met a storage error instead of letting aiogram swallow it.

    aiogram moves on to the next update when a handler raises, and the next getUpdates then
    confirms it; retrying here keeps such an update in hand. Handlers are idempotent (jobs
    carry dedup keys), so a retry never duplicates. Updates other than new messages (edits,
    reactions, membership) may refer to messages recorded in this batch, so the intake is
    committed before them.
    """

    def __init__(self, metrics: Metrics, intake: Intake, max_delay: float = 5.0) -> None:
        self.metrics = metrics
        self.intake = intake
        self.max_delay = max_delay

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        """Run the handler until storage accepts the update."""
        if not isinstance(event, Update):
            return await handler(event, data)
        bot = data.get("bot")
        label = str(bot.id) if isinstance(bot, Bot) else "?"
        try:
            kind = event.event_type
        except UpdateTypeLookupError:
            # Nothing of it could be read (bot/customer/updates.py), or a type this aiogram does
            # not know: confirmed, and counted there. aiogram would log its content.
            logger.info("update %d carries nothing this bridge can read: skipped", event.update_id)
            return None
        self.metrics.updates_received.labels(kind, label).inc()
        delay = 0.05
        while True:
            try:
                if event.message is None and event.business_message is None:
                    # Reactions, edits, membership changes may refer to messages of this batch.
                    await self.intake.flush()
                return await handler(event, data)
            except StorageError as exc:
                # An outage is logged once by the repository; a retry is not news.
                logger.log(
                    logging.DEBUG if is_outage(exc) else logging.WARNING,
                    "update %d not stored yet (%s); retrying in %.2fs",
                    event.update_id,
                    describe_exception(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
            except Exception as exc:
                # A bug: aiogram would log it with its text, which may quote the customer's
                # message. Only where it happened is logged.
                self.metrics.failed_updates.labels(label).inc()
                logger.error(
                    "update %d (%s) of bot %s failed: %s at\n%s",
                    event.update_id,
                    kind,
                    label,
                    type(exc).__name__,
                    "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
                )
                return None


class CommitIntakeBeforeGetUpdates(BaseRequestMiddleware):
    """Commit the batch of recorded updates before asking Telegram for the next ones.

    The next getUpdates carries the offset that confirms the previous batch, so it must not
    leave before that batch is durable; when the commit fails, the call fails too and
    aiogram's polling retries it with the same offset.
    """

    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        """Flush the intake first when the call is getUpdates."""
        if isinstance(method, GetUpdates):
            try:
                await self.intake.flush()
            except StorageError as exc:
                if not is_outage(exc):  # an outage is logged once by the repository
                    logger.exception("customer updates not stored yet; not confirming them")
                raise
        return await make_request(bot, method)


REVOKED_PROBE_SECONDS = 60.0


class StopRevokedPolling(BaseRequestMiddleware):
    """A bot whose token Telegram rejected is polled only once a minute; the others go on.

    aiogram retries a failing getUpdates at once, and its multi-bot polling stops every bot
    when one bot's polling task ends. So the revoked bot's getUpdates waits here: its task
    never ends, the others keep polling, and each minute one getUpdates probes the token (a
    401 may be Telegram's passing mistake): its success makes the bot a polled bot again.
    """

    def __init__(self, bots: Bots, probe_every: float | None = None) -> None:
        self.bots = bots
        self.probe_every = REVOKED_PROBE_SECONDS if probe_every is None else probe_every

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        """Hold a revoked bot's getUpdates for a minute, then let it probe the token."""
        if isinstance(method, GetUpdates) and self.bots.key_of(bot) in self.bots.revoked:
            await asyncio.sleep(self.probe_every)
        return await make_request(bot, method)


def bot_service(bot: Bot) -> str:
    """The outage name of one bot's own problems (its token, a second poller)."""
    return f"{TELEGRAM} bot {bot.id}"


class TelegramCallMetrics(BaseRequestMiddleware):
    """Bot API session middleware: latency, last success and outages of every call.

    Problems of the Bot API server (network, 5xx) are Telegram's; a rejected token or a
    conflicting poller belongs to one bot, so another bot's success does not end it.
    """

    def __init__(self, metrics: Metrics, bots: Bots) -> None:
        self.metrics = metrics
        self.bots = bots

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[Any],
        bot: Bot,
        method: TelegramMethod[Any],
    ) -> Response[Any]:
        """Time the call; long polls only count towards the last success."""
        outages = self.metrics.outages
        started = time.perf_counter()
        outcome = "cancelled"
        try:
            response = await make_request(bot, method)
            outcome = "ok"
            outages.up(TELEGRAM)
            outages.up(bot_service(bot))
            self._accepted(bot)
            return response
        except TelegramUnauthorizedError:
            outcome = "401"
            self._revoked(bot)
            raise
        except TelegramConflictError:
            outcome = "409"
            outages.down(
                bot_service(bot),
                f"Telegram answers 409 Conflict for bot {bot.id}: another process polls with "
                "this bot's token (a second bridge?) or it has a webhook; no customer update "
                "comes in",
                fatal=True,
            )
            raise
        except TelegramServerError as exc:
            outcome = "5xx"
            outages.down(TELEGRAM, f"{telegram_host(bot)} answered {exc.message}")
            raise
        except TelegramNetworkError as exc:
            outcome = "network"
            outages.down(TELEGRAM, f"{telegram_host(bot)} unreachable: {exc.message}")
            raise
        except TelegramRetryAfter:
            outcome = "429"  # flood control: Telegram works, it asks us to slow down
            raise
        except TelegramAPIError:
            outcome = "error"  # this request was refused; Telegram itself answers
            outages.up(TELEGRAM)
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            if isinstance(method, GetUpdates):
                if outcome == "ok":
                    self.metrics.api_last_success.labels("telegram").set(time.time())
            else:
                self.metrics.observe_call("telegram", outcome, time.perf_counter() - started)
                self.metrics.telegram_calls.labels(str(bot.id), outcome).inc()

    def _revoked(self, bot: Bot) -> None:
        """Telegram rejects this bot's token: poll it only to probe, say so everywhere once.

        `/healthz` reads `bots.revoked` (503 once every bot is revoked, degraded before).
        """
        reason = phrase("telegram.revoked", bot=bot.id)
        self.metrics.bot_polling.labels(str(bot.id)).set(0)
        key = self.bots.key_of(bot)
        if key not in self.bots.revoked and self.bots.checked:
            self.bots.revoked[key] = reason
            others = len(self.bots) - len(self.bots.revoked)
            logger.error(
                "bot %s: %s; it is polled once a minute only, %d other bot(s) keep working",
                self.bots.label(key),
                str(reason),
                others,
            )

    def _accepted(self, bot: Bot) -> None:
        """A call with this bot's token succeeded: it is not revoked (any more)."""
        key = self.bots.key_of(bot)
        if self.bots.revoked.pop(key, None) is not None:
            self.metrics.bot_polling.labels(str(bot.id)).set(1)
            logger.warning("bot %s: Telegram accepts its token again", self.bots.label(key))


def telegram_host(bot: Bot) -> str:
    """The Bot API server's host (its URL template holds no token)."""
    return urlsplit(bot.session.api.base).netloc or "the Bot API"
