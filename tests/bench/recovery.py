"""Restart gap and recovery of missed manager messages, on a real `python -m bot` process.

1. N conversations: each customer writes, each gets one live manager answer (amo learns the
   chat, the bridge learns amo's chat id).
2. kill -9; managers answer once more in every chat while the bridge is down (hooks refused).
3. Spawn the bridge again on the same database: the restart gap is the time from the spawn
   until a signed hook is answered 200. Then, while the history is read back, customers write
   at 20 msg/s; report when every missed message was delivered (status 1) and the p99 of the
   live customer messages.

    python -m tests.bench.recovery [--conversations 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from simulators.crm import FakeCrm
from simulators.telegram import FakeTelegram
from tests.bench.inbound import (
    REPO_ROOT,
    Load,
    TimedAmojo,
    bridge_command,
    percentile,
    run_steady,
    stop_bridge,
    wait_polling,
)
from tests.harness import (
    ACCOUNT_ID,
    CHANNEL_ID,
    CHANNEL_SECRET,
    CRM_TOKEN,
    TOKEN,
    Fakes,
    bridge_env,
    free_port,
)

CHAT_BASE = 6_000_000
TARGET_RESTART_GAP_SECONDS = 1.0
TARGET_P99_MS = 50.0


async def answered_200(
    http: aiohttp.ClientSession, url: str, amojo: TimedAmojo, hook: bytes
) -> bool:
    """POST one signed hook; True when the bridge answered 200."""
    try:
        async with http.post(
            url,
            data=hook,
            headers={"X-Signature": amojo.sign_hook(hook), "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def wait_statuses(amojo: TimedAmojo, amo_ids: Sequence[str], within: float) -> float | None:
    """Seconds until every amo id has delivery status 1 (None on timeout)."""
    wanted = set(amo_ids)
    started = time.perf_counter()
    deadline = started + within
    while time.perf_counter() < deadline:
        done = {s["amo_msgid"] for s in amojo.statuses if s["status"] == 1} & wanted
        if len(done) == len(wanted):
            return time.perf_counter() - started
        await asyncio.sleep(0.1)
    return None


async def bench(args: argparse.Namespace) -> int:
    """Run the three steps and report."""
    chats = [CHAT_BASE + i for i in range(args.conversations)]
    with tempfile.TemporaryDirectory(prefix="bridge-recovery-") as tmp:
        log_path = Path(tmp) / "bridge.log"
        async with (
            FakeTelegram(TOKEN) as telegram,
            TimedAmojo(CHANNEL_ID, CHANNEL_SECRET, ACCOUNT_ID) as amojo,
            FakeCrm(CRM_TOKEN, ACCOUNT_ID) as crm,
            aiohttp.ClientSession() as http,
        ):
            fakes = Fakes(telegram=telegram, amojo=amojo, crm=crm)
            port = free_port()
            env = {**os.environ, **bridge_env(fakes, Path(tmp) / "bridge.sqlite3", port)}
            hook_url = f"http://127.0.0.1:{port}/amojo/{amojo.scope_id}"
            with open(log_path, "wb") as log:  # noqa: ASYNC230
                spawn = [*bridge_command(None)]
                process = await asyncio.create_subprocess_exec(
                    *spawn, cwd=REPO_ROOT, env=env, stdout=log, stderr=log
                )
                await wait_polling(fakes, process, within=60)
                load = Load([telegram], amojo)
                for chat in chats:
                    load.push(chat)
                if not await load.wait_delivered(len(chats), within=120):
                    raise RuntimeError("customer messages were not delivered")
                print(f"{len(chats)} conversations; one live manager answer each…")
                live_ids = []
                for chat in chats:
                    hook = amojo.message_hook(f"tg-{chat}", text="live answer")
                    live_ids.append(hook["message"]["message"]["id"])
                    await amojo.post_hook(f"http://127.0.0.1:{port}", amojo.scope_id, hook)
                if await wait_statuses(amojo, live_ids, within=300) is None:
                    raise RuntimeError("live answers were not delivered")

                process.kill()
                await process.wait()
                missed = []
                for chat in chats:
                    hook = amojo.message_hook(f"tg-{chat}", text="sent while down")
                    missed.append(hook["message"]["message"]["id"])
                    await amojo.post_hook(
                        f"http://127.0.0.1:{port}", amojo.scope_id, hook, timeout=1
                    )

                probe = amojo.message_hook(f"tg-{chats[0]}", text="first hook after the restart")
                probe_body = json.dumps(probe).encode()
                amojo.hook_message_ids.add(probe["message"]["message"]["id"])
                spawned = time.perf_counter()
                process = await asyncio.create_subprocess_exec(
                    *spawn, cwd=REPO_ROOT, env=env, stdout=log, stderr=log
                )
                while not await answered_200(http, hook_url, amojo, probe_body):
                    if process.returncode is not None:
                        raise RuntimeError(f"bridge exited; see {log_path}")
                    await asyncio.sleep(0.01)
                restart_gap = time.perf_counter() - spawned
                print(f"restart gap: {restart_gap:.2f} s; recovering {len(missed)} messages…")
                recovering = asyncio.create_task(wait_statuses(amojo, missed, within=args.timeout))
                await wait_polling(fakes, process, within=60)
                for i in range(20):  # warm-up, as in the inbound benchmark: first-use costs
                    load.push(CHAT_BASE + i)
                await load.wait_delivered(len(amojo.received_at) + 20, within=30)
                steady = await run_steady(load, process.pid, 20.0, args.duration, 30, 60)
                recovery_seconds = await recovering
                code = await stop_bridge(process)
        sent = [c for c in telegram.sent_messages() if c.params.get("text") == "sent while down"]
        p99 = percentile(steady.latencies_ms, 0.99)
        slow = [(i, round(ms)) for i, ms in enumerate(steady.latencies_ms) if ms > TARGET_P99_MS]
        if slow:
            print(f"slow live messages (index, ms): {slow[:20]}")
        print()
        print(f"restart gap (spawn → first hook 200):  {restart_gap:.2f} s")
        print(
            "recovery of missed messages:           "
            + (f"{recovery_seconds:.1f} s" if recovery_seconds else "NOT FINISHED")
            + f" ({len(sent)}/{len(missed)} delivered, status 1 each)"
        )
        print(
            f"live customer messages meanwhile:      {steady.messages} at 20 msg/s, "
            f"p50 {steady.latency(0.5):.1f} ms, p99 {p99:.1f} ms, "
            f"max {max(steady.latencies_ms):.1f} ms"
        )
        print(f"bridge exit code: {code}")
        ok = (
            restart_gap <= TARGET_RESTART_GAP_SECONDS
            and recovery_seconds is not None
            and len(sent) == len(missed)
            and p99 <= TARGET_P99_MS
            and not steady.problems
        )
        for problem in steady.problems:
            print(f"problem: {problem}")
        return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.recovery", description=__doc__)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30.0, help="live load seconds")
    parser.add_argument("--timeout", type=float, default=600.0, help="recovery limit, s")
    return asyncio.run(bench(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
