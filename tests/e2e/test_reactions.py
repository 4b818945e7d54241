"""Reactions both ways, end to end against the loopback fakes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.amocrm.hooks import KIND_AMO_REACTION
from bot.chat.reactions import KIND_CUSTOMER_REACTION
from simulators.factories import make_reaction, make_update, private_message_update
from storage import JobState
from tests.harness import Fakes, RunningBridge, wait_until


async def customer_message(fakes: Fakes, chat_id: int, message_id: int) -> dict[str, Any]:
    """Send a customer message through the bridge; returns what amojo stored."""
    fakes.telegram.push_update(private_message_update(chat_id, message_id, text="Привет"))
    msgid = f"tg-{chat_id}-{message_id}"
    await fakes.amojo.wait_for(lambda: fakes.amojo.message_by_msgid(msgid) is not None, what=msgid)
    stored = fakes.amojo.message_by_msgid(msgid)
    assert stored is not None
    return stored


def react(fakes: Fakes, chat_id: int, message_id: int, new: list[str], old: list[str]) -> None:
    fakes.telegram.push_update(
        make_update("message_reaction", make_reaction(chat_id, message_id, new=new, old=old))
    )


async def amo_hook(fakes: Fakes, running: RunningBridge, hook: dict[str, Any]) -> None:
    """POST a signed hook to the bridge's listener, as amojo does."""
    status, body = await fakes.amojo.post_hook(running.url, running.scope_id, hook)
    assert status == 200, body


async def jobs_done(running: RunningBridge, kind: str, count: int) -> None:
    async def finished() -> bool:
        jobs = await running.bridge.repo.jobs(kind=kind)
        return len(jobs) >= count and all(job.state != JobState.PENDING for job in jobs)

    await wait_until(finished, what=f"{count} {kind} job(s) finished")


async def test_customer_reaction_reaches_amo(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_message(fakes, 601, 10)

    react(fakes, 601, 10, new=["👍"], old=[])

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.reactions) == 1, what="react")
    assert fakes.amojo.reactions == [
        {
            "conversation_id": "tg-601",
            "msgid": "tg-601-10",
            "user": {"id": "tg-601"},
            "type": "react",
            "emoji": "👍",
        }
    ]
    assert fakes.telegram.allowed_updates is not None
    assert "message_reaction" in fakes.telegram.allowed_updates


async def test_customer_removes_and_changes_reaction(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_message(fakes, 602, 10)

    react(fakes, 602, 10, new=["❤"], old=[])
    react(fakes, 602, 10, new=["🔥"], old=["❤"])
    react(fakes, 602, 10, new=[], old=["🔥"])

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.reactions) == 4, what="4 reactions")
    steps = [(r["type"], r["emoji"], r["msgid"]) for r in fakes.amojo.reactions]
    assert steps == [
        ("react", "❤️", "tg-602-10"),
        ("unreact", "❤️", "tg-602-10"),
        ("react", "🔥", "tg-602-10"),
        ("unreact", "🔥", "tg-602-10"),
    ]


async def test_customer_reaction_on_manager_message_uses_amo_id(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_message(fakes, 603, 10)
    hook = fakes.amojo.message_hook("tg-603", text="Добрый день! Чем помочь?")
    amo_id = hook["message"]["message"]["id"]
    await amo_hook(fakes, bridge, hook)
    await fakes.telegram.wait_for(lambda: bool(fakes.telegram.sent_messages(603)), what="sent")
    manager_message_id = fakes.telegram.sent_messages(603)[0].result["message_id"]

    async def linked() -> bool:
        return bool(await bridge.bridge.repo.links_for_amo_message(amo_id))

    await wait_until(linked, what="manager message linked")
    react(fakes, 603, manager_message_id, new=["🤝"], old=[])

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.reactions) == 1, what="react")
    reaction = fakes.amojo.reactions[0]
    assert reaction["id"] == amo_id
    assert "msgid" not in reaction
    assert (reaction["conversation_id"], reaction["type"], reaction["emoji"]) == (
        "tg-603",
        "react",
        "🤝",
    )


async def test_reaction_on_unknown_message_is_logged_and_skipped(
    fakes: Fakes, bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.chat.reactions")

    react(fakes, 604, 77, new=["👍"], old=[])
    await customer_message(fakes, 604, 78)
    react(fakes, 604, 78, new=["👌"], old=[])

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.reactions) == 1, what="react")
    assert fakes.amojo.reactions[0]["msgid"] == "tg-604-78"
    assert "reaction on message 77 in chat 604 not bridged" in caplog.text
    assert await bridge.bridge.repo.jobs(kind=KIND_CUSTOMER_REACTION, state=JobState.DEAD) == []


async def test_custom_emoji_reaction_is_not_bridged(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_message(fakes, 605, 10)
    custom = make_reaction(605, 10, new=[], old=[])
    custom["new_reaction"] = [{"type": "custom_emoji", "custom_emoji_id": "5368324170671202286"}]
    fakes.telegram.push_update(make_update("message_reaction", custom))
    react(fakes, 605, 10, new=["😁"], old=[])

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.reactions) == 1, what="react")
    assert fakes.amojo.reactions[0]["emoji"] == "😁"
    await wait_until(lambda: not fakes.telegram.pending_updates(), what="updates confirmed")


@pytest.mark.parametrize("shape", ["msgid", "message"])
async def test_manager_reaction_sets_telegram_reaction(
    fakes: Fakes, bridge: RunningBridge, shape: str
) -> None:
    stored = await customer_message(fakes, 611, 10)
    hook = fakes.amojo.reaction_hook(
        "tg-611", amo_message_id=stored["amo_id"], client_msgid="tg-611-10", emoji="❤️", shape=shape
    )
    if shape == "msgid":
        assert hook["action"]["reaction"]["msgid"] == stored["amo_id"]

    await amo_hook(fakes, bridge, hook)

    await fakes.telegram.wait_for(lambda: fakes.telegram.reactions.get((611, 10)) == ["❤"])
    call = fakes.telegram.calls_of("setMessageReaction")[0]
    assert call.params["reaction"] == [{"type": "emoji", "emoji": "❤"}]
    assert not call.failed


async def test_manager_unreact_removes_the_reaction(fakes: Fakes, bridge: RunningBridge) -> None:
    stored = await customer_message(fakes, 612, 10)
    await amo_hook(
        fakes, bridge, fakes.amojo.reaction_hook("tg-612", amo_message_id=stored["amo_id"])
    )
    await fakes.telegram.wait_for(lambda: fakes.telegram.reactions.get((612, 10)) == ["👍"])

    unreact = fakes.amojo.reaction_hook(
        "tg-612", amo_message_id=stored["amo_id"], reaction_type="unreact", shape="message"
    )
    unreact["time"] += 1
    await amo_hook(fakes, bridge, unreact)

    await fakes.telegram.wait_for(lambda: fakes.telegram.reactions.get((612, 10)) == [])
    assert len(fakes.telegram.calls_of("setMessageReaction", ok_only=True)) == 2


async def test_manager_reaction_with_unsupported_emoji_is_not_sent(
    fakes: Fakes, bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.chat.reactions")
    stored = await customer_message(fakes, 613, 10)

    await amo_hook(
        fakes,
        bridge,
        fakes.amojo.reaction_hook("tg-613", amo_message_id=stored["amo_id"], emoji="🦖"),
    )
    await jobs_done(bridge, KIND_AMO_REACTION, 1)

    assert fakes.telegram.calls_of("setMessageReaction") == []
    assert "'🦖' on message 10 in chat 613 not sent" in caplog.text
    assert (await bridge.bridge.repo.jobs(kind=KIND_AMO_REACTION))[0].state == JobState.DONE


async def test_manager_reaction_on_unknown_message_is_logged(
    fakes: Fakes, bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.chat.reactions")
    unknown = "cd05887d-bb16-4e11-b298-40455cc77195"

    await amo_hook(fakes, bridge, fakes.amojo.reaction_hook("tg-614", amo_message_id=unknown))
    await jobs_done(bridge, KIND_AMO_REACTION, 1)

    assert fakes.telegram.calls_of("setMessageReaction") == []
    assert f"manager reaction on amo message {unknown} not bridged" in caplog.text
    assert (await bridge.bridge.repo.jobs(kind=KIND_AMO_REACTION))[0].state == JobState.DONE
