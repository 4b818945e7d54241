"""amojo hook listener: verify the signature, store the raw hook durably, answer 200 (spec §3)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.amocrm.amojo import verify_hook_signature
from bot.amocrm.hook_model import MessageHook, UnusableHook
from bot.common import ids
from bot.common.limits import HOOK_BODY_TIMEOUT_SECONDS as BODY_TIMEOUT
from bot.common.metrics import Metrics
from bot.jobs.queues import TELEGRAM_QUEUE
from bot.jobs.throttle import HookTraffic
from storage import NewJob, Repository, StorageUnavailable, is_outage

if TYPE_CHECKING:
    from bot.amocrm.channel import Channel

logger = logging.getLogger(__name__)

KIND_AMO_MESSAGE = "amo.message"
KIND_AMO_TYPING = "amo.typing"
KIND_AMO_REACTION = "amo.reaction"


class HookNotStored(Exception):
    """The hook was not stored (the listener stopped first)."""


class HookRejected(Exception):
    """The request is not a hook we accept; nothing is stored."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HookRejected(400, f"{where} must be an object")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise HookRejected(400, f"{where} must be a non-empty string")
    return value


def hook_lane(conversation: dict[str, Any]) -> str:
    """Our chat's lane when the hook names one of our conversations, else the amo chat's lane."""
    chat = ids.chat_from_conversation(conversation.get("client_id"))
    if chat is not None:
        return ids.chat_lane(chat)
    return f"amo:{conversation.get('id')}"


def hook_job(hook: Any, received_at: float, max_age: float | None = None) -> NewJob:
    """The durable job for a decoded hook; raises HookRejected for anything unknown.

    A message hook is stored in its canonical form (hook_model.py): a field of the wrong type
    is dropped there, never a reason to refuse it (amojo does not send it again). `max_age`:
    a hook dated further back is refused (a replay outliving its dedup key).
    """
    hook = _object(hook, "hook")
    if "message" in hook:
        try:
            read = MessageHook.parse(hook)
        except UnusableHook as exc:
            raise HookRejected(400, str(exc)) from None
        if max_age is not None and read.sent_at and received_at - read.sent_at > max_age:
            raise HookRejected(
                400,
                f"message {read.amo_id} was sent {int((received_at - read.sent_at) // 86400)} "
                "days ago, longer than duplicates are remembered: a replay?",
            )
        if read.dropped:
            logger.warning(
                "hook of message %s: unusable field(s) dropped: %s",
                read.amo_id,
                ", ".join(read.dropped),
            )
        conversation = {"id": read.conversation_amo_id, "client_id": read.conversation_client_id}
        return NewJob(
            queue=TELEGRAM_QUEUE,
            kind=KIND_AMO_MESSAGE,
            lane=hook_lane(conversation),
            dedup_key=f"hook:{read.amo_id}",
            payload={"hook": read.as_hook(), "received_at": received_at},
        )
    payload = {"hook": hook, "received_at": received_at}
    sent = hook.get("time")
    if max_age is not None and isinstance(sent, int | float) and received_at - sent > max_age:
        raise HookRejected(400, "the hook is older than duplicates are remembered: a replay?")
    action = _object(hook.get("action"), "action")
    if "typing" in action:
        typing = _object(action["typing"], "action.typing")
        conversation = _object(typing.get("conversation"), "action.typing.conversation")
        conversation_id = _string(conversation.get("id"), "action.typing.conversation.id")
        return NewJob(
            queue=TELEGRAM_QUEUE,
            kind=KIND_AMO_TYPING,
            lane=hook_lane(conversation),
            dedup_key=f"typing:{conversation_id}:{typing.get('expired_at')}",
            payload=payload,
        )
    if "reaction" in action:
        reaction = _object(action["reaction"], "action.reaction")
        conversation = _object(reaction.get("conversation"), "action.reaction.conversation")
        _string(conversation.get("id"), "action.reaction.conversation.id")
        # [DOC-CONFLICT] spec §3.5: the field table has `message{id, client_id}`, the example
        # has a bare `msgid`; accept both.
        target = reaction.get("message")
        if isinstance(target, dict):
            message_ref = target.get("client_id") or target.get("id")
        else:
            message_ref = reaction.get("msgid")
        message_ref = _string(message_ref, "action.reaction.message.id or msgid")
        # [DOC-CONFLICT] as for typing, the user may sit in the reaction or in the action.
        user = reaction.get("user") or action.get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
        kind = _string(reaction.get("type"), "action.reaction.type")
        emoji = reaction.get("emoji", "")
        key = f"{message_ref}:{user_id}:{kind}:{emoji}:{hook.get('time')}"
        return NewJob(
            queue=TELEGRAM_QUEUE,
            kind=KIND_AMO_REACTION,
            lane=hook_lane(conversation),
            dedup_key=f"reaction:{key}",
            payload=payload,
        )
    raise HookRejected(400, "not a message, typing or reaction hook")


_ANSWERS = {outcome: f'{{"status":"{outcome}"}}'.encode() for outcome in ("accepted", "duplicate")}


class HookReceiver:
    """The `POST /amojo/{scope_id}` route: no network calls, one SQLite insert."""

    def __init__(
        self,
        repo: Repository,
        channel: Channel,
        secret: str,
        metrics: Metrics,
        traffic: HookTraffic | None = None,
        on_not_stored: Callable[[float], None] | None = None,
        on_stored: Callable[[], Awaitable[None]] | None = None,
        max_age: float | None = None,
    ) -> None:
        self.max_age = max_age
        self.on_stored = on_stored
        self.on_not_stored = on_not_stored
        self.traffic = traffic or HookTraffic()
        self.repo = repo
        self.channel = channel
        self.secret = secret
        self.metrics = metrics
        self._pending: list[tuple[NewJob, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def store(self, job: NewJob) -> bool:
        """Insert the job durably; False when it was already stored (same dedup key).

        Hooks that arrive together share one transaction (group commit), so a burst does not
        queue up one commit per hook behind the workers' writes.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((job, future))
        # A flusher that is done returned only after finding nothing pending (no await in
        # between): what is pending now is this hook's, and only a new flusher answers it.
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="hook-store")
            self._flusher.add_done_callback(self._cancelled_before_start)
        return await future

    def _cancelled_before_start(self, flusher: asyncio.Task[None]) -> None:
        """A flusher cancelled before it ran took nothing: unless a newer one takes over what
        is pending, whoever waits gets an answer (the listener is stopping)."""
        if not flusher.cancelled() or flusher is not self._flusher:
            return
        for _, future in self._pending:
            if not future.done():
                future.set_exception(HookNotStored("the listener is stopping"))
        self._pending = []

    async def _flush(self) -> None:
        batch: list[tuple[NewJob, asyncio.Future[bool]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._store_batch(batch)
                except StorageUnavailable as exc:
                    # The database itself refuses (locked, full, read-only): every hook of the
                    # batch would wait for it again; amojo waits 5 s at most for an answer.
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                except Exception:
                    # One hook that cannot be stored must not take the rest of its batch along.
                    logger.warning("a batch of %d hooks failed; storing one by one", len(batch))
                    for entry in batch:
                        try:
                            await self._store_batch([entry])
                        except Exception as exc:
                            if not entry[1].done():
                                entry[1].set_exception(exc)
                batch = []
        except BaseException:
            # Cancelled (the process stops): whoever waits here gets an answer, not a hang.
            for _, future in batch + self._pending:
                if not future.done():
                    future.set_exception(HookNotStored("the listener is stopping"))
            self._pending = []
            raise

    async def _store_batch(self, batch: list[tuple[NewJob, asyncio.Future[bool]]]) -> None:
        inserted = await self.repo.insert_jobs([job for job, _ in batch])
        for (_, future), new in zip(batch, inserted, strict=True):
            if not future.done():
                future.set_result(new)

    async def receive(self, request: web.Request) -> web.Response:
        """Verify, store and acknowledge one hook (amojo sends it once and never retries)."""
        with self.traffic.answering(), self.metrics.hook_answer_seconds.time():
            return await self._receive(request)

    async def _receive(self, request: web.Request) -> web.Response:
        try:
            job = await self._accept(request)
        except HookRejected as exc:
            self.metrics.hooks_received.labels(f"rejected_{exc.status}").inc()
            logger.warning("hook rejected (%d): %s", exc.status, exc.reason)
            return web.json_response({"error": exc.reason}, status=exc.status)
        try:
            inserted = await self.store(job)
        except Exception as exc:
            # Answering non-200 loses the hook (no retries), but 200 without storing it would too;
            # at least amoCRM then shows the message as not delivered.
            if is_outage(exc):  # logged once per outage by the repository
                logger.info("hook %s not stored: %s", job.dedup_key, exc)
            else:
                logger.exception("hook %s could not be stored", job.dedup_key)
            if self.on_not_stored is not None:
                self.on_not_stored(time.time())  # a gap: recovered from history later
            self.metrics.hooks_received.labels("storage_error").inc()
            return web.json_response({"error": "storage unavailable"}, status=503)
        outcome = "accepted" if inserted else "duplicate"
        if self.on_stored is not None:
            await self.on_stored()
        self.metrics.hooks_received.labels(outcome).inc()
        logger.debug("hook %s %s", job.dedup_key, outcome)
        return web.Response(body=_ANSWERS[outcome], content_type="application/json")

    async def _accept(self, request: web.Request) -> NewJob:
        if request.match_info["scope_id"] != self.channel.scope_id:
            raise HookRejected(404, "unknown scope_id")
        try:
            async with asyncio.timeout(BODY_TIMEOUT):  # a body dripping in holds no slot
                body = await request.read()
        except TimeoutError:
            raise HookRejected(
                408, f"the body did not arrive within {BODY_TIMEOUT:.0f} s"
            ) from None
        if not verify_hook_signature(self.secret, body, request.headers.get("X-Signature")):
            raise HookRejected(401, "bad or missing X-Signature")
        try:
            hook = json.loads(body)
        except (ValueError, RecursionError):  # nested deeper than any hook: not one
            raise HookRejected(400, "body is not JSON (or nested too deep)") from None
        return hook_job(hook, time.time(), self.max_age)
