"""The text catalogue: every text in both languages, and every key the code asks for exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.common.texts import (
    LANGUAGES,
    TEXTS,
    Phrase,
    phrase,
    placeholders,
    staff_language,
    text,
)
from bot.manager.gaps import REASON_NOT_STORED
from bot.manager.mapping import TYPE_LABELS
from bot.staff.commands import CALL_STATUSES, DIRECTIONS
from bot.staff.desk import MENU_COMMANDS, gap_reason

ROOT = Path(__file__).resolve().parents[2]
# `text("key", …)`, `phrase("key", …)`, and the usage keys a UsageError carries.
_LITERAL_KEY = re.compile(
    r"""(?:(?<![.\w])|(?<=texts\.))(?:text|phrase)\(\s*["']([a-z_.0-9]+)["']"""
)
_USAGE_KEY = re.compile(r"""["'](staff\.usage\.[a-z_]+)["']""")


@pytest.mark.parametrize("key", sorted(TEXTS))
def test_every_text_is_in_both_languages_with_the_same_placeholders(key: str) -> None:
    versions = TEXTS[key]
    assert set(versions) == set(LANGUAGES), f"{key} lacks {set(LANGUAGES) - set(versions)}"
    for language in LANGUAGES:
        assert versions[language].strip(), f"{key} is empty in {language}"
    assert placeholders(versions["ru"]) == placeholders(versions["en"]), key


def _source_files() -> list[Path]:
    return [
        path
        for folder in ("bot", "handlers")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "texts.py"
    ]


def _named_keys() -> set[str]:
    named: set[str] = set()
    for path in _source_files():
        source = path.read_text(encoding="utf-8")
        named |= set(_LITERAL_KEY.findall(source)) | set(_USAGE_KEY.findall(source))
    return named


def _built_keys() -> set[str]:
    return set(
        [f"staff.menu.{command}" for command in MENU_COMMANDS]
        + [f"staff.call.status.{status}" for status in CALL_STATUSES]
        + [f"staff.call.{direction}" for direction in set(DIRECTIONS.values())]
        + [f"staff.talk.{kind}" for kind in ("contact", "lead", "customer")]
        + [f"staff.crm.{status}" for status in (401, 402, 403, 429)]
        + [f"staff.entity.{kind}" for kind in ("contact", "lead", "customer", "company")]
        + [f"stand_in.{kind}" for kind in (*TYPE_LABELS, "attachment")]
        + [f"staff.gap.{reason.replace(' ', '_')}" for reason in ("restart", REASON_NOT_STORED)]
    )


def test_every_key_the_code_names_or_builds_is_in_the_catalogue() -> None:
    named = _named_keys()
    assert len(named) > 50, "the pattern found few keys: the test would pass for nothing"
    assert sorted((named | _built_keys()) - set(TEXTS)) == []


def test_every_text_of_the_catalogue_is_used() -> None:
    quoted: set[str] = set()  # also `text("a" if x else "b", …)`
    for path in _source_files():
        quoted |= set(re.findall(r"""["']([a-z_.0-9]+)["']""", path.read_text(encoding="utf-8")))
    assert sorted(set(TEXTS) - quoted - _built_keys()) == []


def test_a_phrase_is_worded_in_the_readers_language_nested_values_too() -> None:
    closed = phrase("amo.window.closed", since=phrase("amo.window.never"), window="1 h")
    assert closed.render("ru").startswith("Клиент ещё не писал боту; ")
    assert str(closed).startswith("The customer has not written to the bot yet; ")
    assert text("units.minutes", "ru", n=5) == "5 мин"
    with pytest.raises(KeyError, match="no text"):
        phrase("staff.no.such.text")
    assert isinstance(closed, Phrase)


@pytest.mark.parametrize(
    ("code", "default", "expected"),
    [
        ("ru", "en", "ru"),
        ("ru-RU", "en", "ru"),
        ("en", "ru", "en"),
        ("en-GB", "ru", "en"),
        ("de", "en", "en"),
        ("de", "ru", "ru"),
        (None, "ru", "ru"),
        (None, "en", "en"),
        ("uk", "en", "en"),
    ],
)
def test_an_operator_reads_their_telegram_language_else_the_default(
    code: str | None, default: str, expected: str
) -> None:
    assert staff_language(code, default) == expected  # type: ignore[arg-type]


def test_what_the_bridge_stores_in_english_is_worded_for_the_operator() -> None:
    assert gap_reason("restart", "ru") == "перезапуск"
    assert gap_reason(REASON_NOT_STORED, "ru") == "хук не сохранён"
    assert gap_reason("something new", "ru") == "something new"  # stored by a later version
    revoked = phrase("telegram.revoked", bot=777001)
    assert revoked.render("ru").startswith("Telegram не принимает TELEGRAM_BOT_TOKEN бота 777001")
    assert str(revoked).startswith("Telegram rejects TELEGRAM_BOT_TOKEN of bot 777001")
