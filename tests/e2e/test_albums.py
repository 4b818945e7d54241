"""Albums both ways: a manager's files sent together stay one Telegram album, and back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import bot.manager.delivery
from simulators.crm import CrmRequest
from simulators.factories import make_photo, private_message_update
from tests.e2e.test_manager_to_telegram import customer_says, post, sends, status_of
from tests.harness import BridgeFactory, Fakes, RunningBridge, spawn_bridge


def album_hooks(
    fakes: Fakes, conversation: str, group: str, count: int, kind: str = "picture"
) -> list[dict[str, Any]]:
    """`count` hooks of one album, as amojo sends them: one per file, sharing media_group_id."""
    hooks = []
    for n in range(1, count + 1):
        content = b"\x89PNG" + bytes([n]) * (500 + n)
        name = f"{group}-{n}.{'png' if kind == 'picture' else 'pdf'}"
        url = fakes.amojo.add_media(name, "image/png" if kind == "picture" else "x/y", content)
        hooks.append(
            fakes.amojo.message_hook(
                conversation,
                msg_type=kind,
                text=f"{group} part {n}",
                media=url,
                file_name=name,
                file_size=len(content),
                media_group_id=group,
            )
        )
    return hooks


def albums(fakes: Fakes, chat: int) -> list[list[str]]:
    """The captions of every sendMediaGroup Telegram accepted for a chat, album by album."""
    return [
        [item.get("caption", "") for item in call.params["media"]]
        for call in fakes.telegram.calls_of("sendMediaGroup", ok_only=True)
        if call.params.get("chat_id") == chat
    ]


async def delivered(fakes: Fakes, amo_ids: list[str]) -> None:
    for amo_id in amo_ids:
        assert (await status_of(fakes, amo_id, wait=20))["status"] == 1


async def test_three_files_at_once_are_one_album(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 801, 1)
    hooks = album_hooks(fakes, "tg-801", "g3", 3)
    amo_ids = [await post(fakes, bridge, hook) for hook in hooks]
    await delivered(fakes, amo_ids)

    assert albums(fakes, 801) == [["g3 part 1", "g3 part 2", "g3 part 3"]]
    assert not [c for c in fakes.telegram.sent_messages(801) if c.method == "sendPhoto"]
    links = [await bridge.bridge.repo.links_for_amo_message(amo_id) for amo_id in amo_ids]
    assert all(len(found) == 1 for found in links)
    message_ids = [found[0].tg_message_id for found in links]
    assert message_ids == sorted(message_ids) and len(set(message_ids)) == 3


async def test_ten_parts_with_one_late_make_one_album_and_more_make_two(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 802, 1)
    hooks = album_hooks(fakes, "tg-802", "g12", 12)
    amo_ids = [await post(fakes, bridge, hook) for hook in hooks[:9]]
    await asyncio.sleep(0.7)  # the tenth file's hook comes a little later (still one album)
    amo_ids += [await post(fakes, bridge, hook) for hook in hooks[9:]]
    await delivered(fakes, amo_ids)

    captions = [f"g12 part {n}" for n in range(1, 13)]
    assert albums(fakes, 802) == [captions[:10], captions[10:]]


async def test_photos_and_documents_go_in_separate_albums_in_order(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 803, 1)
    hooks = album_hooks(fakes, "tg-803", "gp", 2) + album_hooks(fakes, "tg-803", "gd", 2, "file")
    for hook in hooks[2:]:
        hook["message"]["message"]["media_group_id"] = "gp"
    amo_ids = [await post(fakes, bridge, hook) for hook in hooks]
    await delivered(fakes, amo_ids)
    assert albums(fakes, 803) == [["gp part 1", "gp part 2"], ["gd part 1", "gd part 2"]]


async def test_a_refused_album_falls_back_to_one_message_per_part(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 804, 1)
    fakes.telegram.fail("sendMediaGroup", status=400, description="Bad Request: MEDIA_INVALID")
    amo_ids = [await post(fakes, bridge, h) for h in album_hooks(fakes, "tg-804", "gf", 3)]
    await delivered(fakes, amo_ids)
    photos = [c for c in fakes.telegram.sent_messages(804) if c.method.lower() == "sendphoto"]
    assert [c.params["caption"] for c in photos] == ["gf part 1", "gf part 2", "gf part 3"]
    assert albums(fakes, 804) == []


async def test_a_kill_between_parts_loses_and_repeats_nothing(fakes: Fakes, tmp_path: Path) -> None:
    child = await spawn_bridge(fakes, tmp_path / "bridge.sqlite3", tmp_path / "bridge.log")

    async def send(hook: dict[str, Any]) -> str:
        status, body = await fakes.amojo.post_hook(child.url, None, hook)
        assert status == 200, body
        return str(hook["message"]["message"]["id"])

    try:
        await child.wait_healthy()
        fakes.telegram.push_update(private_message_update(805, 1, text="hi"))
        await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, timeout=20)
        hooks = album_hooks(fakes, "tg-805", "gk", 3)
        first = await send(hooks[0])
        await child.kill()  # while the first part waits for the others
        await child.start()
        amo_ids = [first] + [await send(hook) for hook in hooks[1:]]
        await delivered(fakes, amo_ids)
    finally:
        await child.kill()

    sent = [
        item.get("caption", "")
        for call in fakes.telegram.calls_of("sendMediaGroup", ok_only=True)
        for item in call.params["media"]
    ] + [c.params.get("caption", "") for c in fakes.telegram.sent_messages(805)]
    wanted = ["gk part 1", "gk part 2", "gk part 3"]
    assert sorted(caption for caption in sent if caption in wanted) == wanted  # each once


async def test_a_customers_ten_photo_album_reaches_amocrm_in_order(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    for n in range(1, 11):
        content = bytes([n]) * (100 + n)
        file_id, unique_id = fakes.telegram.add_file(content)
        photo = make_photo(file_id, unique_id, len(content))
        fields: dict[str, Any] = {"photo": photo, "media_group_id": "13711"}
        if n == 1:
            fields["caption"] = "Ten photos of the order"
        fakes.telegram.push_update(private_message_update(806, 10 + n, **fields))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 10, what="ten photos")

    items = fakes.amojo.messages_for("tg-806")
    assert [m["msgid"] for m in items] == [f"tg-806-{10 + n}" for n in range(1, 11)]
    assert all(m["message"]["type"] == "picture" for m in items)
    texts = [m["message"].get("text", "") for m in items]
    assert texts.count("Ten photos of the order") == 1 and texts[0] == "Ten photos of the order"


def outcomes(fakes: Fakes, amo_ids: list[str]) -> list[tuple[int, int | None]]:
    """Each part's one reported (status, error_code), in order."""
    result = []
    for amo_id in amo_ids:
        [status] = fakes.amojo.statuses_for(amo_id)
        result.append((status["status"], status.get("error_code")))
    return result


async def test_a_part_refused_fails_alone(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 811, 1)
    # No album, then Telegram takes two photos and refuses the third, and its link instead.
    fakes.telegram.fail("sendMediaGroup", status=400, description="Bad Request: refused")
    fakes.telegram.fail("sendPhoto", status=400, description="Bad Request: refused", after=2)
    fakes.telegram.fail("sendMessage", status=400, description="Bad Request: refused", times=9)
    amo_ids = [await post(fakes, bridge, hook) for hook in album_hooks(fakes, "tg-811", "g", 3)]
    await fakes.amojo.wait_for(
        lambda: all(fakes.amojo.statuses_for(a) for a in amo_ids), timeout=30, what="statuses"
    )

    photos = [c.params["caption"] for c in sends(fakes, 811) if c.method.lower() == "sendphoto"]
    assert photos == ["g part 1", "g part 2"]
    assert outcomes(fakes, amo_ids) == [(1, None), (1, None), (-1, 905)]


async def test_a_part_whose_file_cannot_be_had_holds_no_other_part_back(
    fakes: Fakes, bridges: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.manager.delivery, "DELIVERY_GIVE_UP_SECONDS", 2.0)
    bridge = await bridges.start()
    await customer_says(fakes, 812, 1)

    async def down(request: CrmRequest) -> web.Response:  # this one file's host is down
        return web.Response(status=503)

    fakes.crm.add_route("GET", "/files/broken.png", down, auth=False)
    hooks = album_hooks(fakes, "tg-812", "b", 3)
    hooks[2]["message"]["message"]["media"] = f"{fakes.crm.url}/files/broken.png"
    amo_ids = [await post(fakes, bridge, hook) for hook in hooks]
    await fakes.amojo.wait_for(
        lambda: all(fakes.amojo.statuses_for(a) for a in amo_ids), timeout=30, what="statuses"
    )

    photos = [c.params["caption"] for c in sends(fakes, 812) if c.method.lower() == "sendphoto"]
    assert photos == ["b part 1", "b part 2"]
    assert outcomes(fakes, amo_ids) == [(1, None), (1, None), (-1, 905)]


async def test_an_album_too_large_for_one_request_goes_part_by_part(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 813, 1)
    # Each file fits alone; together they are more than one request may carry (413).
    fakes.telegram.fail("sendMediaGroup", status=413, description="Request Entity Too Large")
    amo_ids = [await post(fakes, bridge, hook) for hook in album_hooks(fakes, "tg-813", "L", 3)]
    await delivered(fakes, amo_ids)

    assert len(fakes.telegram.calls_of("sendMediaGroup")) == 1
    assert [c.method.lower() for c in sends(fakes, 813)] == ["sendphoto"] * 3


async def test_a_manager_typing_between_the_parts_does_not_split_the_album(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 814, 1)
    hooks = album_hooks(fakes, "tg-814", "t", 3)
    amo_ids = [await post(fakes, bridge, hooks[0])]
    await post(fakes, bridge, fakes.amojo.typing_hook("tg-814"))
    amo_ids += [await post(fakes, bridge, hook) for hook in hooks[1:]]
    await delivered(fakes, amo_ids)

    assert albums(fakes, 814) == [["t part 1", "t part 2", "t part 3"]]
    jobs = await bridge.bridge.repo.pending_in_lane("telegram", "chat:814")
    assert jobs == []  # the typing job ended with the album
