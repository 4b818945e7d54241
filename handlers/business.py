"""Telegram Business updates: connections, an account's messages, edits, deletions, buttons."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.types import (
    BusinessConnection,
    BusinessMessagesDeleted,
    CallbackQuery,
    Message,
    Update,
)

from bot.customer.business import BusinessAccounts

router = Router(name=__name__)


@router.business_connection()
async def on_connection(
    connection: BusinessConnection, bot: Bot, event_update: Update, business: BusinessAccounts
) -> None:
    """A connection made, changed or removed: stored, and its owner told."""
    await business.connection_changed(connection, bot, event_update.update_id)


@router.business_message()
async def on_business_message(
    message: Message, event_update: Update, business: BusinessAccounts
) -> None:
    """A customer's message to the account, or what its owner typed."""
    await business.message(message, event_update.update_id)


@router.edited_business_message()
async def on_business_edit(
    message: Message, event_update: Update, business: BusinessAccounts
) -> None:
    """An edit in an account's chat."""
    await business.edit(message, event_update.update_id)


@router.deleted_business_messages()
async def on_business_deletion(
    deleted: BusinessMessagesDeleted, bot: Bot, event_update: Update, business: BusinessAccounts
) -> None:
    """Messages deleted in an account's chat."""
    await business.deleted(deleted, bot, event_update.update_id)


@router.callback_query()
async def on_button(
    callback: CallbackQuery, event_update: Update, business: BusinessAccounts
) -> None:
    """A press of a manager's button in an account's chat (answered by the Telegram worker)."""
    await business.button(callback, event_update.update_id)
