"""Reconciliation survives one failure anywhere: nothing it found is forgotten on an error.

Each case was a message lost for good in review: a transient amoCRM error while the chats were
looked up, one 404 from a lookup, one amojo 403 on a history read, a feed with more events
than a pass reads, and a restart whose gap met one 503.
"""

from __future__ import annotations

import time
import uuid

import pytest

from bot.manager import reconcile
from tests.e2e.test_manager_to_telegram import customer_says
from tests.e2e.test_reconcile import FAST, delivered, texts_to
from tests.harness import BridgeFactory, Fakes, wait_until

# Two reconcile intervals (FAST: 5 s), the hook's grace and a retry's backoff.
WITHIN_SECONDS = 30.0


@pytest.mark.parametrize("status", [500, 404], ids=["transient-500", "lookup-404"])
async def test_a_failed_chat_lookup_is_asked_again_next_pass(
    fakes: Fakes, bridges: BridgeFactory, status: int
) -> None:
    bridge = await bridges.start(**FAST)
    await customer_says(fakes, 9101, 1)
    fakes.crm.fail("/api/v4/contacts/chats", status, times=1)
    lost = fakes.amojo.drop_hook(fakes.amojo.message_hook("tg-9101", text="lost"))

    await delivered(fakes, [lost], wait=WITHIN_SECONDS)
    assert texts_to(fakes, 9101) == ["lost"]
    assert bridge.bridge.reconciler is not None
    assert bridge.bridge.reconciler.status.feed_problem is None  # a lookup is not the feed


async def test_one_amojo_403_on_a_history_read_is_retried(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start(**FAST)
    await customer_says(fakes, 9601, 1)
    fakes.amojo.fail("/history", 403, times=1)  # a refused signature or amojo's rate block
    lost = fakes.amojo.drop_hook(fakes.amojo.message_hook("tg-9601", text="lost"))

    await delivered(fakes, [lost], wait=WITHIN_SECONDS)
    assert texts_to(fakes, 9601) == ["lost"]


async def test_events_beyond_a_pass_s_pages_are_read_by_the_next_pass(
    fakes: Fakes, bridges: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "EVENTS_MAX_PAGES", 2)  # 50 in production: 5,000 events
    await bridges.start(**FAST)
    await customer_says(fakes, 9401, 1)
    ours = fakes.amojo.drop_hook(fakes.amojo.message_hook("tg-9401", text="ours"))
    later = time.time() + 1
    for n in range(250):  # another channel's busy chats right after: newer events
        fakes.crm.outgoing_message(f"whatsapp-chat-{n % 5}", str(uuid.uuid4()), later)

    await delivered(fakes, [ours], wait=3 * WITHIN_SECONDS)
    assert texts_to(fakes, 9401) == ["ours"]


async def test_another_channel_s_chat_is_read_once_not_for_every_message(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start(**FAST)
    await customer_says(fakes, 9301, 1)

    def foreign_reads() -> int:
        return sum(1 for chat, _, _ in fakes.amojo.history_reads if chat.startswith("whatsapp"))

    for n in range(5):
        fakes.crm.outgoing_message(f"whatsapp-chat-{n}", str(uuid.uuid4()), time.time())
    await wait_until(lambda: foreign_reads() >= 5, timeout=WITHIN_SECONDS, what="first reads")
    for n in range(5):  # the same chats again: known now to be another channel's
        fakes.crm.outgoing_message(f"whatsapp-chat-{n}", str(uuid.uuid4()), time.time())
    ours = fakes.amojo.drop_hook(fakes.amojo.message_hook("tg-9301", text="ours"))

    await delivered(fakes, [ours], wait=WITHIN_SECONDS)
    assert bridge.bridge.reconciler is not None
    passes = bridge.bridge.metrics.reconcile_runs.labels("ok")._value.get()
    await wait_until(
        lambda: bridge.bridge.metrics.reconcile_runs.labels("ok")._value.get() >= passes + 1,
        timeout=WITHIN_SECONDS,
        what="one more pass",
    )
    assert foreign_reads() == 5


async def test_a_restart_gap_meeting_one_503_still_delivers_what_came_while_down(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start(**FAST)
    await customer_says(fakes, 9501, 1)
    await first.stop()
    hook = fakes.amojo.message_hook("tg-9501", text="written while down")
    status, _ = await fakes.amojo.post_hook(first.url, first.scope_id, hook, timeout=1)
    assert status == 0  # nobody listened: amojo does not send it again
    fakes.crm.fail("/api/v4/contacts/chats", 503, times=1)

    await bridges.start(**FAST)
    await delivered(fakes, [hook["message"]["message"]["id"]], wait=2 * WITHIN_SECONDS)
    assert texts_to(fakes, 9501) == ["written while down"]
