"""HTTP listener: amojo hooks, customer media links, health and metrics."""

from __future__ import annotations

import errno
import hmac
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import ClientError, web

from bot.amocrm.amojo import AmojoClient
from bot.amocrm.hooks import HookReceiver
from bot.common.metrics import CONTENT_TYPE, Metrics
from bot.common.settings import Settings, StartupError
from bot.customer.files import FileLinks
from bot.jobs.throttle import HookTraffic
from bot.listener.guard import (
    HEADER_TIMEOUT,
    ConnectionGuard,
    GuardedSite,
    connection_limit,
    raise_open_file_limit,
)
from bot.listener.health import (
    HEALTH_MAX_PENDING_AGE_SECONDS,
    conversation_report,
    health_report,
    queue_report,
)
from bot.manager.gaps import Heartbeat
from bot.manager.reconcile import ReconcileStatus
from storage import Repository, StorageError

if TYPE_CHECKING:
    from bot.amocrm.channel import Channel
    from bot.common.bots import Bots

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class WebDeps:
    """What the listener's routes use."""

    repo: Repository
    metrics: Metrics
    bots: Bots | None = None
    files: FileLinks | None = None
    max_pending_age: float = HEALTH_MAX_PENDING_AGE_SECONDS
    hooks: HookReceiver | None = None
    amojo: AmojoClient | None = None
    starting: str | None = None
    # Set while a restart runs on the stored scope and the connect is still being retried.
    connect_pending: str | None = None
    # Set when the background check of known amoCRM sources was refused (they are still used).
    sources_problem: str | None = None
    metrics_token: str | None = None
    # The self-probe's secret path segment and reconciliation's findings (once built).
    probe_token: str | None = None
    reconcile: ReconcileStatus | None = None
    # Set when start-up created a new database where an earlier one had been (bot/launch.py).
    fresh_database: str | None = None
    confirm_fresh_database: Callable[[], Awaitable[None]] | None = None  # once it is in use


DEPS = web.AppKey("deps", WebDeps)


async def healthz(request: web.Request) -> web.Response:
    """503 when the bridge cannot do its job, 200 otherwise; `problems` lists every finding.

    `status` is "ok", "degraded" (working, with something an operator should look at) or
    "unhealthy" (messages are not getting through).
    """
    deps = request.app[DEPS]
    report = await health_report(deps)
    body: dict[str, Any] = {
        "status": report.status,
        "problems": report.problems,
        "database": report.database,
        "queues": report.queues,
        "conversations": report.conversations,
    }
    if deps.bots is not None:
        body["bots"] = [
            {
                "bot": deps.bots.label(key),
                "id": deps.bots.telegram_id(key),
                "primary": key == 0,
                "polling": key not in deps.bots.revoked,
            }
            for key in deps.bots.each_key()
        ]
    return web.json_response(body, status=503 if report.failing else 200)


async def metrics_view(request: web.Request) -> web.Response:
    """Prometheus text exposition (behind METRICS_TOKEN when it is set)."""
    deps = request.app[DEPS]
    if deps.metrics_token is not None:
        # Header bytes that are not UTF-8 arrive as surrogates: compared as the raw bytes.
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, f"Bearer {deps.metrics_token}".encode()):
            raise web.HTTPUnauthorized(
                text="metrics need Authorization: Bearer <METRICS_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"},
            )
    try:
        await queue_report(deps.repo, deps.metrics)
        await conversation_report(deps.repo, deps.metrics)
    except StorageError:
        logger.warning("metrics: queue gauges not refreshed (database error)")
    response = web.Response(body=deps.metrics.render())
    response.content_type = CONTENT_TYPE.split(";")[0]
    response.charset = "utf-8"
    return response


async def serve_file(request: web.Request) -> web.StreamResponse:
    """Stream a customer's Telegram file to amoCRM through a signed, expiring link."""
    # Imported here: the listener starts before aiogram is loaded (a restart takes hooks first).
    from aiogram.exceptions import TelegramAPIError  # noqa: PLC0415

    deps = request.app[DEPS]
    if deps.files is None or deps.bots is None:
        raise web.HTTPServiceUnavailable(text="starting up", headers={"Retry-After": "5"})
    ref = deps.files.parse(request.match_info["token"])
    if ref is None:
        raise web.HTTPNotFound(text="unknown or expired file link")
    bot = deps.bots.get(ref.bot)
    if bot is None:  # its token was taken out of TELEGRAM_BOT_TOKEN since
        raise web.HTTPNotFound(text="the file's bot is no longer run by this bridge")
    if request.method == "HEAD":  # the link says it all: nothing is fetched from Telegram
        head = web.Response(headers=file_headers(ref.mime_type, ref.file_name))
        if ref.file_size:
            head.headers["Content-Length"] = str(ref.file_size)
        return head
    try:
        file = await bot.get_file(ref.file_id)
    except TelegramAPIError as exc:
        logger.warning("file link: Telegram refused getFile: %s", exc.message)
        raise web.HTTPBadGateway(text="Telegram did not give the file") from None
    if not file.file_path:
        raise web.HTTPBadGateway(text="Telegram did not give the file")
    url = bot.session.api.file_url(bot.token, file.file_path)
    response = web.StreamResponse(headers=file_headers(ref.mime_type, ref.file_name))
    if file.file_size:
        response.content_length = file.file_size
    try:
        stream = bot.session.stream_content(
            url, timeout=60, chunk_size=65536, raise_for_status=True
        )
        first = await anext(stream, b"")
        await response.prepare(request)
        if first:
            await response.write(first)
        async for chunk in stream:
            await response.write(chunk)
    except ClientError as exc:
        logger.warning("file link: download from Telegram failed: %s", type(exc).__name__)
        if not response.prepared:
            raise web.HTTPBadGateway(text="Telegram did not give the file") from None
        raise
    await response.write_eof()
    return response


# Served inline (amoCRM previews them); anything else is a download. A customer's file must
# never run as a page on the bridge's origin: an HTML or SVG "document" would be script there.
# PDF is a download too: it may carry script, and browsers' viewers do not run sandboxed.
INLINE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "video/mp4",
        "video/quicktime",
        "video/webm",
        "audio/ogg",
        "audio/mpeg",
        "audio/mp4",
        "audio/x-m4a",
        "audio/wav",
        "text/plain",
    }
)


def file_headers(mime_type: str, file_name: str) -> dict[str, str]:
    """Headers of a file link: safe types inline, the rest as attachment; never sniffed."""
    media_type = mime_type.split(";", 1)[0].strip().lower()
    safe = media_type in INLINE_TYPES
    content_type = media_type if safe else "application/octet-stream"
    if media_type == "text/plain":
        content_type = "text/plain; charset=utf-8"
    disposition = "inline" if safe else "attachment"
    return {
        "Content-Type": content_type,
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(file_name)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=3600",
    }


def build_web_app(deps: WebDeps, guard: ConnectionGuard | None = None) -> web.Application:
    """The listener's aiohttp application."""
    middlewares = [guard.middleware] if guard is not None else []
    app = web.Application(client_max_size=1024 * 1024, middlewares=middlewares)
    app[DEPS] = deps
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/files/{token}", serve_file)
    app.router.add_post("/amojo/{scope_id}", receive_hook)
    app.router.add_get("/amojo/self-probe/{token}", self_probe)
    return app


async def self_probe(request: web.Request) -> web.Response:
    """Answers the bridge's own probe through PUBLIC_BASE_URL (204); anything else is 404.

    Under /amojo/ on purpose: the proxy rules that let amoCRM's hooks in let this in.
    """
    token = request.app[DEPS].probe_token
    given = request.match_info["token"].encode("utf-8", "surrogateescape")
    if token is not None and hmac.compare_digest(given, token.encode()):
        return web.Response(status=204)
    return web.json_response(
        {"error": "not this bridge's probe (the route answers, so the proxy reaches the bridge)"},
        status=404,
    )


async def receive_hook(request: web.Request) -> web.Response:
    """A hook, once the channel's scope is known; before that, 503 (amojo does not retry)."""
    deps = request.app[DEPS]
    if deps.hooks is None:
        deps.metrics.hooks_received.labels("rejected_503").inc()
        logger.warning("hook refused: the channel is not connected yet (first start)")
        return web.json_response({"error": "starting up"}, status=503)
    return await deps.hooks.receive(request)


class Listener:
    """The HTTP listener with its heartbeat: started early on a restart, completed later."""

    def __init__(
        self, settings: Settings, repo: Repository, metrics: Metrics, traffic: HookTraffic
    ) -> None:
        self.settings = settings
        token = settings.METRICS_TOKEN
        self.deps = WebDeps(
            repo=repo,
            metrics=metrics,
            starting="opening the listener",
            metrics_token=token.get_secret_value() if token is not None else None,
        )
        self.traffic = traffic
        self.heartbeat = Heartbeat(repo, metrics)
        self.header_timeout = HEADER_TIMEOUT
        self.guard = ConnectionGuard(connection_limit(raise_open_file_limit()), metrics)
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def running(self) -> bool:
        """Whether the listener serves."""
        return self.runner is not None

    async def start(self) -> None:
        """Listen on HTTP_HOST:HTTP_PORT: health and metrics at once, hooks once a scope is known.

        Raises StartupError naming the setting when the address cannot be used (a port in use,
        a host that does not resolve or is not this machine's): retrying would not help.
        """
        settings = self.settings
        # aiohttp's keep-alive timer runs from a connection's start: it is also the deadline
        # of a request's head (a client that sends nothing, or a header line now and then).
        runner = web.AppRunner(
            build_web_app(self.deps, self.guard),
            access_log=None,
            keepalive_timeout=self.header_timeout,
        )
        await runner.setup()
        site = GuardedSite(runner, settings.HTTP_HOST, settings.HTTP_PORT, self.guard)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(describe_bind_error(settings, exc)) from None
        except BaseException:
            await runner.cleanup()
            raise
        self.runner = runner
        self.port = site.port
        logger.info("listening on http://%s:%s", settings.HTTP_HOST, self.port)

    async def take_hooks(self, channel: Channel) -> None:
        """Verify and store hooks for `channel` from now on; record the gap since the last beat."""
        if self.deps.hooks is not None:
            return
        self.deps.hooks = HookReceiver(
            self.deps.repo,
            channel,
            self.settings.AMOJO_CHANNEL_SECRET.get_secret_value(),
            self.deps.metrics,
            self.traffic,
            on_not_stored=self.heartbeat.hook_not_stored,
            on_stored=self._database_in_use,
            max_age=self.settings.dedup_window_seconds,
        )
        await self.heartbeat.open(time.time())

    async def _database_in_use(self) -> None:
        """A hook is stored: a database made afresh is the one in use from now on."""
        deps = self.deps
        if deps.fresh_database is None or deps.confirm_fresh_database is None:
            return
        deps.fresh_database = None
        try:
            await deps.confirm_fresh_database()
        except StorageError:
            logger.warning("the fresh database is in use; its record waits for the next hook")
            deps.fresh_database = "fresh database: in use, not yet recorded as such"

    def waiting(self, reason: str | None) -> None:
        """What start-up waits for (`/healthz` answers 503 with it), or None when it is done."""
        self.deps.starting = reason

    def complete(self, *, bots: Bots, files: FileLinks, amojo: AmojoClient) -> None:
        """Serve file links and full health now that the bridge is built."""
        self.deps.bots = bots
        self.deps.files = files
        self.deps.amojo = amojo

    async def stop(self) -> None:
        """Stop taking hooks (the last heartbeat marks the moment) and close the port."""
        if self.runner is None:
            return
        runner, self.runner = self.runner, None
        await runner.cleanup()
        await self.heartbeat.close()


def describe_bind_error(settings: Settings, exc: OSError) -> str:
    """Why the listener cannot use HTTP_HOST:HTTP_PORT, naming the setting to change."""
    address = f"{settings.HTTP_HOST}:{settings.HTTP_PORT}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"HTTP_PORT: port {settings.HTTP_PORT} on {settings.HTTP_HOST} is already in use "
            "(another bridge, or another service): stop it or choose another HTTP_PORT"
        )
    if exc.errno == errno.EACCES:
        return f"HTTP_PORT: not allowed to listen on {address} (ports below 1024 need root)"
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"HTTP_HOST: cannot listen on {settings.HTTP_HOST!r}: it is not an address of this "
            f"machine ({exc.strerror or exc}); use 127.0.0.1 behind a proxy, or 0.0.0.0"
        )
    return f"HTTP_HOST/HTTP_PORT: cannot listen on {address}: {exc.strerror or exc}"
