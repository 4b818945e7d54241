"""What `/healthz` and `/status` report: every problem the bridge can see, failing or not."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.amocrm.amojo import AmojoClient
from bot.common.limits import AMOJO_CLOCK_SKEW_TOLERANCE_SECONDS, AMOJO_REFUSAL_HEALTH_SECONDS
from bot.common.metrics import Metrics
from storage import Repository, StorageError
from storage.repository import QueueStats

if TYPE_CHECKING:
    from bot.listener.routes import WebDeps

logger = logging.getLogger(__name__)

HEALTH_MAX_PENDING_AGE_SECONDS = 15 * 60
HEALTH_RECENT_DEAD_SECONDS = 60 * 60
# Unreadable Telegram updates this often are worth an operator's look (an aiogram upgrade).
UNREADABLE_HEALTH_WINDOW_SECONDS = 60 * 60
UNREADABLE_HEALTH_COUNT = 3


@dataclass(slots=True)
class HealthReport:
    """Findings that stop messages getting through (`failing`) and those to look at."""

    failing: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    database: bool = True
    queues: dict[str, Any] = field(default_factory=dict)
    conversations: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """ "ok", "degraded" or "unhealthy"."""
        return "unhealthy" if self.failing else "degraded" if self.degraded else "ok"

    @property
    def problems(self) -> list[str]:
        """Every finding, the failing ones first."""
        return self.failing + self.degraded


async def queue_report(repo: Repository, metrics: Metrics) -> dict[str, Any]:
    """Per-queue depth, dead letters and oldest pending age; refreshes the gauges."""
    now = time.time()
    report: dict[str, Any] = {}
    all_stats = await repo.queue_stats()
    for queue in sorted(metrics.queues | set(all_stats)):
        stats = all_stats.get(queue) or QueueStats()
        age = now - stats.oldest_pending_created_at if stats.oldest_pending_created_at else 0.0
        report[queue] = {
            "pending": stats.pending,
            "dead": stats.dead,
            "oldest_pending_age_seconds": round(age, 3),
        }
        metrics.queue_depth.labels(queue).set(stats.pending)
        metrics.queue_dead.labels(queue).set(stats.dead)
        metrics.queue_oldest_age.labels(queue).set(age)
    return report


async def conversation_report(repo: Repository, metrics: Metrics) -> dict[str, int]:
    """Conversations by kind; refreshes their gauge."""
    counts = await repo.conversation_kinds()
    for kind, count in counts.items():
        metrics.conversations.labels(kind).set(count)
    return counts


def amojo_problems(amojo: AmojoClient) -> tuple[list[str], list[str]]:
    """(failing, degraded) findings about the amojo connection."""
    failing, degraded = [], []
    if amojo.signature_refused_at is not None:
        since = int(time.time() - amojo.signature_refused_at)
        if since <= AMOJO_REFUSAL_HEALTH_SECONDS:
            failing.append(f"{amojo.signature_refusal} (last refusal {since} s ago)")
    offset = amojo.clock_offset
    if offset is not None and abs(offset) > AMOJO_CLOCK_SKEW_TOLERANCE_SECONDS:
        degraded.append(
            f"clock skew? amojo's clock is {offset:+.0f} s from ours; requests are dated by "
            "amojo's clock until the server's time sync is fixed"
        )
    return failing, degraded


async def health_report(deps: WebDeps) -> HealthReport:
    """Every finding about the bridge now."""
    report = HealthReport()
    failing, degraded = report.failing, report.degraded
    queues: dict[str, Any] = {}
    if deps.starting is not None:
        failing.append(f"starting: {deps.starting}")
    for note in (deps.connect_pending, deps.sources_problem):
        if note is not None:
            degraded.append(note)
    database = await deps.repo.ping()
    if not database:
        failing.append("database unreachable")
    else:
        try:
            queues = await queue_report(deps.repo, deps.metrics)
            recent_dead = await deps.repo.count_dead_since(time.time() - HEALTH_RECENT_DEAD_SECONDS)
        except StorageError:
            # The raw text may name paths and queries: it goes to the log, not to the network.
            logger.exception("healthz: database error")
            failing.append("database error (see the bridge's log)")
        else:
            if recent_dead:
                degraded.append(
                    f"{recent_dead} job(s) dead-lettered in the last "
                    f"{HEALTH_RECENT_DEAD_SECONDS // 60} min (see /failed)"
                )
    for name, queue in queues.items():
        if queue["oldest_pending_age_seconds"] > deps.max_pending_age:
            failing.append(
                f"queue {name}: oldest pending job is {int(queue['oldest_pending_age_seconds'])} s "
                f"old (limit {int(deps.max_pending_age)} s)"
            )
    if deps.amojo is not None:
        amojo_failing, amojo_degraded = amojo_problems(deps.amojo)
        failing += amojo_failing
        degraded += amojo_degraded
    if deps.bots is not None and deps.bots.revoked:
        # Every bot revoked: nothing comes in or goes out. Else the others keep working.
        stopped = failing if len(deps.bots.revoked) == len(deps.bots) else degraded
        for key, reason in deps.bots.revoked.items():
            stopped.append(f"Telegram bot {deps.bots.label(key)} stopped: {reason}")
    now = time.time()
    if deps.reconcile is not None:
        reconcile_failing, reconcile_degraded = deps.reconcile.problems(now)
        failing += reconcile_failing
        degraded += reconcile_degraded
    unreadable = deps.metrics.unreadable_since(now - UNREADABLE_HEALTH_WINDOW_SECONDS)
    if unreadable >= UNREADABLE_HEALTH_COUNT:
        degraded.append(
            f"{unreadable} Telegram update(s) in the last hour could not be read as sent (a newer "
            "Bot API than this bridge's aiogram?): bridged without what could not be read; "
            "upgrade the bridge"
        )
    storage = deps.repo.outage
    if storage.since is not None:
        failing.append(
            f"storage: the database refuses writes for {int(now - storage.since)} s "
            f"({storage.reason}): hooks are answered 503, Telegram updates wait unconfirmed"
        )
    if deps.fresh_database is not None:  # until a hook is stored in it (Listener)
        degraded.append(deps.fresh_database)
    for outage in deps.metrics.outages.active():
        (failing if outage.unhealthy(now) else degraded).append(outage.describe(now))
    report.database, report.queues = database, queues
    if database:
        try:
            report.conversations = await conversation_report(deps.repo, deps.metrics)
        except StorageError:
            logger.warning("healthz: conversations not counted (database error)")
    return report
