"""Drill: a storm of Telegram, amojo and amoCRM 429s under two-way traffic and bursts.

Everything is still delivered exactly once and in order per conversation; every retry waits at
least the `retry_after` the service asked for; the bridge's own pacing keeps Telegram sends
under ~30/s in total and ~1/s sustained per chat (plus the small burst allowance of
`bot/jobs/throttle.py`), and amoCRM requests at 7 or fewer in any second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from bot.common.limits import (
    AMOCRM_RATE_PER_SECOND,
    TELEGRAM_GLOBAL_RATE,
    TELEGRAM_PER_CHAT_BURST,
    TELEGRAM_PER_CHAT_INTERVAL,
)
from bot.jobs.throttle import Pace
from simulators.factories import private_message_update, staff_message_update
from tests.drills.traffic import TwoWayTraffic
from tests.harness import BridgeFactory, Fakes

CHATS = (7201, 7202, 7203, 7204)
HOT_CHAT = CHATS[0]
BURST_CHATS = tuple(range(7301, 7341))
OPERATOR = 7900
TALKS = tuple(range(501, 511))
RETRY_AFTER = 1
# Timestamps are taken by the fakes on arrival; the bridge schedules its retry after reading
# the answer, so a retry can never come earlier, only the clocks' resolution differs.
CLOCK_SLACK = 0.02
SUSTAINED_WINDOW = 5.0

TELEGRAM_GLOBAL_429 = 8
TELEGRAM_CHAT_429 = 2
AMOJO_MESSAGE_429 = 12
AMOJO_STATUS_429 = 8
CRM_429 = 4


def gaps_after_failures(
    requests: Sequence[Any],
    failed: Callable[[Any], bool],
    key: Callable[[Any], object],
    at: Callable[[Any], float],
) -> list[float]:
    """Seconds from each failed request to the next request with the same key."""
    ordered = sorted(requests, key=at)
    gaps = []
    for index, request in enumerate(ordered):
        if not failed(request):
            continue
        later = next((r for r in ordered[index + 1 :] if key(r) == key(request)), None)
        assert later is not None, f"never retried: {key(request)}"
        gaps.append(at(later) - at(request))
    return gaps


def amojo_target(request: Any) -> str:
    """What an amojo request is about: our msgid, or the path of a delivery status."""
    if request.path.endswith("/delivery_status"):
        return str(request.path)
    return str(json.loads(request.body)["payload"]["msgid"])


async def test_rate_limit_storm_delivers_everything_within_the_limits(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    started = time.monotonic()
    running = await bridges.start(OPERATOR_IDS=str(OPERATOR), pace=Pace())  # Telegram's limits
    for chat in CHATS:
        fakes.telegram.push_update(private_message_update(chat, 1, text="hello"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == len(CHATS), what="hellos")
    for talk in TALKS:
        fakes.crm.add_talk(talk)

    telegram, amojo, crm = fakes.telegram, fakes.amojo, fakes.crm
    telegram.fail("sendMessage", status=429, retry_after=RETRY_AFTER, times=TELEGRAM_GLOBAL_429)
    for chat in (*CHATS, OPERATOR):
        telegram.fail(
            "sendMessage",
            status=429,
            retry_after=RETRY_AFTER,
            times=TELEGRAM_CHAT_429,
            chat_id=chat,
        )
    amojo.fail("new_message", 429, times=AMOJO_MESSAGE_429, retry_after=RETRY_AFTER)
    amojo.fail("delivery_status", 429, times=AMOJO_STATUS_429, retry_after=RETRY_AFTER)
    for talk in TALKS[:CRM_429]:
        crm.fail(f"/api/v4/talks/{talk}", 429, headers={"Retry-After": str(RETRY_AFTER)})

    traffic = TwoWayTraffic(fakes, running.url, running.scope_id, CHATS)
    traffic.start()
    try:
        # Far more than Telegram takes at once: 80 messages to 40 chats and 6 to one chat.
        for _ in range(2):
            for chat in BURST_CHATS:
                await traffic.manager_writes(chat)
        for _ in range(6):
            await traffic.manager_writes(HOT_CHAT)
        for number, talk in enumerate(TALKS, start=1):
            telegram.push_update(staff_message_update(OPERATOR, number, text=f"/talk {talk}"))
        await traffic.rounds(customers=10, managers=3)
    finally:
        await traffic.stop()
    written = time.monotonic()

    await traffic.wait_all_delivered(timeout=45)
    await telegram.wait_for(
        lambda: len(telegram.sent_messages(OPERATOR)) >= len(TALKS),
        timeout=20,
        what="an answer to every /talk",
    )
    drained = time.monotonic()

    telegram_429 = [c for c in telegram.calls if c.status == 429]
    amojo_429 = [r for r in amojo.requests if r.status == 429]
    crm_429 = [r for r in crm.requests if r.status == 429]
    sends = telegram.calls_of("sendMessage")
    telegram_gaps = gaps_after_failures(
        sends, lambda c: c.status == 429, lambda c: c.chat_id, lambda c: c.at
    )
    amojo_gaps = gaps_after_failures(
        [r for r in amojo.requests if "/v2/origin/custom/" in r.path and "connect" not in r.path],
        lambda r: r.status == 429,
        amojo_target,
        lambda r: r.at,
    )
    crm_gaps = gaps_after_failures(
        crm.requests, lambda r: r.status == 429, lambda r: r.path, lambda r: r.at
    )
    print(
        f"429 storm: {len(traffic.customer_msgids())} customer and {len(traffic.hooks)} manager "
        f"messages, {len(TALKS)} /talk; written in {written - started:.1f}s, drained "
        f"{drained - written:.1f}s later; 429s Telegram {len(telegram_429)}, amojo "
        f"{len(amojo_429)}, CRM {len(crm_429)}; shortest wait after a 429: Telegram "
        f"{min(telegram_gaps):.2f}s, amojo {min(amojo_gaps):.2f}s, CRM {min(crm_gaps):.2f}s; "
        f"Telegram max {telegram.max_rate('send')}/s, per chat {telegram.max_rate_per_chat('send')}"
        f"/s and {telegram.max_rate_per_chat('send', SUSTAINED_WINDOW)}/{SUSTAINED_WINDOW:.0f}s; "
        f"CRM max {crm.max_rate()}/s"
    )

    # The storm happened.
    assert len(telegram_429) == TELEGRAM_GLOBAL_429 + TELEGRAM_CHAT_429 * (len(CHATS) + 1)
    assert len(amojo_429) == AMOJO_MESSAGE_429 + AMOJO_STATUS_429
    assert len(crm_429) >= CRM_429
    # Nothing was lost or repeated, and order held in every conversation.
    assert [hook.status for hook in traffic.hooks] == [200] * len(traffic.hooks)
    traffic.assert_exactly_once_in_order()
    answers = [str(c.params["text"]) for c in telegram.sent_messages(OPERATOR)]
    assert [answer.split(":", 1)[0] for answer in answers] == [f"Talk {t}" for t in TALKS]
    # Every retry waited at least what the service asked for.
    assert min(telegram_gaps) >= RETRY_AFTER - CLOCK_SLACK, telegram_gaps
    assert min(amojo_gaps) >= RETRY_AFTER - CLOCK_SLACK, amojo_gaps
    assert min(crm_gaps) >= RETRY_AFTER - CLOCK_SLACK, crm_gaps
    # The bridge's own pacing: ~30/s in total, ~1/s sustained per chat after a short burst.
    assert telegram.max_rate("send") <= TELEGRAM_GLOBAL_RATE
    per_second = TELEGRAM_PER_CHAT_BURST + 1 / TELEGRAM_PER_CHAT_INTERVAL
    assert telegram.max_rate_per_chat("send") <= per_second
    sustained = TELEGRAM_PER_CHAT_BURST + SUSTAINED_WINDOW / TELEGRAM_PER_CHAT_INTERVAL
    assert telegram.max_rate_per_chat("send", SUSTAINED_WINDOW) <= sustained
    assert crm.max_rate() <= AMOCRM_RATE_PER_SECOND
