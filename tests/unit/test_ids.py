"""The ids shared with amojo: the primary bot's never change, other bots' carry the bot id."""

from __future__ import annotations

import pytest

from bot.common import ids
from storage import ChatKey

PRIMARY = ChatKey(0, 501)
OTHER = ChatKey(777001, 501)
ACCOUNT = ids.business_key(424242, 501)


def test_the_primary_bot_keeps_the_single_bot_ids() -> None:
    assert ids.conversation_id(PRIMARY) == "tg-501"
    assert ids.message_id(PRIMARY, 7) == "tg-501-7"
    assert ids.chat_lane(PRIMARY) == "chat:501"
    assert ids.call_uniq(PRIMARY, 7) == "tg-call-501-7"
    assert ids.chat_fields(PRIMARY) == {"chat_id": 501}


def test_another_bot_carries_its_id_and_the_sender_is_one_person() -> None:
    assert ids.conversation_id(OTHER) == "tg-b777001-501"
    assert ids.message_id(OTHER, 7) == "tg-b777001-501-7"
    assert ids.chat_lane(OTHER) != ids.chat_lane(PRIMARY)
    assert ids.call_uniq(OTHER, 7) != ids.call_uniq(PRIMARY, 7)
    assert ids.user_id(501) == "tg-501"
    assert ids.chat_of(ids.chat_fields(OTHER)) == OTHER
    assert ids.chat_of({"chat_id": 501}) == PRIMARY  # a payload stored before several bots


def test_a_business_accounts_chat_carries_the_account() -> None:
    assert ids.conversation_id(ACCOUNT) == "tg-a424242-501"
    assert ids.message_id(ACCOUNT, 7) == "tg-a424242-501-7"
    assert ids.is_business(ACCOUNT) and not ids.is_business(OTHER)
    assert len({ids.chat_lane(k) for k in (PRIMARY, OTHER, ACCOUNT)}) == 3
    assert ids.chat_of(ids.chat_fields(ACCOUNT)) == ACCOUNT
    source = ids.account_source_external_id(9_999_999_999)
    assert (
        len(source) <= 36 and source.isascii() and source != ids.source_external_id(9_999_999_999)
    )


@pytest.mark.parametrize("key", [PRIMARY, OTHER, ACCOUNT, ChatKey(5, 1), ChatKey(0, -100123)])
def test_conversation_ids_parse_back(key: ChatKey) -> None:
    assert ids.chat_from_conversation(ids.conversation_id(key)) == key


@pytest.mark.parametrize(
    "value",
    [
        None,
        501,
        "",
        "tg-",
        "tg-x",
        "tg-501-7",
        "tg-b-501",
        "tg-b0-501",
        "tg-b7-",
        "wa-501",
        "tg-0",
        "tg-a0-5",
        "tg-c5-5",
    ],
)
def test_anything_else_is_not_our_conversation(value: object) -> None:
    assert ids.chat_from_conversation(value) is None


def test_source_external_ids_fit_the_sources_api() -> None:
    source = ids.source_external_id(9_999_999_999)
    assert len(source) <= 36 and source.isascii() and source.isprintable()
