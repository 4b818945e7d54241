"""Staff commands: run them against amoCRM, audit them, and publish the operators' menu."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, BotCommandScopeChat

from bot.amocrm.crm import CrmClient, CrmError
from bot.amocrm.crm_records import NewCall
from bot.chat.notices import answer_jobs
from bot.common import ids
from bot.common.bots import Bots
from bot.common.settings import Settings
from bot.common.texts import TEXTS, Language, staff_language, text
from bot.jobs.queues import STAFF_QUEUE
from bot.jobs.worker import Done, JobKind
from bot.staff import commands
from bot.staff.commands import UsageError, format_age
from storage import BusinessConnection, ChatKey, Gap, Job, NewJob, Repository
from storage.crm import AuditEntry, record_audit
from storage.groups import ACTIVE
from storage.repository import Transaction

logger = logging.getLogger(__name__)

KIND_STAFF_COMMAND = "staff.command"

MENU_COMMANDS = ("talk", "close", "call", "status", "failed", "retry", "help", "link")


def menu(language: Language) -> list[BotCommand]:
    """The staff command menu in one language."""
    return [
        BotCommand(command=command, description=text(f"staff.menu.{command}", language))
        for command in MENU_COMMANDS
    ]


@dataclass(frozen=True, slots=True)
class Invocation:
    """Who ran which command where."""

    user_id: int
    chat_id: int
    message_id: int
    command: str
    args: str | None
    bot: int = 0  # the bot the operator wrote to (0: the primary; also jobs stored before)
    language_code: str | None = None  # the operator's Telegram language (None: the default)
    # The group the command was written in (0: the operator's own chat): the answer goes to
    # the operator privately, never in front of the client.
    origin: int = 0

    @property
    def chat(self) -> ChatKey:
        """The operator's chat with that bot (where the answer goes)."""
        return ChatKey(self.bot, self.chat_id)

    @property
    def tag(self) -> str:
        """The command message, unique within the operator's chat."""
        return f"{self.message_id}" if not self.origin else f"g{self.origin}-{self.message_id}"


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to an operator and the short result kept in the audit."""

    text: str
    result: str


class StaffDesk:
    """Runs operator commands synchronously (they are interactive requests from staff)."""

    def __init__(self, settings: Settings, repo: Repository, crm: CrmClient, bots: Bots) -> None:
        self.settings = settings
        self.language = settings.default_language
        self.repo = repo
        self.crm = crm
        self.bots = bots
        # What /healthz finds (Telegram, amojo, amoCRM, storage), wired in by the app.
        self.health: Callable[[], Awaitable[list[str]]] | None = None

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds of the staff queue."""
        return {
            KIND_STAFF_COMMAND: JobKind(
                run=self.run_job, on_dead=self.on_dead, give_up_after=STAFF_GIVE_UP_SECONDS
            )
        }

    async def on_dead(self, job: Job, reason: str) -> list[NewJob]:
        """A command that could not be run still gets an answer (and the audit says so)."""
        invocation = _invocation(job)
        if invocation is None:
            return []
        answer = text(
            "staff.command_failed",
            self.language_of(invocation),
            command=invocation.command,
            reason=reason,
        )
        entry = _audit_entry(invocation, "failed")
        async with self.repo.transaction() as tx:
            await record_audit(tx, entry)
        return answer_jobs(invocation.chat, invocation.tag, answer)

    def language_of(self, invocation: Invocation) -> Language:
        """The language the operator reads."""
        return staff_language(invocation.language_code, self.language)

    async def run_job(self, job: Job) -> Done:
        """Run a queued command: its answer and its audit entry are stored with the job's end."""
        invocation = _invocation(job)
        if invocation is None:
            logger.warning("staff job %d: unreadable payload; dropped", job.id)
            return Done()
        answer, entry = await self.execute(invocation)

        async def record(tx: Transaction) -> None:
            await record_audit(tx, entry)

        return Done(followups=answer_jobs(invocation.chat, invocation.tag, answer), record=record)

    async def run(self, invocation: Invocation) -> str:
        """Execute one command, record it in the audit table, and return the reply text."""
        answer, entry = await self.execute(invocation)
        async with self.repo.transaction() as tx:
            await record_audit(tx, entry)
        return answer

    async def execute(self, invocation: Invocation) -> tuple[str, AuditEntry]:
        """The reply text of one command and its audit entry (not stored yet)."""
        handler = {
            "talk": self._talk,
            "close": self._close,
            "call": self._call,
            "status": self._status,
            "help": self._help,
        }.get(invocation.command)
        language = self.language_of(invocation)
        try:
            if handler is None:  # stored by another version of the bridge
                reply = Reply(
                    text("staff.not_a_command", language, command=invocation.command), "usage"
                )
            else:
                reply = await handler(invocation, language)
        except UsageError as exc:
            reply = Reply(exc.text(language), "usage")
        except CrmError as exc:
            failure = commands.describe_crm_failure(exc.status, exc.message, language)
            reply = Reply(failure, _failed(exc))
        except httpx.HTTPError as exc:
            logger.warning("/%s: amoCRM unreachable: %s", invocation.command, exc)
            unreachable = text("staff.crm.unreachable", language, error=type(exc).__name__)
            reply = Reply(unreachable, "network")
        entry = _audit_entry(invocation, reply.result)
        logger.info("operator %d ran /%s: %s", invocation.user_id, invocation.command, reply.result)
        return reply.text, entry

    async def _talk(self, invocation: Invocation, language: Language) -> Reply:
        talk_id = commands.parse_talk(invocation.args)
        try:
            talk = await self.crm.get_talk(talk_id)
        except CrmError as exc:
            return self._talk_failure(exc, talk_id, language)
        answer = commands.format_talk(talk, self.crm.base_url, self.settings.TIMEZONE, language)
        return Reply(answer, "ok")

    async def _close(self, invocation: Invocation, language: Language) -> Reply:
        command = commands.parse_close(invocation.args)
        try:
            await self.crm.close_talk(command.talk_id, force=command.force)
        except CrmError as exc:
            if exc.status == 422:
                closed = text("staff.talk.already_closed", language, id=command.talk_id)
                return Reply(closed, "422")
            return self._talk_failure(exc, command.talk_id, language)
        answer = commands.format_closed(command, language)
        return Reply(answer, "closed" if command.force else "closing")

    async def _call(self, invocation: Invocation, language: Language) -> Reply:
        command = commands.parse_call(invocation.args)
        call = NewCall(
            phone=command.phone,
            duration=command.duration,
            direction=command.direction,
            source=self.settings.CALL_SOURCE,
            uniq=ids.call_uniq(invocation.chat, invocation.message_id),
            call_status=command.status,
            call_result=command.result or None,
        )
        try:
            attachment = await self.crm.add_call(call)
        except CrmError as exc:
            if exc.status == 400:
                return Reply(text("staff.call.rejected", language, message=exc.message), "400")
            raise
        answer = commands.format_call(command, attachment, self.crm.base_url, language)
        if attachment.entity_type is None:
            return Reply(answer, "not attached")
        return Reply(answer, f"{attachment.entity_type} {attachment.entity_id}")

    async def _status(self, invocation: Invocation, language: Language) -> Reply:
        now = time.time()
        lines = [text("staff.status.title", language)]
        if self.health is not None:
            problems = await self.health()
            if problems:
                lines.append(text("staff.status.problems", language))
                lines += [f"• {problem}" for problem in problems]
            else:
                lines.append(text("staff.status.healthy", language))
        stats = await self.repo.queue_stats()
        if not stats:
            lines.append(text("staff.status.queues_empty", language))
        for queue, entry in sorted(stats.items()):
            age = now - entry.oldest_pending_created_at if entry.oldest_pending_created_at else 0
            lines.append(
                text(
                    "staff.status.queue",
                    language,
                    queue=queue,
                    pending=entry.pending,
                    dead=entry.dead,
                    age=format_age(age, language) if entry.pending else "—",
                )
            )
        last = self.crm.last_success_at
        ago = (
            text("staff.ago", language, age=format_age(now - last, language))
            if last
            else text("staff.status.never", language)
        )
        lines.append(text("staff.status.last_crm", language, ago=ago))
        blocked = await self.repo.count_blocked_customers()
        lines.append(text("staff.status.blocked", language, count=blocked))
        groups = [g for g in self.bots.groups.values() if g.state == ACTIVE]
        if groups:
            lines.append(text("staff.status.groups", language, count=len(groups)))
        lines.append(describe_recovery(await self.repo.last_gap(), now, language))
        if len(self.bots) > 1 or self.bots.revoked:
            lines += [self._describe_bot(key, language) for key in self.bots.each_key()]
        connections = sorted(self.bots.connections.values(), key=lambda c: (c.owner_name, c.id))
        lines += [self._describe_connection(c, language) for c in connections]
        return Reply("\n".join(lines), "ok")

    def _describe_connection(self, connection: BusinessConnection, language: Language) -> str:
        state = text(
            "staff.status.business_on" if connection.enabled else "staff.status.business_off",
            language,
        )
        if connection.enabled and not connection.can_reply:
            state += text("staff.status.business_no_reply", language)
        if connection.enabled and not connection.can_read:
            state += text("staff.status.business_no_read", language)
        return text(
            "staff.status.business",
            language,
            owner=connection.owner_name,
            owner_id=connection.owner_id,
            bot=self.bots.label(connection.bot),
            state=state,
        )

    def _describe_bot(self, key: int, language: Language) -> str:
        role = text("staff.status.primary", language) if key == ids.PRIMARY else ""
        revoked = self.bots.revoked.get(key)
        state = (
            text("staff.status.stopped", language, reason=revoked.render(language))
            if revoked
            else text("staff.status.polling", language)
        )
        label = self.bots.label(key)
        return text("staff.status.bot", language, label=label, role=role, state=state)

    async def _help(self, invocation: Invocation, language: Language) -> Reply:
        return Reply(text("staff.help", language), "ok")

    @staticmethod
    def _talk_failure(exc: CrmError, talk_id: int, language: Language) -> Reply:
        failure = commands.describe_crm_failure(exc.status, exc.message, language, talk_id)
        return Reply(failure, _failed(exc))


def _failed(exc: CrmError) -> str:
    return f"{exc.status}: {exc.message}"[:200]


async def publish_operator_menu(bridge_bots: Bots, settings: Settings) -> None:
    """Show the staff commands only in each operator's own chat with every bot.

    Telegram shows the list whose `language_code` is the operator's, else the one without a
    language: that one is in the default language, and Russian and English have their own.
    """
    default = settings.default_language
    for bot in bridge_bots:
        for operator_id in sorted(settings.OPERATOR_IDS):
            await _publish_menu(bot, operator_id, default)


async def _publish_menu(bot: Bot, operator_id: int, default: Language) -> None:
    scope = BotCommandScopeChat(chat_id=operator_id)
    lists: tuple[tuple[str | None, Language], ...] = ((None, default), ("ru", "ru"), ("en", "en"))
    for language_code, language in lists:
        try:
            await bot.set_my_commands(menu(language), scope=scope, language_code=language_code)
        except TelegramAPIError as exc:
            # Telegram answers "chat not found" until the operator has opened the bot once.
            logger.warning(
                "command menu for operator %d in bot %d not set: %s",
                operator_id,
                bot.id,
                exc.message,
            )
            return


def gap_reason(reason: str, language: Language) -> str:
    """Why hooks were missed, as the operator reads it (an unknown stored reason as is)."""
    key = f"staff.gap.{reason.replace(' ', '_')}"
    return text(key, language) if key in TEXTS else reason


def describe_recovery(gap: Gap | None, now: float, language: Language) -> str:
    """The last gap in hook intake and how its recovery from amojo's history went."""
    if gap is None:
        return text("staff.status.no_gap", language)
    head = text(
        "staff.status.gap",
        language,
        length=format_age(gap.ended_at - gap.started_at, language),
        ago=format_age(now - gap.ended_at, language),
        reason=gap_reason(gap.reason, language),
    )
    key = "staff.status.recovering" if gap.finished_at is None else "staff.status.recovered"
    total = "?" if gap.conversations is None else str(gap.conversations)
    return text(key, language, head=head, scanned=gap.scanned, total=total, recovered=gap.recovered)


# Commands that ask amoCRM run in the staff queue; the others answer from inside polling.
QUEUED_COMMANDS = frozenset({"talk", "close", "call"})
STAFF_GIVE_UP_SECONDS = 10 * 60  # an operator waits for an answer, not for hours


def _invocation(job: Job) -> Invocation | None:
    try:
        return Invocation(**job.payload["invocation"])
    except (KeyError, TypeError):
        return None


def _audit_entry(invocation: Invocation, result: str) -> AuditEntry:
    return AuditEntry(
        at=time.time(),
        user_id=invocation.user_id,
        chat_id=invocation.chat_id,
        message_id=invocation.message_id,
        command=invocation.command,
        args=invocation.args or "",
        result=result,
        bot=invocation.bot,
    )


def staff_job(invocation: Invocation) -> NewJob:
    """The job that runs a command outside Telegram polling (once per command message)."""
    return NewJob(
        queue=STAFF_QUEUE,
        kind=KIND_STAFF_COMMAND,
        lane=f"staff:{ids.key_text(invocation.chat)}",
        dedup_key=f"staff:{ids.key_text(invocation.chat)}:{invocation.tag}",
        payload={"invocation": dataclasses.asdict(invocation)},
    )
