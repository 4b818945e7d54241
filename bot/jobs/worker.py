"""Durable job workers: per-lane FIFO, retries with backoff and jitter, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import aiohttp
import httpx

from bot.common.limits import (
    RETRY_BASE_SECONDS,
    RETRY_MAX_SECONDS,
    TELEGRAM_UNAUTHORIZED_RETRY_SECONDS,
)
from bot.common.metrics import Metrics
from bot.common.tasks import cancel_and_wait
from storage import Job, NewJob, Repository, StorageError, is_outage
from storage.repository import Transaction

logger = logging.getLogger(__name__)
# Jitter from a generator of its own: nothing else's use of `random` shifts it, and its use
# shifts nothing else's.
_JITTER = random.Random()
# A forked child (a process manager's, the tests' zygote) must not repeat its parent's draws.
os.register_at_fork(after_in_child=_JITTER.seed)

Recorder = Callable[[Transaction], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Done:
    """A job succeeded: enqueue `followups` and run `record` in the same transaction."""

    followups: Sequence[NewJob] = ()
    record: Recorder | None = None


JobRunner = Callable[[Job], Awaitable[Done]]
_Finished = tuple[Job, Done, "asyncio.Future[None]"]
DeadHandler = Callable[[Job, str], Awaitable[Sequence[NewJob]]]


class RetryLater(Exception):
    """The job may succeed later; `delay` overrides the backoff when given."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class GiveUp(Exception):
    """The job can never succeed; it goes to the dead-letter state with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class JobKind:
    """How to run one kind of job."""

    run: JobRunner
    on_dead: DeadHandler | None = None
    give_up_after: float | None = None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits up to base·2ⁿ⁻¹ (capped)."""

    base: float = RETRY_BASE_SECONDS
    cap: float = RETRY_MAX_SECONDS

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the given number of failed attempts."""
        ceiling = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        return _JITTER.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a failed attempt."""

    retry: bool
    reason: str
    delay: float | None = None
    give_up_after: float | None = None


@runtime_checkable
class ServiceFailure(Protocol):
    """An error of a service client that says itself whether retrying can help.

    The engine never imports its clients (amojo, amoCRM): their errors carry the verdict.
    """

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later."""
        ...

    @property
    def retry_delay(self) -> float | None:
        """How long the service asked us to wait (None: the usual backoff)."""
        ...

    @property
    def give_up_after(self) -> float | None:
        """How long a job may keep retrying this failure (None: as long as its kind allows)."""
        ...


def classify_failure(exc: Exception) -> Decision:
    """Tell transient failures (retry) from permanent ones (dead letter)."""
    # Imported here: `python -m bot` reaches this module before aiogram (seconds of import)
    # is loaded in a thread, and a restart listens for hooks meanwhile (bot/launch.py).
    from aiogram.exceptions import (  # noqa: PLC0415
        TelegramNetworkError,
        TelegramRetryAfter,
        TelegramServerError,
        TelegramUnauthorizedError,
    )

    match exc:
        case RetryLater():
            return Decision(True, exc.reason, exc.delay)
        case GiveUp():
            return Decision(False, exc.reason)
        case ServiceFailure():
            return Decision(exc.retryable, str(exc), exc.retry_delay, exc.give_up_after)
        case TelegramRetryAfter():
            return Decision(True, f"Telegram flood control: {exc.message}", exc.retry_after)
        case TelegramNetworkError() | TelegramServerError():
            return Decision(True, f"Telegram unavailable: {exc.message}")
        case TelegramUnauthorizedError():
            reason = f"Telegram rejects the bot's token: {exc.message}"
            return Decision(True, reason, TELEGRAM_UNAUTHORIZED_RETRY_SECONDS)
        case httpx.TimeoutException() | httpx.TransportError():
            return Decision(True, f"{type(exc).__name__}: {exc}")
        case aiohttp.ClientError() | TimeoutError() | ConnectionError():
            return Decision(True, f"{type(exc).__name__}: {exc}")
        case StorageError():
            return Decision(True, f"database: {exc}")
    return Decision(False, f"internal error {type(exc).__name__}: {exc}")


# However long a job's backoff: one interrupted by a crash or a stop is due this soon after.
LEASE_MAX_SECONDS = 30.0
_MESSAGE_OUTCOMES = {"done": "delivered", "retry": "retried", "dead": "failed"}


class Worker:
    """Runs the jobs of one queue with bounded concurrency, one job per lane at a time."""

    def __init__(
        self,
        repo: Repository,
        queue: str,
        kinds: dict[str, JobKind],
        *,
        metrics: Metrics,
        concurrency: int = 32,
        backoff: Backoff | None = None,
        poll_interval: float = 1.0,
        direction: str | None = None,
        message_kinds: frozenset[str] = frozenset(),
    ) -> None:
        self.repo = repo
        self.direction = direction or queue
        self.message_kinds = message_kinds
        metrics.queues.add(queue)
        self.queue = queue
        self.kinds = kinds
        self.metrics = metrics
        self.concurrency = concurrency
        self.backoff = backoff or Backoff()
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._finishing: list[_Finished] = []
        self._finisher: asyncio.Task[None] | None = None
        self._stopping = False
        repo.on_enqueue(self._on_enqueue)

    def _on_enqueue(self, queue: str) -> None:
        if queue == self.queue:
            self._wake.set()

    def wake(self) -> None:
        """Look for due jobs now."""
        self._wake.set()

    def start(self) -> None:
        """Begin running jobs in the background."""
        self._stopping = False
        self._loop_task = asyncio.create_task(self._run(), name=f"worker-{self.queue}")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking jobs, let in-flight ones finish within `grace` s, leave the rest pending."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        pending = list(self._inflight.values())
        if not pending:
            return
        _, still_running = await asyncio.wait(pending, timeout=grace)
        await cancel_and_wait(still_running)
        if self._finisher is not None:
            await self._finisher
        if still_running:
            logger.warning(
                "%s: %d job(s) interrupted by shutdown stay pending", self.queue, len(still_running)
            )

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                started = await self._start_due_jobs()
            except StorageError as exc:
                if not is_outage(exc):  # an outage is logged once by the repository
                    logger.exception("%s: cannot read the queue; retrying", self.queue)
                started = 0
            if started or self._stopping:
                continue
            timeout = self.poll_interval
            if not self._inflight or len(self._inflight) < self.concurrency:
                with contextlib.suppress(StorageError):
                    due_at = await self.repo.next_due_at(self.queue)
                    if due_at is not None and due_at > time.time():
                        timeout = min(timeout, due_at - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.001))

    async def _start_due_jobs(self) -> int:
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        jobs = await self.repo.due_jobs(self.queue, time.time(), free, set(self._inflight))
        if not jobs:
            return 0
        now = time.time()
        # Each job is leased until its backoff would retry it: however its handling ends (a
        # crash, an error nothing expected), it is never due again at once.
        await self.repo.start_attempts(
            [
                (job.id, now + min(LEASE_MAX_SECONDS, self.backoff.delay(job.attempts + 1)))
                for job in jobs
            ]
        )
        for job in jobs:
            self._inflight[job.lane] = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        return len(jobs)

    async def _execute(self, job: Job) -> None:
        started = time.perf_counter()
        kind = self.kinds.get(job.kind)
        outcome = "done"
        try:
            if kind is None:
                raise GiveUp(f"no runner for job kind {job.kind!r}")
            try:
                done = await kind.run(job)
            except Exception as exc:
                outcome = await self._fail(job, kind, exc)
            else:
                try:
                    await self._record_done(job, done)
                except StorageError:
                    raise
                except Exception as exc:  # recording what the job did failed: not a success
                    outcome = await self._fail(job, kind, exc)
        except GiveUp as exc:
            outcome = "dead"
            await self._kill(job, None, exc.reason)
        except StorageError as exc:
            # Left pending: its lease (start_attempts) retries it later, not at once.
            outcome = "retry"
            logger.log(
                logging.DEBUG if is_outage(exc) else logging.WARNING,
                "job %d (%s): could not record its outcome; retried later",
                job.id,
                job.kind,
            )
        except Exception:
            # A failure while handling a failure (a bug): the lease retries it with backoff.
            outcome = "retry"
            logger.exception("job %d (%s): its failure could not be handled", job.id, job.kind)
        finally:
            self._inflight.pop(job.lane, None)
            self._wake.set()
            self.metrics.jobs.labels(self.queue, job.kind, outcome).inc()
            if job.kind in self.message_kinds:
                self.metrics.messages.labels(
                    self.direction, job.kind, _MESSAGE_OUTCOMES[outcome]
                ).inc()
            self.metrics.job_seconds.labels(self.queue).observe(time.perf_counter() - started)

    async def _record_done(self, job: Job, done: Done) -> None:
        """Mark the job done durably; jobs finishing together share one transaction."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finishing.append((job, done, future))
        if self._finisher is None or self._finisher.done():
            self._finisher = asyncio.create_task(
                self._finish_batches(), name=f"finish-{self.queue}"
            )
        await future

    async def _finish_batches(self) -> None:
        # Group commit: while one transaction runs, the next finishes queue up behind it.
        # Each job's own _execute awaits its entry, so it is still done only once committed.
        while self._finishing:
            batch, self._finishing = self._finishing, []
            try:
                await self._finish(batch)
            except Exception:
                # One outcome that cannot be recorded must not hold back the others.
                for entry in batch:
                    try:
                        await self._finish([entry])
                    except Exception as exc:
                        if not entry[2].done():
                            entry[2].set_exception(exc)

    async def _finish(self, batch: Sequence[_Finished]) -> None:
        async with self.repo.transaction() as tx:
            for job, done, _ in batch:
                if done.record is not None:
                    await done.record(tx)
                await tx.finish_job(job.id, done.followups)
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)

    async def _fail(self, job: Job, kind: JobKind, exc: Exception) -> str:
        decision = classify_failure(exc)
        age = time.time() - job.retrying_since
        limits = [x for x in (kind.give_up_after, decision.give_up_after) if x is not None]
        if decision.retry and (not limits or age < min(limits)):
            delay = (
                decision.delay
                if decision.delay is not None
                else self.backoff.delay(job.attempts + 1)
            )
            logger.warning(
                "job %d (%s, lane %s) attempt %d failed, retry in %.1fs: %s",
                job.id,
                job.kind,
                job.lane,
                job.attempts + 1,
                delay,
                decision.reason,
            )
            async with self.repo.transaction() as tx:
                await tx.retry_job(job.id, time.time() + delay, decision.reason)
            return "retry"
        reason = decision.reason
        if decision.retry:
            reason = f"still failing after {int(age)} s: {reason}"
        if not isinstance(exc, GiveUp | ServiceFailure) and not decision.retry:
            logger.error("job %d (%s) failed", job.id, job.kind, exc_info=exc)
        await self._kill(job, kind, reason)
        return "dead"

    async def _kill(self, job: Job, kind: JobKind | None, reason: str) -> None:
        followups: Sequence[NewJob] = ()
        if kind is not None and kind.on_dead is not None:
            try:
                followups = await kind.on_dead(job, reason)
            except StorageError:
                raise
            except Exception as exc:  # the job is dead all the same; say why nothing followed
                logger.error(
                    "job %d (%s): its dead-letter handler failed", job.id, job.kind, exc_info=exc
                )
                reason = f"{reason} (and what follows a dead letter failed: {type(exc).__name__})"
        logger.error("job %d (%s, lane %s) dead-lettered: %s", job.id, job.kind, job.lane, reason)
        self.metrics.dead_letters.labels(self.queue, job.kind).inc()
        async with self.repo.transaction() as tx:
            await tx.kill_job(job.id, reason, followups)
