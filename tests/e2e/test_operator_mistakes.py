"""What an operator does by accident: the bridge says what happened and never goes on blind.

A database it cannot write, one that fills up or is locked while running, one deleted or
replaced under it, a new empty one where the last run's had been; a stop while it starts.
Each is `python -m bot` against the fakes, as systemd runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from simulators.factories import private_message_update
from tests.e2e.test_lifecycle import assert_clean, exit_code, has_problem
from tests.harness import ROOT, Fakes, bridge_env, free_port

STOP_WITHIN_SECONDS = 5.0


async def customer_writes(fakes: Fakes, chat_id: int, message_id: int, text: str) -> None:
    """A customer message that must reach amoCRM (waited for)."""
    before = len(fakes.amojo.messages)
    fakes.telegram.push_update(private_message_update(chat_id, message_id, text=text))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) > before, what=text, timeout=30)


# ---- a database the bridge cannot write ----------------------------------------------------


async def run_unprivileged(
    fakes: Fakes,
    database: Path,
    port: int,
    timeout: float,  # noqa: ASYNC109
) -> tuple[int, str]:
    """`python -m bot` on `database` without the right to write it; (exit code, output).

    The file is made read-only; as root (whom a file's mode does not stop) the child also
    loses the capabilities that override it, as the service's own user would not have them.
    """
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)}
    env.update(bridge_env(fakes, database, port))
    os.chmod(database, 0o444)
    command = [sys.executable, "-m", "bot"]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=database.parent,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_an_existing_database_it_cannot_write_exits_2_at_once(
    fakes: Fakes, spawn: Any, tmp_path: Path
) -> None:
    # The README's order of steps once invited exactly this: `make run` as root first, the
    # service as its own user afterwards.
    database = tmp_path / "bridge.sqlite3"
    first = await spawn()
    await first.wait_healthy()
    assert await first.terminate() == 0

    started = time.monotonic()
    code, log = await run_unprivileged(fakes, database, free_port(), timeout=60)

    assert code == 2, log
    assert "DATABASE_PATH: cannot write the database" in log, log
    assert "must own the file and its directory" in log
    assert time.monotonic() - started < 30
    assert log.count("\n") == 1, log  # one line
    assert_clean(log)


def test_a_thread_left_open_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    # Whatever library leaves a thread open after a failed start, the process ends with its code.
    script = (
        "import threading, time\n"
        "from bot.__main__ import leave\n"
        "threading.Thread(target=time.sleep, args=(3600,), name='stuck').start()\n"
        "raise SystemExit(leave(2))\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "thread(s) stuck did not end" in done.stderr
    assert time.monotonic() - started < 20


# ---- storage refusing writes while running -------------------------------------------------


async def test_a_database_refusing_writes_is_unhealthy_logged_once_and_loses_nothing(
    fakes: Fakes, spawn: Any, tmp_path: Path
) -> None:
    child = await spawn(RECONCILE_INTERVAL_SECONDS="5")
    await child.wait_healthy()
    await customer_writes(fakes, 7101, 1, "before")
    log_before = len(child.log())

    # Another process holds the database's write lock (a backup tool, a full disk would answer
    # alike): every write of the bridge fails after its busy timeout.
    blocker = sqlite3.connect(tmp_path / "bridge.sqlite3", isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        fakes.telegram.push_update(private_message_update(7101, 2, text="during"))
        hook = fakes.amojo.message_hook("tg-7101", text="answer during the outage")
        hook_result = asyncio.create_task(fakes.amojo.post_hook(child.url, None, hook, timeout=15))
        status, body = await child.wait_health(
            has_problem("storage: the database refuses writes"), timeout=40, what="the outage"
        )
        assert status == 503, body
        assert (await hook_result)[0] == 503
    finally:
        blocker.rollback()
        blocker.close()

    await child.wait_health(lambda status, body: status == 200, timeout=40, what="the end")
    await fakes.amojo.wait_for(
        lambda: any(m["message"].get("text") == "during" for m in fakes.amojo.messages),
        timeout=30,
        what="the update that waited",
    )
    await fakes.telegram.wait_for(
        lambda: (
            "answer during the outage"
            in [c.params.get("text") for c in fakes.telegram.sent_messages(7101)]
        ),
        timeout=40,
        what="the answer recovered from history",
    )
    log = child.log()[log_before:]
    assert log.count("refuses writes") == 1, log
    assert log.count("takes writes again") == 1, log
    assert_clean(log)


# ---- the database deleted, replaced or new -------------------------------------------------


@pytest.mark.parametrize("mistake", ["deleted", "replaced"])
async def test_the_database_deleted_or_replaced_while_running_stops_it(
    fakes: Fakes, spawn: Any, tmp_path: Path, mistake: str
) -> None:
    database = tmp_path / "bridge.sqlite3"
    child = await spawn()
    await child.wait_healthy()
    if mistake == "deleted":
        database.unlink()
    else:
        copy = tmp_path / "copy.sqlite3"
        shutil.copyfile(database, copy)
        os.replace(copy, database)

    code, log = await exit_code(child, 30)
    assert code == 2, log
    assert f"CRITICAL bot.launch: DATABASE_PATH: {database} was {mistake}" in log, log
    assert_clean(log)


async def test_a_new_database_where_one_had_been_is_loud_until_a_hook_is_stored(
    fakes: Fakes, spawn: Any, tmp_path: Path
) -> None:
    database = tmp_path / "bridge.sqlite3"
    first = await spawn()
    await first.wait_healthy()
    assert await first.terminate() == 0
    for suffix in ("", "-wal", "-shm"):  # "rm data/bridge.sqlite3*" to start afresh
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{database}{suffix}")

    child = await spawn()
    await child.wait_health(
        lambda status, body: status == 200 and has_problem("fresh database")(status, body),
        what="the warning",
    )  # it works, on a database without the earlier state
    assert "CRITICAL bot.common.database_file: DATABASE_PATH: fresh database" in child.log()
    assert str(database) in child.log()

    # A restart before the new database is in use warns again.
    assert await child.terminate() == 0
    child = await spawn()
    await child.wait_health(has_problem("fresh database"), what="the warning again")

    await customer_writes(fakes, 7201, 1, "hello")
    hook = fakes.amojo.message_hook("tg-7201", text="welcome")
    assert (await fakes.amojo.post_hook(child.url, None, hook))[0] == 200
    await child.wait_health(
        lambda status, body: not any("fresh database" in p for p in body["problems"]),
        what="the warning to clear",
    )
    assert await child.terminate() == 0

    # The same database again: nothing to say.
    again = await spawn()
    await again.wait_healthy()
    assert "fresh database" not in again.log()
    assert_clean(again.log())


# ---- stopping while it starts ----------------------------------------------------------------


def handles_sigterm(pid: int) -> bool:
    """True once the process catches SIGTERM (the entry point's first statement)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:"))[7:], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_stop_in_the_first_moments_exits_0_at_once(
    fakes: Fakes, spawn: Any, sig: signal.Signals
) -> None:
    child = await spawn(warm=False)  # cold, as `python -m bot` starts
    deadline = time.monotonic() + 20
    while not handles_sigterm(child.process.pid):
        assert time.monotonic() < deadline, child.log()
        await asyncio.sleep(0.005)
    child.process.send_signal(sig)
    started = time.monotonic()
    code = await child.wait_exit(30)

    assert code == 0, child.log()
    assert time.monotonic() - started < STOP_WITHIN_SECONDS, child.log()
    assert_clean(child.log())
    assert "KeyboardInterrupt" not in child.log()


async def test_a_stop_while_aiogram_is_imported_exits_0_at_once(fakes: Fakes, spawn: Any) -> None:
    first = await spawn()
    await first.wait_healthy()
    assert await first.terminate() == 0
    child = await spawn(warm=False)  # a restart listens before aiogram is imported
    await child.wait_health(lambda status, body: True, what="the early listener")
    child.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = await child.wait_exit(30)

    assert code == 0, child.log()
    assert time.monotonic() - started < STOP_WITHIN_SECONDS, child.log()
    assert_clean(child.log())


# ---- review: more ways to break the database file ------------------------------------------


async def test_a_second_path_to_the_same_database_is_refused(
    fakes: Fakes, spawn: Any, tmp_path: Path
) -> None:
    first = await spawn()
    await first.wait_healthy()
    alias = tmp_path / "elsewhere" / "alias.sqlite3"
    alias.parent.mkdir()
    alias.symlink_to(tmp_path / "bridge.sqlite3")

    second = await spawn(DATABASE_PATH=str(alias))
    code, log = await exit_code(second, 30)
    assert code == 2, log
    assert "another bridge" in log and "bridge.sqlite3" in log
    first.still_running()


async def test_a_database_locked_at_start_is_waited_for(
    fakes: Fakes, spawn: Any, tmp_path: Path
) -> None:
    first = await spawn()
    await first.wait_healthy()
    assert await first.terminate() == 0
    blocker = sqlite3.connect(tmp_path / "bridge.sqlite3", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # an operator's sqlite3 shell, a backup tool
        child = await spawn()
        deadline = time.monotonic() + 30
        while "locked by another program" not in child.log():
            child.still_running()
            assert time.monotonic() < deadline, child.log()
            await asyncio.sleep(0.1)
    finally:
        blocker.rollback()
        blocker.close()
    await child.wait_healthy()
    assert_clean(child.log())


async def test_the_lock_file_removed_while_running_is_written_again(
    fakes: Fakes, spawn: Any, tmp_path: Path
) -> None:
    child = await spawn()
    await child.wait_healthy()
    lock = tmp_path / "bridge.sqlite3.lock"
    lock.unlink()
    deadline = time.monotonic() + 20
    while not lock.exists():
        child.still_running()
        assert time.monotonic() < deadline, child.log()
        await asyncio.sleep(0.1)
    assert lock.read_text().split()[0] == str(child.process.pid)
    await child.wait_healthy()


async def test_a_database_directory_gone_while_running_stops_it_with_2(
    fakes: Fakes, spawn: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    child = await spawn(DATABASE_PATH=str(data / "bridge.sqlite3"))
    await child.wait_healthy()
    data.rename(tmp_path / "moved")
    data.write_text("not a directory")  # stat() now fails with NotADirectoryError

    code, log = await exit_code(child, 30)
    assert code == 2, log
    assert "was unreachable" in log
    assert_clean(log)
