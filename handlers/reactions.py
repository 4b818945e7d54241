"""Customer reactions in private chats and bridged groups, bridged to amoCRM."""

from __future__ import annotations

from aiogram import Router
from aiogram.types import MessageReactionUpdated, Update

from bot.chat.reactions import CustomerReactions
from handlers.filters import PrivateOrGroupChat

router = Router(name=__name__)
router.message_reaction.filter(PrivateOrGroupChat())


@router.message_reaction()
async def on_customer_reaction(
    reaction: MessageReactionUpdated, event_update: Update, reactions: CustomerReactions
) -> None:
    """Store react/unreact jobs for the message the customer reacted to."""
    await reactions.record(reaction, event_update.update_id)
