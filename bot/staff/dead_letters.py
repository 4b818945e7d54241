"""Dead letters for operators: list them (`/failed`) and put them back in their queue (`/retry`).

Re-driving never duplicates a delivered message: a customer message keeps its deterministic
amojo msgid (amojo refuses a repeat, which the sender takes as delivered), and a manager
message skips every part whose Telegram message id was recorded when Telegram accepted it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from bot.metrics import Metrics
from bot.staff.commands import format_age
from storage import Job, JobState, Repository
from storage.crm import AuditEntry, record_audit

logger = logging.getLogger(__name__)

FAILED_LIST_LIMIT = 20
REASON_CHARS = 160
RETRY_USAGE = "Usage: /retry <job id> or /retry all\nExample: /retry 42"


@dataclass(frozen=True, slots=True)
class Caller:
    """The operator who asked, for the audit."""

    user_id: int
    chat_id: int
    message_id: int


def job_reference(job: Job) -> str:
    """The ids that tie a job to both sides: our amojo msgid, or amo's message id."""
    payload: dict[str, Any] = job.payload
    inner = payload.get("payload")
    if isinstance(inner, dict) and isinstance(inner.get("msgid"), str):
        return f"msgid {inner['msgid']}"
    hook = payload.get("hook")
    if isinstance(hook, dict):
        message = (hook.get("message") or {}).get("message") or {}
        if isinstance(message, dict) and message.get("id"):
            return f"amo message {message['id']}"
    if payload.get("amo_id"):
        return f"amo message {payload['amo_id']}"
    return f"lane {job.lane}"


def format_failed(jobs: list[Job], total: int, now: float) -> str:
    """The reply to `/failed`: newest dead letters first, one line each."""
    if not jobs:
        return "No dead-lettered jobs."
    lines = [
        f"Dead-lettered jobs: {total}" + (f" (newest {len(jobs)})" if total > len(jobs) else "")
    ]
    for job in jobs:
        reason = (job.last_error or "").replace("\n", " ")
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 1] + "…"
        lines.append(
            f"#{job.id} {job.queue}/{job.kind} · {job_reference(job)} · "
            f"{job.attempts} attempt(s) · failed {format_age(now - job.updated_at)} ago\n  {reason}"
        )
    lines.append("Re-drive: /retry <id> or /retry all")
    return "\n".join(lines)


class DeadLetterDesk:
    """Operator view of the dead-letter state."""

    def __init__(self, repo: Repository, metrics: Metrics) -> None:
        self.repo = repo
        self.metrics = metrics

    async def list_failed(self, caller: Caller) -> str:
        """Text listing the newest dead letters."""
        newest, total = await self.repo.newest_dead(FAILED_LIST_LIMIT)
        await self._audit(caller, "failed", "", f"{total} dead")
        return format_failed(newest, total, time.time())

    async def retry(self, caller: Caller, args: str | None) -> str:
        """Re-drive one dead job (`<id>`) or all of them (`all`)."""
        word = (args or "").strip().lower().lstrip("#")
        if word == "all":
            job_id: int | None = None
        elif word.isdigit():
            job_id = int(word)
        else:
            return RETRY_USAGE
        if job_id is not None:
            job = await self.repo.get_job(job_id)
            if job is None:
                return f"There is no job #{job_id}."
            if job.state is not JobState.DEAD:
                return f"Job #{job_id} is {job.state.value}, not dead-lettered; nothing to do."
        async with self.repo.transaction() as tx:
            count = await tx.redrive_jobs(job_id)
            await record_audit(tx, _entry(caller, "retry", word, f"{count} re-driven"))
        self.metrics.redriven.inc(count)
        logger.info("operator %d re-drove %d dead job(s) (%s)", caller.user_id, count, word)
        if job_id is not None:
            return f"Job #{job_id} is back in its queue." if count else "Nothing re-driven."
        if not count:
            return "No dead-lettered jobs."
        return f"{count} dead-lettered job(s) back in their queues."

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
    )
