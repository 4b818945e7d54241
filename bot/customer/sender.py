"""Worker side of Telegram → amoCRM: push stored customer messages and edits to amojo."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.amocrm.amojo import AmojoClient, AmojoError
from bot.amocrm.channel import Channel
from bot.common import ids
from bot.customer.files import FileLinks
from bot.customer.intake import KIND_EDIT_MESSAGE, KIND_NEW_MESSAGE
from bot.jobs.queues import KIND_OWNER_MESSAGE
from bot.jobs.worker import Done, GiveUp, JobKind
from storage import ChatKey, Customer, Job, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)


def looks_like_duplicate(body: str) -> bool:
    """Whether a 400 from amojo says the msgid already exists, not that the data is bad.

    The error body is undocumented (spec §4.3). Only words that really say "duplicate" count:
    a 400 about the msgid's format, or anything else, is a rejection and is dead-lettered with
    its reason, so nothing is dropped silently as "already delivered".
    """
    text = body.lower()
    return "duplicate" in text or "already exist" in text


class CustomerMessageSender:
    """Sends customer messages with their deterministic msgid, so retries cannot duplicate."""

    def __init__(
        self,
        repo: Repository,
        amojo: AmojoClient,
        channel: Channel,
        files: FileLinks,
        sources: Callable[[ChatKey], str | None] | None = None,
        author_of: Callable[[int], Awaitable[str]] | None = None,
    ) -> None:
        self.repo = repo
        self.amojo = amojo
        self.channel = channel
        self.files = files
        # The amoCRM source external id of a chat's bot (None: the channel's default source);
        # it raises RetryLater while the sources are not checked yet.
        self.sources = sources or (lambda key: None)
        # The amojo id an owner's own Business messages are imported under (GiveUp: none).
        self.author_of = author_of

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds this sender runs."""
        return {
            KIND_NEW_MESSAGE: JobKind(run=self.send_new_message),
            KIND_EDIT_MESSAGE: JobKind(run=self.send_edit),
            KIND_OWNER_MESSAGE: JobKind(run=self.send_owner_message),
        }

    def _attach_media(
        self, key: ChatKey, payload: dict[str, Any], media: dict[str, Any] | None
    ) -> None:
        if media:
            payload["message"]["media"] = self.files.url(
                media["file_id"],
                media["file_name"],
                media["mime_type"],
                media["file_size"],
                bot=key.bot,
            )

    async def send_new_message(self, job: Job) -> Done:
        """`new_message` for one customer message."""
        key, payload, customer = await self._prepare(job)
        if customer is not None:
            if customer.phone:
                payload["sender"].setdefault("profile", {})["phone"] = customer.phone
            if customer.amo_conversation_id:
                # Write-first: amo created the chat; binding both ids keeps one chat (spec §3.3).
                payload["conversation_ref_id"] = customer.amo_conversation_id
            if customer.amo_user_id:
                payload["sender"]["ref_id"] = customer.amo_user_id
        return await self._send(job, key, payload)

    async def send_owner_message(self, job: Job) -> Done:
        """`new_message`, outgoing, for what a Business account's owner typed in Telegram."""
        if self.author_of is None:
            raise GiveUp("no author for a Business owner's message: set AMOJO_BOT_ID")
        author = await self.author_of(int(job.payload["owner_id"]))
        key, payload, customer = await self._prepare(job)
        payload["sender"]["ref_id"] = author
        if customer is not None:
            if customer.amo_conversation_id:
                payload["conversation_ref_id"] = customer.amo_conversation_id
            if customer.amo_user_id:
                payload["receiver"]["ref_id"] = customer.amo_user_id
        return await self._send(job, key, payload)

    async def _prepare(self, job: Job) -> tuple[ChatKey, dict[str, Any], Customer | None]:
        """A stored `new_message` with its media link and source, and the chat's customer."""
        key = ids.chat_of(job.payload)
        payload: dict[str, Any] = job.payload["payload"]
        self._attach_media(key, payload, job.payload.get("media"))
        source = self.sources(key)
        if source is not None:
            payload["source"] = {"external_id": source}
        return key, payload, await self.repo.get_customer(key)

    async def _send(self, job: Job, key: ChatKey, payload: dict[str, Any]) -> Done:
        """POST one `new_message`; amo's id for it is kept with the message pair."""
        msgid = payload["msgid"]
        try:
            answer = await self.amojo.send_event(self.channel.scope_id, "new_message", payload)
        except AmojoError as exc:
            if exc.status == 400 and job.attempts > 0 and looks_like_duplicate(exc.body):
                # amojo refuses a repeated msgid (spec §10). An earlier attempt of this very job
                # may have landed with its answer lost, so this refusal means "already there".
                logger.warning("msgid %s refused after a retry, taken as delivered: %s", msgid, exc)
                return Done()
            if not exc.retryable:
                raise GiveUp(f"amojo rejected message {msgid}: {exc}") from exc
            raise
        amo_id = answer.get("new_message", {}).get("msgid") if isinstance(answer, dict) else None
        logger.info("delivered %s (chat %d) to amoCRM as %s", msgid, key.chat_id, amo_id)
        if not amo_id:
            return Done()

        async def record(tx: Transaction) -> None:
            await tx.set_amo_message_id(msgid, str(amo_id))

        return Done(record=record)

    async def send_edit(self, job: Job) -> Done:
        """`edit_message` for an edited customer message."""
        payload: dict[str, Any] = job.payload["payload"]
        self._attach_media(ids.chat_of(job.payload), payload, job.payload.get("media"))
        try:
            await self.amojo.send_event(self.channel.scope_id, "edit_message", payload)
        except AmojoError as exc:
            if not exc.retryable:
                raise GiveUp(f"amojo rejected the edit of {payload['msgid']}: {exc}") from exc
            raise
        logger.info("edit of %s delivered to amoCRM", payload["msgid"])
        return Done()
