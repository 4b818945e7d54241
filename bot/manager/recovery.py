"""Manager messages whose hook never came, read back from amojo's chat history.

Two ways find them (bot/manager/reconcile.py decides which): amoCRM's events feed names the
message ids that exist, and a chat job reads just those from the chat's history (`wanted`); or,
when the feed cannot be had, a gap (gaps.py) fans out into one job per conversation with
recent customer activity, each reading its chats' history back to the gap's start. Either way
a message is stored exactly as if its hook had arrived: same job, same dedup key (`hook:{amo
id}`), so a message that came both ways is delivered once. It takes its place in its chat's
lane by the time it was sent, ahead of newer messages still waiting there.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from aiolimiter import AsyncLimiter

from bot.amocrm.amojo import AmojoClient, AmojoError
from bot.amocrm.channel import Channel, amo_chat_ids
from bot.amocrm.hook_model import MessageHook, UnusableHook
from bot.amocrm.hooks import KIND_AMO_MESSAGE, HookRejected, hook_job
from bot.common import ids
from bot.common.limits import AMOJO_HISTORY_PAGE_LIMIT, RECOVERY_MAX_PAGES
from bot.common.metrics import Metrics
from bot.jobs.queues import RECOVERY_QUEUE
from bot.jobs.worker import Done, GiveUp, JobKind, RetryLater
from bot.manager.gaps import GAP_MARGIN_SECONDS, KIND_RECOVER_GAP
from storage import ChatKey, Gap, Job, NewJob, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)

KIND_RECOVER_CHAT = "recovery.chat"
DAY = 24 * 60 * 60
FAN_OUT_SLICE = 200  # conversations per transaction: the loop is never held for long
# Events cover a gap: (gap id, since, until) → how many chat jobs were stored, or None when
# the feed cannot be had (the gap is then read chat by chat).
EventsCover = Callable[[int, float, float], Awaitable[int | None]]


def recover_lane(chat: ChatKey | None, amo_chat_id: str | None = None) -> str:
    """The lane of one conversation's recovery (a live delivery there waits while it is busy)."""
    if chat is not None:
        return f"recover:{ids.key_text(chat)}"
    return f"recover:amo:{amo_chat_id}"


def chat_job(gap_id: int | None, chat: ChatKey, since: float) -> NewJob:
    """Read one conversation's chats back to `since` (a gap, when there is no events feed)."""
    return NewJob(
        queue=RECOVERY_QUEUE,
        kind=KIND_RECOVER_CHAT,
        lane=recover_lane(chat),
        dedup_key=f"recover:{gap_id}:{ids.key_text(chat)}",
        payload={"gap_id": gap_id, **ids.chat_fields(chat), "since": since},
    )


def wanted_job(
    gap_id: int | None,
    amo_chat_id: str,
    chat: ChatKey | None,
    wanted: Sequence[str],
    since: float,
) -> NewJob:
    """Read one amo chat for the messages the events feed named (`chat` None: a chat the
    bridge has not seen, such as a write-first one)."""
    digest = hashlib.sha1(",".join(sorted(wanted)).encode()).hexdigest()[:16]
    payload: dict[str, Any] = {
        "gap_id": gap_id,
        "amo_chat_id": amo_chat_id,
        "wanted": sorted(wanted),
        "since": since,
    }
    if chat is not None:
        payload.update(ids.chat_fields(chat))
    return NewJob(
        queue=RECOVERY_QUEUE,
        kind=KIND_RECOVER_CHAT,
        lane=recover_lane(chat, amo_chat_id),
        dedup_key=f"recover:ev:{amo_chat_id}:{digest}",
        payload=payload,
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
    entry: dict[str, Any], account_id: str, amo_chat_id: str, conversation_id: str | None
) -> dict[str, Any]:
    """A history entry in the shape of the outgoing message hook it stands for (spec §3.2).

    Without our conversation id (a chat the bridge has not seen) it is a write-first hook:
    the receiver's phone says whom it is for.
    """
    sent_at = _timestamp(entry) or 0.0
    conversation: dict[str, Any] = {"id": amo_chat_id}
    if conversation_id is not None:
        conversation["client_id"] = conversation_id
    return {
        "account_id": account_id,
        "time": int(sent_at),
        "recovered": True,
        "message": {
            "receiver": entry.get("receiver") or {},
            "sender": entry.get("sender") or {},
            "conversation": conversation,
            "timestamp": int(sent_at),
            "msec_timestamp": int(sent_at * 1000),
            "message": entry.get("message") or {},
        },
    }


def conversation_in(entries: list[dict[str, Any]]) -> ChatKey | None:
    """Our conversation, as the customer's messages in a history name it (their client_id
    is the msgid the bridge gave them: the conversation id and the Telegram message id)."""
    for entry in entries:
        message = entry.get("message")
        client_id = message.get("client_id") if isinstance(message, dict) else None
        if isinstance(client_id, str) and "-" in client_id:
            chat = ids.chat_from_conversation(client_id.rsplit("-", 1)[0])
            if chat is not None:
                return chat
    return None


def _sent_at(job: Job | NewJob) -> float | None:
    """When the manager message of a delivery job was sent (None: not a manager message)."""
    if job.kind != KIND_AMO_MESSAGE:
        return None
    try:
        return MessageHook.parse(job.payload.get("hook")).sent_at or None
    except UnusableHook:
        return None


async def place_in_order(tx: Transaction, jobs: Sequence[NewJob]) -> int:
    """Store recovered deliveries each at its place in its lane: before the first waiting
    manager message sent after it. Returns how many were new."""
    stored = 0
    for job in sorted(jobs, key=lambda job: _sent_at(job) or 0.0):
        sent_at = _sent_at(job) or 0.0
        waiting = await tx.pending_in_lane(job.queue, job.lane)
        placed = job
        for index, later in enumerate(waiting):
            later_sent = _sent_at(later)
            if later_sent is not None and later_sent > sent_at:
                before = waiting[index - 1].position if index else later.position - 1
                middle = (before + later.position) / 2
                if not before < middle < later.position:  # halved as far as floats go
                    waiting = await _spread(tx, waiting)
                    before = waiting[index - 1].position if index else waiting[0].position - 1
                    middle = (before + waiting[index].position) / 2
                placed = replace(job, pos=middle)
                break
        stored += sum(await tx.insert_jobs([placed]))
    return stored


async def _spread(tx: Transaction, waiting: list[Job]) -> list[Job]:
    """Give a lane's waiting jobs whole-number places again, in the same order, ending where
    the last one is (jobs added later, placed by their id, still come after)."""
    last = waiting[-1].position
    spread = [replace(job, pos=last - (len(waiting) - 1 - i)) for i, job in enumerate(waiting)]
    await tx.set_positions([(job.id, job.position) for job in spread])
    return spread


class ForeignChats:
    """amo chats of the account that are not this channel's (WhatsApp, another bridge): the
    events feed names their messages too, and each would cost a history read.

    Bounded, and each chat is forgotten after an hour: a chat of ours whose history was still
    empty when first read (amojo's lag) is read again for later messages.
    """

    LIMIT = 100_000
    FORGET_SECONDS = 60 * 60

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def add(self, amo_chat_id: str) -> None:
        """Remember a chat amojo does not know in this channel."""
        if len(self._seen) >= self.LIMIT:
            self._seen.clear()
        self._seen[amo_chat_id] = time.monotonic()

    def __contains__(self, amo_chat_id: object) -> bool:
        seen = self._seen.get(amo_chat_id) if isinstance(amo_chat_id, str) else None
        return seen is not None and time.monotonic() - seen < self.FORGET_SECONDS


class HistoryRecovery:
    """Runs the recovery jobs (queue "recovery"), within the reconciliation's request budget."""

    def __init__(
        self,
        repo: Repository,
        amojo: AmojoClient,
        channel: Channel,
        metrics: Metrics,
        *,
        lookback_days: int,
        budget: AsyncLimiter,
        events: EventsCover | None = None,
        sources: Callable[[ChatKey], str | None] | None = None,
        foreign: ForeignChats | None = None,
    ) -> None:
        self.foreign = foreign or ForeignChats()
        self.sources = sources or (lambda chat: None)
        self.repo = repo
        self.amojo = amojo
        self.channel = channel
        self.metrics = metrics
        self.lookback = lookback_days * DAY
        self.budget = budget
        self.events = events

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds this recovery runs."""
        return {
            KIND_RECOVER_GAP: JobKind(run=self.cover_gap),
            KIND_RECOVER_CHAT: JobKind(run=self.recover_chat),
        }

    async def _request(self) -> None:
        """Wait for a request of the budget (amojo's history, like the CRM's events)."""
        await self.budget.acquire()
        self.metrics.reconcile_requests.labels("amojo").inc()

    async def cover_gap(self, job: Job) -> Done:
        """Find what a gap swallowed: through the events feed, else chat by chat."""
        gap_id = int(job.payload["gap_id"])
        since = float(job.payload["started_at"]) - GAP_MARGIN_SECONDS
        until = float(job.payload["ended_at"]) + GAP_MARGIN_SECONDS
        if self.events is not None:
            chats = await self.events(gap_id, since, until)
            if chats is not None:
                return await self._counted(gap_id, chats, "through the events feed")
        return await self.fan_out(gap_id, since)

    async def fan_out(self, gap_id: int, since: float) -> Done:
        """One job per conversation whose customer wrote within the look-back window, stored a
        slice at a time; a conversation whose reading is still pending is not read twice."""
        active_since = time.time() - self.lookback
        after: ChatKey | None = None
        chats = 0
        while True:
            targets = await self.repo.recovery_targets(active_since, after, FAN_OUT_SLICE)
            if not targets:
                break
            after = targets[-1].key
            jobs = [chat_job(gap_id, target.key, since) for target in targets]
            async with self.repo.transaction() as tx:
                for job in jobs:
                    if await tx.pending_in_lane(job.queue, job.lane, 1):
                        continue  # its pending reading reaches back to this gap too
                    chats += sum(await tx.insert_jobs([job]))
            await asyncio.sleep(0)
        return await self._counted(gap_id, chats, "chat by chat")

    async def _counted(self, gap_id: int, chats: int, how: str) -> Done:
        logger.info("gap #%d: reading %d conversation(s) %s", gap_id, chats, how)

        async def record(tx: Transaction) -> None:
            await tx.set_gap_conversations(gap_id, chats)
            if not chats:
                self._finished(await tx.finish_gap(gap_id))

        return Done(record=record)

    async def recover_chat(self, job: Job) -> Done:
        """Read a conversation's chats and store the manager messages it never got."""
        payload = job.payload
        gap_id = payload.get("gap_id")
        chat = ids.chat_of(payload) if "chat_id" in payload else None
        wanted = {str(amo_id) for amo_id in payload.get("wanted") or []}
        since = float(payload["since"])
        if "amo_chat_id" in payload:
            amo_chats = [str(payload["amo_chat_id"])]
        else:
            assert chat is not None
            since = min(since, await self._unfinished_since(since))
            amo_chats = await self._amo_chats(chat)
        missed: list[NewJob] = []
        learned: list[str] = []
        for amo_chat_id in amo_chats:
            entries = await self._history_since(amo_chat_id, since, wanted)
            if entries is None or (wanted and not entries and chat is None):
                self.foreign.add(amo_chat_id)  # amojo has no such chat in this channel
                continue
            if chat is None:
                # A chat the bridge never saw: the customer's own messages in it name our
                # conversation (their client_id is our msgid); none there means write-first.
                chat = conversation_in(entries)
            learned.append(amo_chat_id)
            missed += self._missed(entries, amo_chat_id, chat, since, wanted)
        known = await self.repo.known_message_ids([m.dedup_key[5:] for m in missed])
        missed = [m for m in missed if m.dedup_key[5:] not in known]

        async def record(tx: Transaction) -> None:
            if chat is not None:
                for amo_chat_id in learned:
                    await tx.set_amo_chat_id(chat, amo_chat_id)
            recovered = await place_in_order(tx, missed)
            self.metrics.recovery_conversations.inc()
            if recovered:
                self.metrics.recovery_messages.inc(recovered)
                self.metrics.reconcile_missing.inc(recovered)
                logger.warning(
                    "%d manager message(s) of %s never came by hook: recovered from history",
                    recovered,
                    ids.key_text(chat) if chat is not None else f"amo chat {amo_chats[0]}",
                )
            if gap_id is not None:
                self._finished(await tx.gap_conversation_scanned(int(gap_id), recovered))

        return Done(record=record)

    def _missed(
        self,
        entries: list[dict[str, Any]],
        amo_chat_id: str,
        chat: ChatKey | None,
        since: float,
        wanted: set[str],
    ) -> list[NewJob]:
        conversation_id = ids.conversation_id(chat) if chat is not None else None
        # History is dated by amojo's clock, the window by ours: compare on amojo's.
        ahead = self.amojo.clock_offset or 0.0
        found = []
        for entry in reversed(entries):  # oldest first, the order amoCRM sent them in
            message = entry.get("message")
            if not entry.get("receiver") or not isinstance(message, dict):
                continue  # the customer's own messages (no receiver) are not ours to send
            if message.get("client_id"):
                continue  # the bridge sent it itself (an imported Business owner's message)
            if wanted:
                if message.get("id") not in wanted:
                    continue
            else:
                sent_at = _timestamp(entry)
                if sent_at is None or sent_at < since + ahead:
                    continue  # never send the past: only what the gap may have swallowed
            hook = history_hook(entry, self.channel.account_id, amo_chat_id, conversation_id)
            try:
                found.append(hook_job(hook, received_at=_timestamp(entry) or time.time()))
            except HookRejected as exc:  # an entry a live hook could not have carried either
                logger.warning("history entry of amo chat %s skipped: %s", amo_chat_id, exc)
        return found

    async def _unfinished_since(self, since: float) -> float:
        """The start of the oldest gap still being read (gaps merge into pending readings)."""
        oldest = await self.repo.unfinished_gaps_since()
        return since if oldest is None else oldest - GAP_MARGIN_SECONDS

    def _finished(self, gap: Gap | None) -> None:
        """One log line and the duration, when the last conversation of a gap was read."""
        if gap is None or gap.finished_at is None or gap.scanned != (gap.conversations or 0):
            return
        self.metrics.recovery_seconds.observe(max(0.0, gap.finished_at - gap.created_at))
        logger.log(
            logging.WARNING if gap.recovered else logging.INFO,
            "gap #%d recovered: %s → %s, %d conversation(s) read, %d message(s) recovered",
            gap.id,
            time.strftime("%H:%M:%S", time.gmtime(gap.started_at)),
            time.strftime("%H:%M:%S", time.gmtime(gap.ended_at)),
            gap.scanned,
            gap.recovered,
        )

    async def _amo_chats(self, chat: ChatKey) -> list[str]:
        """Every amo chat of a conversation; asked of amojo when none was seen (spec §5.1)."""
        return await amo_chat_ids(
            self.repo, self.amojo, self.channel, chat, self.sources(chat), self._request
        )

    async def _history_since(
        self, amo_chat_id: str, since: float, wanted: set[str]
    ) -> list[dict[str, Any]] | None:
        """History entries, newest first, back to `since` or until every wanted message was
        seen (bounded in pages); None when amojo says the chat is not this channel's."""
        entries: list[dict[str, Any]] = []
        missing = set(wanted)
        ahead = self.amojo.clock_offset or 0.0
        for page in range(RECOVERY_MAX_PAGES):
            await self._request()
            try:
                batch = await self.amojo.history(
                    self.channel.scope_id,
                    amo_chat_id,
                    offset=page * AMOJO_HISTORY_PAGE_LIMIT,
                    limit=AMOJO_HISTORY_PAGE_LIMIT,
                )
            except AmojoError as exc:
                # 403 is a refused signature or amojo's rate block (spec §9.3): retried below.
                if exc.status in (400, 404) and wanted:
                    logger.info("amo chat %s is not this channel's (%s)", amo_chat_id, exc)
                    return None
                if exc.status in (400, 404):
                    raise GiveUp(f"amojo cannot read chat {amo_chat_id}: {exc}") from exc
                if exc.retryable:
                    raise RetryLater(f"amojo history of {amo_chat_id}: {exc}") from exc
                raise
            entries += batch
            for entry in batch:
                message = entry.get("message")
                if isinstance(message, dict):
                    missing.discard(str(message.get("id")))
            stamps = [t for t in map(_timestamp, batch) if t is not None]
            if len(batch) < AMOJO_HISTORY_PAGE_LIMIT or (stamps and min(stamps) < since + ahead):
                return entries
            if wanted and not missing:
                return entries
        logger.warning(
            "history of chat %s: stopped after %d pages without reaching the gap's start",
            amo_chat_id,
            RECOVERY_MAX_PAGES,
        )
        return entries
