"""Fake amoCRM REST API v4 (Bearer auth, problem+json errors) for end-to-end tests."""

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer

Handler = Callable[["CrmRequest"], Awaitable[web.StreamResponse]]
PROBLEM_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


def problem(status: int, detail: str, **extra: Any) -> web.Response:
    """An application/problem+json error answer as amoCRM sends it (§8.3)."""
    body = {
        "title": PROBLEM_TITLES.get(status, "Error"),
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
        **extra,
    }
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


def hal(body: Any, status: int = 200) -> web.Response:
    """An application/hal+json answer."""
    return web.Response(status=status, text=json.dumps(body), content_type="application/hal+json")


@dataclass
class CrmRequest:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    status: int = 0


@dataclass
class _Failure:
    path: str
    status: int
    times: int
    body: Any
    headers: dict[str, str] | None


@dataclass
class _Route:
    method: str
    path: str
    handler: Handler
    auth: bool = True
    hits: list[CrmRequest] = field(default_factory=list)


class FakeCrm(FakeServer):
    """amoCRM REST v4 of one account: GET /api/v4/account for now."""

    def __init__(
        self,
        access_token: str,
        amojo_id: str,
        *,
        account_id: int = 12345,
        subdomain: str = "test",
        rate_limit: int | None = 7,
    ) -> None:
        super().__init__()
        self.access_token = access_token
        self.amojo_id = amojo_id
        self.account_id = account_id
        self.subdomain = subdomain
        self.rate_limit = rate_limit
        self.requests: list[CrmRequest] = []
        self.routes: dict[tuple[str, str], _Route] = {}
        self._failures: list[_Failure] = []
        self._recent: list[float] = []
        self.add_route("GET", "/api/v4/account", self._account)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    def add_route(self, method: str, path: str, handler: Handler, *, auth: bool = True) -> None:
        """Register a handler for an exact path (used to grow talks, calls, OAuth)."""
        self.routes[(method.upper(), path)] = _Route(method.upper(), path, handler, auth)

    def fail(
        self,
        path: str,
        status: int,
        times: int = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` requests to path with status (problem+json unless body)."""
        self._failures.append(_Failure(path, status, times, body, headers))

    def requests_to(self, path: str, method: str | None = None) -> list[CrmRequest]:
        """Recorded requests of one path (and method)."""
        return [
            r
            for r in self.requests
            if r.path == path and (method is None or r.method == method.upper())
        ]

    def describe(self) -> str:
        """Summary for timeout messages."""
        return f"requests: {[(r.method, r.path, r.status) for r in self.requests[-10:]]}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
        recorded = CrmRequest(
            request.method, request.path, dict(request.query), dict(request.headers), body
        )
        self.requests.append(recorded)
        try:
            response = await self._respond(request, recorded)
        except ValueError as error:
            response = problem(400, str(error))
        recorded.status = response.status
        await self._notify()
        return response

    async def _respond(self, request: web.Request, recorded: CrmRequest) -> web.StreamResponse:
        route = self.routes.get((request.method, request.path))
        if route is None:
            return problem(404, f"{request.method} {request.path} not found")
        if self._rate_limited():
            return problem(429, "Too many requests per second")
        for failure in self._failures:
            if failure.path == request.path and failure.times > 0:
                failure.times -= 1
                if failure.body is None:
                    response = problem(failure.status, "Injected failure")
                else:
                    response = web.json_response(failure.body, status=failure.status)
                response.headers.update(failure.headers or {})
                return response
        if route.auth:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer ") or header.removeprefix("Bearer ") != (
                self.access_token
            ):
                return problem(401, "Incorrect or missing access token")
        route.hits.append(recorded)
        return await route.handler(recorded)

    def _rate_limited(self) -> bool:
        if self.rate_limit is None:
            return False
        now = time.monotonic()
        self._recent = [t for t in self._recent if now - t < 1.0]
        if len(self._recent) >= self.rate_limit:
            return True
        self._recent.append(now)
        return False

    async def _account(self, request: CrmRequest) -> web.StreamResponse:
        now = int(time.time())
        account: dict[str, Any] = {
            "id": self.account_id,
            "name": "Test",
            "subdomain": self.subdomain,
            "created_at": now - 86400 * 30,
            "created_by": 0,
            "updated_at": now - 3600,
            "updated_by": 0,
            "current_user_id": 504141,
            "country": "RU",
            "currency": "RUB",
            "currency_symbol": "₽",
            "customers_mode": "disabled",
            "is_unsorted_on": True,
            "mobile_feature_version": 0,
            "is_loss_reason_enabled": True,
            "is_helpbot_enabled": False,
            "is_technical_account": False,
            "contact_name_display_order": 1,
            "_links": {"self": {"href": f"https://{self.subdomain}.amocrm.ru/api/v4/account"}},
        }
        with_ = request.query.get("with", "").split(",")
        if "amojo_id" in with_:
            account["amojo_id"] = self.amojo_id
        return hal(account)
