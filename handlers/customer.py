"""Customer side: /start, sharing a phone, every other private message and its edits."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import CommandObject, CommandStart
from aiogram.types import (
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)

from bot.common.texts import text
from bot.customer.intake import Intake, is_own_contact
from handlers.filters import HasContact, PrivateChat

router = Router(name=__name__)
router.message.filter(PrivateChat())
router.edited_message.filter(PrivateChat())


@router.message(CommandStart())
async def on_start(message: Message, command: CommandObject, intake: Intake) -> None:
    """Greet the customer and offer to share their phone; a deep link's payload is bridged
    (as a readable line) and carried onto the lead."""
    if command.args:
        await intake.record_start(message, command.args)
    language = message.from_user.language_code if message.from_user else None
    keyboard = ReplyKeyboardMarkup(
        keyboard=[
            [KeyboardButton(text=text("share_phone_button", language), request_contact=True)]
        ],
        resize_keyboard=True,
        one_time_keyboard=True,
    )
    await intake.record_notice(
        message, f"start:{message.message_id}", text("greeting", language), keyboard
    )


@router.message(HasContact())
async def on_contact(message: Message, intake: Intake) -> None:
    """Bridge a shared contact; remember the phone when it is the customer's own."""
    await intake.record_message(message)
    if is_own_contact(message):
        language = message.from_user.language_code if message.from_user else None
        await intake.record_notice(
            message,
            f"phone:{message.message_id}",
            text("phone_saved", language),
            ReplyKeyboardRemove(),
        )


@router.message()
async def on_customer_message(message: Message, intake: Intake) -> None:
    """Bridge any other customer message to amoCRM."""
    await intake.record_message(message)


@router.edited_message()
async def on_customer_edit(message: Message, event_update: Update, intake: Intake) -> None:
    """Bridge an edit when the text or caption really changed."""
    await intake.record_edit(message, event_update.update_id)
