"""Staff commands for Telegram users in OPERATOR_IDS; anyone else falls through to customers."""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import Message

from bot.chat.notices import answer_later
from bot.common.bots import Bots
from bot.common.settings import Settings
from bot.common.texts import staff_language, text
from bot.staff.commands import is_unknown_command
from bot.staff.desk import QUEUED_COMMANDS, Invocation, StaffDesk, staff_job
from bot.staff.links import link_jobs
from handlers.filters import OwnNewMessage, PrivateChat
from storage import Repository

router = Router(name=__name__)
logger = logging.getLogger(__name__)


class IsOperator(Filter):
    """The sender is listed in OPERATOR_IDS."""

    async def __call__(self, message: Message, settings: Settings) -> bool:
        """True for operators."""
        user = message.from_user
        return user is not None and user.id in settings.OPERATOR_IDS


class UnknownCommand(Filter):
    """A `/word` message that is none of the bot's commands (/start stays the customers')."""

    async def __call__(self, message: Message) -> bool:
        """True for an unknown command."""
        return is_unknown_command(message.text)


# Commands come only from an operator's own new messages: a forwarded "/close …" is someone
# else's words, and an edited "/call …" must neither run again nor reach amoCRM.
router.message.filter(PrivateChat(), IsOperator(), OwnNewMessage())
router.edited_message.filter(PrivateChat(), IsOperator())


@router.message(Command("talk", "close", "call", "status", "help", ignore_case=True))
async def cmd_staff(
    message: Message,
    command: CommandObject,
    staff: StaffDesk,
    repo: Repository,
    bridge_bots: Bots,
) -> None:
    """Run or queue a staff command; its answer comes in the operator's chat (same bot)."""
    user = message.from_user
    chat = bridge_bots.chat(message.bot, message.chat)
    invocation = Invocation(
        user_id=user.id if user else 0,
        chat_id=chat.chat_id,
        message_id=message.message_id,
        command=command.command.lower(),
        args=command.args,
        bot=chat.bot,
        language_code=user.language_code if user else None,
    )
    if invocation.command in QUEUED_COMMANDS:
        # Run by the staff worker: a command waiting on amoCRM (a 429, a slow answer) must not
        # hold up the customers' updates behind it in polling.
        await repo.enqueue(staff_job(invocation))
    else:  # /status, /help: local answers, at once
        await answer_later(repo, bridge_bots, message, await staff.run(invocation))


@router.message(Command("link", ignore_case=True))
async def cmd_link(
    message: Message,
    command: CommandObject,
    repo: Repository,
    bridge_bots: Bots,
    settings: Settings,
) -> None:
    """A deep link to every bot carrying the given values, each with its QR code."""
    code = message.from_user.language_code if message.from_user else None
    language = staff_language(code, settings.default_language)
    chat = bridge_bots.chat(message.bot, message.chat)
    await repo.enqueue(*link_jobs(chat, message.message_id, bridge_bots, command.args, language))


@router.message(UnknownCommand())
async def unknown_command(
    message: Message, repo: Repository, bridge_bots: Bots, settings: Settings
) -> None:
    """A slash command the bridge does not know: said so, never bridged to amoCRM."""
    word = (message.text or "").split(maxsplit=1)[0]
    code = message.from_user.language_code if message.from_user else None
    language = staff_language(code, settings.default_language)
    await answer_later(
        repo, bridge_bots, message, text("staff.unknown_command", language, word=word)
    )


@router.edited_message()
async def on_operator_edit(message: Message) -> None:
    """An operator's edits are never bridged nor run as commands."""
    logger.info(
        "ignored an edit by operator %s of message %d",
        message.from_user.id if message.from_user else "?",
        message.message_id,
    )
