"""Groups, supergroups, forum topics and private-chat topics, each its own amoCRM conversation.

Only where a staff member (OPERATOR_IDS) added the bot is a group bridged; the group is the
client, each message carries its author's name; a staff member's message is the company
talking; staff commands are answered privately; managers answer into the group or topic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from bot.common.ids import primary_chat
from simulators.factories import (
    group_membership_update,
    group_message_update,
    make_group,
    make_reaction,
    make_update,
    make_user,
    private_message_update,
    staff_message_update,
)
from storage import JobState
from tests.e2e.test_manager_to_telegram import post, status_of
from tests.harness import (
    BridgeFactory,
    BridgeProcess,
    Fakes,
    RunningBridge,
    database_at,
    spawn_bridge,
    wait_until,
)

STAFF_ID = 900
BOT_AMOJO_ID = "a7d1c1d2-0000-4000-8000-00000000b0b0"
SETTINGS: dict[str, Any] = {"OPERATOR_IDS": str(STAFF_ID), "AMOJO_BOT_ID": BOT_AMOJO_ID}
STAFF = make_user(STAFF_ID, first_name="Olga", last_name="Staff", language_code="en")
ANN = make_user(5101, first_name="Ann", last_name="Client")
BOB = make_user(5102, first_name="Bob", last_name="Client")
STRANGER = make_user(5199, first_name="Eve", last_name=None)
GROUP_ID = -1001234500001


async def start(bridges: BridgeFactory) -> RunningBridge:
    return await bridges.start(**SETTINGS)


def add_bot(fakes: Fakes, chat: dict[str, Any], by: dict[str, Any]) -> None:
    fakes.telegram.push_update(group_membership_update(chat, by, new_status="member"))


def direct_message(
    chat: dict[str, Any],
    message_id: int,
    author: dict[str, Any],
    person: dict[str, Any],
    topic: int,
    text: str,
) -> dict[str, Any]:
    """A message in a channel's direct-messages chat, in `person`'s topic."""
    update = group_message_update(chat, message_id, author, text=text)
    update["message"]["direct_messages_topic"] = {"topic_id": topic, "user": person}
    return update


async def assert_nothing_bridged_but_a_private_chat(fakes: Fakes, chat_id: int) -> None:
    """A private message sent after the group's: the only one amoCRM ever got (updates are
    handled in order, so whatever of the group would have come through came first)."""
    fakes.telegram.push_update(private_message_update(chat_id, 1, text="private"))
    [message] = await bridged(fakes, 1)
    assert message["conversation_id"] == f"tg-{chat_id}"


async def bridged(fakes: Fakes, count: int, conversation: str | None = None) -> list[Any]:
    """Wait for `count` messages in amoCRM (of one conversation, when given)."""

    def of() -> list[Any]:
        return [
            m
            for m in fakes.amojo.messages
            if conversation is None or m["conversation_id"] == conversation
        ]

    await fakes.amojo.wait_for(lambda: len(of()) >= count, what=f"{count} message(s)")
    return of()


async def test_a_staff_added_group_is_one_conversation_with_its_authors(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    group = make_group(GROUP_ID, "Acme × Vendor")
    add_bot(fakes, group, STAFF)
    fakes.telegram.push_update(group_message_update(group, 10, ANN, text="Hello from Acme"))
    fakes.telegram.push_update(group_message_update(group, 11, BOB, text="Me too"))

    first, second = await bridged(fakes, 2)
    conversation = f"tg-{GROUP_ID}"
    assert {first["conversation_id"], second["conversation_id"]} == {conversation}
    assert first["sender"]["id"] == f"tg-{GROUP_ID}" == second["sender"]["id"]
    assert first["sender"]["name"] == "Acme × Vendor"
    assert first["message"]["text"] == "Ann Client: Hello from Acme"
    assert second["message"]["text"] == "Bob Client: Me too"

    # The manager answers into the group, threaded to the quoted message; status 1.
    hook = fakes.amojo.message_hook(conversation, text="Welcome!", reply_to_amo_id=second["amo_id"])
    amo_id = await post(fakes, bridge, hook)
    assert (await status_of(fakes, amo_id))["status"] == 1
    [sent] = fakes.telegram.sent_messages(GROUP_ID)
    assert sent.params["text"] == "Welcome!"
    assert sent.params["reply_parameters"]["message_id"] == 11


async def test_a_group_a_stranger_added_is_left_and_nothing_bridged(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await start(bridges)
    group = make_group(-1001234500002, "Spam corner")
    add_bot(fakes, group, STRANGER)
    fakes.telegram.push_update(group_message_update(group, 5, STRANGER, text="buy now"))

    await wait_until(
        lambda: fakes.telegram.left_chats == [-1001234500002], timeout=10, what="leaving"
    )
    [notice] = fakes.telegram.sent_messages(-1001234500002)
    assert "a member of the company's staff" in notice.params["text"]
    # A staff member's private chat still works meanwhile: nothing of the group came through.
    await assert_nothing_bridged_but_a_private_chat(fakes, 5300)


async def test_staff_in_the_group_is_the_company_talking_and_commands_answer_privately(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await start(bridges)
    group = make_group(GROUP_ID, "Acme × Vendor")
    add_bot(fakes, group, STAFF)
    fakes.telegram.push_update(group_message_update(group, 20, ANN, text="Price?"))
    fakes.telegram.push_update(group_message_update(group, 21, STAFF, text="100 €"))
    fakes.telegram.push_update(group_message_update(group, 22, STAFF, text="/status"))

    client, company = await bridged(fakes, 2)
    assert client["message"]["text"] == "Ann Client: Price?"
    assert company["message"]["text"] == "100 €"
    assert company["sender"]["ref_id"] == BOT_AMOJO_ID  # outgoing, the company's
    assert company["silent"] is True
    await fakes.telegram.wait_for(
        lambda: bool(fakes.telegram.sent_messages(STAFF_ID)), what="the private answer"
    )
    assert fakes.telegram.sent_messages(STAFF_ID)[0].params["text"].startswith("Bridge status")
    assert fakes.telegram.sent_messages(GROUP_ID) == []  # nothing in front of the client
    assert all("/status" not in m["message"].get("text", "") for m in fakes.amojo.messages)


async def test_forum_topics_are_conversations_answered_in_their_threads(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    forum = make_group(-1001234500003, "Acme support", forum=True)
    add_bot(fakes, forum, STAFF)
    fakes.telegram.push_update(group_message_update(forum, 30, ANN, text="Invoice", thread=7))
    fakes.telegram.push_update(group_message_update(forum, 31, BOB, text="Delivery", thread=9))

    messages = await bridged(fakes, 2)
    conversations = {m["message"]["text"]: m["conversation_id"] for m in messages}
    assert conversations == {
        "Ann Client: Invoice": "tg--1001234500003-t7",
        "Bob Client: Delivery": "tg--1001234500003-t9",
    }
    for thread in (7, 9):
        hook = fakes.amojo.message_hook(f"tg--1001234500003-t{thread}", text=f"re {thread}")
        assert (await status_of(fakes, await post(fakes, bridge, hook)))["status"] == 1
    sent = {c.params["text"]: c.params["message_thread_id"] for c in fakes.telegram.sent_messages()}
    assert sent == {"re 7": 7, "re 9": 9}

    # A closed topic: 904 with Telegram's reason.
    fakes.telegram.closed_topics.add((-1001234500003, 9))
    hook = fakes.amojo.message_hook("tg--1001234500003-t9", text="too late")
    status = await status_of(fakes, await post(fakes, bridge, hook))
    assert status["status"] == -1 and status["error_code"] == 904
    assert "TOPIC_CLOSED" in status["error"]


async def test_a_group_upgraded_to_a_supergroup_keeps_its_conversation(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    old = make_group(-4001, "Small team", kind="group")
    new = make_group(-1004001, "Small team")
    add_bot(fakes, old, STAFF)
    for number in (1, 2, 3):
        fakes.telegram.push_update(group_message_update(old, number, ANN, text=f"old {number}"))
    await bridged(fakes, 3)
    fakes.telegram.migrated_chats[-4001] = -1004001
    fakes.telegram.push_update(group_message_update(old, 4, ANN, migrate_to_chat_id=-1004001))
    fakes.telegram.push_update(group_message_update(new, 1, ANN, migrate_from_chat_id=-4001))
    for number in (2, 3, 4):  # the supergroup's message ids start again
        fakes.telegram.push_update(group_message_update(new, number, BOB, text=f"new {number}"))

    messages = await bridged(fakes, 6)
    assert {m["conversation_id"] for m in messages} == {"tg--4001"}
    assert {m["sender"]["id"] for m in messages} == {"tg--4001"}  # one client throughout
    assert len({m["msgid"] for m in messages}) == 6
    hook = fakes.amojo.message_hook("tg--4001", text="still here")
    assert (await status_of(fakes, await post(fakes, bridge, hook)))["status"] == 1
    assert [c.params["text"] for c in fakes.telegram.sent_messages(-1004001)] == ["still here"]


async def test_the_bot_removed_from_a_group_is_reported_with_the_reason(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    group = make_group(-1001234500005, "Gone team")
    add_bot(fakes, group, STAFF)
    fakes.telegram.push_update(group_message_update(group, 1, ANN, text="hi"))
    await bridged(fakes, 1)
    fakes.telegram.kicked_from.add(-1001234500005)
    fakes.telegram.push_update(
        group_membership_update(group, ANN, new_status="kicked", old_status="member")
    )

    async def removed() -> bool:
        hook = fakes.amojo.message_hook("tg--1001234500005", text="anyone?")
        status = await status_of(fakes, await post(fakes, bridge, hook))
        return bool(status["error_code"] == 902 and "removed from the group" in status["error"])

    await wait_until(removed, timeout=20, what="902 with the reason")


async def test_topics_of_a_private_chat_are_separate_conversations(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    for message_id, thread in ((1, 3), (2, 4)):
        update = private_message_update(5400, message_id, text=f"topic {thread}")
        update["message"].update(message_thread_id=thread, is_topic_message=True)
        fakes.telegram.push_update(update)

    messages = await bridged(fakes, 2)
    assert {m["conversation_id"] for m in messages} == {"tg-5400-t3", "tg-5400-t4"}
    hook = fakes.amojo.message_hook("tg-5400-t4", text="in topic 4")
    assert (await status_of(fakes, await post(fakes, bridge, hook)))["status"] == 1
    [sent] = fakes.telegram.sent_messages(5400)
    assert sent.params["message_thread_id"] == 4


async def test_an_upgrade_from_schema_14_keeps_every_conversation(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    with database_at(bridges.db_path, 14) as db:
        db.execute(
            "INSERT INTO customers (bot, chat_id, user_id, name, last_message_at, updated_at, "
            "amo_chat_id) VALUES (0, 5500, 5500, 'Old', 1, 0, 'amo-old')"
        )
        db.execute(
            "INSERT INTO message_links (bot, chat_id, tg_message_id, direction, our_msgid, "
            "created_at) VALUES (0, 5500, 7, 'in', 'tg-5500-7', 0)"
        )
    db.close()
    bridge = await start(bridges)
    fakes.telegram.push_update(private_message_update(5500, 8, text="after the upgrade"))

    [message] = await bridged(fakes, 1)
    assert message["conversation_id"] == "tg-5500"
    repo = bridge.bridge.repo
    customer = await repo.get_customer(primary_chat(5500))
    assert customer is not None and customer.name in ("Old", "Ivan Petrov")
    assert await repo.amo_chats_of(primary_chat(5500)) == []  # amo_chats came later (13)
    link = await repo.get_link(primary_chat(5500), 7)
    assert link is not None and link.our_msgid == "tg-5500-7"


async def test_a_channel_s_direct_messages_are_one_conversation_per_person(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    direct = {**make_group(-1001234500009, "Shop (direct messages)"), "is_direct_messages": True}
    fakes.telegram.push_update(group_message_update(direct, 1, STAFF, text="/connect"))

    fakes.telegram.push_update(direct_message(direct, 2, ANN, ANN, 71, "Is it in stock?"))
    fakes.telegram.push_update(direct_message(direct, 3, BOB, BOB, 72, "Do you ship?"))
    messages = await bridged(fakes, 2)
    assert {m["conversation_id"]: m["sender"]["name"] for m in messages} == {
        "tg--1001234500009-d71": "Ann Client",
        "tg--1001234500009-d72": "Bob Client",
    }
    # Typing is not available there: skipped, nothing fails; the answer goes to the topic.
    typing = fakes.amojo.typing_hook("tg--1001234500009-d72")
    assert (await fakes.amojo.post_hook(bridge.url, bridge.scope_id, typing))[0] == 200
    hook = fakes.amojo.message_hook("tg--1001234500009-d72", text="Yes, we do")
    assert (await status_of(fakes, await post(fakes, bridge, hook)))["status"] == 1
    [sent] = fakes.telegram.sent_messages(-1001234500009)
    assert sent.params["direct_messages_topic_id"] == 72
    assert "message_thread_id" not in sent.params
    assert fakes.telegram.calls_of("sendChatAction") == []


async def test_direct_messages_nobody_on_the_staff_connected_are_not_bridged(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await start(bridges)
    direct = {**make_group(-1001234500010, "Stranger's shop"), "is_direct_messages": True}
    fakes.telegram.push_update(direct_message(direct, 1, ANN, ANN, 5, "hello"))
    await assert_nothing_bridged_but_a_private_chat(fakes, 5301)
    assert fakes.telegram.left_chats == []


async def test_status_health_and_metrics_count_groups_and_topics(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    forum = make_group(-1001234500011, "Counted", forum=True)
    add_bot(fakes, forum, STAFF)
    fakes.telegram.push_update(group_message_update(forum, 1, ANN, text="whole group"))
    fakes.telegram.push_update(group_message_update(forum, 2, ANN, text="a topic", thread=5))
    await bridged(fakes, 2)

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{bridge.url}/healthz") as response:
            body = await response.json()
        async with http.get(f"{bridge.url}/metrics") as response:
            metrics = await response.text()
    assert body["conversations"]["group"] == 1 and body["conversations"]["topic"] == 1
    assert 'bridge_conversations{kind="topic"} 1.0' in metrics
    fakes.telegram.push_update(staff_message_update(STAFF_ID, 1, text="/status"))
    await fakes.telegram.wait_for(
        lambda: bool(fakes.telegram.sent_messages(STAFF_ID)), what="the status"
    )
    assert "Groups bridged: 1" in fakes.telegram.sent_messages(STAFF_ID)[0].params["text"]


async def test_a_reaction_in_a_group_reaches_amocrm_and_a_re_added_bot_works_again(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    group = make_group(-1001234500012, "Reacting team")
    add_bot(fakes, group, STAFF)
    fakes.telegram.push_update(group_message_update(group, 1, ANN, text="Done?"))
    [message] = await bridged(fakes, 1)
    reaction = make_reaction(-1001234500012, 1, new=["👍"], user=BOB)
    reaction["chat"] = group
    fakes.telegram.push_update(make_update("message_reaction", reaction))
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.reactions), what="the reaction")
    [react] = fakes.amojo.reactions
    assert react["conversation_id"] == "tg--1001234500012" and react["emoji"] == "👍"
    assert react["msgid"] == message["msgid"]

    # Removed, then added back by staff: bridged again.
    fakes.telegram.push_update(
        group_membership_update(group, ANN, new_status="left", old_status="member")
    )
    add_bot(fakes, group, STAFF)
    fakes.telegram.push_update(group_message_update(group, 2, ANN, text="Back?"))
    await bridged(fakes, 2)
    hook = fakes.amojo.message_hook("tg--1001234500012", text="Yes")
    assert (await status_of(fakes, await post(fakes, bridge, hook)))["status"] == 1


async def test_kill_9_over_group_traffic_delivers_each_message_once(
    fakes: Fakes, tmp_path: Path
) -> None:
    db_path = tmp_path / "bridge.sqlite3"
    forum = make_group(-1001234500013, "Busy forum", forum=True)
    children: list[BridgeProcess] = []
    try:
        first = await spawn_bridge(fakes, db_path, tmp_path / "first.log", **SETTINGS)
        children.append(first)
        await first.wait_healthy()
        add_bot(fakes, forum, STAFF)
        fakes.amojo.delay(0.05)  # answers in flight when the process dies
        for number in range(1, 61):
            author = ANN if number % 2 else BOB
            thread = 3 if number % 3 else None
            fakes.telegram.push_update(
                group_message_update(forum, number, author, text=f"m{number}", thread=thread)
            )
        await fakes.amojo.wait_for(
            lambda: len(fakes.amojo.messages) >= 15, timeout=30, what="delivery under way"
        )
        await first.kill()
        assert len(fakes.amojo.messages) < 60  # killed in the middle

        fakes.amojo.delay(0)
        second = await spawn_bridge(fakes, db_path, tmp_path / "second.log", **SETTINGS)
        children.append(second)
        await fakes.amojo.wait_for(
            lambda: len(fakes.amojo.messages) >= 60, timeout=60, what="all after restart"
        )
        texts = [m["message"]["text"].split(": ", 1)[1] for m in fakes.amojo.messages]
        assert sorted(texts) == sorted(f"m{n}" for n in range(1, 61))  # each once
        for conversation in ("tg--1001234500013", "tg--1001234500013-t3"):
            numbers = [
                int(m["message"]["text"].split(": m", 1)[1])
                for m in fakes.amojo.messages
                if m["conversation_id"] == conversation
            ]
            assert numbers == sorted(numbers)  # in order within each conversation
    finally:
        for child in children:
            await child.kill()


# ---- review: ordering, another bot's commands, who speaks for the channel --------------------


async def test_a_client_message_before_the_staff_addition_does_not_make_the_bot_leave(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    group = make_group(-1001234500014, "Early bird")
    fakes.telegram.push_update(group_message_update(group, 1, ANN, text="too early"))
    add_bot(fakes, group, STAFF)
    fakes.telegram.push_update(group_message_update(group, 2, ANN, text="now"))

    [message] = await bridged(fakes, 1)
    assert message["message"]["text"] == "Ann Client: now"

    async def leave_job_done() -> bool:
        jobs = await bridge.bridge.repo.jobs(kind="bot.leave_group")
        return bool(jobs) and all(job.state == JobState.DONE for job in jobs)

    await wait_until(leave_job_done, timeout=10, what="the leave job's turn")
    assert fakes.telegram.left_chats == []
    assert fakes.telegram.sent_messages(-1001234500014) == []


async def test_a_supergroup_connected_on_its_own_joins_the_group_it_was(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    old = make_group(-4004, "Twice", kind="group")
    new = make_group(-1004004, "Twice")
    add_bot(fakes, old, STAFF)
    fakes.telegram.push_update(group_message_update(old, 1, ANN, text="hi"))
    await bridged(fakes, 1)
    fakes.telegram.migrated_chats[-4004] = -1004004
    add_bot(fakes, new, STAFF)  # the service messages not seen (yet)
    hook = fakes.amojo.message_hook("tg--4004", text="where are you")

    assert (await status_of(fakes, await post(fakes, bridge, hook)))["status"] == 1
    assert [c.params["text"] for c in fakes.telegram.sent_messages(-1004004)] == ["where are you"]
    tries = [c for c in fakes.telegram.calls_of("sendMessage") if c.params["chat_id"] == -4004]
    assert len(tries) == 1  # told once where the group is, never in a loop


async def test_a_command_for_another_bot_connects_nothing(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await start(bridges)
    group = make_group(-1001234500015, "Other bot's")
    fakes.telegram.push_update(
        group_message_update(group, 1, STAFF, text="/connect@some_other_bot")
    )
    await wait_until(lambda: fakes.telegram.left_chats != [], timeout=10, what="leaving")
    await assert_nothing_bridged_but_a_private_chat(fakes, 5302)


async def test_in_direct_messages_only_staff_speak_for_the_channel(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await start(bridges)
    direct = {**make_group(-1001234500016, "Shop DMs"), "is_direct_messages": True}
    fakes.telegram.push_update(group_message_update(direct, 1, STAFF, text="/connect"))

    for number, author, text in (
        (2, STRANGER, "I am the shop, pay to card 1234"),  # an admin not on the staff
        (3, STAFF, "Hello from the shop"),
        (4, ANN, "Thanks"),
    ):
        fakes.telegram.push_update(direct_message(direct, number, author, ANN, 81, text))
    staff_says, ann_says = await bridged(fakes, 2)
    assert staff_says["message"]["text"] == "Hello from the shop"
    assert staff_says["sender"]["ref_id"] == BOT_AMOJO_ID
    assert ann_says["message"]["text"] == "Thanks"
    assert all("card 1234" not in m["message"].get("text", "") for m in fakes.amojo.messages)


async def test_write_first_never_reaches_a_group_even_by_a_phone_shared_there(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    group = make_group(-1001234500017, "Phones")
    add_bot(fakes, group, STAFF)
    contact = {"phone_number": "+79161234567", "first_name": "Ann", "user_id": ANN["id"]}
    fakes.telegram.push_update(group_message_update(group, 1, ANN, contact=contact))
    await bridged(fakes, 1)

    hook = fakes.amojo.message_hook(None, text="Hello Ann", receiver_phone="+79161234567")
    status = await status_of(fakes, await post(fakes, bridge, hook))
    assert (status["status"], status["error_code"]) == (-1, 904)
    assert fakes.telegram.sent_messages(-1001234500017) == []


async def test_a_group_the_bot_was_removed_from_is_left_when_a_stranger_adds_it(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await start(bridges)
    group = make_group(-1001234500018, "Once ours")
    add_bot(fakes, group, STAFF)
    fakes.telegram.push_update(group_message_update(group, 1, ANN, text="hi"))
    await bridged(fakes, 1)
    fakes.telegram.push_update(
        group_membership_update(group, ANN, new_status="left", old_status="member")
    )
    add_bot(fakes, group, STRANGER)

    await wait_until(
        lambda: fakes.telegram.left_chats == [-1001234500018], timeout=10, what="leaving"
    )
