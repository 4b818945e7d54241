"""The amojo channel connection of this process: account, scope and the connect step.

Start-up tells a definitive refusal (a wrong token, secret or channel id: StartupError, exit 2)
from a service that is down for now (retried with backoff, forever). Connect docs:
https://www.amocrm.ru/developers/content/chats/chat-api-reference (section "Подключение канала").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import httpx

from bot.amocrm.amojo import AmojoClient, AmojoError
from bot.amocrm.crm import CrmAuthError, CrmClient, CrmError, CrmUnreadable
from bot.common import ids
from bot.common.health import AMOCRM, AMOJO, describe_exception
from bot.common.settings import Settings, StartupError
from storage import ChatKey, Repository

logger = logging.getLogger(__name__)

KV_SCOPE_ID = "amojo.scope_id"
KV_ACCOUNT_ID = "amojo.account_id"
CONNECT_RETRY_MAX_SECONDS = 60.0


@dataclass(slots=True)
class Channel:
    """Where amojo calls go: the scope returned by connect."""

    scope_id: str
    account_id: str


class ServiceDown(Exception):
    """amoCRM or amojo did not answer usefully this time; the same call may work later."""

    def __init__(self, service: str, host: str, step: str, problem: str) -> None:
        super().__init__(f"{service} at {host} ({step}): {problem}")
        self.service = service
        self.host = host
        self.step = step
        self.problem = problem


def _crm_transient(status: int) -> bool:
    # 402: the account is not paid; it works again once it is, without touching the settings.
    return status in (402, 429) or status >= 500


async def resolve_account_id(settings: Settings, crm: CrmClient) -> str:
    """AMOJO_ACCOUNT_ID, or the account's amojo id read from the CRM."""
    if settings.AMOJO_ACCOUNT_ID:
        return settings.AMOJO_ACCOUNT_ID
    host = crm.host
    step = "account lookup"
    try:
        return await crm.account_amojo_id()
    except CrmAuthError as exc:
        raise StartupError(
            f"AMOCRM_AUTH_CODE: amoCRM at {host} gave no OAuth token: {exc.message}"
        ) from None
    except CrmUnreadable as exc:
        raise ServiceDown(AMOCRM, host, step, exc.message) from None
    except CrmError as exc:
        if 300 <= exc.status < 400:
            raise StartupError(
                f"AMOCRM_BASE_URL: amoCRM at {host} answers with a redirect ({exc.message}); "
                "use the address it redirects to, with https://"
            ) from None
        if _crm_transient(exc.status):
            hint = " (the account is not paid)" if exc.status == 402 else ""
            raise ServiceDown(AMOCRM, host, step, f"HTTP {exc.status}{hint}") from None
        if exc.status == 401:
            variable = (
                "AMOCRM_CLIENT_ID/AMOCRM_AUTH_CODE"
                if settings.uses_oauth
                else ("AMOCRM_ACCESS_TOKEN")
            )
            raise StartupError(
                f"{variable}: amoCRM at {host} rejects the token (401: {exc.message}); "
                "make a new one in the integration's settings"
            ) from None
        if exc.status == 403:
            raise StartupError(
                f"AMOCRM_ACCESS_TOKEN: amoCRM at {host} refuses access (403: {exc.message}); "
                "the integration's user lacks rights, or this IP is blocked"
            ) from None
        if exc.status == 404:
            raise StartupError(
                f"AMOCRM_BASE_URL: there is no amoCRM account at {host} (404); use the "
                "address you log in at, e.g. https://example.amocrm.ru"
            ) from None
        raise StartupError(
            f"AMOCRM_BASE_URL: amoCRM at {host} refused the account lookup "
            f"(HTTP {exc.status}: {exc.message}); or set AMOJO_ACCOUNT_ID"
        ) from None
    except (httpx.HTTPError, OSError) as exc:
        raise ServiceDown(AMOCRM, host, step, describe_exception(exc)) from None


async def connect_channel(
    settings: Settings, amojo: AmojoClient, crm: CrmClient, repo: Repository
) -> Channel:
    """Connect the channel to the account (every start, hooks v2) and store the scope_id.

    Raises StartupError when a setting is wrong, ServiceDown when amoCRM or amojo is down.
    """
    account_id = await resolve_account_id(settings, crm)
    try:
        result = await amojo.connect(
            account_id,
            title=settings.AMOJO_CHANNEL_TITLE,
            time_window_disabled=settings.TIME_WINDOW_SECONDS == 0,
        )
    except AmojoError as exc:
        if exc.status == 429 or exc.status >= 500:
            raise ServiceDown(AMOJO, amojo.host, "connect", f"HTTP {exc.status}") from None
        raise StartupError(describe_connect_refusal(exc)) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ServiceDown(AMOJO, amojo.host, "connect", describe_exception(exc)) from None
    except (ValueError, KeyError, TypeError) as exc:  # a 2xx that is not connect's answer
        problem = f"an answer without a scope_id ({type(exc).__name__})"
        raise ServiceDown(AMOJO, amojo.host, "connect", problem) from None
    async with repo.transaction() as tx:
        await tx.set_kv(KV_SCOPE_ID, result.scope_id)
        await tx.set_kv(KV_ACCOUNT_ID, account_id)
    logger.info("channel connected, scope %s", result.scope_id)
    return Channel(scope_id=result.scope_id, account_id=account_id)


def describe_connect_refusal(exc: AmojoError) -> str:
    """A 4xx answer to connect, naming the setting to check."""
    if 300 <= exc.status < 400:
        return (
            f"AMOJO_BASE_URL: amojo answers connect with a redirect ({exc.status}); use the "
            "address it redirects to, with https:// (amojo.kommo.com for Kommo accounts)"
        )
    if exc.status in (401, 403):
        return (
            f"AMOJO_CHANNEL_SECRET: amojo refused the connect request ({exc.status}: bad "
            "signature): check the secret (and that the server clock is right)"
        )
    if exc.status == 404:
        return (
            "AMOJO_CHANNEL_ID: amojo does not know this channel (404): check it (and "
            "AMOJO_BASE_URL: amojo.kommo.com for Kommo accounts)"
        )
    return (
        f"AMOJO_ACCOUNT_ID: amojo rejected the connect request ({exc.status}): "
        f"{exc.body[:300]}; check it and that the channel has a hook URL for API v2"
    )


async def stored_channel(repo: Repository) -> Channel | None:
    """The scope and account of the last successful connect."""
    scope_id = await repo.get_kv(KV_SCOPE_ID)
    account_id = await repo.get_kv(KV_ACCOUNT_ID)
    if scope_id and account_id:
        return Channel(scope_id=scope_id, account_id=account_id)
    return None


async def connect_with_retry(
    settings: Settings,
    amojo: AmojoClient,
    crm: CrmClient,
    repo: Repository,
    *,
    waiting: Callable[[str | None], None] = lambda _: None,
    use_stored: bool = True,
) -> tuple[Channel, bool]:
    """Connect, retrying while amoCRM or amojo is down; (channel, connected).

    With a stored scope (`use_stored`), the first failure returns it at once (connected
    False): hooks are taken with it and the caller connects again in the background.
    """
    stored = await stored_channel(repo) if use_stored else None
    delay = 1.0
    down_since: float | None = None
    while True:
        try:
            channel = await connect_channel(settings, amojo, crm, repo)
        except ServiceDown as exc:
            if stored is not None:
                logger.warning(
                    "%s; taking hooks with the stored scope %s and connecting again in the "
                    "background",
                    exc,
                    stored.scope_id,
                )
                return stored, False
            down_since = down_since or time.time()
            down_for = int(time.time() - down_since)
            waiting(f"waiting for {exc}")
            logger.warning("%s, for %d s; retrying in %.0f s", exc, down_for, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX_SECONDS)
            continue
        if down_since is not None:
            logger.info("connected after %d s of waiting", time.time() - down_since)
        waiting(None)
        return channel, True


async def amo_chat_ids(
    repo: Repository,
    amojo: AmojoClient,
    channel: Channel,
    chat: ChatKey,
    source: str | None,
    before_request: Callable[[], Awaitable[None]] | None = None,
) -> list[str]:
    """Every amo chat of a conversation; asked of amojo when none was seen (spec §5.1: the
    chat-creation call answers an existing conversation's chat too)."""
    known = await repo.amo_chats_of(chat)
    if known:
        return known
    customer = await repo.get_customer(chat)
    if customer is None:
        return []
    if before_request is not None:
        await before_request()
    answer = await amojo.create_chat(
        channel.scope_id,
        ids.conversation_id(chat),
        {"id": ids.user_id(customer.user_id), "name": customer.name or "Telegram user"},
        source=source,
    )
    amo_chat_id = answer.get("id") if isinstance(answer, dict) else None
    return [str(amo_chat_id)] if amo_chat_id else []
