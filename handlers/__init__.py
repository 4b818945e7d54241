"""aiogram routers, in the order they are consulted (catch-alls last)."""

from aiogram import Router

from handlers import business, customer, deadletters, groups, membership, operator, reactions


def build_routers() -> list[Router]:
    """All routers of the bot, detached so a new Dispatcher can include them."""
    routers = [
        operator.router,
        groups.router,
        deadletters.router,
        membership.router,
        reactions.router,
        business.router,
        customer.router,
    ]
    for router in routers:
        # A Router attaches to one parent for good; releasing it lets the same process build
        # a second Dispatcher (a restart inside the test suite, a re-created bridge).
        router._parent_router = None
    return routers
