"""`make demo` works for a newcomer: its page, in a real headless browser, drives the bridge.

The demo (`python -m simulators.demo`) starts the simulators and the real bridge; Debian's
chromium opens its page and is driven over the DevTools protocol (typing, clicks) the way a
person would use it: as the customer, as the manager, and as a staff member.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (`make test` installs it when run as root)",
)
# Without the background-networking flags Chromium keeps calling Google's hosts.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


class Page:
    """One browser tab over the DevTools protocol: evaluate, type, click, wait."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.serial = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """A DevTools command and its result."""
        self.serial += 1
        serial = self.serial
        await self.socket.send_json({"id": serial, "method": method, "params": params})
        while True:
            answer = await self.socket.receive_json(timeout=30)
            if answer.get("id") == serial:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return dict(answer.get("result") or {})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def type_into(self, selector: str, text: str) -> None:
        """Focus a field and type into it (as keyboard input)."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.call("Input.insertText", text=text)

    async def click(self, selector: str) -> None:
        """Click an element."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    async def text_of(self, selector: str) -> str:
        """What an element shows."""
        return str(await self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText"))

    async def wait_for(self, expression: str, what: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until a JavaScript expression is true in the page."""
        deadline = time.monotonic() + timeout
        while not await self.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; the page shows:\n{await self.text_of('main')}"
                )
            await asyncio.sleep(0.1)

    async def wait_text(self, selector: str, text: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until an element shows `text`."""
        shown = f"document.querySelector({json.dumps(selector)}).innerText"
        expression = f"{shown}.includes({json.dumps(text)})"
        await self.wait_for(expression, f"{text!r} in {selector}", timeout)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[str]:
    """`python -m simulators.demo --port 0` running; the page's address."""
    with (tmp_path / "demo.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulators.demo",
            "--port",
            "0",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        address = ""
        while not address:
            line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
            assert line, f"the demo exited:\n{(tmp_path / 'demo.log').read_text()}"
            if "open http://" in line:
                address = line.split("open ", 1)[1].split()[0]
        yield address
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert process.returncode == 0, (tmp_path / "demo.log").read_text()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    """A headless Chromium tab."""
    assert CHROMIUM is not None
    profile = tmp_path / "chromium"
    with (tmp_path / "chromium.log").open("wb") as log:
        browser = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert browser.returncode is None, (tmp_path / "chromium.log").read_text()
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            target = next(t for t in targets if t.get("type") == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                yield Page(socket)
    finally:
        if browser.returncode is None:
            browser.kill()
        with contextlib.suppress(ProcessLookupError):
            await browser.wait()


async def test_the_demo_page_carries_both_sides_through_the_bridge(demo: str, page: Page) -> None:
    await page.call("Page.navigate", url=demo)
    await page.wait_for("!!document.querySelector('#customer-input')", "the page")

    # The customer writes in Telegram; the manager sees it in amoCRM.
    await page.type_into("#customer-input", "Hello from Telegram")
    await page.click("#customer-send")
    await page.wait_text("#amo-log", "Hello from Telegram")

    # The manager answers; the customer gets it, amoCRM shows it delivered.
    await page.type_into("#manager-input", "How can I help?")
    await page.click("#manager-send")
    await page.wait_text("#customer-log", "How can I help?")
    await page.wait_for(
        "[...document.querySelectorAll('#amo-log .bubble.mine')]"
        ".some(b => b.dataset.status === '1')",
        "the delivered status",
    )
    assert "delivered" in await page.text_of("#amo-log")

    # Salesbot-style buttons: the customer presses one, amoCRM gets the answer.
    await page.click("#manager-buttons")
    await page.wait_for("!!document.querySelector('#customer-log .buttons button')", "the buttons")
    await page.click("#customer-log .buttons button")
    await page.wait_text("#amo-log", "Yes, please")

    # The customer reacts to the manager's message; amoCRM shows the reaction.
    await page.click("#customer-log .bubble:not(.mine) .meta button")
    await page.wait_text("#amo-log", "👍")

    # A staff member's command is answered in their own chat, never in the customer's.
    await page.evaluate(
        "document.querySelector('#who').value = 'staff';"
        "document.querySelector('#who').dispatchEvent(new Event('change'))"
    )
    await page.type_into("#customer-input", "/status")
    await page.click("#customer-send")
    await page.wait_text("#customer-log", "Bridge status")
    assert "Bridge status" not in await page.text_of("#amo-log")
