"""Reactions both ways: customer reactions → amojo `react`, manager reactions → Telegram."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramMigrateToChat
from aiogram.types import MessageReactionUpdated, ReactionTypeEmoji
from aiogram.types.reaction_type_union import ReactionTypeUnion

from bot.amocrm.amojo import AmojoClient, AmojoError
from bot.amocrm.channel import Channel
from bot.amocrm.hooks import KIND_AMO_REACTION
from bot.common import ids
from bot.common.bots import Bots
from bot.common.metrics import Metrics
from bot.jobs.queues import AMOJO_QUEUE
from bot.jobs.worker import Done, GiveUp, JobKind
from storage import ChatKey, Job, MessageLink, NewJob, Repository

logger = logging.getLogger(__name__)

KIND_CUSTOMER_REACTION = "customer.reaction"

# https://core.telegram.org/bots/api#reactiontypeemoji: the only emoji a bot may set, spelled
# exactly as the Bot API expects them (no U+FE0F variation selectors).
TELEGRAM_REACTION_EMOJI: tuple[str, ...] = (
    "👍", "👎", "❤", "🔥", "🥰", "👏", "😁", "🤔", "🤯", "😱", "🤬", "😢", "🎉", "🤩", "🤮",
    "💩", "🙏", "👌", "🕊", "🤡", "🥱", "🥴", "😍", "🐳", "❤‍🔥", "🌚", "🌭", "💯", "🤣", "⚡",
    "🍌", "🏆", "💔", "🤨", "😐", "🍓", "🍾", "💋", "🖕", "😈", "😴", "😭", "🤓", "👻", "👨‍💻",
    "👀", "🎃", "🙈", "😇", "😨", "🤝", "✍", "🤗", "🫡", "🎅", "🎄", "☃", "💅", "🤪", "🗿",
    "🆒", "💘", "🙉", "🦄", "😘", "💊", "🙊", "😎", "👾", "🤷‍♂", "🤷", "🤷‍♀", "😡",
)  # fmt: skip
_ALLOWED = frozenset(TELEGRAM_REACTION_EMOJI)

VARIATION_SELECTORS = frozenset({"\ufe0e", "\ufe0f"})
SKIN_TONES = frozenset(chr(code) for code in range(0x1F3FB, 0x1F400))
# Characters in the list that are text-style by default: amoCRM (a web page) shows them as
# emoji only in the fully-qualified form with U+FE0F (Unicode emoji-test.txt).
_NEEDS_EMOJI_PRESENTATION = frozenset({"❤", "🕊", "✍", "☃", "♂", "♀"})


def normalise_emoji(emoji: str) -> str:
    """Telegram's spelling of an emoji: no variation selectors, no skin tone."""
    return "".join(char for char in emoji if char not in VARIATION_SELECTORS | SKIN_TONES)


def telegram_reaction(emoji: str) -> str | None:
    """The emoji a bot may set for this one, or None when Telegram does not allow it."""
    normalised = normalise_emoji(emoji)
    return normalised if normalised in _ALLOWED else None


def amo_emoji(emoji: str) -> str:
    """The fully-qualified spelling amoCRM shows as an emoji (adds U+FE0F where needed)."""
    return "".join(
        f"{char}\ufe0f" if char in _NEEDS_EMOJI_PRESENTATION else char
        for char in normalise_emoji(emoji)
    )


def registration_emoji_string() -> str:
    """The reaction set to declare to amoCRM support at channel registration (spec §7)."""
    return "".join(amo_emoji(emoji) for emoji in TELEGRAM_REACTION_EMOJI)


@dataclass(frozen=True, slots=True)
class ReactionChange:
    """One step towards the customer's new reactions: react or unreact one emoji."""

    type: str
    emoji: str


def reaction_changes(update: MessageReactionUpdated) -> list[ReactionChange]:
    """Unreacts of removed emoji, then reacts of added ones (custom and paid ones skipped)."""
    old = [r.emoji for r in update.old_reaction if isinstance(r, ReactionTypeEmoji)]
    new = [r.emoji for r in update.new_reaction if isinstance(r, ReactionTypeEmoji)]
    skipped = [r.type for r in (*update.old_reaction, *update.new_reaction)]
    skipped = [kind for kind in skipped if kind != "emoji"]
    if skipped:
        # amoCRM can show Unicode emoji only; custom emoji and paid (star) reactions have none.
        logger.info(
            "reaction types %s on message %d in chat %d are not bridged",
            sorted(set(skipped)),
            update.message_id,
            update.chat.id,
        )
    changes = [ReactionChange("unreact", emoji) for emoji in old if emoji not in new]
    changes += [ReactionChange("react", emoji) for emoji in new if emoji not in old]
    return changes


def react_target(link: MessageLink) -> dict[str, str] | None:
    """How amojo's `react` names a linked message: our msgid, or amo's id for manager messages."""
    if link.direction == "in":
        return {"msgid": link.our_msgid or ids.message_id(link.key, link.tg_message_id)}
    if link.amo_message_id:
        return {"id": link.amo_message_id}
    return None


class CustomerReactions:
    """Turns a customer's reaction update into durable `react`/`unreact` jobs (no network)."""

    def __init__(self, repo: Repository, bots: Bots) -> None:
        self.repo = repo
        self.bots = bots

    async def record(self, update: MessageReactionUpdated, update_id: int) -> int:
        """Store the jobs of one reaction update; returns how many were new."""
        chat_id, message_id = update.chat.id, update.message_id
        chat = self.bots.chat(update.bot, update.chat)
        changes = reaction_changes(update)
        if not changes:
            return 0
        user = update.user
        if user is None:
            logger.info("anonymous reaction on message %d in chat %d ignored", message_id, chat_id)
            return 0
        link = await self.repo.get_link(chat, message_id)
        target = react_target(link) if link is not None else None
        reactor = ids.user_id(user.id)
        if link is not None:
            chat = link.key  # the topic the message is in
            if chat.chat_id < 0 and chat.thread >= 0:
                reactor = ids.user_id(chat.chat_id)  # in a group the group is the client
        if target is None:
            logger.warning(
                "reaction on message %d in chat %d not bridged: the bridge does not know "
                "this message's amoCRM counterpart",
                message_id,
                chat_id,
            )
            return 0
        jobs = [
            NewJob(
                queue=AMOJO_QUEUE,
                kind=KIND_CUSTOMER_REACTION,
                lane=ids.chat_lane(chat),
                dedup_key=f"reaction:{ids.key_text(chat)}:{message_id}:{update_id}:{index}",
                payload={
                    **ids.chat_fields(chat),
                    "payload": {
                        "conversation_id": ids.conversation_id(chat),
                        **target,
                        "user": {"id": reactor},
                        "type": change.type,
                        "emoji": amo_emoji(change.emoji),
                    },
                },
            )
            for index, change in enumerate(changes)
        ]
        async with self.repo.transaction() as tx:
            return await tx.enqueue(jobs)


@dataclass(frozen=True, slots=True)
class ManagerReaction:
    """What a reaction hook asks for (spec §3.5, both documented shapes)."""

    type: str
    emoji: str | None
    message_refs: tuple[str, ...]
    chat: ChatKey | None
    amo_conversation_id: str | None


def _member(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def parse_reaction_hook(hook: dict[str, Any]) -> ManagerReaction:
    """Read a reaction hook defensively: `message{client_id, id}` or a bare `msgid`."""
    reaction = _member(_member(hook, "action"), "reaction")
    message = _member(reaction, "message")
    conversation = _member(reaction, "conversation")
    refs = (message.get("client_id"), message.get("id"), reaction.get("msgid"))
    emoji = reaction.get("emoji")
    amo_conversation = conversation.get("id")
    return ManagerReaction(
        type=str(reaction.get("type") or ""),
        emoji=emoji if isinstance(emoji, str) and emoji else None,
        message_refs=tuple(ref for ref in refs if isinstance(ref, str) and ref),
        chat=ids.chat_from_conversation(conversation.get("client_id")),
        amo_conversation_id=amo_conversation if isinstance(amo_conversation, str) else None,
    )


class ReactionSender:
    """Runs reaction jobs in both directions."""

    def __init__(
        self,
        repo: Repository,
        bots: Bots,
        amojo: AmojoClient,
        channel: Channel,
        metrics: Metrics | None = None,
    ) -> None:
        self.repo = repo
        self.bots = bots
        self.metrics = metrics
        self.amojo = amojo
        self.channel = channel

    def amojo_kinds(self) -> dict[str, JobKind]:
        """Job kinds of the amojo queue."""
        return {KIND_CUSTOMER_REACTION: JobKind(run=self.send_customer_reaction)}

    def telegram_kinds(self) -> dict[str, JobKind]:
        """Job kinds of the Telegram queue."""
        return {KIND_AMO_REACTION: JobKind(run=self.set_manager_reaction)}

    async def send_customer_reaction(self, job: Job) -> Done:
        """`react` / `unreact` of one emoji on a bridged message (spec §5.6)."""
        payload: dict[str, Any] = job.payload["payload"]
        try:
            await self.amojo.react(self.channel.scope_id, payload)
        except AmojoError as exc:
            if not exc.retryable:
                raise GiveUp(f"amojo rejected the {payload['type']}: {exc}") from exc
            raise
        logger.info(
            "customer %s %s on %s delivered to amoCRM",
            payload["type"],
            payload.get("emoji"),
            payload.get("msgid") or payload.get("id"),
        )
        return Done()

    async def _chat_of(self, reaction: ManagerReaction) -> ChatKey | None:
        if reaction.chat is not None:
            return reaction.chat
        if reaction.amo_conversation_id:
            customer = await self.repo.customer_by_amo_conversation(reaction.amo_conversation_id)
            if customer is not None:
                return customer.key
        return None

    async def _target(self, reaction: ManagerReaction) -> MessageLink | None:
        chat = await self._chat_of(reaction)
        for ref in reaction.message_refs:
            links = await self.repo.links_for_amo_message(ref)
            if chat is not None:
                links = [link for link in links if link.key == chat]
            if links:
                return links[0]
        return None

    async def set_manager_reaction(self, job: Job) -> Done:
        """Mirror a manager's reaction (or its removal) on the Telegram message."""
        reaction = parse_reaction_hook(job.payload["hook"])
        if reaction.type not in ("react", "unreact"):
            raise GiveUp(f"reaction hook of unknown type {reaction.type!r}")
        link = await self._target(reaction)
        if link is None:
            logger.warning(
                "manager reaction on amo message %s not bridged: the bridge does not know it",
                "/".join(reaction.message_refs) or "(none)",
            )
            return Done()
        emojis: list[ReactionTypeUnion] = []
        if reaction.type == "react":
            emoji = telegram_reaction(reaction.emoji or "")
            if emoji is None:
                logger.warning(
                    "manager reaction %r on message %d in chat %d not sent: Telegram bots "
                    "cannot use this emoji",
                    reaction.emoji,
                    link.tg_message_id,
                    link.chat_id,
                )
                return Done()
            emojis.append(ReactionTypeEmoji(emoji=emoji))
        if ids.is_business(link.key):
            # setMessageReaction has no Business variant: the bot cannot react for an account.
            logger.info(
                "manager reaction on message %d of %s not shown: Telegram cannot react on a "
                "Business account's behalf",
                link.tg_message_id,
                link.key,
            )
            if self.metrics is not None:
                self.metrics.business_not_shown.labels(what="reaction").inc()
            return Done()
        bot = self.bots.get(link.key.bot)
        if bot is None:
            raise GiveUp(f"bot {link.key.bot} is no longer in TELEGRAM_BOT_TOKEN")
        try:
            await bot.set_message_reaction(
                self.bots.telegram_chat_id(link.key), link.tg_message_id, emojis
            )
        except (TelegramBadRequest, TelegramForbiddenError) as exc:
            raise GiveUp(f"Telegram refused the reaction: {exc.message}") from exc
        except TelegramMigrateToChat as exc:
            raise GiveUp(
                "the group became a supergroup; the message reacted to is in the old group"
            ) from exc
        logger.info(
            "manager %s %s set on message %d in chat %d",
            reaction.type,
            reaction.emoji or "",
            link.tg_message_id,
            link.chat_id,
        )
        return Done()
