"""amoCRM sources of the channel, one per bot (`AMOCRM_SOURCES`; spec §10, sources API).

Each bot's chats are tagged with its source, so a manager sees which bot a chat came through,
new leads land in the bot's pipeline, and write-first offers the bot as the way to write.
Sources are found by `external_id` (derived from the bot id, never changed once created) and
created or updated at start; a restart finds and reuses them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from bot.amocrm.channel import ServiceDown
from bot.amocrm.crm import CrmClient, CrmError
from bot.common.health import AMOCRM, describe_exception
from bot.common.ids import account_source_external_id
from bot.common.settings import StartupError
from bot.jobs.queues import STAFF_QUEUE
from bot.jobs.worker import Done, GiveUp, JobKind, RetryLater
from storage import Job, NewJob, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)

SOURCES_PATH = "/api/v4/sources"
SOURCES_PER_CALL = 50  # the API's limit for one create or update


@dataclass(frozen=True, slots=True)
class WantedSource:
    """A source the bridge needs: one per bot."""

    external_id: str
    name: str
    pipeline_id: int | None = None


class SourceBook:
    """Whether chats carry their bot's source, and whether the sources are known to exist.

    Until `ready`, looking a chat's source up raises RetryLater (bot/app.py), so a customer
    message or a recovered chat waits rather than reaching amoCRM without its source (or with
    one not made yet): a chat tagged once keeps its source.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.ready = not enabled
        # Business accounts by owner: True once their source exists, False when amoCRM
        # refused to make it (their chats then go without one); unknown: being made.
        self.accounts: dict[int, bool] = {}

    def account_source(self, owner_id: int) -> str | None:
        """The source of a Business account's chats; RetryLater while it is being made."""
        state = self.accounts.get(owner_id)
        if state is None:
            raise RetryLater("waiting for the Business account's amoCRM source", delay=2.0)
        return account_source_external_id(owner_id) if state else None


KIND_ACCOUNT_SOURCE = "amocrm.account_source"
KV_SOURCES = "amocrm.sources"


def refused_key(owner_id: int) -> str:
    """Where amoCRM's refusal to make an account's source is kept (its chats go without)."""
    return f"amocrm.source_refused:{owner_id}"


def account_source_job(owner_id: int, owner_name: str) -> NewJob:
    """The job that makes (or renames) a Business account's amoCRM source."""
    return NewJob(
        queue=STAFF_QUEUE,
        kind=KIND_ACCOUNT_SOURCE,
        lane=f"source:acc-{owner_id}",
        dedup_key=f"source:acc-{owner_id}:{owner_name}",
        payload={"owner_id": owner_id, "name": f"Telegram: {owner_name}"},
    )


class AccountSources:
    """Runs `amocrm.account_source` jobs: one amoCRM source per Business account."""

    def __init__(
        self, crm: CrmClient, repo: Repository, book: SourceBook, origin_code: str | None
    ) -> None:
        self.crm = crm
        self.repo = repo
        self.book = book
        self.origin_code = origin_code

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds of the staff queue."""
        return {KIND_ACCOUNT_SOURCE: JobKind(run=self.make, on_dead=self.on_dead)}

    async def make(self, job: Job) -> Done:
        """Find or create the account's source (named after its owner)."""
        owner = int(job.payload["owner_id"])
        wanted = WantedSource(account_source_external_id(owner), str(job.payload["name"]))
        try:
            ids = await ensure_sources(self.crm, [wanted], self.origin_code)
        except ServiceDown as exc:
            raise RetryLater(str(exc)) from None
        except StartupError as exc:
            raise GiveUp(str(exc)) from None

        async def record(tx: Transaction) -> None:
            await merge_source_ids(tx, ids)
            await tx.delete_kv(refused_key(owner))  # made after all (a `/retry`)
            self.book.accounts[owner] = True

        logger.info("amoCRM source of Business account %d: %s", owner, wanted.external_id)
        return Done(record=record)

    async def on_dead(self, job: Job, reason: str) -> list[NewJob]:
        """amoCRM will not make it: the account's chats go on without a source."""
        owner = int(job.payload["owner_id"])
        self.book.accounts[owner] = False
        await self.repo.set_kv(refused_key(owner), reason[:500])  # a restart remembers it
        logger.error("no amoCRM source for Business account %d: %s", owner, reason)
        return []


async def merge_source_ids(tx: Transaction, ids: dict[str, int]) -> None:
    """Add source ids to the stored ones, in the caller's transaction (no lost update)."""
    stored = json.loads(await tx.get_kv(KV_SOURCES) or "{}")
    await tx.set_kv(KV_SOURCES, json.dumps({**stored, **ids}, sort_keys=True))


def _sources_of(response: httpx.Response) -> list[dict[str, Any]]:
    if response.status_code == 204 or not response.content:
        return []
    try:
        data = response.json()
    except ValueError:
        raise ServiceDown(AMOCRM, "amoCRM", "sources", "the answer is not JSON") from None
    embedded = data.get("_embedded") if isinstance(data, dict) else None
    sources = embedded.get("sources") if isinstance(embedded, dict) else None
    return [s for s in sources if isinstance(s, dict)] if isinstance(sources, list) else []


def _refused(exc: CrmError, host: str) -> Exception:
    if exc.status == 429 or exc.status >= 500 or exc.status == 402:
        return ServiceDown(AMOCRM, host, "sources", f"HTTP {exc.status}")
    if exc.status == 403:
        return StartupError(
            f"AMOCRM_SOURCES: amoCRM at {host} refuses the sources API (403: {exc.message}). "
            "It needs a token of an account administrator and an integration whose widget "
            'declares "locations": ["lead_sources"] (README → Several bots); or set '
            "AMOCRM_SOURCES=false"
        )
    if exc.status == 401:
        return StartupError(
            f"AMOCRM_ACCESS_TOKEN: amoCRM at {host} rejects the token for the sources API "
            f"(401: {exc.message})"
        )
    return StartupError(
        f"AMOCRM_SOURCES: amoCRM at {host} refused the sources (HTTP {exc.status}: {exc.message})"
    )


async def ensure_sources(
    crm: CrmClient, wanted: list[WantedSource], origin_code: str | None
) -> dict[str, int]:
    """Create the missing sources and fix changed names or pipelines; external_id → id.

    StartupError when amoCRM refuses (no admin rights, no `lead_sources` widget); ServiceDown
    when it is down (retried by the caller).
    """
    try:
        return await _ensure(crm, wanted, origin_code)
    except CrmError as exc:
        raise _refused(exc, crm.host) from None
    except (httpx.HTTPError, OSError) as exc:
        raise ServiceDown(AMOCRM, crm.host, "sources", describe_exception(exc)) from None


async def _ensure(
    crm: CrmClient, wanted: list[WantedSource], origin_code: str | None
) -> dict[str, int]:
    external_ids = [source.external_id for source in wanted]
    # All of the integration's sources (at most 100 exist): no filter syntax to get wrong.
    response = await crm.request("GET", SOURCES_PATH)
    found = {str(s.get("external_id")): s for s in _sources_of(response)}
    ids = {key: int(s["id"]) for key, s in found.items() if isinstance(s.get("id"), int)}
    missing = [source for source in wanted if source.external_id not in ids]
    changed = [
        source
        for source in wanted
        if source.external_id in ids
        and (
            found[source.external_id].get("name") != source.name
            or (
                source.pipeline_id is not None
                and found[source.external_id].get("pipeline_id") != source.pipeline_id
            )
        )
    ]
    for start in range(0, len(missing), SOURCES_PER_CALL):
        body = []
        for source in missing[start : start + SOURCES_PER_CALL]:
            item: dict[str, Any] = {"name": source.name, "external_id": source.external_id}
            if source.pipeline_id is not None:
                item["pipeline_id"] = source.pipeline_id
            if origin_code:
                item["origin_code"] = origin_code
            body.append(item)
        for made in _sources_of(await crm.request("POST", SOURCES_PATH, json=body)):
            if isinstance(made.get("id"), int):
                ids[str(made.get("external_id"))] = int(made["id"])
        logger.info("amoCRM sources created: %s", ", ".join(i["external_id"] for i in body))
    for start in range(0, len(changed), SOURCES_PER_CALL):
        patch = []
        for wanted_source in changed[start : start + SOURCES_PER_CALL]:
            update: dict[str, Any] = {
                "id": ids[wanted_source.external_id],
                "name": wanted_source.name,
            }
            if wanted_source.pipeline_id is not None:
                update["pipeline_id"] = wanted_source.pipeline_id
            patch.append(update)
        await crm.request("PATCH", SOURCES_PATH, json=patch)
        logger.info("amoCRM sources updated: %s", ", ".join(s.external_id for s in changed))
    lost = [value for value in external_ids if value not in ids]
    if lost:
        raise StartupError(
            f"AMOCRM_SOURCES: amoCRM did not create the sources {', '.join(lost)} "
            "(its answer named no id for them)"
        )
    return ids
