"""Reconciliation after an outage, and its steady cost, on a real `python -m bot` process.

1. N conversations (default 10,000): each customer writes once, so every one is active in the
   recovery look-back.
2. kill -9. Managers write one message in each of M conversations (default 100), dated over the
   two minutes the outage lasts (the listener's heartbeat is set two minutes back, as a real
   two-minute outage leaves it); their hooks fail.
3. Restart: time until all M are delivered with status 1, the requests reconciliation made to
   amojo and to the CRM, and the live customer → amoCRM latency (20 msg/s) meanwhile.
4. Steady state: the same bridge idle for `--quiet` seconds with RECONCILE_INTERVAL_SECONDS=5;
   the requests per pass, scaled to an hour at the default interval (60 s).

    python -m tests.bench.reconcile [--conversations 10000] [--messages 100] [--no-feed]

With `--no-feed` amoCRM refuses its events feed, and the gap is read chat by chat (slow: use
fewer conversations).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

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
from tests.bench.recovery import wait_statuses
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

CHAT_BASE = 7_000_000
OUTAGE_SECONDS = 120.0
TARGET_DELIVERED_SECONDS = 60.0
TARGET_REQUESTS = 1000
TARGET_P99_MS = 50.0
PASS_INTERVAL = 5


def reconcile_requests(amojo: TimedAmojo, crm: FakeCrm) -> tuple[int, int]:
    """(requests to amojo that reconciliation makes, requests to the CRM) so far."""
    amojo_count = sum(
        1 for r in amojo.requests if r.path.endswith("/history") or r.path.endswith("/chats")
    )
    crm_paths = ("/api/v4/events", "/api/v4/contacts/chats", "/api/v4/leads/")
    crm_count = sum(1 for r in crm.requests if r.path.startswith(crm_paths))
    return amojo_count, crm_count


async def bench(args: argparse.Namespace) -> int:
    """Run the four steps and report."""
    chats = [CHAT_BASE + i for i in range(args.conversations)]
    with tempfile.TemporaryDirectory(prefix="bridge-reconcile-") as tmp:
        log_path = Path(args.log) if args.log else Path(tmp) / "bridge.log"
        db_path = Path(tmp) / "bridge.sqlite3"
        async with (
            FakeTelegram(TOKEN) as telegram,
            TimedAmojo(CHANNEL_ID, CHANNEL_SECRET, ACCOUNT_ID) as amojo,
            FakeCrm(CRM_TOKEN, ACCOUNT_ID, rate_limit=None) as crm,
        ):
            amojo.crm = crm
            if args.no_feed:
                crm.events_refusal = 403
            fakes = Fakes(telegram=telegram, amojo=amojo, crm=crm)
            port = free_port()
            env = {
                **os.environ,
                **bridge_env(fakes, db_path, port),
                "RECONCILE_INTERVAL_SECONDS": str(PASS_INTERVAL),
                "LOG_LEVEL": args.log_level,
            }
            with open(log_path, "wb") as log:  # noqa: ASYNC230
                spawn = bridge_command(None)
                process = await asyncio.create_subprocess_exec(
                    *spawn, cwd=REPO_ROOT, env=env, stdout=log, stderr=log
                )
                await wait_polling(fakes, process, within=60)
                load = Load([telegram], amojo)
                print(f"{len(chats)} customers write…")
                for chat in chats:
                    load.push(chat)
                if not await load.wait_delivered(len(chats), within=600):
                    raise RuntimeError("customer messages were not delivered")

                process.kill()
                await process.wait()
                killed = time.time()
                with sqlite3.connect(db_path) as db:  # a two-minute outage, as the kill left it
                    db.execute(
                        "UPDATE kv SET value = ? WHERE key = 'listener.heartbeat'",
                        (repr(killed - OUTAGE_SECONDS),),
                    )
                db.close()
                step = OUTAGE_SECONDS / max(1, args.messages)
                written: list[str] = []
                for index, chat in enumerate(chats[:: max(1, len(chats) // args.messages)]):
                    if len(written) == args.messages:
                        break
                    moment = killed - OUTAGE_SECONDS + index * step
                    amojo.now = lambda moment=moment: moment  # type: ignore[misc]
                    hook = amojo.message_hook(f"tg-{chat}", text="written during the outage")
                    written.append(amojo.drop_hook(hook))
                amojo.now = time.time
                before = reconcile_requests(amojo, crm)

                print(f"restart; {len(written)} messages to find among {len(chats)} chats…")
                process = await asyncio.create_subprocess_exec(
                    *spawn, cwd=REPO_ROOT, env=env, stdout=log, stderr=log
                )
                recovering = asyncio.create_task(wait_statuses(amojo, written, within=args.timeout))
                polls = len(telegram.calls_of("getUpdates"))
                while len(telegram.calls_of("getUpdates")) <= polls + 1:  # this process polls
                    if process.returncode is not None:
                        raise RuntimeError(f"bridge exited; see {log_path}")
                    await asyncio.sleep(0.05)
                steady = await run_steady(load, process.pid, 20.0, args.duration, 30, 60)
                delivered_seconds = await recovering  # from the spawn, as it started then
                after = reconcile_requests(amojo, crm)
                spent = (after[0] - before[0], after[1] - before[1])

                print(f"quiet for {args.quiet:.0f} s…")
                quiet_start = reconcile_requests(amojo, crm)
                await asyncio.sleep(args.quiet)
                quiet_end = reconcile_requests(amojo, crm)
                code = await stop_bridge(process)
        passes = args.quiet / PASS_INTERVAL
        quiet_requests = sum(quiet_end) - sum(quiet_start)
        per_hour = quiet_requests / passes * 60 if passes else 0.0
        p99 = percentile(steady.latencies_ms, 0.99)
        slow = [(i, round(ms)) for i, ms in enumerate(steady.latencies_ms) if ms > TARGET_P99_MS]
        if slow:
            print(f"slow live messages (index, ms): {slow[:20]}")
        print()
        print(
            f"outage of {OUTAGE_SECONDS:.0f} s, {len(chats)} conversations active, "
            f"{len(written)} manager messages written meanwhile"
            + (" (events feed refused)" if args.no_feed else "")
        )
        print(
            "all delivered (status 1) after the restart: "
            + (f"{delivered_seconds:.1f} s" if delivered_seconds is not None else "NOT FINISHED")
        )
        print(f"requests reconciliation made:     amojo {spent[0]}, CRM {spent[1]}")
        print(
            f"live customer messages meanwhile: {steady.messages} at 20 msg/s, "
            f"p50 {steady.latency(0.5):.1f} ms, p99 {p99:.1f} ms, "
            f"max {max(steady.latencies_ms):.1f} ms"
        )
        print(
            f"steady state, {len(chats)} quiet conversations: {quiet_requests} request(s) in "
            f"{passes:.0f} passes → {per_hour:.0f} per hour at the default 60 s interval"
        )
        print(f"bridge exit code: {code}")
        ok = (
            delivered_seconds is not None
            and delivered_seconds <= TARGET_DELIVERED_SECONDS
            and sum(spent) < TARGET_REQUESTS
            and p99 <= TARGET_P99_MS
            and not steady.problems
        )
        for problem in steady.problems:
            print(f"problem: {problem}")
        return 0 if ok or args.no_feed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.reconcile", description=__doc__)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--duration", type=float, default=30.0, help="live load seconds")
    parser.add_argument("--quiet", type=float, default=30.0, help="steady-state seconds")
    parser.add_argument("--timeout", type=float, default=600.0, help="delivery limit, s")
    parser.add_argument("--no-feed", action="store_true", help="amoCRM refuses its events feed")
    parser.add_argument("--log", help="keep the bridge's log in this file")
    parser.add_argument("--log-level", default="WARNING", help="the bridge's LOG_LEVEL")
    return asyncio.run(bench(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
