"""The amojo channel connection of this process: account, scope and the connect step."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.amojo import AmojoClient, AmojoError
from bot.crm import CrmClient, CrmError
from bot.settings import Settings
from storage import Repository

logger = logging.getLogger(__name__)

KV_SCOPE_ID = "amojo.scope_id"
KV_ACCOUNT_ID = "amojo.account_id"


class StartupError(Exception):
    """The bridge cannot start; the message says which setting to check."""


@dataclass(slots=True)
class Channel:
    """Where amojo calls go: the scope returned by connect."""

    scope_id: str
    account_id: str


async def resolve_account_id(settings: Settings, crm: CrmClient) -> str:
    """AMOJO_ACCOUNT_ID, or the account's amojo id read from the CRM."""
    if settings.AMOJO_ACCOUNT_ID:
        return settings.AMOJO_ACCOUNT_ID
    try:
        return await crm.account_amojo_id()
    except CrmError as exc:
        hint = "check AMOCRM_ACCESS_TOKEN (or the OAuth settings) and AMOCRM_BASE_URL"
        if exc.status == 402:
            hint = "the amoCRM account is not paid"
        raise StartupError(
            f"could not read the account's amojo id from {settings.amocrm_base_url}: "
            f"{exc.message} ({hint}, or set AMOJO_ACCOUNT_ID)"
        ) from None


async def connect_channel(
    settings: Settings, amojo: AmojoClient, crm: CrmClient, repo: Repository
) -> Channel:
    """Connect the channel to the account (every start, hooks v2) and store the scope_id."""
    account_id = await resolve_account_id(settings, crm)
    try:
        result = await amojo.connect(
            account_id,
            title=settings.AMOJO_CHANNEL_TITLE,
            time_window_disabled=settings.TIME_WINDOW_SECONDS == 0,
        )
    except AmojoError as exc:
        if exc.status == 403:
            raise StartupError(
                "amojo refused the connect request (403: bad signature): check "
                "AMOJO_CHANNEL_SECRET (and that the server clock is right)"
            ) from None
        if exc.status == 404:
            raise StartupError(
                "amojo does not know this channel (404): check AMOJO_CHANNEL_ID "
                "(and AMOJO_BASE_URL: amojo.kommo.com for Kommo accounts)"
            ) from None
        if exc.status == 400:
            raise StartupError(
                f"amojo rejected the connect request (400): {exc.body[:300]} — check "
                "AMOJO_ACCOUNT_ID and that the channel has a hook URL for API v2"
            ) from None
        raise
    async with repo.transaction() as tx:
        await tx.set_kv(KV_SCOPE_ID, result.scope_id)
        await tx.set_kv(KV_ACCOUNT_ID, account_id)
    logger.info("channel connected, scope %s", result.scope_id)
    return Channel(scope_id=result.scope_id, account_id=account_id)
