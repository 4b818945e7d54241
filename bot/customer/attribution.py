"""Where a lead came from: a deep-link touch carried onto the chat's amoCRM lead.

A `/start <payload>` is stored with the conversation (intake) together with a job of this
kind. The job finds the lead through the CRM — the chat's amo id, its contact
(`contacts/chats`), the contact's newest open lead — which amoCRM makes when the first message
arrives, so until it exists the job waits and retries. On the first touch it writes the UTM
values into the lead's UTM fields (the account's fields with codes `UTM_SOURCE`…; one that
does not exist is skipped with one warning) and, with AMOCRM_CAMPAIGN_PIPELINES, moves a lead
still in its unsorted stage into its campaign's pipeline; every touch adds a note with the raw
payload and what it says. amoCRM refusing (403, a field it rejects) is a dead letter, shown in
`/failed` with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx

from bot.amocrm.amojo import AmojoClient, AmojoError
from bot.amocrm.channel import Channel, amo_chat_ids
from bot.amocrm.crm import CrmClient, CrmError
from bot.amocrm.leads import Lead, LeadsApi
from bot.common import ids
from bot.common.deeplinks import UTM_KEYS, Touch, readable
from bot.common.health import describe_exception
from bot.jobs.queues import STAFF_QUEUE
from bot.jobs.worker import Done, GiveUp, JobKind, RetryLater
from storage import ChatKey, Job, NewJob, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)

KIND_ATTRIBUTION = "lead.attribution"
# amoCRM makes the lead when the chat's first message arrives; a lead still missing after
# this long will not come (the chat was deleted, the channel is not linked to a pipeline).
LEAD_WAIT_SECONDS = 60 * 60


def attribution_job(key: ChatKey, touch_id: int, first: bool, touch: Touch) -> NewJob:
    """The job that carries one stored touch onto the chat's lead."""
    return NewJob(
        queue=STAFF_QUEUE,
        kind=KIND_ATTRIBUTION,
        lane=f"attribution:{ids.key_text(key)}",
        dedup_key=f"touch:{touch_id}",
        payload={
            **ids.chat_fields(key),
            "touch_id": touch_id,
            "first": first,
            "raw": touch.raw,
            "utm": touch.utm,
            "other": touch.other,
        },
    )


def note_text(touch: Touch, first: bool) -> str:
    """The note on the lead: what the link said, and the payload as it came."""
    lines = [
        "Telegram deep link" + (" (first touch)" if first else " (a later touch)"),
        f"payload: {touch.raw}",
    ]
    lines += [f"{key}: {value}" for key, value in touch.values.items()]
    return "\n".join(lines)


class Attribution:
    """Runs the attribution jobs (staff queue: paced with the other CRM work)."""

    def __init__(
        self,
        repo: Repository,
        crm: CrmClient,
        amojo: AmojoClient,
        channel: Channel,
        campaigns: dict[str, int],
        sources: Callable[[ChatKey], str | None] | None = None,
    ) -> None:
        self.repo = repo
        self.leads = LeadsApi(crm)
        self.amojo = amojo
        self.channel = channel
        self.campaigns = campaigns
        self.sources = sources or (lambda chat: None)
        self._fields: dict[str, int] | None = None
        self._warned: set[str] = set()

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds this runs."""
        return {KIND_ATTRIBUTION: JobKind(run=self.run, give_up_after=LEAD_WAIT_SECONDS)}

    async def run(self, job: Job) -> Done:
        """Carry one touch onto the lead; RetryLater until amoCRM has made the lead."""
        payload = job.payload
        key = ids.chat_of(payload)
        touch = Touch(str(payload["raw"]), "stored", dict(payload["utm"]), dict(payload["other"]))
        moved: int | None = None
        attributed = False
        try:
            lead = await self._lead(key)
            if payload["first"] and not await self.repo.lead_attributed(lead.id):
                attributed = await self._write_fields(lead, touch)
                moved = await self._route(lead, touch)
            await self.leads.add_note(lead.id, note_text(touch, bool(payload["first"])))
        except CrmError as exc:
            if exc.retryable:
                raise RetryLater(f"amoCRM: {exc}", delay=exc.retry_after) from exc
            raise GiveUp(f"amoCRM refused the lead's attribution: {exc}") from exc
        except AmojoError as exc:
            if exc.retryable:
                raise RetryLater(f"amojo: {exc}") from exc
            raise GiveUp(f"amojo refused the chat lookup: {exc}") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise RetryLater(f"amoCRM unreachable: {describe_exception(exc)}") from exc
        logger.info(
            "lead %d of %s: deep link %s recorded (%s touch)",
            lead.id,
            ids.key_text(key),
            readable(touch) or "(empty)",
            "first" if payload["first"] else "later",
        )
        touch_id = int(payload["touch_id"])

        async def record(tx: Transaction) -> None:
            if attributed or moved is not None:  # a lead gets values and a pipeline once
                await tx.attribute_lead(lead.id, touch_id, moved)

        return Done(record=record)

    async def _lead(self, key: ChatKey) -> Lead:
        chats = await amo_chat_ids(self.repo, self.amojo, self.channel, key, self.sources(key))
        for amo_chat_id in chats:
            contact = await self.leads.contact_of_chat(amo_chat_id)
            if contact is None:
                continue
            lead = await self.leads.newest_open_lead(contact)
            if lead is not None:
                return lead
        raise RetryLater("amoCRM has no open lead for the chat yet")  # backoff: seconds → minutes

    async def _write_fields(self, lead: Lead, touch: Touch) -> bool:
        """The touch's UTM values into the lead's UTM fields, unless it has some already
        (from a site form, another channel): those are never overwritten."""
        if not touch.utm:
            return False
        if self._fields is None:
            self._fields = await self.leads.field_ids_by_code()
        utm_fields = {self._fields[key.upper()] for key in UTM_KEYS if key.upper() in self._fields}
        if utm_fields & lead.filled_fields:
            logger.info("lead %d has UTM values already: kept, the link goes in a note", lead.id)
            return False
        values = []
        for key in UTM_KEYS:
            if key not in touch.utm:
                continue
            field_id = self._fields.get(key.upper())
            if field_id is None:
                if key not in self._warned:
                    self._warned.add(key)
                    logger.warning(
                        "amoCRM has no lead field with code %s: %s is kept in the note only",
                        key.upper(),
                        key,
                    )
                continue
            values.append({"field_id": field_id, "values": [{"value": touch.utm[key]}]})
        if values:
            await self.leads.update_lead(lead.id, {"custom_fields_values": values})
        return bool(values)

    async def _route(self, lead: Lead, touch: Touch) -> int | None:
        """The campaign's pipeline the lead was moved to (None: not moved)."""
        pipeline = self.campaigns.get(touch.utm.get("utm_campaign", ""))
        if pipeline is None or pipeline == lead.pipeline_id:
            return None
        if not await self.leads.is_unsorted(lead):
            logger.info("lead %d is past its unsorted stage: not moved", lead.id)
            return None
        await self.leads.update_lead(lead.id, {"pipeline_id": pipeline})
        logger.info("lead %d moved to pipeline %d (campaign)", lead.id, pipeline)
        return pipeline
