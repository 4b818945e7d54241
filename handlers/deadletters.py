"""Operator commands on dead letters: `/failed` lists them, `/retry <id>|all` re-drives them."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.chat.notices import answer_later
from bot.common.bots import Bots
from bot.staff.dead_letters import Caller, DeadLetterDesk
from handlers.filters import OwnNewMessage, PrivateChat
from handlers.operator import IsOperator
from storage import Repository

router = Router(name=__name__)
router.message.filter(PrivateChat(), IsOperator(), OwnNewMessage())


def _caller(message: Message, bots: Bots) -> Caller:
    user = message.from_user
    chat = bots.chat(message.bot, message.chat)
    return Caller(
        user_id=user.id if user else 0,
        chat_id=chat.chat_id,
        message_id=message.message_id,
        bot=chat.bot,
        language_code=user.language_code if user else None,
    )


@router.message(Command("failed", ignore_case=True))
async def cmd_failed(
    message: Message, dead_letters: DeadLetterDesk, repo: Repository, bridge_bots: Bots
) -> None:
    """List the newest dead-lettered jobs."""
    text = await dead_letters.list_failed(_caller(message, bridge_bots))
    await answer_later(repo, bridge_bots, message, text)


@router.message(Command("retry", ignore_case=True))
async def cmd_retry(
    message: Message,
    command: CommandObject,
    dead_letters: DeadLetterDesk,
    repo: Repository,
    bridge_bots: Bots,
) -> None:
    """Put one dead-lettered job, or all of them, back in their queue."""
    text = await dead_letters.retry(_caller(message, bridge_bots), command.args)
    await answer_later(repo, bridge_bots, message, text)
