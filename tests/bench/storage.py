"""Storage at a busy account's size: 1 M finished jobs of history and a 72 k backlog.

Measures what runs on every `/healthz` and `/metrics` (queue stats, recent dead letters), one
worker wake (`due_jobs` of the backlogged queue), `/failed`, and one pruning pass.

    python -m tests.bench.storage [--history 1000000] [--backlog 72000] [--lanes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.jobs.pruner import DAY, Pruner
from storage import open_repository


def build(path: Path, history: int, backlog: int, lanes: int) -> None:
    """A database with `history` done jobs (8 days old) and `backlog` pending ones."""
    now = time.time()
    old = now - 8 * DAY
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO jobs (queue, kind, lane, dedup_key, payload, state, attempts, "
            "next_attempt_at, created_at, updated_at) "
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "SELECT 'amojo', 'customer.message', 'chat:' || (i % ?), 'done-' || i, "
            '\'{"chat_id": 1, "text": "a customer message of ordinary length"}\', \'done\', '
            "1, ?, ? + i * 0.0001, ? + i * 0.0001 FROM n",
            (history, lanes, old, old, old),
        )
        db.execute(
            "INSERT INTO jobs (queue, kind, lane, dedup_key, payload, state, attempts, "
            "next_attempt_at, created_at, updated_at) "
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "SELECT 'amojo', 'customer.message', 'chat:' || (i % ?), 'pending-' || i, "
            "'{\"chat_id\": 1}', 'pending', 0, ?, ?, ? FROM n",
            (backlog, lanes, now - 60, now - 3600, now - 3600),
        )


async def timed(call: Callable[[], Awaitable[Any]], runs: int = 20) -> tuple[float, float]:
    """(median, max) milliseconds of `runs` calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


async def main(history: int, backlog: int, lanes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bridge.sqlite3"
        repo = await open_repository(path)
        await repo.close()
        started = time.perf_counter()
        build(path, history, backlog, lanes)
        size = path.stat().st_size / 1e6
        print(
            f"built {history:,} finished + {backlog:,} pending jobs over {lanes} lanes "
            f"({size:.0f} MB) in {time.perf_counter() - started:.1f} s"
        )
        repo = await open_repository(path)
        try:
            now = time.time()
            results = {
                "queue stats (/healthz, /metrics)": await timed(repo.queue_stats),
                "dead letters of the last hour (/healthz)": await timed(
                    lambda: repo.count_dead_since(now - 3600)
                ),
                "worker wake (due_jobs, 64 lanes)": await timed(
                    lambda: repo.due_jobs("amojo", time.time(), 64, frozenset())
                ),
                "/failed (newest 20 + count)": await timed(lambda: repo.newest_dead(20)),
            }
            for name, (median, worst) in results.items():
                print(f"{name:45s} median {median:7.2f} ms   max {worst:7.2f} ms")
            started = time.perf_counter()
            deleted, _ = await Pruner(repo, retention_days=7).run_once()
            print(
                f"pruning pass: {deleted:,} jobs deleted in {time.perf_counter() - started:.1f} s"
            )
            stats_after = (await timed(repo.queue_stats))[0]
            wake_after = (await timed(lambda: repo.due_jobs("amojo", time.time(), 64, set())))[0]
            print(
                f"after pruning: queue stats median {stats_after:.2f} ms, "
                f"worker wake median {wake_after:.2f} ms"
            )
        finally:
            await repo.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--history", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=72_000)
    parser.add_argument("--lanes", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(main(args.history, args.backlog, args.lanes))
