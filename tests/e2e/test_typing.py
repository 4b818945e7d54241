"""The manager's typing indicator in Telegram, end to end against the loopback fakes."""

from __future__ import annotations

import itertools
import time
from typing import Any

from bot.amocrm.hooks import KIND_AMO_TYPING
from bot.common.ids import primary_chat
from simulators.factories import private_message_update
from simulators.telegram import RecordedCall
from storage import JobState
from tests.harness import BridgeFactory, Fakes, RunningBridge, wait_until

FAST_REPEAT = 0.05


def typing_hook(fakes: Fakes, chat_id: int, expires_in: float) -> dict[str, Any]:
    hook = fakes.amojo.typing_hook(f"tg-{chat_id}")
    hook["action"]["typing"]["expired_at"] = time.time() + expires_in
    return hook


async def post(fakes: Fakes, running: RunningBridge, hook: dict[str, Any]) -> None:
    status, body = await fakes.amojo.post_hook(running.url, running.scope_id, hook)
    assert status == 200, body


def typing_calls(fakes: Fakes, chat_id: int) -> list[RecordedCall]:
    calls = fakes.telegram.calls_of("sendChatAction")
    assert all(call.params["action"] == "typing" for call in calls)
    return [call for call in calls if call.chat_id == chat_id]


async def test_typing_repeats_until_the_hook_expires(fakes: Fakes, bridge: RunningBridge) -> None:
    indicator = bridge.bridge.typing_indicator
    indicator.repeat_every = FAST_REPEAT

    await post(fakes, bridge, typing_hook(fakes, 701, expires_in=1.0))

    await fakes.telegram.wait_for(lambda: len(typing_calls(fakes, 701)) >= 3, what="3 typings")
    await wait_until(
        lambda: not indicator.is_active(primary_chat(701)), what="typing stopped at expiry"
    )
    assert len(typing_calls(fakes, 701)) <= 1.0 / FAST_REPEAT + 1


async def test_expired_typing_hook_does_nothing(fakes: Fakes, bridge: RunningBridge) -> None:
    await post(fakes, bridge, typing_hook(fakes, 702, expires_in=-1.0))

    async def job_done() -> bool:
        jobs = await bridge.bridge.repo.jobs(kind=KIND_AMO_TYPING)
        return [job.state for job in jobs] == [JobState.DONE]

    await wait_until(job_done, what="typing job done")
    assert typing_calls(fakes, 702) == []
    assert not bridge.bridge.typing_indicator.is_active(primary_chat(702))


async def test_repeated_hooks_extend_one_indicator(fakes: Fakes, bridge: RunningBridge) -> None:
    indicator = bridge.bridge.typing_indicator
    indicator.repeat_every = 0.1
    first = typing_hook(fakes, 703, expires_in=0.5)
    first_expiry = time.monotonic() + 0.5

    await post(fakes, bridge, first)
    await fakes.telegram.wait_for(lambda: len(typing_calls(fakes, 703)) >= 1, what="typing")
    await post(fakes, bridge, typing_hook(fakes, 703, expires_in=1.5))
    await wait_until(lambda: not indicator.is_active(primary_chat(703)), what="typing stopped")

    times = [call.at for call in typing_calls(fakes, 703)]
    assert any(moment > first_expiry for moment in times), "the second hook did not extend it"
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 0.05, f"two indicators ran for one chat: gaps {gaps}"


async def test_delivered_manager_message_stops_typing(fakes: Fakes, bridge: RunningBridge) -> None:
    indicator = bridge.bridge.typing_indicator
    indicator.repeat_every = FAST_REPEAT
    fakes.telegram.push_update(private_message_update(704, 1, text="Здравствуйте"))
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.messages_for("tg-704")), what="message")

    await post(fakes, bridge, typing_hook(fakes, 704, expires_in=10.0))
    await fakes.telegram.wait_for(lambda: len(typing_calls(fakes, 704)) >= 2, what="typing")
    await post(fakes, bridge, fakes.amojo.message_hook("tg-704", text="Готово!"))

    await fakes.telegram.wait_for(lambda: bool(fakes.telegram.sent_messages(704)), what="sent")
    assert not indicator.is_active(primary_chat(704))
    sent_at = fakes.telegram.calls.index(fakes.telegram.sent_messages(704)[0])
    later = fakes.telegram.calls[sent_at:]
    assert [call for call in later if call.method.lower() == "sendchataction"] == []


async def test_shutdown_stops_every_indicator(fakes: Fakes, bridges: BridgeFactory) -> None:
    running = await bridges.start()
    indicator = running.bridge.typing_indicator
    await post(fakes, running, typing_hook(fakes, 705, expires_in=10.0))
    await fakes.telegram.wait_for(lambda: len(typing_calls(fakes, 705)) >= 1, what="typing")

    bridges.running.remove(running)
    await running.stop()

    assert not indicator.is_active(primary_chat(705))
