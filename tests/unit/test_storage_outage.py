"""A storage outage is told once, ends only when writes work again, and is never a bug."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import NewJob, Repository, is_outage, open_repository
from storage import core as storage_core
from tests.harness import ROOT


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    repository = await open_repository(tmp_path / "outage.sqlite3")
    try:
        yield repository
    finally:
        await repository.close()


def job(n: int) -> NewJob:
    return NewJob("amojo", "amo.message", f"chat:{n}", f"hook:{n}", {"n": n})


def test_a_constraint_is_no_outage_whatever_its_words() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (blocked INTEGER NOT NULL)")
    with pytest.raises(sqlite3.IntegrityError) as bug:
        db.execute("INSERT INTO t VALUES (NULL)")
    assert not is_outage(bug.value)  # "blocked" holds "locked"; the code says what it is


async def test_a_hook_insert_refused_is_an_outage_until_writes_work_for_a_while(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_core, "OUTAGE_CLEARS_AFTER_SECONDS", 0.3)
    blocker = sqlite3.connect(tmp_path / "outage.sqlite3", isolation_level=None, timeout=0)
    await repo._writer.execute("PRAGMA busy_timeout = 50")
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError):
        await repo.insert_jobs([job(1)])  # the hooks' fast path
    assert repo.outage.since is not None
    blocker.rollback()

    await repo.insert_jobs([job(2)])
    assert repo.outage.since is not None  # one write right after: not over yet
    await asyncio.sleep(0.35)  # the condition here is time itself
    await repo.insert_jobs([job(3)])
    assert repo.outage.since is None


def test_importing_the_launcher_leaves_aiogram_for_later() -> None:
    # A restart listens for hooks before aiogram's seconds of import (done in a thread).
    script = "import sys, bot.launch; print('aiogram' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.stdout.strip() == "False", done.stderr
