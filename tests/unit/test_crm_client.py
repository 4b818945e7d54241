"""CRM REST client against the loopback FakeCrm: OAuth rotation, pacing, 429, errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.amocrm.crm import (
    CrmAuthError,
    CrmClient,
    CrmError,
    CrmPacer,
    OAuthApp,
    OAuthTokens,
    StaticToken,
    problem_message,
)
from bot.amocrm.crm_records import NewCall
from simulators.crm import CrmRequest, FakeCrm, hal
from storage import Repository, open_repository
from storage.crm import TokenPair, load_token_pair, save_token_pair

ACCOUNT = "52e591f7-c98f-4255-8495-827210138c81"
APP = OAuthApp("client-1", "secret-1", "https://bridge.example.com/oauth", "code-1")


class Clock:
    """A settable wall clock for token expiry."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def crm() -> AsyncIterator[FakeCrm]:
    async with FakeCrm("static-token", ACCOUNT) as fake:
        fake.enable_oauth(APP.client_id, APP.client_secret, APP.redirect_uri, "code-1")
        yield fake


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    repository = await open_repository(tmp_path / "crm.sqlite3")
    yield repository
    await repository.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_client(
    crm: FakeCrm, repo: Repository, clock: Clock
) -> AsyncIterator[Callable[..., CrmClient]]:
    clients: list[CrmClient] = []

    def make(app: OAuthApp | None = APP, **kwargs: object) -> CrmClient:
        pacer = CrmPacer()
        tokens: OAuthTokens | StaticToken = StaticToken("static-token")
        if app is not None:
            tokens = OAuthTokens(crm.url, app, repo, pacer=pacer, clock=clock)
        client = CrmClient(crm.url, tokens, pacer=pacer, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_code_is_exchanged_once_and_the_pair_survives_a_restart(
    crm: FakeCrm, repo: Repository, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client()
    assert await client.account_amojo_id() == ACCOUNT
    stored = await load_token_pair(repo)
    assert stored is not None
    assert stored.access_token in crm.access_tokens
    assert crm.grants == [("authorization_code", True)]
    assert crm.requests_to("/api/v4/account")[0].headers["Authorization"] == (
        f"Bearer {stored.access_token}"
    )

    restarted = make_client()  # same code still configured: it must not be exchanged again
    assert await restarted.account_amojo_id() == ACCOUNT
    assert crm.grants == [("authorization_code", True)]


async def test_refresh_before_expiry_persists_the_new_pair_before_using_it(
    crm: FakeCrm, repo: Repository, clock: Clock, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client()
    await client.account_amojo_id()
    first = await load_token_pair(repo)
    assert first is not None
    seen_stored: list[str | None] = []

    async def talk(request: CrmRequest) -> web.StreamResponse:
        pair = await load_token_pair(repo)
        seen_stored.append(pair.access_token if pair else None)
        return hal({"talk_id": 5, "is_in_work": True})

    crm.add_route("GET", "/api/v4/talks/5", talk)
    clock.now += 86400 - 60  # inside the refresh margin, not yet expired
    await client.get_talk(5)

    assert crm.grants == [("authorization_code", True), ("refresh_token", True)]
    second = await load_token_pair(repo)
    assert second is not None
    assert second.refresh_token != first.refresh_token
    used = crm.requests_to("/api/v4/talks/5")[0].headers["Authorization"]
    assert used == f"Bearer {second.access_token}"
    assert seen_stored == [second.access_token]


async def test_concurrent_401s_cause_one_refresh(
    crm: FakeCrm, repo: Repository, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client()
    await client.account_amojo_id()
    crm.expire_access_tokens()

    results = await asyncio.gather(*(client.account_amojo_id() for _ in range(8)))

    assert results == [ACCOUNT] * 8
    assert crm.grants_of("refresh_token") == 1
    assert crm.grants_of("refresh_token", ok=False) == 0


async def test_concurrent_expiry_causes_one_refresh(
    crm: FakeCrm, clock: Clock, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client()
    await client.account_amojo_id()
    clock.now += 2 * 86400

    await asyncio.gather(*(client.account_amojo_id() for _ in range(8)))

    assert crm.grants_of("refresh_token") == 1


async def test_fake_rejects_a_reused_refresh_token(
    crm: FakeCrm, repo: Repository, clock: Clock, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client()
    await client.account_amojo_id()
    old = await load_token_pair(repo)
    assert old is not None
    clock.now += 2 * 86400
    await client.account_amojo_id()

    body = {
        "client_id": APP.client_id,
        "client_secret": APP.client_secret,
        "redirect_uri": APP.redirect_uri,
        "grant_type": "refresh_token",
        "refresh_token": old.refresh_token,
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{crm.url}/oauth2/access_token", json=body)
    assert response.status_code == 400
    assert "revoked" in problem_message(response)

    # A bridge restored from a stale backup would reuse it: it must say so plainly.
    async with repo.transaction() as tx:
        await save_token_pair(tx, old)
    stale = make_client()
    with pytest.raises(CrmAuthError, match=r"refused the refresh_token grant.*revoked"):
        await stale.account_amojo_id()


async def test_failed_refresh_keeps_the_stored_pair_usable(
    crm: FakeCrm, repo: Repository, clock: Clock, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client()
    await client.account_amojo_id()
    before = await load_token_pair(repo)
    crm.fail("/oauth2/access_token", 502)
    clock.now += 86400 - 60  # due for refresh but still valid

    assert await client.account_amojo_id() == ACCOUNT  # falls back to the still valid token
    assert await load_token_pair(repo) == before

    restarted = make_client()  # as after a crash: the stored refresh token still works
    clock.now += 120  # now expired: a refresh is required
    assert await restarted.account_amojo_id() == ACCOUNT
    assert crm.grants_of("refresh_token", ok=True) == 1


async def test_pair_not_stored_is_never_handed_out(
    crm: FakeCrm, repo: Repository, clock: Clock, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client()
    await client.account_amojo_id()
    clock.now += 2 * 86400
    calls_before = len(crm.requests_to("/api/v4/account"))

    original = repo.transaction
    failures = [True]

    def flaky_transaction(*, urgent: bool = False) -> Any:
        if failures:
            failures.pop()
            raise OSError("disk full")
        return original(urgent=urgent)

    repo.transaction = flaky_transaction  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        await client.account_amojo_id()
    assert len(crm.requests_to("/api/v4/account")) == calls_before

    assert await client.account_amojo_id() == ACCOUNT  # stores the kept pair, then uses it
    stored = await load_token_pair(repo)
    assert stored is not None
    assert stored.refresh_token in crm.refresh_tokens
    assert crm.grants_of("refresh_token") == 1


async def test_a_new_auth_code_replaces_the_stored_pair(
    crm: FakeCrm, repo: Repository, make_client: Callable[..., CrmClient]
) -> None:
    await make_client().account_amojo_id()
    assert crm.oauth is not None
    crm.oauth.codes.add("code-2")
    regranted = OAuthApp(APP.client_id, APP.client_secret, APP.redirect_uri, "code-2")
    await make_client(regranted).account_amojo_id()
    assert crm.grants_of("authorization_code", ok=True) == 2
    assert regranted.code_sha256 is not None
    stored = await load_token_pair(repo)
    assert stored is not None
    assert stored.auth_code_sha256 == regranted.code_sha256


async def test_no_code_and_no_stored_pair_is_a_readable_error(
    make_client: Callable[..., CrmClient],
) -> None:
    client = make_client(OAuthApp(APP.client_id, APP.client_secret, APP.redirect_uri, None))
    with pytest.raises(CrmAuthError, match="AMOCRM_AUTH_CODE"):
        await client.account_amojo_id()


async def test_expired_code_is_a_readable_error(make_client: Callable[..., CrmClient]) -> None:
    client = make_client(OAuthApp(APP.client_id, APP.client_secret, APP.redirect_uri, "stale"))
    with pytest.raises(CrmAuthError, match="Authorization code has expired"):
        await client.account_amojo_id()


async def test_static_token_401_is_not_retried(
    crm: FakeCrm, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client(None)
    crm.expire_access_tokens()
    with pytest.raises(CrmError) as caught:
        await client.account_amojo_id()
    assert caught.value.status == 401
    assert len(crm.requests) == 1


async def test_burst_stays_within_seven_per_second(
    crm: FakeCrm, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client(None)
    await asyncio.gather(*(client.account_amojo_id() for _ in range(15)))
    assert [r.status for r in crm.requests] == [200] * 15
    assert crm.max_rate(1.0) <= 7


async def test_429_waits_retry_after_then_succeeds(
    crm: FakeCrm, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client(None)
    crm.fail("/api/v4/account", 429, headers={"Retry-After": "1"})
    started = time.monotonic()
    assert await client.account_amojo_id() == ACCOUNT
    assert time.monotonic() - started >= 0.9
    assert [r.status for r in crm.requests] == [429, 200]


async def test_429_beyond_the_wait_budget_is_an_error(
    crm: FakeCrm, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client(None, max_rate_limit_wait=5.0)
    crm.fail("/api/v4/account", 429, headers={"Retry-After": "300"})
    with pytest.raises(CrmError) as caught:
        await client.account_amojo_id()
    assert caught.value.status == 429
    assert caught.value.retry_after == 300


async def test_problem_json_becomes_a_readable_message(
    crm: FakeCrm, make_client: Callable[..., CrmClient]
) -> None:
    client = make_client(None)
    call = NewCall("+79161234567", 10, "sideways", "test", "u-1")
    with pytest.raises(CrmError) as caught:
        await client.add_call(call)
    assert caught.value.status == 400
    assert caught.value.message.startswith("Bad Request; Request validation failed; direction:")
    assert "not a valid choice" in caught.value.message


def test_problem_message_of_plain_and_odd_bodies() -> None:
    plain = httpx.Response(502, text="upstream down")
    assert problem_message(plain) == "upstream down"
    empty = httpx.Response(503)
    assert problem_message(empty) == "Service Unavailable"


async def test_token_pair_round_trip(repo: Repository) -> None:
    pair = TokenPair("a" * 900, "r" * 900, 123.5, None)
    async with repo.transaction() as tx:
        await save_token_pair(tx, pair)
    assert await load_token_pair(repo) == pair
