"""Keeps the listener answering hooks while others hold connections open and send nothing.

amojo sends each hook once and waits at most 5 s, so a listener whose connections (or file
descriptors) are all held by slow clients loses messages. Three limits keep room for it:
a request's head must arrive within HEADER_TIMEOUT of the connection or of the last answer
(aiohttp's keep-alive timer, which runs from the connection's start); at most `limit`
connections are open, and a new one beyond that closes the oldest idle connection (one that
never brought a signed hook first; never one answering a request); and the process may open
as many files as the system lets it (the soft limit is raised to the hard one).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bot.common.metrics import Metrics

logger = logging.getLogger(__name__)

HEADER_TIMEOUT = 10.0  # seconds for a request's head (and an idle keep-alive connection)
MAX_CONNECTIONS = 4096
MIN_CONNECTIONS = 64
_WARN_EVERY = 60.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def raise_open_file_limit() -> int:
    """Raise the soft limit of open files to the hard one; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            logger.info("open-file limit stays at %d: %s", soft, exc)
    return int(soft) if soft != resource.RLIM_INFINITY else MAX_CONNECTIONS * 2


def connection_limit(open_files: int) -> int:
    """How many connections to keep open at most: half the open files, within bounds."""
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, open_files // 2))


class ConnectionGuard:
    """Counts the listener's connections and closes the oldest idle one beyond the limit."""

    def __init__(self, limit: int, metrics: Metrics | None = None) -> None:
        self.limit = limit
        self.metrics = metrics
        self.server: Any = None  # aiohttp's Server: it knows the open connections
        self._busy: dict[RequestHandler, int] = {}  # connections with a request in hand
        self._hooks: set[RequestHandler] = set()  # connections that brought a signed hook
        self._evicted = 0
        self._warned_at = 0.0

    def factory(self, server: Any) -> Callable[[], RequestHandler]:
        """A protocol factory around aiohttp's `server` that makes room before each one."""
        self.server = server

        def make() -> RequestHandler:
            full = not self._make_room()
            handler: RequestHandler = server()
            if full:  # every connection is answering a request: this one waits its turn
                handler.force_close()
                self._count_eviction()
            return handler

        return make

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count the requests in hand on each connection; remember those that brought hooks."""
        protocol = request.protocol
        if not isinstance(protocol, RequestHandler):
            return await handler(request)
        self._busy[protocol] = self._busy.get(protocol, 0) + 1
        try:
            response = await handler(request)
        finally:
            left = self._busy.pop(protocol) - 1
            if left:
                self._busy[protocol] = left
        hook = request.method == "POST" and request.path.startswith("/amojo/")
        if hook and response.status == 200:  # a signed hook of our scope (nothing else: 200)
            self._hooks.add(protocol)
        return response

    def _make_room(self) -> bool:
        """Close one idle connection when at the limit; False when every one is busy.

        Idle ones that never brought a hook go first (oldest first), then other idle ones: a
        connection answering a request is never closed, and a new one is the youngest.
        """
        connections = self.server.connections if self.server is not None else []
        if len(self._hooks) > len(connections):
            self._hooks.intersection_update(connections)
        if len(connections) < self.limit:
            return True
        idle = [c for c in connections if c not in self._busy]  # oldest first
        for connection in [c for c in idle if c not in self._hooks] + idle:
            connection.force_close()
            self._count_eviction()
            return True
        return False

    def _count_eviction(self) -> None:
        self._evicted += 1
        if self.metrics is not None:
            self.metrics.listener_evictions.inc()
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            logger.warning(
                "listener at its limit of %d connections: closed %d idle or slow one(s) to keep "
                "room for amoCRM's hooks",
                self.limit,
                self._evicted,
            )
            self._warned_at, self._evicted = now, 0


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site whose connections go through a ConnectionGuard."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        """Listen, as TCPSite does, with the guarded protocol factory."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.factory(server), self._host, self._port, backlog=self._backlog
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
