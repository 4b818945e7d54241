"""Drill: for 60 s amojo drops, delays and duplicates hooks at random under live traffic.

Every manager message must reach its customer exactly once with status 1, and the messages
whose hooks came promptly in each chat's order. A message whose hook is lost or late can only
follow the newer ones already delivered (Telegram cannot insert into the past; nothing tells
the bridge it exists until amoCRM's feed does): it must arrive by a few reconciliation
intervals after the traffic ends, and one more pass must send nothing again. Reproduce a run
with DRILL_SEED=<seed printed by the test>.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from typing import Any

from simulators.factories import private_message_update
from tests.e2e.test_manager_to_telegram import customer_says
from tests.harness import FAST_PACE, BridgeFactory, Fakes

SECONDS = 60.0
INTERVAL = 5
CHATS = tuple(range(8101, 8111))


async def test_lost_late_and_repeated_hooks_deliver_every_message_once(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    seed = int(os.environ.get("DRILL_SEED", random.randrange(1 << 30)))
    print(f"DRILL_SEED={seed}")
    rng = random.Random(seed)
    bridge = await bridges.start(RECONCILE_INTERVAL_SECONDS=str(INTERVAL), pace=FAST_PACE)
    for chat in CHATS:
        await customer_says(fakes, chat, 1)

    fate: dict[str, str] = {}
    written_at: dict[str, float] = {}
    order: dict[int, list[str]] = defaultdict(list)
    late: list[asyncio.Task[Any]] = []

    async def post_later(hook: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)

    deadline = time.monotonic() + SECONDS
    serial = 0
    while time.monotonic() < deadline:
        serial += 1
        chat = rng.choice(CHATS)
        text = f"#{serial} to {chat}"
        hook = fakes.amojo.message_hook(f"tg-{chat}", text=text)
        what = rng.choices(["live", "dropped", "delayed", "twice"], [70, 10, 10, 10])[0]
        fate[text], written_at[text] = what, time.monotonic()
        order[chat].append(text)
        if what == "dropped":
            fakes.amojo.drop_hook(hook)
        elif what == "delayed":
            fakes.amojo.drop_hook(hook)  # in the history now; its hook comes later
            late.append(asyncio.create_task(post_later(hook, rng.uniform(1.0, 8.0))))
        else:
            status, _ = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
            assert status == 200
            if what == "twice":
                late.append(asyncio.create_task(post_later(hook, rng.uniform(0.0, 8.0))))
        if serial % 5 == 0:  # customers write meanwhile
            fakes.telegram.push_update(
                private_message_update(rng.choice(CHATS), 100 + serial, text=f"customer {serial}")
            )
        await asyncio.sleep(rng.uniform(0.05, 0.4))
    await asyncio.gather(*late)

    def all_sent() -> bool:
        return sum(len(fakes.telegram.sent_messages(chat)) for chat in CHATS) >= len(fate)

    await fakes.telegram.wait_for(all_sent, timeout=3 * INTERVAL + 30, what="every message")
    await asyncio.sleep(INTERVAL + 1)  # one more pass: it must not send anything again
    sent: dict[int, list[str]] = {
        chat: [str(c.params["text"]) for c in fakes.telegram.sent_messages(chat)] for chat in CHATS
    }
    counts = Counter(text for texts in sent.values() for text in texts)
    assert {text for text, n in counts.items() if n != 1} == set(), seed
    assert set(counts) == set(fate), seed
    for chat in CHATS:
        prompt = [text for text in sent[chat] if fate[text] in ("live", "twice")]
        assert prompt == [text for text in order[chat] if fate[text] in ("live", "twice")], seed
    statuses = Counter(status["amo_msgid"] for status in fakes.amojo.statuses)
    assert all(n == 1 for n in statuses.values()), seed
    assert len(statuses) == len(fate), seed
    missing = sum(1 for what in fate.values() if what == "dropped")
    print(f"{len(fate)} messages, {missing} hooks lost, all delivered once")
