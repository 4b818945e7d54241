"""A group upgraded to a supergroup: the new Telegram id keeps the old one's conversation."""

from __future__ import annotations

import dataclasses
import logging

from bot.common.bots import Bots
from storage import Repository
from storage.groups import MIGRATED

logger = logging.getLogger(__name__)


async def record_migration(
    repo: Repository, bots: Bots, bot: int, old_id: int, new_id: int
) -> None:
    """Remember that group `old_id` of `bot` is supergroup `new_id` now: the supergroup names
    the group's conversation (a supergroup connected on its own meanwhile joins it)."""
    known = bots.groups.get((bot, old_id))
    if known is None or known.state == MIGRATED:
        return
    moved = dataclasses.replace(known, state=MIGRATED)
    already = bots.groups.get((bot, new_id))
    current = dataclasses.replace(
        already or known, tg_chat_id=new_id, chat_id=known.chat_id, kind="supergroup"
    )
    if already is not None and already.state != known.state:
        current = dataclasses.replace(current, state=known.state, reason=known.reason)
    async with repo.transaction() as tx:
        await tx.save_group(moved)
        await tx.save_group(current)
    bots.remember_group(moved)
    bots.remember_group(current)
    logger.info("group %d is supergroup %d now: same conversation", old_id, new_id)
