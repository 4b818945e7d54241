"""aiogram routers, in the order they are consulted (catch-alls last)."""

from aiogram import Router

from handlers import customer


def build_routers() -> list[Router]:
    """All routers of the bot."""
    return [customer.router]
