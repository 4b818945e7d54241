"""amoCRM → Telegram: hook answer latency under load, delivery, and Telegram send pacing.

The fakes and the load generator run in this process; the bridge runs as `python -m bot`
(as in production). 500 signed message hooks for 50 chats are POSTed with 50 in flight;
every hook must be answered 200 (p99 ≤ 20 ms), delivered exactly once and reported with
delivery status 1, and the sends must stay within Telegram's limits (~30/s per bot,
~1/s per chat sustained). Exit status 1 when a target is missed.

    python -m tests.bench.outbound [--hooks 500] [--chats 50] [--in-flight 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from simulators.factories import private_message_update
from tests.harness import Fakes, spawn_bridge, started_fakes

TARGET_P99_MS = 20.0
TELEGRAM_PER_BOT_PER_SECOND = 30
TELEGRAM_PER_CHAT_BURST = 4  # in any 1 s window: a burst of 3, then 1 per second
TELEGRAM_PER_CHAT_PER_10S = 13  # sustained ≈ 1/s (+ the burst)
CHAT_BASE = 5_000_000


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


async def create_customers(fakes: Fakes, chats: Sequence[int], within: float) -> None:
    """Each customer writes once, so the chat exists on both sides."""
    for chat_id in chats:
        fakes.telegram.push_update(private_message_update(chat_id, 1, text="hi"))
    await fakes.amojo.wait_for(
        lambda: len(fakes.amojo.messages) >= len(chats), timeout=within, what="customers"
    )


async def post_hooks(
    url: str, secret_sign: Any, hooks: Sequence[dict[str, Any]], in_flight: int
) -> tuple[list[float], Counter[int]]:
    """POST every hook once (≤ in_flight concurrently); latencies in ms and status counts."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(in_flight)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(raw: bytes, headers: dict[str, str]) -> None:
            async with gate:
                started = time.perf_counter()
                try:
                    async with http.post(
                        url, data=raw, headers=headers, timeout=aiohttp.ClientTimeout(total=5)
                    ) as response:
                        await response.read()
                        statuses[response.status] += 1
                except (aiohttp.ClientError, TimeoutError):
                    statuses[0] += 1
                latencies.append((time.perf_counter() - started) * 1000)

        # Bodies are encoded and signed up front: the clock of the first requests in flight
        # must not run while the generator is still busy preparing the rest.
        prepared = []
        for hook in hooks:
            raw = json.dumps(hook).encode()
            prepared.append(
                (raw, {"Content-Type": "application/json", "X-Signature": secret_sign(raw)})
            )
        await asyncio.gather(*(one(raw, headers) for raw, headers in prepared))
    return latencies, statuses


async def bench(args: argparse.Namespace) -> int:
    """Run the scenario; print the numbers; 0 when every target is met."""
    with tempfile.TemporaryDirectory(prefix="bench-outbound-") as tmp:
        async with started_fakes() as fakes:
            log_path = Path(tmp) / "bridge.log"
            child = await spawn_bridge(fakes, Path(tmp) / "bridge.sqlite3", log_path)
            try:
                await child.wait_healthy(timeout=120)
                chats = [CHAT_BASE + n for n in range(args.chats)]
                await create_customers(fakes, chats, within=60)
                hooks = [
                    fakes.amojo.message_hook(
                        f"tg-{chats[n % len(chats)]}", text=f"manager message {n}"
                    )
                    for n in range(args.hooks)
                ]
                # A short warm-up so the child's first-request costs are not measured.
                warm_up = fakes.amojo.message_hook(f"tg-{chats[0]}", text="warm-up")
                for hook in [warm_up, *hooks]:
                    fakes.amojo.hook_message_ids.add(hook["message"]["message"]["id"])
                url = f"{child.url}/amojo/{fakes.amojo.scope_id}"
                await post_hooks(url, fakes.amojo.sign_hook, [warm_up], 1)
                # This process's own full garbage collection (aiogram's objects, ~100 ms) would
                # otherwise land inside some measured requests.
                gc.collect()
                gc.freeze()
                started = time.monotonic()
                latencies, statuses = await post_hooks(
                    url, fakes.amojo.sign_hook, hooks, args.in_flight
                )
                posted_in = time.monotonic() - started
                server_p99 = await server_side_p99(child.url)
                amo_ids = [hook["message"]["message"]["id"] for hook in hooks]
                try:
                    await fakes.amojo.wait_for(
                        lambda: all(fakes.amojo.statuses_for(i) for i in amo_ids),
                        timeout=args.within,
                        what="every delivery status",
                    )
                except AssertionError as exc:
                    print(f"not all delivered: {exc}", file=sys.stderr)
                delivered_in = time.monotonic() - started
            finally:
                await child.kill()
            return report(
                fakes, hooks, latencies, statuses, posted_in, delivered_in, log_path, server_p99
            )


async def server_side_p99(base_url: str) -> float | None:
    """Upper bound of the bridge's own p99 answer time, from its /metrics histogram."""
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/metrics") as response:
        text = await response.text()
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("bridge_amojo_hook_answer_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= 0.99 * total)


def report(
    fakes: Fakes,
    hooks: Sequence[dict[str, Any]],
    latencies: Sequence[float],
    statuses: Counter[int],
    posted_in: float,
    delivered_in: float,
    log_path: Path,
    server_p99: float | None,
) -> int:
    """Print the numbers and return the exit status."""
    telegram = fakes.telegram
    texts = Counter(c.params.get("text") for c in telegram.sent_messages())
    expected = [hook["message"]["message"]["text"] for hook in hooks]
    delivered_once = sum(1 for text in expected if texts[text] == 1)
    duplicates = sum(1 for text in expected if texts[text] > 1)
    reported = sum(
        1
        for hook in hooks
        if [s["status"] for s in fakes.amojo.statuses_for(hook["message"]["message"]["id"])] == [1]
    )
    flood = sum(1 for c in telegram.calls if c.status == 429)
    per_bot = telegram.max_rate("send", window=1.0)
    per_chat = telegram.max_rate_per_chat("send", window=1.0)
    per_chat_10s = telegram.max_rate_per_chat("send", window=10.0)
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(f"hooks POSTed:            {len(hooks)} ({len(latencies)} answered in {posted_in:.2f} s)")
    print(f"answers:                 {dict(statuses)}")
    print(
        f"hook answer latency:     p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms"
    )
    in_flight = min(50, len(latencies))
    warm = percentile(latencies[in_flight:], 0.99) if len(latencies) > in_flight else p99
    print(f"  answers after the first {in_flight} (those opened connections): p99 {warm:.1f} ms")
    if server_p99 is not None:
        print(f"  bridge-side p99:       ≤ {server_p99 * 1000:.0f} ms (its own histogram bucket)")
    print(f"delivered exactly once:  {delivered_once}/{len(hooks)} (duplicates {duplicates})")
    print(f"delivery status 1:       {reported}/{len(hooks)}")
    print(f"all delivered within:    {delivered_in:.1f} s")
    print(
        f"Telegram sends per bot:  max {per_bot} in any 1 s (limit ~{TELEGRAM_PER_BOT_PER_SECOND})"
    )
    print(f"Telegram sends per chat: max {per_chat} in any 1 s, {per_chat_10s} in any 10 s")
    print(f"Telegram 429 answers:    {flood}")
    problems = []
    if statuses.get(200, 0) != len(hooks):
        problems.append("not every hook was answered 200")
    if p99 > TARGET_P99_MS:
        problems.append(f"p99 {p99:.1f} ms > {TARGET_P99_MS} ms")
    if delivered_once != len(hooks) or reported != len(hooks):
        problems.append("not every hook was delivered exactly once and reported")
    if per_bot > TELEGRAM_PER_BOT_PER_SECOND:
        problems.append(f"{per_bot} sends in one second")
    if per_chat > TELEGRAM_PER_CHAT_BURST or per_chat_10s > TELEGRAM_PER_CHAT_PER_10S:
        problems.append("a chat got messages faster than ~1/s")
    if flood:
        problems.append("Telegram answered 429")
    for problem in problems:
        print(f"MISSED: {problem}")
    if problems:
        print("bridge log (last lines):")
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-15:]))
    return 1 if problems else 0


def main() -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hooks", type=int, default=500)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--within", type=float, default=180.0, help="delivery deadline, s")
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
