"""Per-request CPU overhead of httpx.AsyncClient vs aiohttp.ClientSession on loopback.

The server (aiohttp, answering like amojo's new_message) runs in a child process, so this
process's CPU time is the client's alone: CPU µs per request = process_time delta / requests.

    python -m tests.bench.http_client [--requests 3000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp import web

from bot.amocrm.amojo import AmojoClient, encode_body, http_date, signed_headers

SECRET = "f2d7f8704eff95087ed45b23ba99c0b5aac8278e"
PATH = "/v2/origin/custom/scope"
ANSWER = json.dumps(
    {"new_message": {"conversation_id": "tg-1", "sender_id": "tg-1", "msgid": "x" * 36}}
).encode()
PAYLOAD = {
    "event_type": "new_message",
    "payload": {
        "timestamp": 1700000000,
        "msec_timestamp": 1700000000000,
        "msgid": "tg-8000001-1",
        "conversation_id": "tg-8000001",
        "sender": {"id": "tg-8000001", "name": "Ivan Petrov", "profile_link": "https://t.me/u"},
        "message": {"type": "text", "text": "message 1 ✓"},
        "silent": False,
    },
}

Send = Callable[[bytes, dict[str, str]], Awaitable[bytes]]


async def serve() -> None:
    """Child process: answer every POST like amojo, print the port, run until stdin closes."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post(PATH, answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


@dataclass(slots=True)
class Result:
    """One client, one mode."""

    client: str
    mode: str
    requests: int
    wall: float
    cpu: float

    def row(self) -> str:
        """A table row."""
        return (
            f"{self.client:<23} {self.mode:<16} {self.requests:>7} "
            f"{self.requests / self.wall:>9.0f} {1e6 * self.wall / self.requests:>10.0f} "
            f"{1e6 * self.cpu / self.requests:>12.0f}"
        )


async def measure(client: str, send: Send, requests: int, concurrency: int) -> list[Result]:
    """Sequential and concurrent rounds of signed POSTs through `send`."""
    body = encode_body(PAYLOAD)

    async def one() -> None:
        headers = signed_headers(SECRET, "POST", PATH, body, http_date())
        await send(body, headers)

    for _ in range(200):
        await one()
    results = []
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        await one()
    results.append(
        Result(
            client, "sequential", requests, time.perf_counter() - started, time.process_time() - cpu
        )
    )
    gate = asyncio.Semaphore(concurrency)

    async def gated() -> None:
        async with gate:
            await one()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(gated() for _ in range(requests)))
    results.append(
        Result(
            client,
            f"{concurrency} in flight",
            requests,
            time.perf_counter() - started,
            time.process_time() - cpu,
        )
    )
    return results


async def signing_only(requests: int) -> Result:
    """The part both clients share: JSON encoding, MD5, HMAC-SHA1, Date header."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        body = encode_body(PAYLOAD)
        signed_headers(SECRET, "POST", PATH, body, http_date())
        json.loads(ANSWER)
    return Result(
        "(sign+JSON, no I/O)",
        "-",
        requests,
        time.perf_counter() - started,
        time.process_time() - cpu,
    )


async def bench(args: argparse.Namespace) -> int:
    """Start the server process and measure each client against it."""
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.http_client",
        "--serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None and server.stdin is not None
    try:
        line = await asyncio.wait_for(server.stdout.readline(), 60)
        base = f"http://127.0.0.1:{int(line)}"
        results = [await signing_only(args.requests)]

        async with httpx.AsyncClient(base_url=base, timeout=30) as hx:

            async def httpx_send(body: bytes, headers: dict[str, str]) -> bytes:
                response = await hx.request("POST", PATH, content=body, headers=headers)
                response.raise_for_status()
                return response.content

            results += await measure(
                "httpx.AsyncClient", httpx_send, args.requests, args.concurrency
            )

        amojo = AmojoClient(base, "channel", SECRET)
        try:

            async def amojo_send(body: bytes, headers: dict[str, str]) -> bytes:
                response = await amojo.request("POST", PATH, PAYLOAD)
                return response.content

            results += await measure(
                "AmojoClient.request", amojo_send, args.requests, args.concurrency
            )
        finally:
            await amojo.aclose()

        async with aiohttp.ClientSession(base_url=base) as session:

            async def aiohttp_send(body: bytes, headers: dict[str, str]) -> bytes:
                async with session.post(PATH, data=body, headers=headers) as response:
                    response.raise_for_status()
                    return await response.read()

            results += await measure(
                "aiohttp.ClientSession", aiohttp_send, args.requests, args.concurrency
            )
    finally:
        server.stdin.close()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()
    print(
        f"{'client':<23} {'mode':<16} {'requests':>7} {'req/s':>9} {'wall µs':>10} "
        f"{'client CPU µs':>12}"
    )
    for result in results:
        print(result.row())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options; `--serve` is the child server process."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.http_client", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve())
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
