"""The customer blocks or unblocks the bot (`my_chat_member` in a private chat)."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import ChatMemberUpdated

from bot.common.bots import Bots
from handlers.filters import PrivateChat
from storage import Repository

router = Router(name=__name__)
router.my_chat_member.filter(PrivateChat())

BLOCKED_STATUSES = frozenset({"kicked", "left"})


@router.my_chat_member()
async def on_bot_membership(event: ChatMemberUpdated, repo: Repository, bridge_bots: Bots) -> None:
    """Remember whether the customer blocks the bot, so deliveries report 901 without trying."""
    blocked = event.new_chat_member.status in BLOCKED_STATUSES
    async with repo.transaction() as tx:
        await tx.set_customer_blocked(bridge_bots.chat(event.bot, event.chat), blocked)
