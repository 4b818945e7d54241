"""Shared fixtures: loopback fakes and a running bridge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    BridgeFactory,
    BridgeProcess,
    Fakes,
    RunningBridge,
    spawn_bridge,
    started_fakes,
)


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    """Fake Telegram Bot API, amojo and CRM REST, on 127.0.0.1."""
    async with started_fakes() as running:
        yield running


@pytest.fixture
async def bridges(fakes: Fakes, tmp_path: Path) -> AsyncIterator[BridgeFactory]:
    """Starts bridges on one database (stop/restart inside a test); stops them at the end."""
    factory = BridgeFactory(fakes=fakes, db_path=tmp_path / "bridge.sqlite3")
    try:
        yield factory
    finally:
        await factory.stop_all()


@pytest.fixture
async def bridge(bridges: BridgeFactory) -> RunningBridge:
    """One running bridge with default settings."""
    return await bridges.start()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The drills first: the longest tests start at once, beside everything else (xdist)."""
    items.sort(key=lambda item: 0 if "/drills/" in str(item.path) else 1)


@pytest.fixture
async def spawn(fakes: Fakes, tmp_path: Path) -> AsyncIterator[Any]:
    """Start `python -m bot` children on one database; every one is killed at teardown."""
    children: list[BridgeProcess] = []

    async def start(warm: bool = True, **extra: str) -> BridgeProcess:
        log = tmp_path / f"bridge-{len(children)}.log"
        child = await spawn_bridge(fakes, tmp_path / "bridge.sqlite3", log, warm=warm, **extra)
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            await child.kill()
