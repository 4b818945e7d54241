"""Steady two-way traffic for the drills and the checks that nothing was lost or repeated."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from dataclasses import dataclass, field

from simulators.factories import private_message_update
from tests.harness import Fakes, wait_until

MANAGER_TEXT = re.compile(r"m(\d+)-(\d+)")


@dataclass(slots=True)
class Hook:
    """One manager message posted to the bridge and how the bridge answered it."""

    chat: int
    text: str
    amo_id: str
    status: int
    telegram_down: bool


@dataclass
class TwoWayTraffic:
    """Customers writing in Telegram and managers answering in amoCRM, round robin over chats.

    Managers write at most one message per chat per `manager_every` seconds: Telegram allows
    about one message a second to one chat, so a faster pace would only grow the backlog.
    """

    fakes: Fakes
    bridge_url: str
    scope_id: str
    chats: tuple[int, ...]
    customer_every: float = 0.2
    manager_every: float = 1.0
    customer_sent: dict[int, list[str]] = field(default_factory=dict)
    hooks: list[Hook] = field(default_factory=list)
    customer_rounds: int = 0
    manager_rounds: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _message_id: int = 100
    _serial: int = 0

    def __post_init__(self) -> None:
        self.customer_sent = {chat: [] for chat in self.chats}

    def start(self) -> None:
        """Begin writing in both directions."""
        self._tasks = [
            asyncio.create_task(self._customers(), name="customers"),
            asyncio.create_task(self._managers(), name="managers"),
        ]

    async def stop(self) -> None:
        """Finish the current rounds and stop writing."""
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _customers(self) -> None:
        while not self._stop.is_set():
            for chat in self.chats:
                self._message_id += 1
                self.fakes.telegram.push_update(
                    private_message_update(chat, self._message_id, text=f"c{self._message_id}")
                )
                self.customer_sent[chat].append(f"tg-{chat}-{self._message_id}")
            self.customer_rounds += 1
            await self._pause(self.customer_every)

    async def manager_writes(self, chat: int) -> None:
        """One manager message to a chat, posted as amojo does: once, never re-sent."""
        self._serial += 1
        text = f"m{chat}-{self._serial}"
        amo_id = f"amo-{self._serial}"
        hook = self.fakes.amojo.message_hook(f"tg-{chat}", text=text, msg_id=amo_id)
        telegram_down = self.fakes.telegram.down
        status, _ = await self.fakes.amojo.post_hook(self.bridge_url, self.scope_id, hook)
        self.hooks.append(Hook(chat, text, amo_id, status, telegram_down))

    async def _managers(self) -> None:
        while not self._stop.is_set():
            for chat in self.chats:
                await self.manager_writes(chat)
            self.manager_rounds += 1
            await self._pause(self.manager_every)

    async def rounds(self, customers: int = 0, managers: int = 0, timeout: float = 15.0) -> None:  # noqa: ASYNC109
        """Wait until both sides have written this many more rounds."""
        target = (self.customer_rounds + customers, self.manager_rounds + managers)
        await wait_until(
            lambda: self.customer_rounds >= target[0] and self.manager_rounds >= target[1],
            timeout=timeout,
            what=f"{customers} customer and {managers} manager rounds",
        )

    def manager_texts(self, chat: int) -> list[str]:
        """Manager messages of one chat in the order they were written."""
        return [hook.text for hook in self.hooks if hook.chat == chat]

    def customer_msgids(self) -> set[str]:
        """Every customer message written."""
        return {msgid for sent in self.customer_sent.values() for msgid in sent}

    async def wait_all_delivered(self, timeout: float = 40.0) -> None:  # noqa: ASYNC109
        """Wait until amojo has every customer message, Telegram every manager message and
        amojo a delivery status for each of them."""
        expected_customer = self.customer_msgids()
        expected_manager = {hook.text for hook in self.hooks}
        amo_ids = [hook.amo_id for hook in self.hooks]

        def amojo_has_all() -> bool:
            return expected_customer <= {m["msgid"] for m in self.fakes.amojo.messages}

        def telegram_has_all() -> bool:
            sent = {str(c.params.get("text", "")) for c in self.fakes.telegram.sent_messages()}
            return expected_manager <= sent

        def statuses_reported() -> bool:
            return all(self.fakes.amojo.statuses_for(amo_id) for amo_id in amo_ids)

        await wait_until(amojo_has_all, timeout=timeout, what="every customer message in amojo")
        await wait_until(telegram_has_all, timeout=timeout, what="every manager message sent")
        await wait_until(statuses_reported, timeout=timeout, what="every delivery status")

    def assert_exactly_once_in_order(self) -> None:
        """Each message arrived once, in the order it was written in its conversation."""
        amojo_counts = Counter(m["msgid"] for m in self.fakes.amojo.messages)
        repeated = {msgid: n for msgid, n in amojo_counts.items() if n > 1}
        assert not repeated, f"customer messages stored twice in amojo: {repeated}"
        for chat in sorted({*self.chats, *(hook.chat for hook in self.hooks)}):
            written = self.customer_sent.get(chat, [])
            arrived = [
                m["msgid"]
                for m in self.fakes.amojo.messages_for(f"tg-{chat}")
                if m["msgid"] in written
            ]
            assert arrived == written, f"customer order in chat {chat}"
            sent = [
                str(c.params["text"])
                for c in self.fakes.telegram.sent_messages(chat)
                if MANAGER_TEXT.fullmatch(str(c.params.get("text", "")))
            ]
            assert sent == self.manager_texts(chat), f"manager messages in chat {chat}"
        for hook in self.hooks:
            statuses = [s["status"] for s in self.fakes.amojo.statuses_for(hook.amo_id)]
            assert statuses == [1], f"delivery statuses of {hook.amo_id}: {statuses}"
