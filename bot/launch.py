"""`python -m bot` after the settings check: on a restart, take hooks before the slow imports."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Awaitable, Callable

from bot.channel import KV_ACCOUNT_ID, KV_SCOPE_ID, Channel
from bot.metrics import Metrics
from bot.settings import Settings
from bot.throttle import HookTraffic
from bot.web import Listener
from storage import Repository, open_repository

logger = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    """Plain line logs on stderr."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)


async def main(settings: Settings) -> int:
    """Open storage, listen at once when a scope is stored, then build and run the bridge.

    amojo never re-sends a hook, so every second before the listener answers is a gap: on a
    restart the stored scope is enough to verify and store hooks, long before aiogram is
    imported and amoCRM is reached. A first start has no scope yet and connects first.
    """
    configure_logging(settings.LOG_LEVEL)
    repo = await open_repository(settings.DATABASE_PATH)
    listener = Listener(settings, repo, Metrics(), HookTraffic())
    try:
        scope_id = await repo.get_kv(KV_SCOPE_ID)
        account_id = await repo.get_kv(KV_ACCOUNT_ID)
        if scope_id and account_id:
            await listener.start(Channel(scope_id=scope_id, account_id=account_id))
        # aiogram's import takes seconds of CPU: done in a thread, so the loop keeps answering
        # hooks meanwhile (the GIL is handed over every few milliseconds).
        app = await asyncio.to_thread(importlib.import_module, "bot.app")
    except BaseException:
        await listener.stop()
        await repo.close()
        raise
    run: Callable[[Settings, Repository, Listener], Awaitable[int]] = app.run
    return await run(settings, repo, listener)
