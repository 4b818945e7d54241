"""A recovered manager message takes its place in its chat's lane by the time it was sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.amocrm.hooks import KIND_AMO_MESSAGE
from bot.manager.recovery import place_in_order
from storage import NewJob, Repository, open_repository


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    repository = await open_repository(tmp_path / "order.sqlite3")
    try:
        yield repository
    finally:
        await repository.close()


def message(amo_id: str, sent_at: float) -> NewJob:
    hook: dict[str, Any] = {
        "message": {
            "conversation": {"id": "amo", "client_id": "tg-5"},
            "timestamp": int(sent_at),
            "message": {"id": amo_id, "type": "text", "text": amo_id},
        }
    }
    return NewJob("telegram", KIND_AMO_MESSAGE, "chat:5", f"hook:{amo_id}", {"hook": hook})


def notice(key: str) -> NewJob:
    return NewJob("telegram", "bot.notice", "chat:5", key, {"text": key})


async def order(repo: Repository) -> list[str]:
    return [job.dedup_key for job in await repo.pending_in_lane("telegram", "chat:5")]


async def test_recovered_messages_go_before_newer_waiting_ones_and_after_older(
    repo: Repository,
) -> None:
    await repo.enqueue(message("m10", 10), notice("n1"), message("m40", 40), message("m50", 50))
    async with repo.transaction() as tx:
        stored = await place_in_order(
            tx, [message("m45", 45), message("m20", 20), message("m30", 30)]
        )
    assert stored == 3
    assert await order(repo) == [
        "hook:m10",
        "n1",
        "hook:m20",
        "hook:m30",
        "hook:m40",
        "hook:m45",
        "hook:m50",
    ]
    [head] = await repo.due_jobs("telegram", 1e12, 5, set())
    assert head.dedup_key == "hook:m10"


async def test_a_message_newer_than_every_waiting_one_goes_last_and_a_known_one_is_not_stored(
    repo: Repository,
) -> None:
    await repo.enqueue(message("m10", 10))
    async with repo.transaction() as tx:
        stored = await place_in_order(tx, [message("m99", 99), message("m10", 10)])
    assert stored == 1
    assert await order(repo) == ["hook:m10", "hook:m99"]
    head = await repo.due_jobs("telegram", 1e12, 5, set())
    assert [job.dedup_key for job in head] == ["hook:m10"]
    async with repo.transaction() as tx:
        await tx.finish_job(head[0].id)
    head = await repo.due_jobs("telegram", 1e12, 5, set())
    assert [job.dedup_key for job in head] == ["hook:m99"]
    assert json.loads(json.dumps(head[0].payload))["hook"]["message"]["timestamp"] == 99


async def test_sixty_recovered_messages_before_one_waiting_keep_their_order(
    repo: Repository,
) -> None:
    # Each placement halves the room before the waiting message: floats run out after ~53.
    await repo.enqueue(message("live", 1000))
    async with repo.transaction() as tx:
        await place_in_order(tx, [message(f"r{n:02d}", n) for n in range(1, 61)])

    jobs = await repo.pending_in_lane("telegram", "chat:5", 100)
    assert [job.dedup_key for job in jobs] == [f"hook:r{n:02d}" for n in range(1, 61)] + [
        "hook:live"
    ]
    positions = [job.position for job in jobs]
    assert positions == sorted(set(positions))  # strictly increasing: no ties left to chance
