"""Prometheus metrics of one bridge process (own registry, so tests can run several)."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.common.health import AMOCRM, AMOJO, Outages, describe_exception

CONTENT_TYPE = CONTENT_TYPE_LATEST

SERVICES = {"amojo": AMOJO, "amocrm": AMOCRM}
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the bridge exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.outages = Outages()
        self.queues: set[str] = set()
        self.unreadable_updates = Counter(
            "bridge_telegram_unreadable_updates_total",
            "Telegram updates aiogram could not read as sent (bridged without the fields it "
            "could not read, or only confirmed), by bot (its Telegram id)",
            ["bot"],
            registry=self.registry,
        )
        self.failed_updates = Counter(
            "bridge_telegram_failed_updates_total",
            "Telegram updates whose handling failed with an unexpected error (a bug), by bot",
            ["bot"],
            registry=self.registry,
        )
        self.recent_unreadable: deque[float] = deque(maxlen=1000)
        self.listener_evictions = Counter(
            "bridge_listener_connections_closed_total",
            "Connections the listener closed at its connection limit because they had sent "
            "no request (slow or idle clients), to keep room for hooks",
            registry=self.registry,
        )
        self.updates_received = Counter(
            "bridge_telegram_updates_total",
            "Telegram updates received, by update type and bot (its Telegram id)",
            ["type", "bot"],
            registry=self.registry,
        )
        self.hooks_received = Counter(
            "bridge_amojo_hooks_total",
            "amojo hooks received, by outcome (accepted, duplicate, rejected reason)",
            ["outcome"],
            registry=self.registry,
        )
        self.hook_answer_seconds = Histogram(
            "bridge_amojo_hook_answer_seconds",
            "Time from a hook's arrival to its answer (amojo waits at most 5 s)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        self.jobs = Counter(
            "bridge_jobs_total",
            "Finished job attempts by queue, kind and outcome (done, retry, dead)",
            ["queue", "kind", "outcome"],
            registry=self.registry,
        )
        self.messages = Counter(
            "bridge_messages_total",
            "Message jobs by direction (to_amocrm, to_telegram), kind and outcome "
            "(delivered, retried, failed)",
            ["direction", "kind", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "bridge_dead_letters_total",
            "Jobs moved to the dead-letter state, by queue and kind",
            ["queue", "kind"],
            registry=self.registry,
        )
        self.redriven = Counter(
            "bridge_redriven_jobs_total",
            "Dead-lettered jobs put back in their queue by an operator",
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "bridge_job_duration_seconds",
            "Time one job attempt took, by queue",
            ["queue"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.api_seconds = Histogram(
            "bridge_api_call_duration_seconds",
            "Latency of calls to amoCRM and Telegram, by api and outcome",
            ["api", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.api_last_success = Gauge(
            "bridge_api_last_success_timestamp_seconds",
            "Unix time of the last successful call, by api",
            ["api"],
            registry=self.registry,
        )
        self.telegram_calls = Counter(
            "bridge_telegram_calls_total",
            "Bot API calls other than getUpdates, by bot (its Telegram id) and outcome",
            ["bot", "outcome"],
            registry=self.registry,
        )
        self.business_not_shown = Counter(
            "bridge_business_not_shown_total",
            "What Telegram cannot show in a Business chat (a manager's reaction), by what",
            ["what"],
            registry=self.registry,
        )
        self.bot_polling = Gauge(
            "bridge_telegram_bot_polling",
            "1 while a bot's updates are polled; 0 once Telegram rejected its token",
            ["bot"],
            registry=self.registry,
        )
        self.conversations = Gauge(
            "bridge_conversations",
            "Conversations the bridge knows, by kind (private, business, group, topic, direct)",
            ["kind"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "bridge_queue_pending_jobs",
            "Jobs waiting in each queue",
            ["queue"],
            registry=self.registry,
        )
        self.queue_dead = Gauge(
            "bridge_queue_dead_jobs",
            "Dead-lettered jobs in each queue",
            ["queue"],
            registry=self.registry,
        )
        self.queue_oldest_age = Gauge(
            "bridge_queue_oldest_pending_age_seconds",
            "Age of the oldest pending job in each queue",
            ["queue"],
            registry=self.registry,
        )

        self.recovery_gaps = Counter(
            "bridge_recovery_gaps_total",
            "Intervals in which amojo hooks may have been missed, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.recovery_conversations = Counter(
            "bridge_recovery_conversations_scanned_total",
            "Conversations whose amojo history was read after a gap",
            registry=self.registry,
        )
        self.recovery_messages = Counter(
            "bridge_recovery_messages_total",
            "Manager messages found only in amojo's history (their hook was missed)",
            registry=self.registry,
        )
        self.reconcile_runs = Counter(
            "bridge_reconcile_runs_total",
            "Reconciliation passes (amoCRM's record of manager messages against the hooks that "
            "came), by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.reconcile_missing = Counter(
            "bridge_reconcile_missing_messages_total",
            "Manager messages found in amoCRM that never came as a hook (delivered since)",
            registry=self.registry,
        )
        self.reconcile_age = Histogram(
            "bridge_reconcile_delivered_age_seconds",
            "Age of a message found missing when it reached Telegram (since amoCRM sent it)",
            buckets=(5, 15, 30, 60, 120, 300, 900, 3600, 4 * 3600, 86400),
            registry=self.registry,
        )
        self.reconcile_requests = Counter(
            "bridge_reconcile_requests_total",
            "Requests reconciliation spent, by API (amojo: chat history; amocrm: events, chats)",
            ["api"],
            registry=self.registry,
        )
        self.recovery_seconds = Histogram(
            "bridge_recovery_duration_seconds",
            "Time from a gap's detection until every conversation of it was read",
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
            registry=self.registry,
        )

    def unreadable_update(self, bot_id: int) -> None:
        """One update aiogram could not read as Telegram sent it."""
        self.unreadable_updates.labels(str(bot_id)).inc()
        self.recent_unreadable.append(time.time())

    def unreadable_since(self, since: float) -> int:
        """How many unreadable updates came since `since` (of the last 1,000)."""
        return sum(1 for moment in self.recent_unreadable if moment >= since)

    def observe_call(self, api: str, outcome: str, seconds: float, problem: str = "") -> None:
        """Record one call to an external API; `outcome` "ok" also moves its last-success time.

        amojo's and amoCRM's outcomes also start or end their outage (`problem` says what
        failed); Telegram's are classified by its session middleware.
        """
        self.api_seconds.labels(api, outcome).observe(seconds)
        if outcome == "ok":
            self.api_last_success.labels(api).set(time.time())
        if api in SERVICES:
            self.outages.observe(SERVICES[api], outcome, problem)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class CallRecord:
    """What one call to an external API came to (filled in by its caller)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.outcome = "error"
        self.problem = ""

    def answered(self, status: int, ok: bool) -> None:
        """The service answered with `status` (`ok`: a success)."""
        self.outcome = "ok" if ok else str(status)
        self.problem = f"{self.host} answered HTTP {status}"


@contextlib.contextmanager
def observed_call(metrics: Metrics | None, api: str, host: str) -> Iterator[CallRecord]:
    """Time one call and record its outcome (and outage) however it ends; a cancel says nothing."""
    call = CallRecord(host)
    started = time.perf_counter()
    try:
        yield call
    except Exception as exc:
        call.outcome, call.problem = "error", f"{host} unreachable: {describe_exception(exc)}"
        raise
    except BaseException:
        call.outcome = "cancelled"
        raise
    finally:
        if metrics is not None:
            metrics.observe_call(api, call.outcome, time.perf_counter() - started, call.problem)
