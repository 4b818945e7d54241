"""Drill: amojo down while customers write, Telegram down while managers write (overlapping).

Nothing may be lost, nothing duplicated, and each conversation keeps its order: every customer
message reaches amojo once, every manager message reaches Telegram once with delivery status 1,
and every hook is answered 200 at once even while Telegram is down (amojo never re-sends one).
"""

from __future__ import annotations

import time

from simulators.factories import private_message_update
from tests.drills.traffic import TwoWayTraffic
from tests.harness import BridgeFactory, Fakes

CHATS = (6101, 6102, 6103, 6104, 6105, 6106)


def failed_amojo_requests(fakes: Fakes) -> int:
    """Requests amojo refused with 503 so far."""
    return sum(r.status == 503 for r in fakes.amojo.requests)


def failed_telegram_sends(fakes: Fakes) -> int:
    """sendMessage calls Telegram refused with 502 so far."""
    return sum(c.status == 502 for c in fakes.telegram.calls_of("sendMessage"))


async def test_outages_of_amojo_and_telegram_lose_and_repeat_nothing(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    started = time.monotonic()
    running = await bridges.start()
    for chat in CHATS:
        fakes.telegram.push_update(private_message_update(chat, 1, text="hello"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == len(CHATS), what="hellos")

    traffic = TwoWayTraffic(fakes, running.url, running.scope_id, CHATS)
    traffic.start()
    try:
        await traffic.rounds(customers=5, managers=2)

        # amojo down: customer messages and delivery statuses pile up in the queue.
        fakes.amojo.set_down(503)
        failures_before = failed_amojo_requests(fakes)
        await traffic.rounds(customers=5, managers=2)
        await fakes.amojo.wait_for(
            lambda: failed_amojo_requests(fakes) >= failures_before + 3 * len(CHATS),
            what="the bridge retrying against the amojo outage",
        )

        # Telegram down as well: manager messages wait, customer updates wait in Telegram.
        fakes.telegram.set_down(True)
        await traffic.rounds(customers=5, managers=2)
        fakes.amojo.set_down(None)
        failures_before = failed_telegram_sends(fakes)
        await traffic.rounds(customers=5, managers=2)
        await fakes.telegram.wait_for(
            lambda: failed_telegram_sends(fakes) >= failures_before + len(CHATS),
            what="the bridge retrying against the Telegram outage",
        )
        fakes.telegram.set_down(False)
        await traffic.rounds(customers=5, managers=2)
    finally:
        await traffic.stop()
    written = time.monotonic()

    await traffic.wait_all_delivered()
    drained = time.monotonic()

    while_telegram_down = [hook for hook in traffic.hooks if hook.telegram_down]
    print(
        f"outage drill: {len(traffic.customer_msgids())} customer and {len(traffic.hooks)} "
        f"manager messages ({len(while_telegram_down)} while Telegram was down) written in "
        f"{written - started:.1f}s, all delivered {drained - written:.1f}s later; "
        f"amojo 503s {failed_amojo_requests(fakes)}, Telegram 502 sends "
        f"{failed_telegram_sends(fakes)}"
    )
    assert [hook.status for hook in traffic.hooks] == [200] * len(traffic.hooks)
    assert len(while_telegram_down) >= 4 * len(CHATS)
    traffic.assert_exactly_once_in_order()
