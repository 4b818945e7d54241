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
    """Remember that group `old_id` of `bot` is supergroup `new_id` now (once)."""
    known = bots.groups.get((bot, old_id))
    if known is None or (bot, new_id) in bots.groups:
        return
    moved = dataclasses.replace(known, state=MIGRATED)
    current = dataclasses.replace(known, tg_chat_id=new_id, kind="supergroup")
    async with repo.transaction() as tx:
        await tx.save_group(moved)
        await tx.save_group(current)
    bots.groups[(bot, old_id)] = moved
    bots.groups[(bot, new_id)] = current
    logger.info("group %d is supergroup %d now: same conversation", old_id, new_id)
