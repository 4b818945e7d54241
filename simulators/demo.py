"""`make demo`: the real bridge against the simulators, and a page where you play both sides.

No account and no token: the simulators of Telegram, amojo and amoCRM run on 127.0.0.1, the
bridge (`python -m bot`, exactly as in production) is pointed at them, and a local page shows
a customer's Telegram chat beside the amoCRM chat. Write as the customer or as a staff member
on the left, as the manager on the right, and watch messages, photos, buttons, reactions,
typing, delivery statuses and the staff commands go through the bridge.

    python -m simulators.demo [--port 8090]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from simulators.amojo import FakeAmojo
from simulators.crm import FakeCrm
from simulators.demo_page import PAGE
from simulators.factories import (
    make_location,
    make_photo,
    make_reaction,
    make_update,
    make_user,
    private_message_update,
)
from simulators.telegram import FakeTelegram, RecordedCall

TOKEN = "100001:DEMO-token-not-a-real-one"
CHANNEL_ID = "0d3f5a9e-6c1b-4d2a-9f4e-7b8c9d0e1f2a"
CHANNEL_SECRET = "d" * 40
ACCOUNT_ID = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
CRM_TOKEN = "demo-crm-token"
CUSTOMER = make_user(5001, first_name="Ivan", last_name="Petrov", language_code="en")
STAFF = make_user(7001, first_name="Olga", last_name="Staff", language_code="en")
CONVERSATION = f"tg-{CUSTOMER['id']}"
TYPING_SHOWN_SECONDS = 5.0
STATUS_NAMES = {0: "sent", 1: "delivered", 2: "read", -1: "error"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def png(red: int, green: int, blue: int, size: int = 48) -> bytes:
    """A small one-colour PNG (the demo's photos and pictures)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    rows = b"".join(b"\x00" + bytes([red, green, blue]) * size for _ in range(size))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@dataclass
class Written:
    """A message the demo wrote for someone (a customer's update, a manager's hook)."""

    text: str
    kind: str
    at: float
    ref: str  # Telegram message id, or amo message id
    image: bytes | None = None


@dataclass
class Demo:
    """The simulators, the bridge's process, and what the page shows."""

    workdir: Path
    telegram: FakeTelegram = field(init=False)
    amojo: FakeAmojo = field(init=False)
    crm: FakeCrm = field(init=False)
    bridge_port: int = field(default_factory=free_port)
    bridge: asyncio.subprocess.Process | None = None
    written: dict[int, list[Written]] = field(default_factory=dict)
    manager: list[Written] = field(default_factory=list)
    _message_ids: dict[int, int] = field(default_factory=dict)

    @property
    def bridge_url(self) -> str:
        """The bridge's listener."""
        return f"http://127.0.0.1:{self.bridge_port}"

    async def start(self) -> None:
        """Start the simulators, then the bridge, and wait until it polls."""
        self.telegram = FakeTelegram(TOKEN)
        self.amojo = FakeAmojo(CHANNEL_ID, CHANNEL_SECRET, ACCOUNT_ID)
        self.crm = FakeCrm(CRM_TOKEN, ACCOUNT_ID)
        for server in (self.telegram, self.amojo, self.crm):
            await server.start()
        self.amojo.crm = self.crm  # one account: chats show up in the CRM too
        self.crm.add_talk(117)  # for `/talk 117`
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join(sys.path),
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": self.telegram.url,
            "AMOCRM_BASE_URL": self.crm.url,
            "AMOCRM_ACCESS_TOKEN": CRM_TOKEN,
            "AMOJO_BASE_URL": self.amojo.url,
            "AMOJO_CHANNEL_ID": CHANNEL_ID,
            "AMOJO_CHANNEL_SECRET": CHANNEL_SECRET,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.bridge_port),
            "PUBLIC_BASE_URL": self.bridge_url,
            "DATABASE_PATH": str(self.workdir / "demo.sqlite3"),
            "OPERATOR_IDS": str(STAFF["id"]),
            "LANGUAGE": "en",
            "LOG_LEVEL": "INFO",
        }
        self.bridge = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", env=env, cwd=self.workdir, stdin=asyncio.subprocess.DEVNULL
        )
        await self._wait_healthy()

    async def _wait_healthy(self, timeout: float = 90.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.bridge is not None and self.bridge.returncode is not None:
                    raise RuntimeError(f"the bridge exited with {self.bridge.returncode}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.bridge_url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError("the bridge did not become healthy in time")

    async def close(self) -> None:
        """Stop the bridge (SIGTERM, as systemd would), then the simulators."""
        if self.bridge is not None and self.bridge.returncode is None:
            self.bridge.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.bridge.wait(), 15)
            except TimeoutError:
                self.bridge.kill()
                await self.bridge.wait()
        for server in (self.telegram, self.amojo, self.crm):
            await server.close()

    # ---- what the page asks for ----------------------------------------------------------

    def customer_writes(self, chat: int, body: dict[str, Any]) -> None:
        """The customer (or the staff member) sends a message to the bot."""
        user = STAFF if chat == STAFF["id"] else CUSTOMER
        number = self._message_ids.get(chat, 0) + 1
        self._message_ids[chat] = number
        text = str(body.get("text") or "")
        image = None
        if body.get("kind") == "photo":
            image = png(70, 130, 200)
            file_id, unique = self.telegram.add_file(image)
            fields: dict[str, Any] = {"photo": make_photo(file_id, unique, len(image))}
            update = private_message_update(chat, number, caption=text or None, user=user, **fields)
            kind = "photo"
        elif body.get("kind") == "location":
            location = make_location(55.7539, 37.6208)
            update = private_message_update(chat, number, user=user, location=location)
            text, kind = "📍 55.7539, 37.6208", "location"
        else:
            update = private_message_update(chat, number, text=text, user=user)
            kind = "text"
        self.telegram.push_update(update)
        # Telegram's side is timed as the simulator times the bot's calls (monotonic).
        self.written.setdefault(chat, []).append(
            Written(text, kind, time.monotonic(), str(number), image)
        )

    def customer_reacts(self, message_id: int, emoji: str) -> None:
        """The customer reacts to the bot's (a manager's) message."""
        reaction = make_reaction(CUSTOMER["id"], message_id, new=[emoji], user=CUSTOMER)
        self.telegram.push_update(make_update("message_reaction", reaction))

    async def manager_writes(self, body: dict[str, Any]) -> int:
        """The manager answers in amoCRM: amojo sends the bridge a hook."""
        text = str(body.get("text") or "")
        kind = str(body.get("kind") or "text")
        image = None
        if kind == "picture":
            image = png(230, 120, 40)
            url = self.amojo.add_media(f"picture-{len(self.manager)}.png", "image/png", image)
            hook = self.amojo.message_hook(
                CONVERSATION, msg_type="picture", text=text, media=url, file_size=len(image)
            )
        elif kind == "buttons":
            rows = [[{"text": "Yes, please"}, {"text": "No, thanks"}]]
            hook = self.amojo.message_hook(
                CONVERSATION, text=text, markup={"mode": "inline", "buttons": rows}
            )
        else:
            hook = self.amojo.message_hook(CONVERSATION, text=text)
        amo_id = str(hook["message"]["message"]["id"])
        self.manager.append(Written(text, kind, time.time(), amo_id, image))
        status, _ = await self.amojo.post_hook(self.bridge_url, None, hook)
        return status

    async def manager_reacts(self, msgid: str, emoji: str) -> int:
        """The manager reacts to the customer's message."""
        hook = self.amojo.reaction_hook(CONVERSATION, client_msgid=msgid, emoji=emoji)
        return (await self.amojo.post_hook(self.bridge_url, None, hook))[0]

    async def manager_types(self) -> int:
        """The manager is typing in amoCRM."""
        return (
            await self.amojo.post_hook(self.bridge_url, None, self.amojo.typing_hook(CONVERSATION))
        )[0]

    def telegram_chat(self, chat: int) -> dict[str, Any]:
        """One Telegram chat as its user sees it."""
        entries: list[dict[str, Any]] = [
            {
                "from": "me",
                "text": w.text,
                "kind": w.kind,
                "id": w.ref,
                "at": w.at,
                "image": w.image is not None,
            }
            for w in self.written.get(chat, [])
        ]
        reactions: dict[int, str] = {}
        for call in self.telegram.calls_of("setMessageReaction", ok_only=True):
            if call.params.get("chat_id") == chat:
                emojis = [r.get("emoji", "") for r in call.params.get("reaction") or []]
                reactions[int(call.params["message_id"])] = "".join(emojis)
        sent = self.telegram.sent_messages(chat)
        for index, call in enumerate(sent):
            entries.append(self._bot_entry(chat, index, call))
        for entry in entries:
            if entry["from"] == "me":
                entry["reaction"] = reactions.get(int(entry["id"]), "")
        entries.sort(key=lambda entry: entry["at"])
        typing = [
            c.at
            for c in self.telegram.calls_of("sendChatAction", ok_only=True)
            if c.params.get("chat_id") == chat
        ]
        return {
            "messages": entries,
            "typing": bool(typing) and time.monotonic() - max(typing) < TYPING_SHOWN_SECONDS,
        }

    def _bot_entry(self, chat: int, index: int, call: RecordedCall) -> dict[str, Any]:
        markup = call.params.get("reply_markup") or {}
        if isinstance(markup, str):
            markup = {}
        buttons = [b.get("text", "") for row in markup.get("keyboard") or [] for b in row]
        buttons += [b.get("text", "") for row in markup.get("inline_keyboard") or [] for b in row]
        result = call.result if isinstance(call.result, dict) else {}
        method = call.method.lower().removeprefix("send").replace("message", "text")
        return {
            "from": "bot",
            "text": str(call.params.get("text") or call.params.get("caption") or ""),
            "kind": method,
            "id": str(result.get("message_id", "")),
            "at": call.at,
            "buttons": buttons,
            "image": f"/media/telegram/{chat}/{index}" if "photo" in call.files else None,
        }

    def amo_chat(self) -> dict[str, Any]:
        """The amoCRM chat with the customer as a manager sees it."""
        entries: list[dict[str, Any]] = []
        for stored in self.amojo.messages:
            if stored.get("conversation_id") != CONVERSATION:
                continue
            message = stored.get("message") or {}
            at = stored.get("msec_timestamp", 0) / 1000 or stored.get("timestamp") or 0
            entries.append(
                {
                    "from": "client",
                    "text": str(message.get("text") or ""),
                    "kind": message.get("type", "text"),
                    "id": stored.get("msgid"),
                    "at": float(at),
                    "media": message.get("media") or None,
                }
            )
        reactions: dict[str, str] = {}
        for reaction in self.amojo.reactions:
            key = str(reaction.get("id") or reaction.get("msgid") or "")
            reactions[key] = str(reaction.get("emoji") or "") if reaction["type"] == "react" else ""
        for index, written in enumerate(self.manager):
            statuses = self.amojo.statuses_for(written.ref)
            last = statuses[-1] if statuses else None
            status = STATUS_NAMES.get(last["status"], "?") if last else "waiting"
            if last and last.get("error"):
                status += f": {last['error']}"
            entries.append(
                {
                    "from": "manager",
                    "text": written.text,
                    "kind": written.kind,
                    "id": written.ref,
                    "at": written.at,
                    "status": status,
                    "status_code": last["status"] if last else None,
                    "reaction": reactions.get(written.ref, ""),
                    "media": f"/media/manager/{index}" if written.image else None,
                }
            )
        entries.sort(key=lambda entry: entry["at"])
        return {"messages": entries}


# ---- the page's HTTP side ---------------------------------------------------------------


DEMO = web.AppKey("demo", Demo)


async def page(request: web.Request) -> web.Response:
    """The two panes."""
    return web.Response(text=PAGE, content_type="text/html")


async def state(request: web.Request) -> web.Response:
    """Both chats, as JSON (the page polls it)."""
    demo = request.app[DEMO]
    return web.json_response(
        {
            "customer": demo.telegram_chat(CUSTOMER["id"]),
            "staff": demo.telegram_chat(STAFF["id"]),
            "amo": demo.amo_chat(),
            "bridge": demo.bridge_url,
        }
    )


async def act(request: web.Request) -> web.Response:
    """One action of the page: who does what."""
    demo = request.app[DEMO]
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="a JSON body is expected") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="a JSON object is expected")
    action = request.match_info["action"]
    status = 200
    if action == "customer":
        demo.customer_writes(CUSTOMER["id"], body)
    elif action == "staff":
        demo.customer_writes(STAFF["id"], body)
    elif action == "customer-react":
        demo.customer_reacts(int(body["id"]), str(body.get("emoji") or "👍"))
    elif action == "manager":
        status = await demo.manager_writes(body)
    elif action == "manager-react":
        status = await demo.manager_reacts(str(body["id"]), str(body.get("emoji") or "👍"))
    elif action == "manager-typing":
        status = await demo.manager_types()
    else:
        raise web.HTTPNotFound(text=f"no action {action}")
    return web.json_response({"bridge_answered": status})


async def media(request: web.Request) -> web.Response:
    """A picture as the other side received it."""
    demo = request.app[DEMO]
    index = int(request.match_info["index"])
    if request.match_info["side"] == "manager":
        image = demo.manager[index].image if index < len(demo.manager) else None
    else:
        sent = demo.telegram.sent_messages(int(request.match_info["chat"]))
        image = sent[index].files.get("photo") if index < len(sent) else None
    if image is None:
        raise web.HTTPNotFound()
    return web.Response(body=image, content_type="image/png")


@web.middleware
async def same_origin_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Only this page may drive the demo: another site open in the browser can neither post
    to it (a form or a text/plain fetch needs no preflight) nor read it via DNS rebinding."""
    port = request.url.port
    local = {f"127.0.0.1:{port}", f"localhost:{port}"}
    if request.host not in local:
        raise web.HTTPForbidden(text="the demo answers only as 127.0.0.1 or localhost")
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] not in local:
            raise web.HTTPForbidden(text="another site may not drive the demo")
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="application/json expected")
    return await handler(request)


def page_app(demo: Demo) -> web.Application:
    """The page's routes."""
    app = web.Application(middlewares=[same_origin_only])
    app[DEMO] = demo
    app.router.add_get("/", page)
    app.router.add_get("/api/state", state)
    app.router.add_post("/api/{action}", act)
    app.router.add_get("/media/{side:manager}/{index:\\d+}", media)
    app.router.add_get("/media/{side:telegram}/{chat:\\d+}/{index:\\d+}", media)
    return app


async def serve(port: int) -> None:
    """Run the demo until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    workdir = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    demo = Demo(workdir)
    runner = web.AppRunner(page_app(demo), access_log=None)
    try:
        print("demo: starting the simulators and the bridge …", flush=True)
        await demo.start()
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = runner.addresses[0][1]
        print(f"demo: open http://127.0.0.1:{bound}/ (Ctrl-C stops it)", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await demo.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    """`python -m simulators.demo`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8090, help="the page's port (0: any free)")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port))


if __name__ == "__main__":
    main()
