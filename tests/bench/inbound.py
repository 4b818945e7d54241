"""Customer → amoCRM throughput, latency, memory and CPU of a real `python -m bot` process.

The fakes and the load generator run in this process; the bridge runs as a child process
(as in production), so its peak RSS (VmHWM) and CPU time (utime + stime) can be read from
/proc. Exit status 1 when a target of issue 2 is missed, so `make bench` can gate on it.
With `--bots N` the bridge runs N bots and the chats are spread across them (issue 9: three
bots keep ≥ 300 msg/s and peak RSS ≤ 250 MB).

    python -m tests.bench.inbound [--bots 3] [--profile bridge.prof]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from simulators.amojo import FakeAmojo
from simulators.crm import FakeCrm
from simulators.factories import private_message_update
from simulators.telegram import FakeTelegram
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

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TARGET_THROUGHPUT = 300.0
TARGET_BURST_SECONDS = 7.0
TARGET_P99_MS = 50.0
TARGET_PEAK_RSS_MB = 230.0
TARGET_PEAK_RSS_MB_SEVERAL_BOTS = 250.0

WARMUP_CHAT_BASE = 7_000_000
BURST_CHAT_BASE = 8_000_000
STEADY_CHAT_BASE = 9_000_000


class TimedAmojo(FakeAmojo):
    """FakeAmojo that notes when each new message arrives and signals a target count."""

    def __init__(self, channel_id: str, secret: str, account_id: str) -> None:
        super().__init__(channel_id, secret, account_id, fetch_media=False)
        self.received_at: dict[str, float] = {}
        self.target = 0
        self.reached = asyncio.Event()

    def expect(self, count: int) -> None:
        """Set `reached` once `count` distinct messages have arrived in total."""
        self.target = count
        self.reached.clear()
        if len(self.received_at) >= count:
            self.reached.set()

    def _new_message(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = super()._new_message(payload)
        self.received_at[payload["msgid"]] = time.perf_counter()
        if len(self.received_at) >= self.target:
            self.reached.set()
        return answer


@dataclass(slots=True)
class ProcSample:
    """CPU seconds of a process (user + system) and of this process, at a wall-clock moment."""

    wall: float
    bridge_cpu: float
    local_cpu: float


def bridge_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # After the command name: state is field 3 of stat(5), utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def sample(pid: int) -> ProcSample:
    """CPU counters of the bridge and of this process, now."""
    return ProcSample(time.perf_counter(), bridge_cpu_seconds(pid), time.process_time())


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass(slots=True)
class Scenario:
    """What one scenario measured."""

    name: str
    messages: int
    seconds: float
    bridge_cpu: float
    local_cpu: float
    latencies_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Delivered messages per second."""
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_message(self) -> float:
        """Bridge CPU time per message."""
        return 1000 * self.bridge_cpu / self.messages

    def latency(self, fraction: float) -> float:
        """Latency percentile in ms."""
        return percentile(self.latencies_ms, fraction)


class Load:
    """Pushes customer messages into FakeTelegram and checks what reaches FakeAmojo."""

    def __init__(self, bots: Sequence[FakeTelegram], amojo: TimedAmojo) -> None:
        self.bots = list(bots)  # the primary bot first
        self.amojo = amojo
        self.pushed_at: dict[str, float] = {}
        self.next_message_id: dict[tuple[int, int], int] = defaultdict(lambda: 1)

    def push(self, chat_id: int) -> str:
        """Push one text message of `chat_id` (to one of the bots); returns its amojo msgid."""
        bot = chat_id % len(self.bots)
        message_id = self.next_message_id[bot, chat_id]
        self.next_message_id[bot, chat_id] += 1
        fake = self.bots[bot]
        conversation = f"tg-{chat_id}" if bot == 0 else f"tg-b{fake.bot_user['id']}-{chat_id}"
        msgid = f"{conversation}-{message_id}"
        update = private_message_update(chat_id, message_id, text=f"message {message_id} ✓")
        self.pushed_at[msgid] = time.perf_counter()
        fake.push_update(update)
        return msgid

    async def wait_delivered(self, total: int, within: float) -> bool:
        """Wait until `total` messages in all have reached amojo; False on timeout."""
        self.amojo.expect(total)
        try:
            async with asyncio.timeout(within):
                await self.amojo.reached.wait()
        except TimeoutError:
            return False
        return True

    def check(self, msgids: Sequence[str]) -> list[str]:
        """Everything pushed arrived once, and in Telegram order within each chat."""
        problems: list[str] = []
        missing = [m for m in msgids if m not in self.amojo.received_at]
        if missing:
            problems.append(f"{len(missing)} message(s) never reached amojo, e.g. {missing[:3]}")
        wanted = set(msgids)
        arrived = [m["msgid"] for m in self.amojo.messages if m["msgid"] in wanted]
        if len(arrived) != len(set(arrived)):
            problems.append(f"{len(arrived) - len(set(arrived))} duplicate message(s)")
        per_chat: dict[str, list[int]] = defaultdict(list)
        for msgid in arrived:
            chat, number = msgid.rsplit("-", 1)
            per_chat[chat].append(int(number))
        disordered = [chat for chat, numbers in per_chat.items() if numbers != sorted(numbers)]
        if disordered:
            problems.append(f"order broken in {len(disordered)} chat(s), e.g. {disordered[:3]}")
        return problems


async def run_burst(load: Load, pid: int, messages: int, chats: int, within: float) -> Scenario:
    """Scenario A: every message pushed at once; time until the last reaches amojo."""
    before = sample(pid)
    msgids = [load.push(BURST_CHAT_BASE + i % chats) for i in range(messages)]
    delivered = await load.wait_delivered(len(load.amojo.received_at) + messages, within)
    after = sample(pid)
    last = max((load.amojo.received_at.get(m, 0.0) for m in msgids), default=after.wall)
    seconds = (last if delivered else after.wall) - before.wall
    result = Scenario(
        "A burst",
        messages,
        seconds,
        after.bridge_cpu - before.bridge_cpu,
        after.local_cpu - before.local_cpu,
        [
            1000 * (load.amojo.received_at[m] - load.pushed_at[m])
            for m in msgids
            if m in load.amojo.received_at
        ],
    )
    result.problems = load.check(msgids)
    return result


async def run_steady(
    load: Load, pid: int, rate: float, duration: float, chats: int, within: float
) -> Scenario:
    """Scenario B: a steady `rate` msg/s for `duration` s; latency of each message."""
    loop = asyncio.get_running_loop()
    count = int(rate * duration)
    start_total = len(load.amojo.received_at)
    before = sample(pid)
    started = loop.time()
    msgids = []
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / rate - loop.time()))
        msgids.append(load.push(STEADY_CHAT_BASE + i % chats))
    await load.wait_delivered(start_total + count, within)
    after = sample(pid)
    result = Scenario(
        "B steady",
        count,
        after.wall - before.wall,
        after.bridge_cpu - before.bridge_cpu,
        after.local_cpu - before.local_cpu,
        [
            1000 * (load.amojo.received_at[m] - load.pushed_at[m])
            for m in msgids
            if m in load.amojo.received_at
        ],
    )
    result.problems = load.check(msgids)
    return result


@contextlib.asynccontextmanager
async def sampled(pid: int, output: Path | None) -> AsyncIterator[None]:
    """Sample the bridge with py-spy (raw collapsed stacks) while the block runs."""
    if output is None:
        yield
        return
    executable = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    spy = await asyncio.create_subprocess_exec(
        executable,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--format",
        "raw",
        "--threads",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        await asyncio.wait_for(spy.wait(), 30)


def bridge_command(profile: Path | None) -> list[str]:
    """`python -m bot`, optionally under cProfile (the profile is written on SIGTERM)."""
    if profile is None:
        return [sys.executable, "-m", "bot"]
    return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "bot"]


async def wait_polling(fakes: Fakes, process: asyncio.subprocess.Process, within: float) -> None:
    """Wait until the bridge long-polls Telegram (startup done)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not fakes.telegram.calls_of("getUpdates"):
        if process.returncode is not None:
            raise RuntimeError(f"bridge exited with {process.returncode} during startup")
        if loop.time() > deadline:
            raise RuntimeError(f"bridge did not start polling within {within} s")
        await asyncio.sleep(0.05)


async def stop_bridge(process: asyncio.subprocess.Process, grace: float = 20.0) -> int:
    """SIGTERM, as a deployment would; SIGKILL if it does not exit within `grace` s."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        process.kill()
        return await process.wait()


def print_report(
    scenarios: Sequence[Scenario], rss_mb: float, log_path: Path, bots: int = 1
) -> bool:
    """Print the table and the targets; True when every target is met."""
    rss_target = TARGET_PEAK_RSS_MB if bots == 1 else TARGET_PEAK_RSS_MB_SEVERAL_BOTS
    print()
    print(f"{bots} bot(s)")
    print(
        f"{'scenario':<10} {'msgs':>6} {'seconds':>8} {'msg/s':>8} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'bridge CPU ms/msg':>18} "
        f"{'fakes CPU %':>11}"
    )
    for s in scenarios:
        lat = s.latencies_ms or [float("nan")]
        print(
            f"{s.name:<10} {s.messages:>6} {s.seconds:>8.2f} {s.rate:>8.0f} "
            f"{percentile(lat, 0.50):>8.1f} {percentile(lat, 0.95):>8.1f} "
            f"{percentile(lat, 0.99):>8.1f} {max(lat):>8.1f} {s.cpu_ms_per_message:>18.2f} "
            f"{100 * s.local_cpu / s.seconds if s.seconds else 0:>10.0f}%"
        )
    print(f"bridge peak RSS (VmHWM): {rss_mb:.1f} MB   log: {log_path}")
    print()
    burst = next(s for s in scenarios if s.name.startswith("A"))
    steady = next(s for s in scenarios if s.name.startswith("B"))
    checks = [
        (
            f"A: {burst.messages} msgs delivered in ≤ {TARGET_BURST_SECONDS:.0f} s",
            burst.seconds <= TARGET_BURST_SECONDS,
            f"{burst.seconds:.2f} s",
        ),
        (
            f"A: ≥ {TARGET_THROUGHPUT:.0f} msg/s",
            burst.rate >= TARGET_THROUGHPUT,
            f"{burst.rate:.0f} msg/s",
        ),
        (
            f"B: p99 ≤ {TARGET_P99_MS:.0f} ms",
            bool(steady.latencies_ms) and steady.latency(0.99) <= TARGET_P99_MS,
            f"{steady.latency(0.99):.1f} ms" if steady.latencies_ms else "no data",
        ),
        (
            f"peak RSS ≤ {rss_target:.0f} MB",
            rss_mb <= rss_target,
            f"{rss_mb:.1f} MB",
        ),
    ]
    for s in scenarios:
        checks.append(
            (
                f"{s.name}: all delivered once, in order per chat",
                not s.problems,
                "; ".join(s.problems) or "ok",
            )
        )
    ok = True
    for label, passed, value in checks:
        ok = ok and passed
        print(f"  [{'PASS' if passed else 'FAIL'}] {label:<45} {value}")
    return ok


async def bench(args: argparse.Namespace) -> int:
    """Start the fakes and the bridge, run the scenarios, report."""
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        log_path = Path(args.log or Path(tmp) / "bridge.log")
        async with (
            FakeTelegram(TOKEN) as telegram,
            TimedAmojo(CHANNEL_ID, CHANNEL_SECRET, ACCOUNT_ID) as amojo,
            FakeCrm(CRM_TOKEN, ACCOUNT_ID) as crm,
        ):
            fakes = Fakes(telegram=telegram, amojo=amojo, crm=crm)
            bots = [telegram] + [
                telegram.add_bot(f"{700000 + n}:BENCH-token-{n}", username=f"bench_{n}_bot")
                for n in range(1, args.bots)
            ]
            env = {**os.environ, **bridge_env(fakes, Path(tmp) / "bridge.sqlite3", free_port())}
            env["TELEGRAM_BOT_TOKEN"] = ",".join(bot.token for bot in bots)
            env["LOG_LEVEL"] = args.log_level
            log: IO[bytes]
            with open(log_path, "wb") as log:  # noqa: ASYNC230
                process = await asyncio.create_subprocess_exec(
                    *bridge_command(args.profile), cwd=REPO_ROOT, env=env, stdout=log, stderr=log
                )
                try:
                    print(f"bridge pid {process.pid}; waiting for it to poll Telegram…")
                    await wait_polling(fakes, process, within=60)
                    load = Load(bots, amojo)
                    for i in range(args.warmup):
                        load.push(WARMUP_CHAT_BASE + i % 10)
                    if not await load.wait_delivered(args.warmup, within=30):
                        raise RuntimeError("warm-up messages were not delivered within 30 s")
                    print(f"A: {args.messages} messages over {args.chats} chats, pushed at once…")
                    async with sampled(process.pid, args.py_spy):
                        burst = await run_burst(
                            load, process.pid, args.messages, args.chats, args.timeout
                        )
                    await asyncio.sleep(0.5)
                    print(f"B: {args.rate:.0f} msg/s for {args.duration:.0f} s…")
                    steady = await run_steady(
                        load, process.pid, args.rate, args.duration, 30, args.timeout
                    )
                    rss = peak_rss_mb(process.pid)
                finally:
                    code = await stop_bridge(process)
            if code not in (0, -signal.SIGTERM):
                print(f"bridge exited with {code}; see {log_path}")
        ok = print_report([burst, steady], rss, log_path, args.bots)
        if args.profile is not None:
            print(f"cProfile of the bridge written to {args.profile}")
        return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.inbound", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000, help="scenario A size")
    parser.add_argument("--chats", type=int, default=200, help="scenario A chats")
    parser.add_argument("--bots", type=int, default=1, help="bots the chats are spread over")
    parser.add_argument("--rate", type=float, default=20.0, help="scenario B msg/s")
    parser.add_argument("--duration", type=float, default=15.0, help="scenario B seconds")
    parser.add_argument("--warmup", type=int, default=50, help="messages before measuring")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-scenario limit, s")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the bridge")
    parser.add_argument("--log", type=Path, default=None, help="keep the bridge log here")
    parser.add_argument("--profile", type=Path, default=None, help="run the bridge in cProfile")
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="sample scenario A with py-spy (if installed)"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(bench(args))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
