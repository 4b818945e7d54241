"""Staff commands for Telegram users in OPERATOR_IDS; anyone else falls through to customers."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import Message

from bot.notices import answer_later
from bot.settings import Settings
from bot.staff import Invocation, StaffDesk
from handlers.filters import PrivateChat
from storage import Repository

router = Router(name=__name__)


class IsOperator(Filter):
    """The sender is listed in OPERATOR_IDS."""

    async def __call__(self, message: Message, settings: Settings) -> bool:
        """True for operators."""
        user = message.from_user
        return user is not None and user.id in settings.OPERATOR_IDS


router.message.filter(PrivateChat(), IsOperator())


@router.message(Command("talk", "close", "call", "status", "help"))
async def cmd_staff(
    message: Message, command: CommandObject, staff: StaffDesk, repo: Repository
) -> None:
    """Run a staff command and answer in the operator's chat."""
    user_id = message.from_user.id if message.from_user else 0
    invocation = Invocation(
        user_id=user_id,
        chat_id=message.chat.id,
        message_id=message.message_id,
        command=command.command.lower(),
        args=command.args,
    )
    await answer_later(repo, message, await staff.run(invocation))
