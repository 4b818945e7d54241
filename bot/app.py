"""Composition root: settings → storage → amojo connect → listener → workers → polling (the
wiring; the running bridge itself is bot/bridge.py)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from aiogram import Bot, Dispatcher
from aiogram.client.telegram import TelegramAPIServer
from aiolimiter import AsyncLimiter

from bot.amocrm.amojo import AmojoClient
from bot.amocrm.channel import connect_with_retry
from bot.amocrm.crm import CrmError, build_crm_client
from bot.amocrm.hooks import KIND_AMO_MESSAGE
from bot.amocrm.sources import (
    AccountSources,
    SourceBook,
)
from bot.bridge import Bridge
from bot.chat.notices import NoticeSender
from bot.chat.reactions import CustomerReactions, ReactionSender
from bot.common import ids
from bot.common.bots import Bots
from bot.common.metrics import Metrics
from bot.common.settings import Settings, StartupError
from bot.customer.attribution import Attribution
from bot.customer.business import BusinessAccounts
from bot.customer.files import FileLinks
from bot.customer.groups import GroupRegistry
from bot.customer.intake import KIND_EDIT_MESSAGE, KIND_NEW_MESSAGE, Intake
from bot.customer.middlewares import (
    CommitIntakeBeforeGetUpdates,
    DurableIntakeMiddleware,
    StopRevokedPolling,
    TelegramCallMetrics,
)
from bot.customer.sender import CustomerMessageSender
from bot.customer.updates import UpdateReadingSession
from bot.jobs.queues import (
    AMOJO_QUEUE,
    KIND_OWNER_MESSAGE,
    RECOVERY_QUEUE,
    STAFF_QUEUE,
    TELEGRAM_QUEUE,
)
from bot.jobs.throttle import HookTraffic, Pace, TelegramThrottle
from bot.jobs.worker import Backoff, GiveUp, JobKind, RetryLater, Worker
from bot.listener.health import health_report
from bot.listener.routes import Listener
from bot.manager.delivery import ManagerMessageDelivery
from bot.manager.media import MediaPolicy
from bot.manager.reconcile import Reconciler
from bot.manager.recovery import ForeignChats, HistoryRecovery
from bot.manager.statuses import DeliveryStatusReporter
from bot.manager.typing_indicator import TypingIndicator, TypingRunner
from bot.staff.dead_letters import DeadLetterDesk
from bot.staff.desk import StaffDesk, publish_operator_menu
from handlers import build_routers
from storage import ChatKey, Repository, open_repository

logger = logging.getLogger(__name__)

KV_FILES_KEY = "files.key"
KV_PRIMARY_BOT = "telegram.primary_bot"


@dataclass(slots=True)
class Transports:
    """Injected sessions and transports; None means the real network."""

    amojo: aiohttp.ClientSession | None = None
    crm: httpx.AsyncBaseTransport | None = None
    media: httpx.AsyncBaseTransport | None = None


async def check_primary_bot(repo: Repository, settings: Settings) -> None:
    """The first token must stay the database's primary bot: its chats' ids carry no bot id.

    The first start (or the first after the upgrade to several bots) remembers it.
    """
    primary = settings.bot_ids[0]
    stored = await repo.get_kv(KV_PRIMARY_BOT)
    if stored is None:
        if len(settings.bot_ids) > 1 and await repo.has_conversations():
            # A database of a single-bot bridge does not say which bot its chats are: with
            # several tokens, putting a new one first would send them all through it.
            raise StartupError(
                "TELEGRAM_BOT_TOKEN: this database holds the chats of a single-bot bridge, "
                "which did not record its bot. Start once with that bot's token alone (it is "
                "remembered), then add the other tokens after it"
            )
        await repo.set_kv(KV_PRIMARY_BOT, str(primary))
        return
    if stored != str(primary):
        listed = "" if int(stored) in settings.bot_ids else " (it is not listed at all)"
        raise StartupError(
            f"TELEGRAM_BOT_TOKEN: the first token is bot {primary}, but the bridge's existing "
            f"chats belong to primary bot {stored}{listed}. Put bot {stored}'s token first: the "
            "primary bot's conversation ids carry no bot id, so it cannot change"
        )


async def _files_key(repo: Repository) -> bytes:
    stored = await repo.get_kv(KV_FILES_KEY)
    if stored is None:
        stored = secrets.token_hex(32)
        await repo.set_kv(KV_FILES_KEY, stored)
    return bytes.fromhex(stored)


async def create_bridge(
    settings: Settings,
    *,
    transports: Transports | None = None,
    backoff: Backoff | None = None,
    repo: Repository | None = None,
    listener: Listener | None = None,
    pace: Pace | None = None,
) -> Bridge:
    """Build and connect everything; nothing runs until polling starts.

    `repo` and `listener` are passed by `python -m bot` when a restart already takes hooks.
    """
    transports = transports or Transports()
    if repo is None:
        repo = await open_repository(settings.DATABASE_PATH)
    if listener is None:
        listener = Listener(settings, repo, Metrics(), HookTraffic())
    metrics = listener.deps.metrics
    amojo = AmojoClient(
        settings.amojo_base_url,
        settings.AMOJO_CHANNEL_ID,
        settings.AMOJO_CHANNEL_SECRET.get_secret_value(),
        session=transports.amojo,
        metrics=metrics,
    )
    crm = build_crm_client(settings, repo, transport=transports.crm, metrics=metrics)
    # One session (connection pool) for every bot: the token is in each request's URL.
    session = UpdateReadingSession(
        api=TelegramAPIServer.from_base(settings.telegram_api_url),
        on_unreadable=lambda bot, _: metrics.unreadable_update(bot.id),
    )
    try:
        bots = Bots([Bot(token, session=session) for token in settings.bot_tokens])
    except BaseException:
        await session.close()
        await amojo.aclose()
        await crm.aclose()
        raise
    session.middleware(StopRevokedPolling(bots))
    session.middleware(TelegramCallMetrics(metrics, bots))
    try:
        await check_primary_bot(repo, settings)
        if not listener.running:
            await listener.start()  # health answers while the connect waits
        listener.waiting("connecting the channel")
        channel, connected = await connect_with_retry(
            settings, amojo, crm, repo, waiting=listener.waiting
        )
        if listener.deps.hooks is not None:  # already taking hooks for the stored scope
            early = listener.deps.hooks.channel
            early.scope_id, early.account_id = channel.scope_id, channel.account_id
            channel = early
        else:
            await listener.take_hooks(channel)
        files = FileLinks(await _files_key(repo), settings.public_base_url)
        listener.waiting("starting the workers")
    except BaseException:
        await listener.stop()
        await session.close()
        await amojo.aclose()
        await crm.aclose()
        await repo.close()
        raise

    intake = Intake(repo, bots, settings.default_language)
    sources = SourceBook(settings.AMOCRM_SOURCES)
    business = BusinessAccounts(
        repo, bots, intake, settings.default_language, sources, staff=settings.business_owners
    )
    await business.load()
    groups = GroupRegistry(repo, bots, settings.OPERATOR_IDS, settings.default_language)
    await groups.load()
    staff = StaffDesk(settings, repo, crm, bots)
    typing_indicator = TypingIndicator(bots)
    account_sources = AccountSources(crm, repo, sources, settings.AMOJO_CHANNEL_CODE)

    def source_of(chat: ChatKey) -> str | None:
        if not sources.enabled:
            return None
        if not sources.ready:  # a chat tagged once keeps its source: not before it exists
            raise RetryLater("waiting for the amoCRM sources to be checked", delay=2.0)
        if ids.is_business(chat):
            return sources.account_source(-chat.bot)
        return bots.source(chat.bot)

    authors: dict[int, str] = {}  # amoCRM user id → amojo id

    async def author_of(owner_id: int) -> str:
        """The amojo id a Business owner's own messages are imported under (spec §4.1)."""
        user = settings.BUSINESS_OWNER_USERS.get(owner_id)
        if user is None:
            if settings.AMOJO_BOT_ID:
                return settings.AMOJO_BOT_ID
            raise GiveUp(
                f"no author for what Business owner {owner_id} typed: set AMOJO_BOT_ID (the "
                "channel bot's amojo id), or map the owner in BUSINESS_OWNER_USERS"
            )
        if user not in authors:
            try:
                amojo_id = await crm.user_amojo_id(user)
            except CrmError as exc:
                if exc.status == 429 or exc.status >= 500:
                    raise RetryLater(f"amoCRM users API: HTTP {exc.status}") from exc
                raise GiveUp(f"amoCRM user {user} (BUSINESS_OWNER_USERS): {exc}") from exc
            if amojo_id is None:
                raise GiveUp(f"amoCRM user {user} (BUSINESS_OWNER_USERS) has no amojo id")
            authors[user] = amojo_id
        return authors[user]

    deps: dict[str, Any] = {
        "settings": settings,
        "repo": repo,
        "intake": intake,
        "amojo": amojo,
        "crm": crm,
        "channel": channel,
        "metrics": metrics,
        "staff": staff,
        "reactions": CustomerReactions(repo, bots),
        "dead_letters": DeadLetterDesk(repo, metrics, bots, settings.default_language),
        "bridge_bots": bots,
        "business": business,
        "groups": groups,
    }
    dp = Dispatcher(**deps)
    dp.update.outer_middleware(DurableIntakeMiddleware(metrics, intake))
    session.middleware(CommitIntakeBeforeGetUpdates(intake))
    dp.include_routers(*build_routers())

    amojo_kinds: dict[str, JobKind] = {}
    amojo_kinds.update(
        CustomerMessageSender(repo, amojo, channel, files, source_of, author_of).kinds()
    )
    reaction_sender = ReactionSender(repo, bots, amojo, channel, metrics)
    amojo_kinds.update(reaction_sender.amojo_kinds())
    telegram_kinds: dict[str, JobKind] = {}
    # One throttle for every send: Telegram's limits count all of a bot's messages.
    pace = pace or Pace()
    throttle = TelegramThrottle(
        pace.global_rate, pace.per_chat_interval, pace.per_chat_burst, hooks=listener.traffic
    )
    telegram_kinds.update(NoticeSender(bots, throttle).kinds())
    delivery = ManagerMessageDelivery(
        bots,
        repo,
        throttle,
        metrics=metrics,
        time_window=settings.TIME_WINDOW_SECONDS,
        media_transport=transports.media,
        typing=typing_indicator,
        media_policy=MediaPolicy(settings.media_origins, settings.MEDIA_ALLOWED_HOSTS),
        spool_dir=settings.DATABASE_PATH.parent / "media-spool",
        sources=settings.AMOCRM_SOURCES,
        language=settings.default_language,
    )
    telegram_kinds.update(delivery.kinds())
    amojo_kinds.update(DeliveryStatusReporter(amojo, channel).kinds())
    telegram_kinds.update(reaction_sender.telegram_kinds())
    telegram_kinds.update(TypingRunner(repo, typing_indicator).kinds())

    bridge = Bridge(
        settings=settings,
        repo=repo,
        bots=bots,
        dp=dp,
        amojo=amojo,
        crm=crm,
        channel=channel,
        metrics=metrics,
        files=files,
        typing_indicator=typing_indicator,
        delivery=delivery,
        intake=intake,
        listener=listener,
        connected=connected,
        sources=sources,
    )
    budget = AsyncLimiter(settings.RECONCILE_REQUESTS_PER_SECOND, 1)
    attribution = Attribution(
        repo, crm, amojo, channel, settings.AMOCRM_CAMPAIGN_PIPELINES, sources=source_of
    )
    foreign = ForeignChats()  # other channels' chats of the account, once seen
    reconciler = Reconciler(
        repo,
        crm,
        metrics,
        public_base_url=settings.public_base_url,
        interval=settings.RECONCILE_INTERVAL_SECONDS,
        budget=budget,
        amo_clock=lambda: amojo.clock_offset or 0.0,
        foreign=foreign,
    )
    bridge.reconciler = reconciler
    listener.deps.probe_token = reconciler.probe_token
    listener.deps.reconcile = reconciler.status

    async def problems() -> list[str]:
        return (await health_report(listener.deps)).problems

    staff.health = problems
    recovery = HistoryRecovery(
        repo,
        amojo,
        channel,
        metrics,
        lookback_days=settings.RECOVERY_LOOKBACK_DAYS,
        budget=budget,
        events=reconciler.cover_gap,
        foreign=foreign,
        sources=source_of,
    )
    bridge.workers = [
        Worker(
            repo,
            AMOJO_QUEUE,
            amojo_kinds,
            metrics=metrics,
            backoff=backoff,
            concurrency=64,
            direction="to_amocrm",
            message_kinds=frozenset({KIND_NEW_MESSAGE, KIND_EDIT_MESSAGE, KIND_OWNER_MESSAGE}),
        ),
        Worker(
            repo,
            TELEGRAM_QUEUE,
            telegram_kinds,
            metrics=metrics,
            backoff=backoff,
            direction="to_telegram",
            message_kinds=frozenset({KIND_AMO_MESSAGE}),
        ),
        # Staff commands wait on amoCRM (paced to 6 rps, 429s): apart from customers' updates.
        Worker(
            repo,
            STAFF_QUEUE,
            {**staff.kinds(), **account_sources.kinds(), **attribution.kinds()},
            metrics=metrics,
            backoff=backoff,
            concurrency=4,
        ),
        # A few history reads at a time, paced: recovery must not crowd out live traffic.
        Worker(
            repo, RECOVERY_QUEUE, recovery.kinds(), metrics=metrics, backoff=backoff, concurrency=4
        ),
    ]
    dp.startup.register(bridge.on_startup)
    dp.startup.register(publish_operator_menu)
    dp.shutdown.register(bridge.on_shutdown)
    return bridge


async def run(
    settings: Settings,
    repo: Repository,
    listener: Listener,
    on_polling: Callable[[Callable[[], None] | None], None] | None = None,
) -> int:
    """Run a bridge until polling is stopped (`python -m bot`); StartupError: a setting is wrong."""
    bridge = await create_bridge(settings, repo=repo, listener=listener)
    try:
        await bridge.run_polling(handle_signals=False, on_polling=on_polling)
    finally:
        await bridge.close()
    return 0
