"""Recovery of manager messages whose hook was missed: read amojo's chat history after a gap.

A gap job (gaps.py) fans out into one job per conversation with recent customer activity;
each reads that chat's history (spec §5.3, newest first, 50 a page) back to the gap's start and
stores every message addressed to the customer, sent inside the gap, exactly as if its hook had
arrived: same job, same dedup key (`hook:{amo id}`), so a message that came both ways is
delivered once. Nothing older than the gap is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiolimiter import AsyncLimiter

from bot import ids
from bot.amocrm.amojo import AmojoClient, AmojoError
from bot.amocrm.channel import Channel
from bot.amocrm.hooks import HookRejected, hook_job
from bot.jobs.queues import RECOVERY_QUEUE
from bot.jobs.worker import Done, GiveUp, JobKind
from bot.limits import (
    AMOJO_HISTORY_PAGE_LIMIT,
    AMOJO_HISTORY_RATE_PER_SECOND,
    RECOVERY_MAX_PAGES,
)
from bot.manager.gaps import GAP_MARGIN_SECONDS, KIND_RECOVER_GAP
from bot.metrics import Metrics
from storage import ChatKey, Gap, Job, NewJob, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)

KIND_RECOVER_CHAT = "recovery.chat"
DAY = 24 * 60 * 60


def chat_job(gap_id: int, chat: ChatKey, since: float, until: float) -> NewJob:
    """The job reading one conversation's history for one gap."""
    return NewJob(
        queue=RECOVERY_QUEUE,
        kind=KIND_RECOVER_CHAT,
        lane=f"recover:{ids.key_text(chat)}",
        dedup_key=f"recover:{gap_id}:{ids.key_text(chat)}",
        payload={"gap_id": gap_id, **ids.chat_fields(chat), "since": since, "until": until},
    )


def _timestamp(entry: dict[str, Any]) -> float | None:
    msec = entry.get("msec_timestamp")
    if isinstance(msec, int | float) and not isinstance(msec, bool) and msec > 0:
        return float(msec) / 1000
    seconds = entry.get("timestamp")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
        return float(seconds)
    return None


def history_hook(
    entry: dict[str, Any], account_id: str, amo_chat_id: str, conversation_id: str
) -> dict[str, Any]:
    """A history entry in the shape of the outgoing message hook it stands for (spec §3.2)."""
    sent_at = _timestamp(entry) or 0.0
    return {
        "account_id": account_id,
        "time": int(sent_at),
        "recovered": True,
        "message": {
            "receiver": entry.get("receiver") or {},
            "sender": entry.get("sender") or {},
            "conversation": {"id": amo_chat_id, "client_id": conversation_id},
            "timestamp": int(sent_at),
            "msec_timestamp": int(sent_at * 1000),
            "message": entry.get("message") or {},
        },
    }


class HistoryRecovery:
    """Runs the recovery jobs (queue "recovery"), paced so live traffic keeps its room."""

    def __init__(
        self,
        repo: Repository,
        amojo: AmojoClient,
        channel: Channel,
        metrics: Metrics,
        *,
        lookback_days: int,
        rate: float = AMOJO_HISTORY_RATE_PER_SECOND,
        sources: Callable[[ChatKey], str | None] | None = None,
    ) -> None:
        self.sources = sources or (lambda chat: None)
        self.repo = repo
        self.amojo = amojo
        self.channel = channel
        self.metrics = metrics
        self.lookback = lookback_days * DAY
        self._pace = AsyncLimiter(rate, 1)

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds this recovery runs."""
        return {
            KIND_RECOVER_GAP: JobKind(run=self.fan_out),
            KIND_RECOVER_CHAT: JobKind(run=self.recover_chat),
        }

    async def fan_out(self, job: Job) -> Done:
        """One job per conversation whose customer wrote within the look-back window."""
        gap_id = int(job.payload["gap_id"])
        since = float(job.payload["started_at"]) - GAP_MARGIN_SECONDS
        until = float(job.payload["ended_at"]) + GAP_MARGIN_SECONDS
        targets = await self.repo.recovery_targets(time.time() - self.lookback)
        jobs = [chat_job(gap_id, target.key, since, until) for target in targets]
        logger.info("gap #%d: reading the history of %d conversation(s)", gap_id, len(jobs))

        async def record(tx: Transaction) -> None:
            await tx.set_gap_conversations(gap_id, len(jobs))
            if not jobs:
                self._finished(await tx.finish_gap(gap_id))

        return Done(followups=jobs, record=record)

    async def recover_chat(self, job: Job) -> Done:
        """Read one conversation's history back to the gap and store what it missed."""
        gap_id = int(job.payload["gap_id"])
        chat = ids.chat_of(job.payload)
        chat_id = chat.chat_id
        since, until = float(job.payload["since"]), float(job.payload["until"])
        amo_chat_id = await self._amo_chat_id(chat)
        missed: list[tuple[float, NewJob]] = []
        if amo_chat_id is not None:
            conversation_id = ids.conversation_id(chat)
            # History is newest first; reversed, it is the order amoCRM sent them in (also
            # among messages of one millisecond), which the stable sort below keeps.
            entries = await self._history_since(amo_chat_id, since + self._amojo_ahead())
            # History is dated by amojo's clock, the gap by ours: compare on amojo's.
            ahead = self._amojo_ahead()
            for entry in reversed(entries):
                sent_at = _timestamp(entry)
                message = entry.get("message")
                if not entry.get("receiver") or not isinstance(message, dict):
                    continue  # the customer's own messages (no receiver) are not ours to send
                if sent_at is None or not since + ahead <= sent_at <= until + ahead:
                    continue  # never send the past: only what the gap may have swallowed
                hook = history_hook(entry, self.channel.account_id, amo_chat_id, conversation_id)
                try:
                    stored = hook_job(hook, received_at=sent_at)
                except HookRejected as exc:  # an entry a live hook could not have carried either
                    logger.warning(
                        "gap #%d: history entry of chat %d skipped: %s", gap_id, chat_id, exc
                    )
                    continue
                missed.append((sent_at, stored))
        missed.sort(key=lambda pair: pair[0])  # delivered oldest first, as they were sent

        async def record(tx: Transaction) -> None:
            if amo_chat_id is not None:
                await tx.set_amo_chat_id(chat, amo_chat_id)
            recovered = await tx.enqueue([stored for _, stored in missed])
            self.metrics.recovery_conversations.inc()
            if recovered:
                self.metrics.recovery_messages.inc(recovered)
                logger.info(
                    "gap #%d: %d missed manager message(s) of chat %d recovered",
                    gap_id,
                    recovered,
                    chat_id,
                )
            self._finished(await tx.gap_conversation_scanned(gap_id, recovered))

        return Done(record=record)

    def _amojo_ahead(self) -> float:
        """Seconds amojo's clock is ahead of ours, as its answers show (0 when unknown)."""
        return self.amojo.clock_offset or 0.0

    def _finished(self, gap: Gap | None) -> None:
        """One log line and the duration, when the last conversation of a gap was read."""
        if gap is None or gap.finished_at is None or gap.scanned != (gap.conversations or 0):
            return
        self.metrics.recovery_seconds.observe(max(0.0, gap.finished_at - gap.created_at))
        logger.warning(
            "gap #%d recovered: %s → %s, %d conversation(s) read, %d message(s) recovered",
            gap.id,
            time.strftime("%H:%M:%S", time.gmtime(gap.started_at)),
            time.strftime("%H:%M:%S", time.gmtime(gap.ended_at)),
            gap.scanned,
            gap.recovered,
        )

    async def _amo_chat_id(self, chat: ChatKey) -> str | None:
        """amo's chat id, learned from hooks, else asked of amojo (spec §5.1 returns it)."""
        customer = await self.repo.get_customer(chat)
        if customer is None:
            return None
        if customer.amo_chat_id:
            return customer.amo_chat_id
        await self._pace.acquire()
        answer = await self.amojo.create_chat(
            self.channel.scope_id,
            ids.conversation_id(chat),
            {"id": ids.user_id(customer.user_id), "name": customer.name or "Telegram user"},
            source=self.sources(chat),
        )
        amo_chat_id = answer.get("id") if isinstance(answer, dict) else None
        return str(amo_chat_id) if amo_chat_id else None

    async def _history_since(self, amo_chat_id: str, since: float) -> list[dict[str, Any]]:
        """History entries, newest first, until one older than `since` (bounded in pages)."""
        entries: list[dict[str, Any]] = []
        for page in range(RECOVERY_MAX_PAGES):
            await self._pace.acquire()
            try:
                batch = await self.amojo.history(
                    self.channel.scope_id,
                    amo_chat_id,
                    offset=page * AMOJO_HISTORY_PAGE_LIMIT,
                    limit=AMOJO_HISTORY_PAGE_LIMIT,
                )
            except AmojoError as exc:
                if exc.status in (400, 404):
                    raise GiveUp(f"amojo cannot read chat {amo_chat_id}: {exc}") from exc
                raise
            entries += batch
            stamps = [t for t in map(_timestamp, batch) if t is not None]
            if len(batch) < AMOJO_HISTORY_PAGE_LIMIT or (stamps and min(stamps) < since):
                return entries
        logger.warning(
            "history of chat %s: stopped after %d pages without reaching the gap's start",
            amo_chat_id,
            RECOVERY_MAX_PAGES,
        )
        return entries
