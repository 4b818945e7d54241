"""Dead letters for operators: list them (`/failed`) and put them back in their queue (`/retry`).

Re-driving never duplicates a delivered message: a customer message keeps its deterministic
amojo msgid (amojo refuses a repeat, which the sender takes as delivered), and a manager
message skips every part whose Telegram message id was recorded when Telegram accepted it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.common import ids
from bot.common.bots import Bots
from bot.common.metrics import Metrics
from bot.common.texts import Language, staff_language, text
from bot.staff.commands import format_age
from storage import Job, JobState, Repository
from storage.crm import AuditEntry, record_audit

logger = logging.getLogger(__name__)

FAILED_LIST_LIMIT = 20
REASON_CHARS = 160


@dataclass(frozen=True, slots=True)
class Caller:
    """The operator who asked, for the audit."""

    user_id: int
    chat_id: int
    message_id: int
    bot: int = 0
    language_code: str | None = None  # their Telegram language (None: the default)


def job_reference(job: Job, language: Language) -> str:
    """The ids that tie a job to both sides: our amojo msgid, or amo's message id."""
    payload: dict[str, Any] = job.payload
    inner = payload.get("payload")
    if isinstance(inner, dict) and isinstance(inner.get("msgid"), str):
        return f"msgid {inner['msgid']}"
    hook = payload.get("hook")
    if isinstance(hook, dict):
        message = (hook.get("message") or {}).get("message") or {}
        if isinstance(message, dict) and message.get("id"):
            return text("staff.failed.amo_message", language, id=message["id"])
    if payload.get("amo_id"):
        return text("staff.failed.amo_message", language, id=payload["amo_id"])
    return text("staff.failed.lane", language, lane=job.lane)


def job_bot(job: Job) -> int | None:
    """The bot a job belongs to (its key), when the job names a chat."""
    payload: dict[str, Any] = job.payload
    if "chat_id" in payload:
        return ids.chat_of(payload).bot
    invocation = payload.get("invocation")
    if isinstance(invocation, dict):
        return int(invocation.get("bot") or ids.PRIMARY)
    hook = payload.get("hook")
    if isinstance(hook, dict):
        for holder in (hook.get("message"), (hook.get("action") or {}).get("typing")):
            if isinstance(holder, dict) and isinstance(holder.get("conversation"), dict):
                chat = ids.chat_from_conversation(holder["conversation"].get("client_id"))
                if chat is not None:
                    return chat.bot
    return None


def format_failed(
    jobs: list[Job],
    total: int,
    now: float,
    language: Language,
    bot_label: Callable[[int], str] | None = None,
) -> str:
    """The reply to `/failed`: newest dead letters first, one line each.

    With `bot_label` (several bots), each line also says which bot the job belongs to.
    """
    if not jobs:
        return text("staff.failed.none", language)
    title = text("staff.failed.title", language, total=total)
    if total > len(jobs):
        title += text("staff.failed.newest", language, shown=len(jobs))
    lines = [title]
    for job in jobs:
        reason = (job.last_error or "").replace("\n", " ")
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 1] + "…"
        key = job_bot(job) if bot_label is not None else None
        bot = (
            text("staff.failed.bot", language, label=bot_label(key))
            if bot_label is not None and key is not None
            else ""
        )
        lines.append(
            text(
                "staff.failed.line",
                language,
                id=job.id,
                queue=job.queue,
                kind=job.kind,
                reference=job_reference(job, language),
                bot=bot,
                attempts=job.attempts,
                age=format_age(now - job.updated_at, language),
                reason=reason,
            )
        )
    lines.append(text("staff.failed.footer", language))
    return "\n".join(lines)


class DeadLetterDesk:
    """Operator view of the dead-letter state."""

    def __init__(
        self,
        repo: Repository,
        metrics: Metrics,
        bots: Bots | None = None,
        language: Language = "en",
    ) -> None:
        self.repo = repo
        self.metrics = metrics
        self.bots = bots
        self.language = language  # for operators whose Telegram names no language

    def language_of(self, caller: Caller) -> Language:
        """The language the operator reads."""
        return staff_language(caller.language_code, self.language)

    async def list_failed(self, caller: Caller) -> str:
        """Text listing the newest dead letters."""
        newest, total = await self.repo.newest_dead(FAILED_LIST_LIMIT)
        await self._audit(caller, "failed", "", f"{total} dead")
        several = self.bots is not None and len(self.bots) > 1
        label = self.bots.label if several and self.bots is not None else None
        return format_failed(newest, total, time.time(), self.language_of(caller), label)

    async def retry(self, caller: Caller, args: str | None) -> str:
        """Re-drive one dead job (`<id>`) or all of them (`all`)."""
        language = self.language_of(caller)
        word = (args or "").strip().lower().lstrip("#")
        if word == "all":
            job_id: int | None = None
        elif word.isdigit():
            job_id = int(word)
        else:
            return text("staff.usage.retry", language)
        if job_id is not None:
            job = await self.repo.get_job(job_id)
            if job is None:
                return text("staff.retry.no_job", language, id=job_id)
            if job.state is not JobState.DEAD:
                return text("staff.retry.not_dead", language, id=job_id, state=job.state.value)
        async with self.repo.transaction() as tx:
            count = await tx.redrive_jobs(job_id)
            await record_audit(tx, _entry(caller, "retry", word, f"{count} re-driven"))
        self.metrics.redriven.inc(count)
        logger.info("operator %d re-drove %d dead job(s) (%s)", caller.user_id, count, word)
        if job_id is not None:
            return text("staff.retry.one" if count else "staff.retry.nothing", language, id=job_id)
        if not count:
            return text("staff.failed.none", language)
        return text("staff.retry.all", language, count=count)

    async def _audit(self, caller: Caller, command: str, args: str, result: str) -> None:
        async with self.repo.transaction() as tx:
            await record_audit(tx, _entry(caller, command, args, result))


def _entry(caller: Caller, command: str, args: str, result: str) -> AuditEntry:
    return AuditEntry(
        at=time.time(),
        user_id=caller.user_id,
        chat_id=caller.chat_id,
        message_id=caller.message_id,
        command=command,
        args=args,
        result=result,
        bot=caller.bot,
    )
