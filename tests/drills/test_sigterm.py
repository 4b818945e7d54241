"""SIGTERM: intake stops, in-flight sends finish within the grace period, the rest stays pending."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulators.factories import private_message_update
from tests.harness import BridgeProcess, Fakes, wait_until


@pytest.fixture
async def process(fakes: Fakes, tmp_path: Path) -> AsyncIterator[BridgeProcess]:
    """A bridge process on a temporary database (killed at teardown if still alive)."""
    proc = BridgeProcess(fakes, tmp_path / "bridge.sqlite3", tmp_path / "bridge.log")
    try:
        yield proc
    finally:
        await proc.kill()


def job_states(db_path: Path) -> list[str]:
    """State of every customer message job."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT state FROM jobs WHERE kind = 'customer.message' ORDER BY id")
        return [str(row[0]) for row in rows]


async def test_inflight_send_finishes_within_grace_and_exit_is_zero(
    fakes: Fakes, process: BridgeProcess, tmp_path: Path
) -> None:
    await process.start()
    fakes.amojo.delay(1.5)
    fakes.telegram.push_update(private_message_update(901, 1, text="в полёте"))
    await wait_until(lambda: len(fakes.amojo.messages) == 1, timeout=10, what="send in flight")

    started = time.monotonic()
    code = await process.terminate()
    elapsed = time.monotonic() - started

    assert code == 0, process.log()
    assert elapsed < 10, elapsed
    assert job_states(tmp_path / "bridge.sqlite3") == ["done"], process.log()
    assert "Traceback" not in process.log()


async def test_send_longer_than_grace_stays_pending_and_is_not_lost(
    fakes: Fakes, process: BridgeProcess, tmp_path: Path
) -> None:
    await process.start()
    fakes.amojo.delay(30.0)
    fakes.telegram.push_update(private_message_update(902, 1, text="долго"))
    await wait_until(lambda: len(fakes.amojo.messages) == 1, timeout=10, what="send in flight")

    started = time.monotonic()
    code = await process.terminate(timeout=20)
    elapsed = time.monotonic() - started

    assert code == 0, process.log()
    assert elapsed < 12, elapsed
    assert job_states(tmp_path / "bridge.sqlite3") == ["pending"], process.log()

    fakes.amojo.delay(0.0)
    await process.start()
    await fakes.amojo.wait_for(lambda: fakes.amojo.attempts["tg-902-1"] >= 2, timeout=10)
    await wait_until(lambda: job_states(tmp_path / "bridge.sqlite3") == ["done"], timeout=10)
    assert len(fakes.amojo.messages_for("tg-902")) == 1
    assert await process.terminate() == 0
