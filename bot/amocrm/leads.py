"""amoCRM REST for lead attribution: a chat's contact, its newest open lead, UTM fields, notes.

Shapes from the amoCRM docs (spec §13.2–13.3): `GET /api/v4/contacts/chats?chat_id[]=`,
`GET /api/v4/contacts/{id}?with=leads`, `GET /api/v4/leads/{id}`,
`GET /api/v4/leads/custom_fields`, `GET /api/v4/leads/pipelines/{id}`,
`PATCH /api/v4/leads/{id}`, `POST /api/v4/leads/{id}/notes`. Errors are the client's
`CrmError`; an empty answer (204) means "none".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from bot.amocrm.crm import CrmClient, CrmError

# amoCRM's two closing statuses, the same in every pipeline (leads-api.md).
WON, LOST = 142, 143
UNSORTED_STATUS_TYPE = 1
FIELDS_PAGE_LIMIT = 250


@dataclass(frozen=True, slots=True)
class Lead:
    """What attribution needs of a lead."""

    id: int
    pipeline_id: int
    status_id: int
    created_at: int
    open: bool
    filled_fields: frozenset[int] = frozenset()  # the custom fields that hold a value


def _body(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        data = response.json()
    except ValueError:
        raise CrmError(response.status_code, "the answer is not JSON", response.text) from None
    if not isinstance(data, dict):
        raise CrmError(response.status_code, "the answer is not a JSON object", response.text)
    return data


def _embedded(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = (data.get("_embedded") or {}).get(name) or []
    return [item for item in items if isinstance(item, dict)]


class LeadsApi:
    """The lead calls of attribution, over the bridge's CRM client (paced, authorised)."""

    def __init__(self, crm: CrmClient) -> None:
        self.crm = crm

    async def contact_of_chat(self, amo_chat_id: str) -> int | None:
        """The contact an amo chat belongs to (None while amoCRM has not made one)."""
        response = await self.crm.request(
            "GET", "/api/v4/contacts/chats", params={"chat_id[]": amo_chat_id}
        )
        for link in _embedded(_body(response), "chats"):
            if link.get("chat_id") == amo_chat_id and isinstance(link.get("contact_id"), int):
                return int(link["contact_id"])
        return None

    async def leads_of_contact(self, contact_id: int) -> list[int]:
        """The ids of a contact's leads."""
        response = await self.crm.request(
            "GET", f"/api/v4/contacts/{contact_id}", params={"with": "leads"}
        )
        return [int(lead["id"]) for lead in _embedded(_body(response), "leads") if "id" in lead]

    async def lead(self, lead_id: int) -> Lead | None:
        """One lead (None when it is gone)."""
        data = _body(await self.crm.request("GET", f"/api/v4/leads/{lead_id}"))
        if not data or data.get("is_deleted"):
            return None
        status = int(data.get("status_id") or 0)
        return Lead(
            id=int(data["id"]),
            pipeline_id=int(data.get("pipeline_id") or 0),
            status_id=status,
            created_at=int(data.get("created_at") or 0),
            open=status not in (WON, LOST) and not data.get("closed_at"),
            filled_fields=frozenset(
                int(value["field_id"])
                for value in data.get("custom_fields_values") or []
                if isinstance(value, dict)
                and isinstance(value.get("field_id"), int)
                and value.get("values")
            ),
        )

    async def newest_open_lead(self, contact_id: int) -> Lead | None:
        """The contact's newest lead that is not closed."""
        newest: Lead | None = None
        for lead_id in await self.leads_of_contact(contact_id):
            lead = await self.lead(lead_id)
            if lead is not None and lead.open and (newest is None or lead.id > newest.id):
                newest = lead  # ids grow with creation time
        return newest

    async def field_ids_by_code(self) -> dict[str, int]:
        """The account's lead fields that have a code, by code (every page)."""
        found: dict[str, int] = {}
        page = 1
        while True:
            response = await self.crm.request(
                "GET",
                "/api/v4/leads/custom_fields",
                params={"page": page, "limit": FIELDS_PAGE_LIMIT},
            )
            data = _body(response)
            for field in _embedded(data, "custom_fields"):
                if isinstance(field.get("code"), str) and isinstance(field.get("id"), int):
                    found[field["code"]] = field["id"]
            if not ((data.get("_links") or {}).get("next") or {}).get("href"):
                return found
            page += 1

    async def is_unsorted(self, lead: Lead) -> bool:
        """Whether a lead still sits in its pipeline's unsorted stage."""
        data = _body(await self.crm.request("GET", f"/api/v4/leads/pipelines/{lead.pipeline_id}"))
        for status in _embedded(data, "statuses"):
            if status.get("id") == lead.status_id:
                return status.get("type") == UNSORTED_STATUS_TYPE
        return False

    async def update_lead(self, lead_id: int, body: dict[str, Any]) -> None:
        """PATCH one lead."""
        await self.crm.request("PATCH", f"/api/v4/leads/{lead_id}", json=body)

    async def add_note(self, lead_id: int, text: str) -> None:
        """A common note on a lead."""
        await self.crm.request(
            "POST",
            f"/api/v4/leads/{lead_id}/notes",
            json=[{"note_type": "common", "params": {"text": text}}],
        )
