"""Reconciliation: amoCRM's record of manager messages is the truth, hooks only the fast path.

amojo sends each hook once; the proxy, a certificate, amojo's slow stream or the network may
eat it while the bridge runs. Every RECONCILE_INTERVAL_SECONDS the bridge
- requests its own PUBLIC_BASE_URL the way amoCRM does (`/amojo/self-probe/<token>`): while
  that fails, /healthz says amoCRM cannot reach it, and the span becomes a gap;
- reads amoCRM's events feed (`outgoing_chat_message`, account-wide message ids) for the
  messages written since the last pass, and has every one the bridge never got read from its
  chat's history and delivered as if its hook had come (bot/manager/recovery.py).
Without the events feed (refused: rights, an old account), gaps the bridge sees are read chat
by chat from history instead. Every request counts against one budget
(RECONCILE_REQUESTS_PER_SECOND), beside the CRM client's own pacing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import httpx
from aiolimiter import AsyncLimiter

from bot.amocrm.crm import CrmClient, CrmError
from bot.amocrm.crm_records import ChatMessageEvent
from bot.common.health import describe_exception
from bot.common.metrics import Metrics
from bot.common.tasks import cancel_and_wait
from bot.jobs.worker import RetryLater
from bot.manager.gaps import GAP_MARGIN_SECONDS, recovery_job, report_gap
from bot.manager.recovery import ForeignChats, wanted_job
from storage import NewJob, Repository, StorageError, is_outage

logger = logging.getLogger(__name__)
T = TypeVar("T")

KV_WATERMARK = "reconcile.events_until"
# [since, until, page]: the window a capped read stopped in, and the page to go on from
KV_BACKLOG = "reconcile.events_unread"
REASON_UNREACHABLE = "listener unreachable"
PROBE_PATH = "/amojo/self-probe/"
PROBE_TIMEOUT_SECONDS = 5.0  # amojo waits this long for a hook's answer
# An unreachable listener is a problem at once, and the bridge counts as unable to do its
# job after this long (managers' messages pile up unseen).
PROBE_UNHEALTHY_AFTER_SECONDS = 5 * 60
# Events are read this far back again each pass: an event may show up in the feed a while
# after its message (undocumented); ids already known cost nothing.
EVENTS_OVERLAP_SECONDS = 5 * 60
EVENTS_MAX_PAGES = 50
CONTACTS_PER_REQUEST = 40
FEED_RECHECK_SECONDS = 60 * 60  # a refused feed is asked again this often
DISPATCHED_MEMORY = 100_000  # message ids already sent to a chat reading (bounded)


def grace(interval: float) -> float:
    """How old a message must be before a missing hook is assumed (its hook may be on the way)."""
    return min(30.0, float(interval))


@dataclass(slots=True)
class ReconcileStatus:
    """What /healthz says about reconciliation."""

    probe_url: str
    probe_failing_since: float | None = None
    probe_problem: str = ""
    feed_problem: str | None = None
    last_pass_at: float | None = None

    def problems(self, now: float) -> tuple[list[str], list[str]]:
        """(failing, degraded) findings."""
        failing: list[str] = []
        degraded: list[str] = []
        if self.probe_failing_since is not None:
            since = int(now - self.probe_failing_since)
            text = (
                f"amoCRM cannot reach the bridge: GET {self.probe_url} failed for {since} s "
                f"({self.probe_problem}); hooks sent meanwhile are read back from amoCRM"
            )
            (failing if since > PROBE_UNHEALTHY_AFTER_SECONDS else degraded).append(text)
        if self.feed_problem is not None:
            degraded.append(
                f"amoCRM's events feed cannot be read ({self.feed_problem}): hooks lost while "
                "the bridge runs are not noticed; gaps it sees are read chat by chat"
            )
        return failing, degraded


class FeedUnavailable(Exception):
    """amoCRM refuses the events feed (rights, the account): reconcile without it."""


class Reconciler:
    """Runs the periodic pass, and covers gaps through the events feed when it can."""

    def __init__(
        self,
        repo: Repository,
        crm: CrmClient,
        metrics: Metrics,
        *,
        public_base_url: str,
        interval: float,
        budget: AsyncLimiter,
        amo_clock: Callable[[], float] = lambda: 0.0,
        foreign: ForeignChats | None = None,
    ) -> None:
        self.foreign = foreign or ForeignChats()
        # Seconds amoCRM's clock is ahead of ours (amojo's Date headers tell): events are
        # dated by amoCRM, windows by us.
        self.amo_clock = amo_clock
        self.repo = repo
        self.crm = crm
        self.metrics = metrics
        self.interval = interval
        self.budget = budget
        self.probe_token = secrets.token_urlsafe(18)
        self.status = ReconcileStatus(f"{public_base_url}{PROBE_PATH}…")
        self._probe_url = f"{public_base_url}{PROBE_PATH}{self.probe_token}"
        self._last_reached: float | None = None
        self._feed_refused_at: float | None = None
        self._contacts: dict[int, tuple[float, list[str]]] = {}
        self._dispatched: dict[str, float] = {}
        self._lock = asyncio.Lock()  # one events pass at a time
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Probe and reconcile now, then every interval, until stopped."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="reconcile")

    async def stop(self) -> None:
        """Stop the periodic pass."""
        await cancel_and_wait([self._task])
        self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.probe()
                await self.run_pass()
            except StorageError as exc:
                if not is_outage(exc):  # an outage is logged once by the repository
                    logger.warning("reconciliation pass not stored (%s); trying again", exc)
            except Exception:
                logger.exception("reconciliation pass failed; trying again next interval")
            await asyncio.sleep(self.interval)

    # ---- the listener as amoCRM sees it ----------------------------------------------------

    async def probe(self) -> bool:
        """Request our own public URL as amoCRM would; a failure span becomes a gap."""
        if self._http is None:
            # A new connection each time, as amoCRM's own requests come: a kept-alive one
            # could outlive the very proxy or certificate the probe is there to check.
            self._http = aiohttp.ClientSession(
                headers={"User-Agent": "tg-amocrm-bridge probe"},
                connector=aiohttp.TCPConnector(force_close=True),
            )
        problem = ""
        try:
            async with self._http.get(
                self._probe_url,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS),
            ) as response:
                if response.status != 204:
                    problem = f"answered HTTP {response.status}, not this bridge's probe answer"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            problem = describe_exception(exc) or "no answer"
        now = time.time()
        status = self.status
        if not problem:
            if status.probe_failing_since is not None:
                await self._unreachable_gap(status.probe_failing_since, now)
            status.probe_failing_since, status.probe_problem = None, ""
            self._last_reached = now
            return True
        if status.probe_failing_since is None:
            status.probe_failing_since = now
            logger.warning("amoCRM cannot reach the bridge: GET %s: %s", status.probe_url, problem)
        status.probe_problem = problem
        return False

    async def _unreachable_gap(self, failing_since: float, now: float) -> None:
        started = self._last_reached if self._last_reached is not None else failing_since
        logger.warning("the bridge is reachable again after %.0f s", now - failing_since)
        async with self.repo.transaction() as tx:
            gap_id = await tx.add_gap(started, now, REASON_UNREACHABLE, recovery_job(started, now))
        report_gap(self.metrics, gap_id, started, now, REASON_UNREACHABLE)

    # ---- the events feed -----------------------------------------------------------------

    async def run_pass(self) -> None:
        """One periodic pass over the events since the last one."""
        refused_at = self._feed_refused_at
        if refused_at is not None and time.time() - refused_at < FEED_RECHECK_SECONDS:
            self.metrics.reconcile_runs.labels("no_feed").inc()
            return
        now = time.time()
        stored = await self.repo.get_kv(KV_WATERMARK)
        until = now - grace(self.interval)
        since = (float(stored) if stored else until - self.interval) - EVENTS_OVERLAP_SECONDS
        backlog = json.loads(await self.repo.get_kv(KV_BACKLOG) or "null")
        try:
            if backlog is not None and len(backlog) == 3:  # what a capped read left comes first
                since_b, until_b, page = backlog
                _, left = await self.store_readings(
                    None, since_b, until_b, first_page=int(page), record=KV_BACKLOG
                )
            if backlog is None or len(backlog) != 3 or left is None:
                await self.store_readings(None, since, until, record=KV_WATERMARK)
        except FeedUnavailable:
            self.metrics.reconcile_runs.labels("no_feed").inc()
            return
        except RetryLater as exc:
            self.metrics.reconcile_runs.labels("failed").inc()
            logger.warning("reconciliation pass: %s; trying again next interval", exc.reason)
            return
        self.status.last_pass_at = now
        self.metrics.reconcile_runs.labels("ok").inc()

    async def cover_gap(self, gap_id: int, since: float, until: float) -> int | None:
        """Store the chat readings a gap needs, found through the events feed; None when the
        feed cannot be had. RetryLater while amoCRM is down."""
        until = min(max(until, time.time() - grace(self.interval)), time.time())
        page: int | None = 1
        stored = 0
        try:
            while page is not None:
                new, page = await self.store_readings(gap_id, since, until, first_page=page)
                stored += new
        except FeedUnavailable:
            return None
        return stored

    async def store_readings(
        self,
        gap_id: int | None,
        since: float,
        until: float,
        *,
        first_page: int = 1,
        record: str | None = None,
    ) -> tuple[int, int | None]:
        """Store a chat reading for every manager message of [since, until] the bridge lacks:
        (how many were new, the page to go on from when the pages of one read ran out).

        A window in the past keeps its events and their order, so a capped read goes on at
        the next page (by time it could not: many events may share one second). With
        `record`, the same transaction records how far the feed was read: KV_WATERMARK (the
        periodic pass: `until`) and KV_BACKLOG (the window and page to go on from).
        A message counts as dispatched only once its reading is stored: a failure before that
        leaves it to the next pass.
        """
        ahead = self.amo_clock()
        async with self._lock:
            events, next_page = await self._events(since + ahead, until + ahead, first_page)
            self._forget_old(time.time() - EVENTS_OVERLAP_SECONDS * 3)
            fresh = [e for e in events if e.message_id not in self._dispatched]
            known = await self.repo.known_message_ids([e.message_id for e in fresh])
            unknown = [e for e in fresh if e.message_id not in known]
            jobs = await self._readings(gap_id, unknown, ahead) if unknown else []
            async with self.repo.transaction() as tx:
                stored = sum(await tx.insert_jobs(jobs))
                if record == KV_WATERMARK:
                    await tx.set_kv(KV_WATERMARK, repr(until))
                if record is not None and next_page is not None:
                    await tx.set_kv(KV_BACKLOG, json.dumps([since, until, next_page]))
                elif record == KV_BACKLOG:
                    await tx.delete_kv(KV_BACKLOG)
            for event in fresh:
                self._dispatched[event.message_id] = time.time()
            return stored, next_page

    async def _events(
        self, since: float, until: float, first_page: int = 1
    ) -> tuple[list[ChatMessageEvent], int | None]:
        """The events of [since, until] from `first_page` on, at most EVENTS_MAX_PAGES pages,
        and the page to go on from when they ran out (None: all read)."""
        events: list[ChatMessageEvent] = []
        more = False
        page = first_page
        for page in range(first_page, first_page + EVENTS_MAX_PAGES):
            batch, more = await self._crm(self.crm.chat_message_events, since, until, page)
            events += batch
            if not more:
                break
        if self.status.feed_problem is not None:
            logger.info("amoCRM's events feed answers again")
        self.status.feed_problem, self._feed_refused_at = None, None
        if not more:
            return events, None
        logger.warning(
            "amoCRM's events feed: more than %d events between %s and %s; the rest is read "
            "next pass",
            len(events),
            time.strftime("%H:%M:%S", time.gmtime(since)),
            time.strftime("%H:%M:%S", time.gmtime(until)),
        )
        return events, page + 1

    async def _readings(
        self, gap_id: int | None, unknown: list[ChatMessageEvent], ahead: float
    ) -> list[NewJob]:
        by_contact: dict[int, list[ChatMessageEvent]] = {}
        for event in unknown:
            contact = event.contact_id
            if contact is None and event.lead_id is not None:
                try:
                    contacts = await self._crm(self.crm.lead_contacts, event.lead_id)
                except RetryLater as exc:
                    if not isinstance(exc.__cause__, CrmError) or exc.__cause__.status != 404:
                        raise
                    logger.info("manager message %s: its lead is gone", event.message_id)
                    continue
                contact = contacts[0] if contacts else None
            if contact is not None:
                by_contact.setdefault(contact, []).append(event)
        chats = await self._contact_chats(list(by_contact))
        jobs: list[NewJob] = []
        for contact, events in by_contact.items():
            wanted = [event.message_id for event in events]
            since = min(event.created_at for event in events) - ahead - GAP_MARGIN_SECONDS
            for amo_chat_id in chats.get(contact, []):
                chat = await self.repo.chat_of_amo_chat(amo_chat_id)
                if chat is None and amo_chat_id in self.foreign:
                    continue  # another channel's chat of the contact
                jobs.append(wanted_job(gap_id, amo_chat_id, chat, wanted, since))
        logger.info(
            "%d manager message(s) without a hook: reading %d chat(s)", len(unknown), len(jobs)
        )
        return jobs

    async def _contact_chats(self, contacts: Sequence[int]) -> dict[int, list[str]]:
        now = time.time()
        found = {c: self._contacts[c][1] for c in contacts if c in self._contacts}
        missing = [c for c in contacts if c not in found]
        for start in range(0, len(missing), CONTACTS_PER_REQUEST):
            chunk = missing[start : start + CONTACTS_PER_REQUEST]
            answer = await self._crm(self.crm.contact_chats, chunk)
            for contact in chunk:
                chats = answer.get(contact, [])
                found[contact] = chats
                self._contacts[contact] = (now, chats)
        if len(self._contacts) > DISPATCHED_MEMORY:
            self._contacts.clear()
        return found

    def _forget_old(self, before: float) -> None:
        if len(self._dispatched) > DISPATCHED_MEMORY:
            self._dispatched.clear()
        stale = [key for key, at in self._dispatched.items() if at < before]
        for key in stale:
            del self._dispatched[key]
        old_contacts = [c for c, (at, _) in self._contacts.items() if at < before]
        for contact in old_contacts:
            del self._contacts[contact]

    async def _crm(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """One CRM request within the budget; FeedUnavailable / RetryLater on refusals."""
        await self.budget.acquire()
        self.metrics.reconcile_requests.labels("amocrm").inc()
        try:
            return await call(*args)
        except CrmError as exc:
            # Only the feed's own refusal turns it off; a refused lookup (a deleted lead, a
            # contact without rights) fails this pass, and the next one asks again.
            if exc.status in (400, 403, 404) and call == self.crm.chat_message_events:
                self._refused(f"HTTP {exc.status}: {exc.message}")
                raise FeedUnavailable(str(exc)) from exc
            raise RetryLater(f"amoCRM: {exc}") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise RetryLater(f"amoCRM unreachable: {describe_exception(exc)}") from exc

    def _refused(self, why: str) -> None:
        if self.status.feed_problem is None:
            logger.error(
                "amoCRM refuses its events feed (%s): hooks lost while the bridge runs are not "
                "noticed; gaps it sees are read chat by chat from history",
                why,
            )
        self.status.feed_problem = why
        self._feed_refused_at = time.time()
