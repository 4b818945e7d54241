"""Prometheus metrics of one bridge process (own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the bridge exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.updates_received = Counter(
            "bridge_telegram_updates_total",
            "Telegram updates received, by update type",
            ["type"],
            registry=self.registry,
        )
        self.hooks_received = Counter(
            "bridge_amojo_hooks_total",
            "amojo hooks received, by outcome (accepted, duplicate, rejected reason)",
            ["outcome"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "bridge_jobs_total",
            "Finished job attempts by queue, kind and outcome (done, retry, dead)",
            ["queue", "kind", "outcome"],
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

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
