"""One running bridge: its start (listener, workers, Telegram, sources), polling and stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.exceptions import (
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods.base import Response
from aiogram.types import File, Message, Update, User

from bot.amocrm.amojo import AmojoClient
from bot.amocrm.channel import Channel, ServiceDown, connect_with_retry
from bot.amocrm.crm import CrmClient
from bot.amocrm.sources import (
    KV_SOURCES,
    SourceBook,
    WantedSource,
    ensure_sources,
    merge_source_ids,
)
from bot.common.bots import Bots
from bot.common.metrics import Metrics
from bot.common.settings import Settings, StartupError
from bot.customer.files import FileLinks
from bot.customer.intake import Intake
from bot.customer.middlewares import (
    telegram_host,
)
from bot.jobs.pruner import Pruner
from bot.jobs.worker import Worker
from bot.listener.routes import Listener
from bot.manager.delivery import ManagerMessageDelivery
from bot.manager.reconcile import Reconciler
from bot.manager.typing_indicator import TypingIndicator
from storage import Repository, StorageError

logger = logging.getLogger(__name__)

_ANSWER_MODELS: list[Any] = []


@dataclass(slots=True)
class Bridge:
    """One running bridge: every long-lived object, built by `create_bridge`."""

    settings: Settings
    repo: Repository
    bots: Bots
    dp: Dispatcher
    amojo: AmojoClient
    crm: CrmClient
    channel: Channel
    metrics: Metrics
    files: FileLinks
    typing_indicator: TypingIndicator
    listener: Listener
    sources: SourceBook = field(default_factory=lambda: SourceBook(False))
    delivery: ManagerMessageDelivery | None = None
    intake: Intake | None = None
    workers: list[Worker] = field(default_factory=list)
    shutdown_grace: float = 5.0
    workers_running: bool = False
    connected: bool = True  # False: running on the stored scope, connect retried meanwhile
    reconnect: asyncio.Task[None] | None = None
    source_check: asyncio.Task[None] | None = None
    stopping: asyncio.Task[None] | None = None
    reconciler: Reconciler | None = None
    pruner: Pruner = field(init=False)

    def __post_init__(self) -> None:
        self.pruner = Pruner(self.repo, self.settings.JOB_RETENTION_DAYS)

    @property
    def bot(self) -> Bot:
        """The primary bot."""
        return self.bots.primary

    async def start_listener(self) -> None:
        """Serve file links and full health (`create_bridge` listens and takes hooks already)."""
        self.listener.complete(bots=self.bots, files=self.files, amojo=self.amojo)
        self.listener.waiting(None)
        if not self.connected and self.reconnect is None:
            self.reconnect = asyncio.create_task(self._connect_again(), name="amojo-reconnect")

    async def _connect_again(self) -> None:
        """Connect in the background after a restart ran on the stored scope."""
        deps = self.listener.deps

        def waiting(reason: str | None) -> None:
            deps.connect_pending = None if reason is None else f"connect pending: {reason}"

        waiting("amoCRM or amojo was down at start")
        delay = 1.0
        while True:
            try:
                channel, _ = await connect_with_retry(
                    self.settings,
                    self.amojo,
                    self.crm,
                    self.repo,
                    waiting=waiting,
                    use_stored=False,
                )
                break
            except StartupError as exc:
                deps.connect_pending = f"connect refused: {exc}"
                logger.error("connect refused: %s", exc)
                return
            except Exception as exc:
                waiting(f"connect failed unexpectedly ({type(exc).__name__}); retrying")
                logger.exception("background connect failed; retrying in %.0f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        self.channel.scope_id, self.channel.account_id = channel.scope_id, channel.account_id
        self.connected = True
        deps.connect_pending = None

    def start_workers(self) -> None:
        """Resume every pending job and run new ones; prune finished ones now and then; compare
        amoCRM's record of manager messages with the hooks that came, every interval."""
        for worker in self.workers:
            worker.start()
        self.pruner.start()
        if self.reconciler is not None:
            self.reconciler.start()

    async def on_startup(self) -> None:
        """Dispatcher startup hook: listener first, then workers (each only once)."""
        prepare_telegram_answers()
        # aiogram and pydantic leave ~200k long-lived objects; a full collection walking them
        # pauses the loop for ~130 ms. Freezing them keeps hook answers and sends prompt.
        gc.collect()
        gc.freeze()
        await self.start_listener()
        if not self.workers_running:
            self.start_workers()
            self.workers_running = True

    async def on_shutdown(self) -> None:
        """Dispatcher shutdown hook: stop intake, let in-flight sends finish, keep the rest."""
        await self.listener.stop()
        if self.intake is not None:
            try:
                await self.intake.flush()
            except StorageError:
                # Not confirmed to Telegram either: it sends these updates again after restart.
                logger.exception("shutdown: the last customer updates were not stored")
        await self.typing_indicator.close()
        await self.pruner.stop()
        if self.reconciler is not None:
            await self.reconciler.stop()
        await asyncio.gather(*(worker.stop(self.shutdown_grace) for worker in self.workers))
        self.workers_running = False

    async def wait_for_telegram(self, max_delay: float = 30.0) -> None:
        """Return once the Bot API answers for every bot, retrying while it is down.

        A token Telegram rejects is a StartupError naming it: retrying would not help. While
        Telegram is down, hooks are taken and `/healthz` reports the outage.
        """
        for position, bot in enumerate(self.bots, start=1):
            await self._wait_for_bot(bot, position, max_delay)
            self.metrics.bot_polling.labels(str(bot.id)).set(1)
        self.bots.checked = True

    async def _wait_for_bot(self, bot: Bot, position: int, max_delay: float) -> None:
        """deleteWebhook and getMe of one bot (getMe also tells its name for the logs)."""
        delay = 0.5
        since = time.time()
        host = telegram_host(bot)
        which = f"token {position} (bot {bot.id})" if len(self.bots) > 1 else f"bot {bot.id}"
        while True:
            try:
                await bot.delete_webhook(drop_pending_updates=False)
                me = await bot.me()
                if me.username:
                    self.bots.usernames[self.bots.key_of(bot)] = me.username
                return
            except (TelegramNetworkError, TelegramServerError, TelegramRetryAfter) as exc:
                down_for = int(time.time() - since)
                logger.warning(
                    "Telegram at %s unreachable (%s) for %d s; hooks are still taken; "
                    "retrying in %.1f s",
                    host,
                    exc.message,
                    down_for,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
            except (TelegramUnauthorizedError, TelegramNotFound) as exc:
                raise StartupError(
                    f"TELEGRAM_BOT_TOKEN: Telegram at {host} rejects the token of {which} "
                    f"({exc.message}); check it with @BotFather"
                ) from None

    async def ensure_sources(self, max_delay: float = 60.0) -> None:
        """With AMOCRM_SOURCES, make sure every bot has its amoCRM source (retried while down).

        Customer messages wait for this (a chat without its source would land in the default
        one); a refusal (no admin rights, no `lead_sources` widget) is a StartupError. When an
        earlier start made every bot's source already, polling does not wait for amoCRM: the
        check runs in the background (a refusal then is logged and shown in `/healthz`).
        """
        if not self.sources.enabled or self.sources.ready:
            return
        stored = json.loads(await self.repo.get_kv(KV_SOURCES) or "{}")
        if all(self.bots.source(key) in stored for key in self.bots.each_key()):
            self.sources.ready = True
            self.source_check = asyncio.create_task(self._check_sources_later(max_delay))
            return
        self.listener.waiting("checking the amoCRM sources")
        await self._check_sources(max_delay)
        self.listener.waiting(None)

    async def _check_sources_later(self, max_delay: float) -> None:
        try:
            await self._check_sources(max_delay)
        except StartupError as exc:
            self.listener.deps.sources_problem = f"amoCRM sources not checked: {exc}"
            logger.error("amoCRM sources not checked (the stored ones are used): %s", exc)

    async def _check_sources(self, max_delay: float) -> None:
        pipelines = self.settings.AMOCRM_SOURCE_PIPELINES
        wanted = []
        for key in self.bots.each_key():
            bot = self.bots.get(key)
            me = await bot.me() if bot is not None else None
            name = f"Telegram: {me.full_name}" if me is not None else self.bots.label(key)
            bot_id = self.bots.telegram_id(key)
            wanted.append(WantedSource(self.bots.source(key), name, pipelines.get(bot_id)))
        delay = 1.0
        while True:
            try:
                ids = await ensure_sources(self.crm, wanted, self.settings.AMOJO_CHANNEL_CODE)
                break
            except ServiceDown as exc:
                logger.warning("amoCRM sources not checked yet: %s; retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
        self.sources.ready = True
        async with self.repo.transaction() as tx:  # the accounts' sources are kept there too
            await merge_source_ids(tx, ids)
        logger.info(
            "amoCRM sources: %s",
            ", ".join(
                f"{self.bots.label(k)} → {self.bots.source(k)}" for k in self.bots.each_key()
            ),
        )

    async def run_polling(
        self,
        *,
        handle_signals: bool = True,
        on_polling: Callable[[Callable[[], None] | None], None] | None = None,
    ) -> None:
        """Long-poll Telegram; the next offset is confirmed only after each update is stored.

        `on_polling(stop)` once polling runs (calling `stop` ends it gracefully), and
        `on_polling(None)` when shutdown begins: before and after, stopping means cancelling.
        """
        # amojo sends each hook once: listen (and resume stored jobs) even while Telegram is down.
        await self.on_startup()
        try:
            await self.wait_for_telegram()
            await self.ensure_sources()
        except BaseException:
            await self.on_shutdown()
            raise
        if on_polling is not None:

            async def polling_started() -> None:
                on_polling(self.request_stop)

            async def polling_stops() -> None:
                on_polling(None)

            self.dp.startup.register(polling_started)
            self.dp.shutdown.register(polling_stops)
        try:
            await self.dp.start_polling(
                *self.bots,
                handle_as_tasks=False,
                allowed_updates=self.dp.resolve_used_update_types(),
                handle_signals=handle_signals,
                close_bot_session=False,
            )
        except BaseException:
            # Cancelled inside aiogram's startup hooks (which run no shutdown hooks): sends in
            # flight still get their grace period.
            if self.workers_running:
                await self.on_shutdown()
            raise

    def request_stop(self) -> None:
        """Stop polling gracefully (as aiogram does on SIGTERM): shutdown hooks then run."""
        if self.stopping is None:
            self.stopping = asyncio.create_task(self.dp.stop_polling(), name="stop-polling")

    async def close(self) -> None:
        """Release connections (after polling has stopped)."""
        for task in (self.reconnect, self.source_check):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.bot.session.close()  # one session for every bot
        if self.delivery is not None:
            await self.delivery.aclose()
        await self.amojo.aclose()
        await self.crm.aclose()
        await self.listener.stop()
        await self.repo.close()


def prepare_telegram_answers() -> None:
    """Build aiogram's answer models now rather than inside the first deliveries.

    pydantic creates `Response[Message]` and friends on first use (milliseconds each, longer
    under load); doing it before the listener opens keeps that pause out of hook answers.
    """
    # pydantic caches parametrised models weakly: keep them referenced or they are rebuilt.
    _ANSWER_MODELS.extend(
        Response[returning]  # type: ignore[valid-type]
        for returning in (Message, bool, list[Message], File, User, list[Update])
    )
