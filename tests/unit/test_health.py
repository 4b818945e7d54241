"""Outages: which calls start and end a service's outage, and when it makes /healthz 503."""

from __future__ import annotations

import pytest

from bot.common.health import AMOCRM, AMOJO, TELEGRAM, Outages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("outcome", "down"),
    [
        ("network", True),
        ("error", True),
        ("500", True),
        ("503", True),
        ("429", True),
        ("401", True),
        ("403", True),
        ("400", False),
        ("404", False),
        ("ok", False),
    ],
)
def test_which_outcomes_are_outages(outcome: str, down: bool) -> None:
    outages = Outages()
    outages.observe(AMOJO, outcome, "amojo.amocrm.ru answered")
    assert (outages.failing(AMOJO) is not None) is down


def test_an_outage_keeps_its_start_until_an_answer_ends_it() -> None:
    clock = Clock()
    outages = Outages(clock)
    outages.observe(AMOJO, "503", "first")
    clock.now += 30
    outages.observe(AMOJO, "network", "second")
    outage = outages.failing(AMOJO)
    assert outage is not None
    assert (outage.since, outage.problem) == (1000.0, "second")
    assert outage.describe(clock.now) == "amojo failing for 30 s: second"

    outages.observe(AMOJO, "cancelled", "")  # a cancelled call tells nothing
    assert outages.failing(AMOJO) is not None
    outages.observe(AMOJO, "404", "")  # it answered
    assert outages.failing(AMOJO) is None


def test_when_an_outage_makes_the_bridge_unhealthy() -> None:
    clock = Clock()
    outages = Outages(clock)
    outages.down(TELEGRAM, "unreachable")
    outages.down(AMOCRM, "HTTP 503")
    clock.now += 170
    assert [o.unhealthy(clock.now) for o in outages.active()] == [False, False]
    clock.now += 20  # Telegram past 3 minutes; amoCRM only serves staff commands
    assert [o.unhealthy(clock.now) for o in outages.active()] == [True, False]
    outages.down(AMOJO, "refused", fatal=True)
    assert outages.failing(AMOJO).unhealthy(clock.now)  # type: ignore[union-attr]


def test_an_amocrm_outage_ends_after_quiet_time_without_any_call() -> None:
    clock = Clock()
    outages = Outages(clock)
    outages.observe(AMOCRM, "503", "acme.amocrm.ru answered HTTP 503")
    outages.down(TELEGRAM, "unreachable")
    clock.now += 11 * 60  # no staff command since: nothing will end it by answering
    assert [o.service for o in outages.active()] == [TELEGRAM]
