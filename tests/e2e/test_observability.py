"""/metrics and /healthz of a running bridge, end to end."""

from __future__ import annotations

import asyncio
import sqlite3

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from simulators.factories import private_message_update
from tests.harness import BridgeFactory, Fakes, RunningBridge, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(bridge: RunningBridge) -> Samples:
    """Every sample of /metrics keyed by (name, labels)."""
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def health(bridge: RunningBridge) -> tuple[int, dict[str, object]]:
    """Status and JSON body of /healthz."""
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/healthz") as response:
        return response.status, await response.json()


async def test_metrics_count_both_directions(fakes: Fakes, bridge: RunningBridge) -> None:
    fakes.telegram.push_update(private_message_update(701, 1, text="Здравствуйте"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="customer message")
    hook = fakes.amojo.message_hook("tg-701", text="Добрый день")
    status, _ = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
    assert status == 200
    status, _ = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, b"{}", signature="bad")
    assert status == 401
    await fakes.telegram.wait_for(lambda: bool(fakes.telegram.sent_messages(701)), what="send")
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.statuses), what="delivery status")

    async def delivered_to_telegram() -> bool:
        samples = await scrape(bridge)
        return (
            value(
                samples,
                "bridge_messages_total",
                direction="to_telegram",
                kind="amo.message",
                outcome="delivered",
            )
            == 1
        )

    await wait_until(delivered_to_telegram, what="to_telegram counted")

    # Its delivery status follows through the amojo queue; once reported, that queue is empty.
    async def status_job_done() -> bool:
        stats = await bridge.bridge.repo.queue_stats()
        return "amojo" not in stats or stats["amojo"].pending == 0

    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.statuses), what="delivery status")
    await wait_until(status_job_done, what="the status job done")
    samples = await scrape(bridge)
    assert value(samples, "bridge_telegram_updates_total", type="message", bot="123456") == 1
    assert value(samples, "bridge_amojo_hooks_total", outcome="accepted") == 1
    assert value(samples, "bridge_amojo_hooks_total", outcome="rejected_401") == 1
    assert (
        value(
            samples,
            "bridge_messages_total",
            direction="to_amocrm",
            kind="customer.message",
            outcome="delivered",
        )
        == 1
    )
    for api in ("amojo", "telegram", "amocrm"):
        assert value(samples, "bridge_api_last_success_timestamp_seconds", api=api) > 0, api
    for api in ("amojo", "telegram"):
        count = value(samples, "bridge_api_call_duration_seconds_count", api=api, outcome="ok")
        assert count >= 1, api
    assert value(samples, "bridge_queue_pending_jobs", queue="amojo") == 0
    assert ("bridge_queue_oldest_pending_age_seconds", frozenset({("queue", "amojo")})) in samples


async def test_retries_dead_letters_and_stale_queue_show(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    status, body = await health(bridge)
    assert status == 200 and body["status"] == "ok", body

    fakes.amojo.set_down(503)
    fakes.telegram.push_update(private_message_update(702, 1, text="Алло"))
    await fakes.amojo.wait_for(
        lambda: sum(r.status == 503 for r in fakes.amojo.requests) >= 2, what="retries"
    )
    bridge.bridge.listener.deps.max_pending_age = 0.0
    status, body = await health(bridge)
    assert status == 503
    assert any("queue amojo: oldest pending job" in p for p in body["problems"]), body  # type: ignore[attr-defined]
    samples = await scrape(bridge)
    assert value(samples, "bridge_queue_pending_jobs", queue="amojo") == 1
    assert value(samples, "bridge_queue_oldest_pending_age_seconds", queue="amojo") > 0
    retried = value(
        samples,
        "bridge_messages_total",
        direction="to_amocrm",
        kind="customer.message",
        outcome="retried",
    )
    assert retried >= 1
    assert value(samples, "bridge_api_call_duration_seconds_count", api="amojo", outcome="503") >= 1

    fakes.amojo.set_down(None)
    fakes.amojo.fail("new_message", 400, times=1)  # bad data: permanent
    fakes.telegram.push_update(private_message_update(703, 1, text="Привет"))

    async def dead_counted() -> bool:
        samples = await scrape(bridge)
        return value(samples, "bridge_queue_dead_jobs", queue="amojo") == 1

    await wait_until(dead_counted, what="dead letter gauge")
    samples = await scrape(bridge)
    assert value(samples, "bridge_dead_letters_total", queue="amojo", kind="customer.message") == 1


async def test_healthz_reports_an_unreachable_database(bridge: RunningBridge) -> None:
    repo = bridge.bridge.repo
    await repo.reader.close()
    status, body = await health(bridge)
    assert status == 503
    assert body["database"] is False
    assert "database unreachable" in body["problems"]  # type: ignore[operator]


async def test_metrics_token_guards_metrics_only(bridges: BridgeFactory) -> None:
    running = await bridges.start(METRICS_TOKEN="s3cret-metrics")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{running.url}/metrics") as response:
            assert response.status == 401
        wrong = {"Authorization": "Bearer nope"}
        async with http.get(f"{running.url}/metrics", headers=wrong) as response:
            assert response.status == 401
        right = {"Authorization": "Bearer s3cret-metrics"}
        async with http.get(f"{running.url}/metrics", headers=right) as response:
            assert response.status == 200
            assert "bridge_jobs_total" in await response.text()
        async with http.get(f"{running.url}/healthz") as response:
            assert response.status == 200


async def test_a_database_error_is_named_in_healthz_without_its_raw_text(
    bridges: BridgeFactory,
) -> None:
    running = await bridges.start()

    def break_the_counters() -> None:
        with sqlite3.connect(running.bridge.settings.DATABASE_PATH, timeout=30) as db:
            db.execute("ALTER TABLE queue_counts RENAME TO queue_counts_gone")

    await asyncio.to_thread(break_the_counters)
    async with aiohttp.ClientSession() as http, http.get(f"{running.url}/healthz") as response:
        body = await response.json()
    assert response.status == 503
    assert "database error (see the bridge's log)" in body["problems"]
    assert "queue_counts" not in str(body)  # the raw "no such table: …" stays in the log
