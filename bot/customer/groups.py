"""Groups: bridged only when a staff member added the bot (or ran /connect there).

Anywhere else the bot says so once and leaves. The registry lives in SQLite (`group_chats`)
and in memory (`Bots.groups`, by the Telegram id): a group upgraded to a supergroup keeps its
conversation under the id it was first bridged with. Handlers write here and return; the
leave job does the network.
"""

from __future__ import annotations

import dataclasses
import logging

from aiogram.types import ChatMemberUpdated, Message

from bot.chat.notices import leave_job
from bot.common.bots import Bots
from bot.common.group_moves import record_migration
from bot.common.texts import Language, text
from storage import GroupChat, Repository
from storage.groups import ACTIVE, REMOVED

logger = logging.getLogger(__name__)

JOINED = frozenset({"member", "administrator", "creator", "restricted"})


def kind_of(chat: object) -> str:
    """`group`, `supergroup` or `forum` (a supergroup with topics)."""
    if getattr(chat, "is_forum", False):
        return "forum"
    return str(getattr(chat, "type", "group"))


class GroupRegistry:
    """Which groups the bridge serves; decides who may connect one."""

    def __init__(
        self, repo: Repository, bots: Bots, staff: frozenset[int], language: Language
    ) -> None:
        self.repo = repo
        self.bots = bots
        self.staff = staff
        self.language = language

    async def load(self) -> None:
        """Every stored group into memory (at start)."""
        for group in await self.repo.group_chats():
            self.bots.remember_group(group)

    def serving(self, bot: int, tg_chat_id: int) -> GroupChat | None:
        """The group when the bridge serves it now."""
        group = self.bots.groups.get((bot, tg_chat_id))
        return group if group is not None and group.state == ACTIVE else None

    async def _save(self, group: GroupChat) -> None:
        async with self.repo.transaction() as tx:
            await tx.save_group(group)
            await tx.set_group_blocked(group.bot, group.tg_chat_id, group.state != ACTIVE)
        self.bots.remember_group(group)

    async def connect(self, bot: int, chat: object, by: int) -> GroupChat:
        """A staff member added the bot (or ran /connect): the group is bridged."""
        tg_chat_id = int(getattr(chat, "id", 0))
        known = self.bots.groups.get((bot, tg_chat_id))
        group = GroupChat(
            bot=bot,
            tg_chat_id=tg_chat_id,
            chat_id=known.chat_id if known is not None else tg_chat_id,
            title=str(getattr(chat, "title", None) or tg_chat_id),
            kind=kind_of(chat),
            added_by=by,
            state=ACTIVE,
        )
        await self._save(group)
        logger.info("group %d (%s) bridged: added by staff member %d", tg_chat_id, group.title, by)
        return group

    async def refuse(self, bot: int, tg_chat_id: int, occasion: str) -> None:
        """Nobody on the staff added the bot: say so once and leave."""
        await self.repo.enqueue(
            leave_job(bot, tg_chat_id, text("group.not_connected", self.language), occasion)
        )

    async def membership(self, bot: int, event: ChatMemberUpdated) -> None:
        """The bot was added to, or removed from, a group."""
        status = event.new_chat_member.status
        who = event.from_user.id if event.from_user else 0
        known = self.bots.groups.get((bot, event.chat.id))
        if status in JOINED:
            if who in self.staff:
                await self.connect(bot, event.chat, who)
            elif known is None or known.state != ACTIVE:
                logger.warning("group %d: added by %d, not staff: leaving", event.chat.id, who)
                await self.refuse(bot, event.chat.id, f"added{int(event.date.timestamp())}")
            return
        if known is not None and known.state == ACTIVE:
            reason = text("group.removed", self.language)
            removed = dataclasses.replace(known, state=REMOVED, reason=reason)
            await self._save(removed)
            logger.warning("group %d: the bot was removed (%s)", event.chat.id, status)

    async def migrated(self, bot: int, message: Message) -> None:
        """A group became a supergroup (the service message in either chat)."""
        old_id = message.chat.id if message.migrate_to_chat_id else message.migrate_from_chat_id
        new_id = message.migrate_to_chat_id or message.chat.id
        if old_id is not None:
            await record_migration(self.repo, self.bots, bot, old_id, new_id)
