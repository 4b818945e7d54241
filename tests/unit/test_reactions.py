"""Reaction emoji: Telegram's allowed set, normalisation, the registration string."""

from __future__ import annotations

from pathlib import Path

from aiogram.types import MessageReactionUpdated

from bot.chat.reactions import (
    TELEGRAM_REACTION_EMOJI,
    ReactionChange,
    amo_emoji,
    normalise_emoji,
    reaction_changes,
    registration_emoji_string,
    telegram_reaction,
)
from simulators.factories import make_reaction
from simulators.telegram import ALLOWED_REACTIONS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_list_is_telegrams_allowed_set_without_fe0f() -> None:
    assert len(TELEGRAM_REACTION_EMOJI) == len(set(TELEGRAM_REACTION_EMOJI))
    assert set(TELEGRAM_REACTION_EMOJI) == ALLOWED_REACTIONS
    assert all("\ufe0f" not in emoji for emoji in TELEGRAM_REACTION_EMOJI)


def test_readme_declares_exactly_the_registration_string() -> None:
    expected = registration_emoji_string()
    lines = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()]
    assert expected in lines


def test_amo_spelling_round_trips_to_telegram() -> None:
    assert amo_emoji("❤") == "❤\ufe0f"
    assert amo_emoji("❤‍🔥") == "❤\ufe0f\u200d🔥"
    assert amo_emoji("👍") == "👍"
    for emoji in TELEGRAM_REACTION_EMOJI:
        assert telegram_reaction(amo_emoji(emoji)) == emoji


def test_normalise_strips_variation_selectors_and_skin_tones() -> None:
    assert normalise_emoji("❤️") == "❤"
    assert normalise_emoji("👍🏽") == "👍"
    assert normalise_emoji("🤷🏻‍♀️") == "🤷‍♀"
    assert telegram_reaction("🦖") is None
    assert telegram_reaction("") is None


def test_change_is_unreact_then_react() -> None:
    update = MessageReactionUpdated.model_validate(make_reaction(7, 1, old=["👍"], new=["🔥"]))
    assert reaction_changes(update) == [
        ReactionChange("unreact", "👍"),
        ReactionChange("react", "🔥"),
    ]


def test_custom_and_paid_reactions_are_skipped() -> None:
    payload = make_reaction(7, 1, old=["👍"], new=[])
    payload["new_reaction"] = [
        {"type": "custom_emoji", "custom_emoji_id": "5368324170671202286"},
        {"type": "paid"},
        {"type": "emoji", "emoji": "👍"},
    ]
    update = MessageReactionUpdated.model_validate(payload)
    assert reaction_changes(update) == []
