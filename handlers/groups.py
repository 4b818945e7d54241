"""Groups and supergroups (forum topics included): bridged only where staff added the bot.

A client's message is bridged with its author's name; a staff member's message is the company
talking (imported as outgoing); a staff command is answered in the staff member's private
chat, never in front of the client.
"""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.filters import Filter
from aiogram.types import ChatMemberUpdated, Message, TelegramObject, Update

from bot.chat.notices import answer_jobs
from bot.common.bots import GROUP_TYPES, Bots
from bot.common.settings import Settings
from bot.customer.groups import GroupRegistry
from bot.customer.intake import Intake
from bot.customer.mapping import sender_name
from bot.staff.commands import KNOWN_COMMANDS, command_of
from bot.staff.desk import QUEUED_COMMANDS, Invocation, StaffDesk, staff_job
from storage import Repository

router = Router(name=__name__)
logger = logging.getLogger(__name__)


class GroupChatFilter(Filter):
    """The event happened in a group or a supergroup."""

    async def __call__(self, event: TelegramObject) -> bool:
        """True for groups."""
        chat = getattr(event, "chat", None)
        return chat is not None and chat.type in GROUP_TYPES


router.message.filter(GroupChatFilter())
router.edited_message.filter(GroupChatFilter())
router.my_chat_member.filter(GroupChatFilter())


@router.my_chat_member()
async def on_membership(event: ChatMemberUpdated, groups: GroupRegistry, bridge_bots: Bots) -> None:
    """The bot was added to or removed from a group."""
    await groups.membership(bridge_bots.key_of(event.bot) if event.bot else 0, event)


@router.message()
async def on_group_message(
    message: Message,
    groups: GroupRegistry,
    intake: Intake,
    bridge_bots: Bots,
    settings: Settings,
    staff: StaffDesk,
    repo: Repository,
) -> None:
    """Bridge a message of a served group; in any other group, say so once and leave."""
    bot = bridge_bots.key_of(message.bot) if message.bot else 0
    if message.migrate_to_chat_id or message.migrate_from_chat_id:
        await groups.migrated(bot, message)
        return
    user = message.from_user
    is_staff = user is not None and user.id in settings.OPERATOR_IDS
    command = _ours(command_of(message.text), message.text, bridge_bots.usernames.get(bot))
    direct = message.chat.is_direct_messages
    if groups.serving(bot, message.chat.id) is None:
        if is_staff and command == "connect" and user is not None:
            await groups.connect(bot, message.chat, user.id)
        elif direct:  # a channel's direct messages cannot be left (Bot API): ignored
            logger.warning("direct messages of chat %d: not connected by staff", message.chat.id)
        elif message.new_chat_members is None and message.left_chat_member is None:
            await groups.refuse(bot, message.chat.id, "message")
        return
    topic = message.direct_messages_topic
    if direct and topic is not None and topic.user is not None and user is not None:
        if user.id != topic.user.id:  # the channel's side answering in the person's topic
            if is_staff:
                await intake.record_owner_message(message, sender_name(user))
            else:  # an administrator not on the staff list: not the company's voice
                logger.warning(
                    "direct messages of chat %d: user %d is not staff; not bridged",
                    message.chat.id,
                    user.id,
                )
        elif command is None or not is_staff:
            await intake.record_message(message)
        return
    if message.new_chat_members or message.left_chat_member or message.forum_topic_created:
        return  # service messages: nothing a manager answers
    if is_staff and user is not None and command is not None:
        await _staff_command(message, bot, command, staff, repo)
        return
    if is_staff and user is not None:
        await intake.record_owner_message(message, sender_name(user))
        return
    await intake.record_message(message)


def _ours(command: str | None, text: str | None, username: str | None) -> str | None:
    """The command, unless it names another bot (`/status@other_bot`: "" then)."""
    if command is None:
        return None
    word = (text or "").split(maxsplit=1)[0]
    if "@" in word and word.split("@", 1)[1].lower() != (username or "").lower():
        return ""
    return command


async def _staff_command(
    message: Message,
    bot: int,
    command: str,
    staff: StaffDesk,
    repo: Repository,
) -> None:
    """Answered in the staff member's private chat with the bot."""
    user = message.from_user
    assert user is not None
    if command not in KNOWN_COMMANDS or command in ("start", "link"):
        return  # not bridged either: a staff member's command is never the client's message
    parts = (message.text or "").split(maxsplit=1)
    invocation = Invocation(
        user_id=user.id,
        chat_id=user.id,
        message_id=message.message_id,
        command=command,
        args=parts[1] if len(parts) > 1 else None,
        bot=bot,
        language_code=user.language_code,
        origin=message.chat.id,
    )
    if command in QUEUED_COMMANDS:
        await repo.enqueue(staff_job(invocation))
        return
    answer = await staff.run(invocation)
    await repo.enqueue(*answer_jobs(invocation.chat, invocation.tag, answer))


@router.edited_message()
async def on_group_edit(
    message: Message,
    event_update: Update,
    groups: GroupRegistry,
    intake: Intake,
    bridge_bots: Bots,
    settings: Settings,
) -> None:
    """A client's edit in a served group, bridged as in private chats (staff edits are not,
    as in their private chats)."""
    bot = bridge_bots.key_of(message.bot) if message.bot else 0
    user = message.from_user
    if groups.serving(bot, message.chat.id) is None or user is None:
        return
    if user.id not in settings.OPERATOR_IDS:
        await intake.record_edit(message, event_update.update_id)
