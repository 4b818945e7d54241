"""Fake amoCRM REST API v4 (Bearer auth, problem+json errors) for end-to-end tests."""

import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from simulators.base import FakeServer

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
    at: float = 0.0
    params: dict[str, str] = field(default_factory=dict)
    raw_query: list[tuple[str, str]] = field(default_factory=list)  # repeated keys kept


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
    pattern: re.Pattern[str] | None = None


@dataclass
class OAuthClient:
    """The integration the fake's OAuth endpoint accepts (spec §9.2)."""

    client_id: str
    client_secret: str
    redirect_uri: str
    codes: set[str]
    lifetime: int = 86400


def _last10(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())[-10:]


class FakeCrm(FakeServer):
    """amoCRM REST v4 of one account: account, talks, calls and the OAuth2 token endpoint."""

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
        self.access_tokens: set[str] = {access_token} if access_token else set()
        self.talks: dict[int, dict[str, Any]] = {}
        self.closes: list[tuple[int, bool]] = []
        self.calls: list[dict[str, Any]] = []
        self.phones: dict[str, tuple[str, int]] = {}
        self.oauth: OAuthClient | None = None
        self.refresh_tokens: set[str] = set()
        self.revoked_refresh_tokens: set[str] = set()
        self.grants: list[tuple[str, bool]] = []
        # The integration's sources (sources API): id → source, as amoCRM keeps them.
        self.sources: dict[int, dict[str, Any]] = {}
        self._serial = itertools.count(1)
        self.add_route("GET", "/api/v4/account", self._account)
        self.add_route("GET", "/api/v4/talks/{id}", self._get_talk)
        self.add_route("POST", "/api/v4/talks/{id}/close", self._close_talk)
        self.add_route("POST", "/api/v4/calls", self._add_calls)
        self.add_route("POST", "/oauth2/access_token", self._token, auth=False)
        # The account's people and deals as chats make them (amoCRM: a first message in a new
        # chat makes a contact and an unsorted lead, spec §13), and the events feed.
        self.contacts: dict[int, dict[str, Any]] = {}
        self.leads: dict[int, dict[str, Any]] = {}
        self.chat_contacts: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []
        self.events_refusal: int | None = None  # e.g. 403: the feed is not to be had
        self.add_route("GET", "/api/v4/events", self._list_events)
        self.add_route("GET", "/api/v4/contacts/chats", self._contact_chats)
        self.add_route("GET", "/api/v4/contacts/{id}", self._get_contact)
        self.add_route("GET", "/api/v4/leads/custom_fields", self._lead_fields)
        self.add_route("GET", "/api/v4/leads/pipelines/{id}", self._get_pipeline)
        self.add_route("GET", "/api/v4/leads/{id}", self._get_lead)
        self.add_route("PATCH", "/api/v4/leads/{id}", self._patch_lead)
        self.add_route("POST", "/api/v4/leads/{id}/notes", self._add_lead_notes)
        # Lead attribution: the account's UTM fields (tracking_data, by code), its pipelines
        # (the first status of each is the unsorted stage, type 1), notes on leads.
        self.lead_fields: list[dict[str, Any]] = [
            {"id": 900 + n, "name": code.replace("_", " "), "code": code, "type": "tracking_data"}
            for n, code in enumerate(
                ("UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")
            )
        ]
        self.pipelines: dict[int, list[dict[str, Any]]] = {
            1300: [{"id": 1301, "type": 1, "sort": 10}, {"id": 1302, "type": 0, "sort": 20}],
            4401: [{"id": 4402, "type": 1, "sort": 10}, {"id": 4403, "type": 0, "sort": 20}],
        }
        self.notes: list[dict[str, Any]] = []
        self.lead_patches: list[dict[str, Any]] = []
        self.unlinked_chats: set[str] = set()  # chats whose contact amoCRM has not made yet
        self.add_route("GET", "/api/v4/sources", self._list_sources)
        self.add_route("POST", "/api/v4/sources", self._add_sources)
        self.add_route("PATCH", "/api/v4/sources", self._update_sources)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    def add_route(self, method: str, path: str, handler: Handler, *, auth: bool = True) -> None:
        """Register a handler for a path; `{name}` segments land in `CrmRequest.params`."""
        pattern = None
        if "{" in path:
            pattern = re.compile(re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")
        self.routes[(method.upper(), path)] = _Route(
            method.upper(), path, handler, auth, [], pattern
        )

    # ---- test API: account data ---------------------------------------------------------

    def chat_seen(self, amo_chat_id: str, name: str = "Client", phone: str = "") -> int:
        """A chat's message reached amoCRM: its contact (and an unsorted lead) exist; returns
        the contact's id. A phone fills in the contact's phone (duplicate control)."""
        contact_id = self.chat_contacts.get(amo_chat_id)
        if contact_id is None:
            contact_id = self.contact_with_phone(phone) if phone else None
        if contact_id is None:
            contact_id = 7_000_000 + next(self._serial)
            lead_id = 8_000_000 + next(self._serial)
            now = int(time.time())
            self.contacts[contact_id] = {
                "id": contact_id,
                "name": name,
                "phones": set(),
                "leads": [lead_id],
            }
            self.leads[lead_id] = {
                "id": lead_id,
                "name": f"Lead #{lead_id}",
                "pipeline_id": 1300,
                "status_id": 1301,  # the pipeline's unsorted stage (type 1)
                "created_at": now,
                "updated_at": now,
                "closed_at": None,
                "is_deleted": False,
                "custom_fields_values": None,
                "contacts": [contact_id],
            }
        self.chat_contacts[amo_chat_id] = contact_id
        if phone:
            self.contacts[contact_id]["phones"].add(_last10(phone))
        return contact_id

    def contact_with_phone(self, phone: str) -> int | None:
        """The contact that has this phone, if any."""
        wanted = _last10(phone)
        return next((c["id"] for c in self.contacts.values() if wanted in c["phones"]), None)

    def outgoing_message(
        self, amo_chat_id: str, message_id: str, at: float, phone: str = ""
    ) -> None:
        """A manager's (or Salesbot's) message exists in a chat: its event is in the feed."""
        contact_id = self.chat_seen(amo_chat_id, phone=phone)
        lead_id = self.contacts[contact_id]["leads"][0]
        self.events.append(
            {
                "id": f"ev{next(self._serial):08d}",
                "type": "outgoing_chat_message",
                "entity_id": lead_id,
                "entity_type": "lead",
                "linked_talk_contact_id": contact_id,
                "created_by": 0,
                "created_at": int(at),
                "value_after": [{"message": {"id": message_id}}],
                "value_before": [],
                "account_id": self.account_id,
                "_embedded": {"entity": {"id": lead_id}},
            }
        )

    def add_talk(self, talk_id: int, **fields: Any) -> dict[str, Any]:
        """Create an open talk with a contact (and a lead unless `lead_id=None`)."""
        now = int(time.time())
        contact_id = fields.pop("contact_id", 3102959)
        lead_id = fields.pop("lead_id", 15926745)
        customer_id = fields.pop("customer_id", None)
        embedded: dict[str, Any] = {"contacts": [{"id": contact_id}]}
        entity_type, entity_id = None, None
        if lead_id is not None:
            embedded["leads"] = [{"id": lead_id}]
            entity_type, entity_id = "lead", lead_id
        elif customer_id is not None:
            embedded["customers"] = [{"id": customer_id}]
            entity_type, entity_id = "customer", customer_id
        talk: dict[str, Any] = {
            "talk_id": talk_id,
            "created_at": now - 3600,
            "updated_at": now - 60,
            "rate": 0,
            "contact_id": contact_id,
            "chat_id": "6cbab3d5-c4c1-46ff-b710-ad59ad10805f",
            "entity_id": entity_id,
            "entity_type": entity_type,
            "is_in_work": True,
            "is_read": False,
            "origin": "telegram",
            "missed_at": None,
            "account_id": self.account_id,
            "_embedded": embedded,
            **fields,
        }
        self.talks[talk_id] = talk
        return talk

    def add_phone(self, phone: str, entity_type: str, entity_id: int) -> None:
        """A contact (or its lead / customer) that calls to this phone attach to."""
        self.phones[_last10(phone)] = (entity_type, entity_id)

    def enable_oauth(
        self,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        code: str,
        *,
        lifetime: int = 86400,
    ) -> None:
        """Accept the authorization code once at POST /oauth2/access_token."""
        self.oauth = OAuthClient(client_id, client_secret, redirect_uri, {code}, lifetime)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working (401)."""
        self.access_tokens.clear()

    def grants_of(self, grant_type: str, *, ok: bool | None = None) -> int:
        """How many token grants of this type were answered (ok only / failed only)."""
        return sum(1 for kind, good in self.grants if kind == grant_type and ok in (None, good))

    def max_rate(self, window: float = 1.0) -> int:
        """Most requests the fake received within any sliding window."""
        times = sorted(r.at for r in self.requests)
        best, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

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
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            body,
            at=time.monotonic(),
            raw_query=list(request.query.items()),
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
        route = self._match(request.method, request.path, recorded)
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
            if header.removeprefix("Bearer ") not in self.access_tokens:
                return problem(401, "Incorrect or missing access token")
        route.hits.append(recorded)
        return await route.handler(recorded)

    def _match(self, method: str, path: str, recorded: CrmRequest) -> _Route | None:
        route = self.routes.get((method, path))
        if route is not None:
            return route
        for candidate in self.routes.values():
            if candidate.method != method or candidate.pattern is None:
                continue
            found = candidate.pattern.match(path)
            if found:
                recorded.params = found.groupdict()
                return candidate
        return None

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

    def source_by_external_id(self, external_id: str) -> dict[str, Any] | None:
        """One of the integration's sources."""
        return next((s for s in self.sources.values() if s["external_id"] == external_id), None)

    def _source_page(self, sources: list[dict[str, Any]]) -> web.StreamResponse:
        if not sources:
            return web.Response(status=204)
        return hal({"_total_items": len(sources), "_embedded": {"sources": sources}})

    async def _list_sources(self, request: CrmRequest) -> web.StreamResponse:
        return self._source_page(list(self.sources.values())[:100])

    async def _add_sources(self, request: CrmRequest) -> web.StreamResponse:
        items = request.json
        if not isinstance(items, list) or not items or len(items) > 50:
            return problem(400, "Request validation failed")
        made = []
        for item in items:
            external_id = item.get("external_id") if isinstance(item, dict) else None
            valid = (
                isinstance(external_id, str)
                and 0 < len(external_id) <= 36
                and all(32 <= ord(char) < 127 for char in external_id)
                and isinstance(item.get("name"), str)
                and item["name"]
            )
            if not valid or self.source_by_external_id(str(external_id)) is not None:
                return problem(400, "Request validation failed")
            source_id = 9000 + next(self._serial)
            self.sources[source_id] = {
                "id": source_id,
                "name": item["name"],
                "pipeline_id": item.get("pipeline_id", 1300),
                "external_id": external_id,
                "default": bool(item.get("default", False)),
                "origin_code": item.get("origin_code"),
                "services": [],
            }
            made.append(self.sources[source_id])
        return self._source_page(made)

    async def _update_sources(self, request: CrmRequest) -> web.StreamResponse:
        items = request.json
        if not isinstance(items, list) or not items:
            return problem(400, "Request validation failed")
        for item in items:
            source_id = item.get("id") if isinstance(item, dict) else None
            source = self.sources.get(source_id) if isinstance(source_id, int) else None
            if source is None or "external_id" in item:  # external_id never changes
                return problem(400, "Request validation failed")
            source.update({k: v for k, v in item.items() if k in ("name", "pipeline_id")})
        return self._source_page([self.sources[item["id"]] for item in items])

    async def _list_events(self, request: CrmRequest) -> web.StreamResponse:
        """GET /api/v4/events as documented: type, entity, created_at from/to, page, limit."""
        if self.events_refusal is not None:
            return problem(self.events_refusal, "Events are not available")
        query = request.query
        limit = int(query.get("limit", "50"))
        page = int(query.get("page", "1"))
        if not 0 < limit <= 100 or page < 1:
            return problem(400, "Request validation failed")
        kinds = {v for k, v in request.raw_query if k in ("filter[type][]", "filter[type]")}
        since = int(query.get("filter[created_at][from]", "0"))
        until = int(query.get("filter[created_at][to]", str(2**62)))
        chosen = [
            event
            for event in self.events
            if (not kinds or event["type"] in kinds) and since <= event["created_at"] <= until
        ]
        chosen.sort(key=lambda event: event["created_at"], reverse=True)  # newest first
        window = chosen[(page - 1) * limit : page * limit]
        if not window:
            return web.Response(status=204)
        links: dict[str, Any] = {"self": {"href": f"{self.url}{request.path}?page={page}"}}
        if page * limit < len(chosen):
            links["next"] = {"href": f"{self.url}{request.path}?page={page + 1}"}
        return hal({"_page": page, "_links": links, "_embedded": {"events": window}})

    async def _contact_chats(self, request: CrmRequest) -> web.StreamResponse:
        contact_ids = {int(v) for k, v in request.raw_query if k == "contact_id[]" and v.isdigit()}
        chat_ids = {v for k, v in request.raw_query if k == "chat_id[]"}
        links = [
            {"id": 26000 + index, "chat_id": chat, "contact_id": contact}
            for index, (chat, contact) in enumerate(self.chat_contacts.items())
            if (contact in contact_ids or chat in chat_ids) and chat not in self.unlinked_chats
        ]
        if not links:
            return web.Response(status=204)
        return hal({"_total_items": len(links), "_embedded": {"chats": links}})

    async def _get_contact(self, request: CrmRequest) -> web.StreamResponse:
        contact = (
            self.contacts.get(int(request.params["id"])) if request.params["id"].isdigit() else None
        )
        if contact is None:
            return web.Response(status=204)
        body: dict[str, Any] = {"id": contact["id"], "name": contact["name"]}
        if "leads" in request.query.get("with", "").split(","):
            body["_embedded"] = {"leads": [{"id": lead} for lead in contact["leads"]]}
        return hal(body)

    async def _get_lead(self, request: CrmRequest) -> web.StreamResponse:
        lead = self.leads.get(int(request.params["id"])) if request.params["id"].isdigit() else None
        if lead is None:
            return web.Response(status=204)
        body = {k: v for k, v in lead.items() if k != "contacts"}
        if "contacts" in request.query.get("with", "").split(","):
            body["_embedded"] = {"contacts": [{"id": c, "is_main": True} for c in lead["contacts"]]}
        return hal(body)

    async def _lead_fields(self, request: CrmRequest) -> web.StreamResponse:
        limit = int(request.query.get("limit", "50"))
        page = int(request.query.get("page", "1"))
        if not 0 < limit <= 250 or page < 1:
            return problem(400, "Request validation failed")
        window = self.lead_fields[(page - 1) * limit : page * limit]
        if not window:
            return web.Response(status=204)
        links: dict[str, Any] = {"self": {"href": f"{self.url}{request.path}?page={page}"}}
        if page * limit < len(self.lead_fields):
            links["next"] = {"href": f"{self.url}{request.path}?page={page + 1}"}
        return hal({"_page": page, "_links": links, "_embedded": {"custom_fields": window}})

    async def _get_pipeline(self, request: CrmRequest) -> web.StreamResponse:
        pipeline_id = int(request.params["id"]) if request.params["id"].isdigit() else 0
        statuses = self.pipelines.get(pipeline_id)
        if statuses is None:
            return problem(404, "Pipeline not found")
        embedded = [{**status, "pipeline_id": pipeline_id} for status in statuses]
        return hal({"id": pipeline_id, "_embedded": {"statuses": embedded}})

    async def _patch_lead(self, request: CrmRequest) -> web.StreamResponse:
        lead = self.leads.get(int(request.params["id"])) if request.params["id"].isdigit() else None
        body = request.json
        if lead is None:
            return problem(404, "Lead not found")
        if not isinstance(body, dict):
            return problem(400, "Request validation failed")
        errors = []
        known = {field["id"]: field for field in self.lead_fields}
        by_code = {field["code"]: field for field in self.lead_fields}
        values = body.get("custom_fields_values") or []
        for index, entry in enumerate(values):
            field = known.get(entry.get("field_id")) or by_code.get(entry.get("field_code"))
            ok_values = isinstance(entry.get("values"), list) and all(
                isinstance(v, dict) and isinstance(v.get("value"), str) for v in entry["values"]
            )
            if field is None or not ok_values:
                path = f"custom_fields_values.{index}"
                errors.append({"code": "NotSupportedChoice", "path": path, "detail": "bad field"})
        pipeline = body.get("pipeline_id")
        if pipeline is not None and pipeline not in self.pipelines:
            errors.append({"code": "NotFound", "path": "pipeline_id", "detail": "no pipeline"})
        if errors:
            return problem(
                400,
                "Request validation failed",
                **{"validation-errors": [{"request_id": "0", "errors": errors}]},
            )
        self.lead_patches.append({"lead_id": lead["id"], **body})
        current = {v["field_id"]: v for v in lead["custom_fields_values"] or []}
        for entry in values:
            field = known.get(entry.get("field_id")) or by_code[entry["field_code"]]
            current[field["id"]] = {
                "field_id": field["id"],
                "field_code": field["code"],
                "values": entry["values"],
            }
        lead["custom_fields_values"] = list(current.values()) or None
        if pipeline is not None:
            lead["pipeline_id"] = pipeline
            lead["status_id"] = body.get("status_id") or self.pipelines[pipeline][0]["id"]
        lead["updated_at"] = int(time.time())
        return hal({"id": lead["id"], "updated_at": lead["updated_at"]})

    async def _add_lead_notes(self, request: CrmRequest) -> web.StreamResponse:
        lead_id = int(request.params["id"]) if request.params["id"].isdigit() else 0
        if lead_id not in self.leads:
            return problem(404, "Lead not found")
        notes = request.json
        valid = (
            isinstance(notes, list)
            and notes
            and all(
                isinstance(n, dict)
                and n.get("note_type") == "common"
                and isinstance((n.get("params") or {}).get("text"), str)
                for n in notes
            )
        )
        if not valid:
            return problem(400, "Request validation failed")
        added = []
        for index, note in enumerate(notes):
            note_id = 30_000 + next(self._serial)
            self.notes.append({"id": note_id, "entity_id": lead_id, **note})
            added.append({"id": note_id, "entity_id": lead_id, "request_id": str(index)})
        return hal({"_embedded": {"notes": added}})

    def lead_of_chat(self, amo_chat_id: str) -> dict[str, Any]:
        """The (newest) lead of a chat's contact."""
        contact = self.contacts[self.chat_contacts[amo_chat_id]]
        return self.leads[contact["leads"][-1]]

    async def _get_talk(self, request: CrmRequest) -> web.StreamResponse:
        talk = self.talks.get(int(request.params["id"])) if request.params["id"].isdigit() else None
        if talk is None:
            return problem(404, "Talk not found")
        body = {**talk, "_links": {"self": {"href": f"{self.url}{request.path}"}}}
        return hal(body)

    async def _close_talk(self, request: CrmRequest) -> web.StreamResponse:
        talk = self.talks.get(int(request.params["id"])) if request.params["id"].isdigit() else None
        if talk is None:
            return problem(404, "Talk not found")
        if not talk["is_in_work"]:
            return problem(422, "Talk is already closed or closing")
        force = request.json.get("force_close", False) if isinstance(request.json, dict) else False
        talk["is_in_work"] = False
        talk["updated_at"] = int(time.time())
        self.closes.append((talk["talk_id"], bool(force)))
        return web.Response(status=202)

    async def _add_calls(self, request: CrmRequest) -> web.StreamResponse:
        if not isinstance(request.json, list) or not request.json:
            return problem(400, "Request validation failed")
        invalid = []
        for index, item in enumerate(request.json):
            errors = _call_errors(item)
            if errors:
                invalid.append({"request_id": str(index), "errors": errors})
        if invalid:
            return problem(400, "Request validation failed", **{"validation-errors": invalid})
        added: list[dict[str, Any]] = []
        errors_out: list[dict[str, Any]] = []
        for index, item in enumerate(request.json):
            request_id = str(item.get("request_id", index))
            known = next(
                (c for c in self.calls if item.get("uniq") and c["uniq"] == item.get("uniq")),
                None,
            )
            if known is None:
                entity = self.phones.get(_last10(item["phone"]))
                if entity is None:
                    # No entity with that phone: the call is not added (spec §8.2).
                    errors_out.append(
                        {"request_id": request_id, "title": "Entity not found", "status": 400}
                    )
                    continue
                known = {**item, "id": 37512000 + next(self._serial)}
                known["entity_type"], known["entity_id"] = entity
                self.calls.append(known)
            added.append(
                {
                    "id": known["id"],
                    "entity_id": known["entity_id"],
                    "entity_type": known["entity_type"],
                    "account_id": self.account_id,
                    "request_id": request_id,
                }
            )
        return hal(
            {"_total_items": len(added), "errors": errors_out, "_embedded": {"calls": added}}
        )

    async def _token(self, request: CrmRequest) -> web.StreamResponse:
        body = request.json if isinstance(request.json, dict) else {}
        grant_type = str(body.get("grant_type", ""))
        oauth = self.oauth

        def refuse(hint: str) -> web.StreamResponse:
            self.grants.append((grant_type, False))
            return problem(400, "The provided authorization grant is invalid", hint=hint)

        if oauth is None or (body.get("client_id"), body.get("client_secret")) != (
            oauth.client_id,
            oauth.client_secret,
        ):
            return refuse("Client authentication failed")
        if body.get("redirect_uri") != oauth.redirect_uri:
            return refuse("redirect_uri does not match")
        if grant_type == "authorization_code":
            code = str(body.get("code", ""))
            if code not in oauth.codes:
                return refuse("Authorization code has expired or has been revoked")
            oauth.codes.discard(code)
        elif grant_type == "refresh_token":
            refresh = str(body.get("refresh_token", ""))
            if refresh in self.revoked_refresh_tokens:
                return refuse("Token has been revoked")
            if refresh not in self.refresh_tokens:
                return refuse("Cannot decrypt the refresh token")
            self.refresh_tokens.discard(refresh)
            self.revoked_refresh_tokens.add(refresh)
        else:
            return refuse("Unsupported grant type")
        serial = next(self._serial)
        access, refresh = f"access-{serial}", f"refresh-{serial}"
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        self.grants.append((grant_type, True))
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": oauth.lifetime,
                "server_time": int(time.time()),
                "access_token": access,
                "refresh_token": refresh,
            }
        )


def _call_errors(item: Any) -> list[dict[str, str]]:
    if not isinstance(item, dict):
        return [{"code": "InvalidType", "path": "", "detail": "must be an object"}]
    errors = []
    if item.get("direction") not in ("inbound", "outbound"):
        errors.append(
            {
                "code": "NotSupportedChoice",
                "path": "direction",
                "detail": "The value you selected is not a valid choice.",
            }
        )
    duration = item.get("duration")
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 0:
        errors.append({"code": "InvalidType", "path": "duration", "detail": "must be an int"})
    for key in ("source", "phone"):
        if not isinstance(item.get(key), str) or not item[key]:
            errors.append({"code": "NotBlank", "path": key, "detail": "This value is required."})
    status = item.get("call_status")
    if status is not None and status not in range(1, 8):
        errors.append(
            {
                "code": "NotSupportedChoice",
                "path": "call_status",
                "detail": "The value you selected is not a valid choice.",
            }
        )
    return errors
