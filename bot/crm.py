"""Client of the amoCRM REST API v4 (Bearer auth)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx

logger = logging.getLogger(__name__)


class CrmError(Exception):
    """The CRM answered with an error status."""

    def __init__(self, status: int, message: str, body: str = "") -> None:
        super().__init__(f"amoCRM HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class TokenProvider(Protocol):
    """Source of the current access token."""

    async def access_token(self) -> str:
        """A token valid right now."""
        ...


class StaticToken:
    """A long-lived access token from the settings."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def access_token(self) -> str:
        """The configured token."""
        return self._token


def problem_message(response: httpx.Response) -> str:
    """A readable message from an error response (application/problem+json or plain)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if not isinstance(data, dict):
        return str(data)[:300]
    parts = [str(data[key]) for key in ("title", "detail", "hint") if data.get(key)]
    for group in data.get("validation-errors") or []:
        for error in group.get("errors") or [] if isinstance(group, dict) else []:
            if isinstance(error, dict):
                parts.append(f"{error.get('path', '?')}: {error.get('detail', error.get('code'))}")
    return "; ".join(parts) or response.reason_phrase


class CrmClient:
    """Requests to `{AMOCRM_BASE_URL}/api/v4/...`."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenProvider,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One authorised request; raises CrmError on a 4xx/5xx answer."""
        token = await self._tokens.access_token()
        response = await self._http.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
        )
        if response.status_code >= 400:
            raise CrmError(response.status_code, problem_message(response), response.text)
        return response

    async def account_amojo_id(self) -> str:
        """The account's amojo id (`GET /api/v4/account?with=amojo_id`)."""
        response = await self.request("GET", "/api/v4/account", params={"with": "amojo_id"})
        amojo_id = response.json().get("amojo_id")
        if not amojo_id:
            raise CrmError(response.status_code, "the account answer has no amojo_id")
        return str(amojo_id)
