"""Which services the bridge depends on are failing right now, since when, and why.

Fed by every call to Telegram, amojo and amoCRM (and by start-up's waits); read by
`/healthz`, which turns each outage into a problem with its age. Kept free of aiogram.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

TELEGRAM = "Telegram"
AMOJO = "amojo"
AMOCRM = "amoCRM"
# How long a service may fail before the bridge counts as unable to do its job (503):
# without Telegram no customer message comes in and no manager message goes out; without
# amojo nothing reaches amoCRM. amoCRM's REST API only serves staff commands: never 503.
UNHEALTHY_AFTER_SECONDS: dict[str, float | None] = {
    TELEGRAM: 3 * 60,
    AMOJO: 5 * 60,
    AMOCRM: None,
}
# amoCRM's REST API is called only now and then (staff commands): with no call to end it, an
# outage is taken as over this long after its last failure.
QUIET_END_SECONDS: dict[str, float] = {AMOCRM: 10 * 60}
# Outcomes of a call that say the service is down or refusing us (not "this request is wrong").
DOWN_OUTCOMES = frozenset({"error", "network", "timeout", "401", "403", "429"})


@dataclass(slots=True)
class Outage:
    """One failing service."""

    service: str
    problem: str
    since: float
    fatal: bool = False
    last_failure: float = 0.0

    def describe(self, now: float) -> str:
        """`Telegram failing for 42 s: …`."""
        return f"{self.service} failing for {int(now - self.since)} s: {self.problem}"

    def unhealthy(self, now: float) -> bool:
        """Whether this outage means the bridge cannot do its job."""
        limit = UNHEALTHY_AFTER_SECONDS.get(self.service)
        return self.fatal or (limit is not None and now - self.since > limit)


class Outages:
    """The current outage of each service; a success ends it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._current: dict[str, Outage] = {}

    def down(self, service: str, problem: str, *, fatal: bool = False) -> None:
        """`service` failed just now (its outage keeps the time it started)."""
        now = self._clock()
        outage = self.failing(service)
        if outage is None:
            self._current[service] = Outage(service, problem, now, fatal, now)
            logger.warning("%s failing: %s", service, problem)
            return
        outage.problem = problem
        outage.fatal = fatal
        outage.last_failure = now

    def up(self, service: str) -> None:
        """`service` answered: its outage, if any, is over."""
        outage = self._current.pop(service, None)
        if outage is not None:
            logger.info(
                "%s answers again after %d s of failures", service, self._clock() - outage.since
            )

    def observe(self, service: str, outcome: str, problem: str) -> None:
        """Classify one outcome ("ok", a status, "network"; "cancelled" tells nothing)."""
        if outcome in DOWN_OUTCOMES or (outcome.isdigit() and int(outcome) >= 500):
            self.down(service, problem or f"HTTP {outcome}")
        elif outcome == "ok" or outcome.isdigit():
            self.up(service)  # it answered; a 400 or 404 is about this one request

    def active(self) -> list[Outage]:
        """Every service failing now, longest first."""
        current = (self.failing(service) for service in list(self._current))
        return sorted((o for o in current if o is not None), key=lambda outage: outage.since)

    def failing(self, service: str) -> Outage | None:
        """The outage of one service (one quiet for long enough is over)."""
        outage = self._current.get(service)
        quiet = QUIET_END_SECONDS.get(service)
        if outage is not None and quiet is not None and self._clock() - outage.last_failure > quiet:
            del self._current[service]
            return None
        return outage


def describe_exception(exc: BaseException) -> str:
    """`ConnectError: [Errno 111] Connection refused`, or the class name alone."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
