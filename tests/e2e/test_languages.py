"""Staff read the bridge in their Telegram language, managers in their amoCRM account's."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bot.staff.desk import Invocation, staff_job
from simulators.factories import make_user, staff_message_update
from tests.e2e.test_manager_to_telegram import customer_says, post, sends, status_of
from tests.harness import BridgeFactory, Fakes

OPERATOR = 900
STAFF: dict[str, Any] = {"OPERATOR_IDS": f"{OPERATOR}", "TIMEZONE": "Europe/Moscow"}


class Operator:
    """One operator whose Telegram is set to `language_code` (None: Telegram sends none)."""

    def __init__(self, fakes: Fakes, language_code: str | None) -> None:
        self.fakes = fakes
        self.language_code = language_code
        self.message_id = 0

    async def ask(self, text: str) -> str:
        telegram = self.fakes.telegram
        before = len(telegram.sent_messages(OPERATOR))
        self.message_id += 1
        telegram.push_update(
            staff_message_update(
                OPERATOR, self.message_id, text=text, language_code=self.language_code
            )
        )
        await telegram.wait_for(
            lambda: len(telegram.sent_messages(OPERATOR)) > before, what=f"reply to {text}"
        )
        return str(telegram.sent_messages(OPERATOR)[-1].params["text"])

    async def ask_all(self, texts: list[str]) -> list[str]:
        """The bot's replies to many commands sent at once (in whatever order they come)."""
        telegram = self.fakes.telegram
        before = len(telegram.sent_messages(OPERATOR))
        for text in texts:
            self.message_id += 1
            telegram.push_update(
                staff_message_update(
                    OPERATOR, self.message_id, text=text, language_code=self.language_code
                )
            )
        await telegram.wait_for(
            lambda: len(telegram.sent_messages(OPERATOR)) >= before + len(texts),
            timeout=30,  # Telegram's pacing of one chat: about one answer a second
            what="replies",
        )
        return [str(c.params["text"]) for c in telegram.sent_messages(OPERATOR)[before:]]


REPLIES = {
    # command → (the Russian reply starts with, the English reply starts with)
    "/help": ("Команды для сотрудников:", "Staff commands:"),
    "/status": (
        "Состояние моста\nTelegram, amoCRM и база: всё в порядке\nОчеред",
        "Bridge status\nTelegram, amoCRM and storage: all well\nQueue",
    ),
    "/talk 117": (
        "Беседа 117: открыта, не прочитана\nИсточник: telegram",
        "Talk 117: open, unread",
    ),
    "/talk abc": (
        "Номер беседы должен быть числом, а не 'abc'.\nКак вызвать: /talk",
        "Talk id must be a number, not 'abc'.\nUsage: /talk",
    ),
    "/call +79161234567 2:30 in talked": (
        "Звонок записан: сделка 15926745:",
        "Call logged to lead 15926745:",
    ),
    "/failed": ("Задач с ошибкой нет.", "No dead-lettered jobs."),
    "/retry 77": ("Задачи #77 нет.", "There is no job #77."),
    "/frobnicate": ("Неизвестная команда /frobnicate, см. /help", "Unknown command /frobnicate"),
}


# `ru-RU` and the like: tests/unit/test_texts.py (the same staff_language decides).
@pytest.mark.parametrize(("language_code", "which"), [("ru-RU", 0), ("en", 1)])
async def test_operator_replies_are_in_their_telegram_language(
    fakes: Fakes, bridges: BridgeFactory, language_code: str, which: int
) -> None:
    fakes.crm.add_talk(117)
    fakes.crm.add_phone("+79161234567", "lead", 15926745)
    await bridges.start(**STAFF)
    operator = Operator(fakes, language_code)

    replies = await operator.ask_all(list(REPLIES))
    for command, expected in REPLIES.items():
        assert any(r.startswith(expected[which]) for r in replies), (command, replies)
    if which == 0:  # the call's summary, the talk's labels: no English left in between
        call = await operator.ask("/call +79161234567 1m5s out busy")
        assert call.endswith("Исходящий звонок +79161234567, 1:05, занято")
        talk = await operator.ask("/talk 117")
        assert "Создана: " in talk and "Пропущена: —" in talk


@pytest.mark.parametrize(
    ("language", "language_code", "expected"),
    [
        ("ru", None, "Команды для сотрудников:"),  # Telegram sent no language
        ("ru", "de", "Команды для сотрудников:"),  # neither Russian nor English
        ("ru", "en", "Staff commands:"),  # the operator's own language wins
        (None, None, "Staff commands:"),  # the account's: a loopback test account is English
        ("en", "ru", "Команды для сотрудников:"),
    ],
)
async def test_without_a_language_of_their_own_operators_read_the_default(
    fakes: Fakes,
    bridges: BridgeFactory,
    language: str | None,
    language_code: str | None,
    expected: str,
) -> None:
    env: dict[str, Any] = dict(STAFF)
    if language is not None:
        env["LANGUAGE"] = language
    await bridges.start(**env)
    assert (await Operator(fakes, language_code).ask("/help")).startswith(expected)


async def test_a_command_queued_before_the_upgrade_is_answered_in_the_default(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    fakes.crm.add_talk(117)
    bridge = await bridges.start(LANGUAGE="ru", **STAFF)
    job = staff_job(Invocation(OPERATOR, OPERATOR, 41, "talk", "117"))
    del job.payload["invocation"]["language_code"]  # stored by a version without languages
    await bridge.bridge.repo.enqueue(job)

    await fakes.telegram.wait_for(
        lambda: bool(fakes.telegram.sent_messages(OPERATOR)), what="the queued command's answer"
    )
    answer = str(fakes.telegram.sent_messages(OPERATOR)[-1].params["text"])
    assert answer.startswith("Беседа 117: открыта")


@pytest.mark.parametrize(
    ("language", "window", "blocked", "write_first", "refused"),
    [
        (
            "ru",
            "Клиент писал последний раз 60 мин назад; сообщения доставляются только в течение "
            "10 мин после последнего сообщения клиента (временное окно).",
            "Клиент заблокировал бота в Telegram, поэтому сообщение не доставлено.",
            "Клиент не делился этим телефоном с ботом",
            "Файл не отправлен (сервер файла 10.0.0.5 не из тех, где amoCRM хранит файлы "
            "(MEDIA_ALLOWED_HOSTS)); клиент получил текст.",
        ),
        (
            "en",
            "The customer last wrote 60 min ago; messages are delivered only within 10 min of "
            "the customer's last message (time window).",
            "The customer has blocked the bot in Telegram, so the message was not delivered.",
            "The customer has not shared this phone with the bot",
            "The file was not sent (the media host 10.0.0.5 is not one amoCRM uses for files "
            "(MEDIA_ALLOWED_HOSTS)); the customer got the text.",
        ),
    ],
)
async def test_delivery_errors_are_in_the_accounts_language(
    fakes: Fakes,
    bridges: BridgeFactory,
    language: str,
    window: str,
    blocked: str,
    write_first: str,
    refused: str,
) -> None:
    bridge = await bridges.start(TIME_WINDOW_SECONDS=600, LANGUAGE=language)
    await customer_says(fakes, 620, 1, text="давно", date=int(time.time()) - 3600)
    await customer_says(fakes, 621, 1, text="только что")
    fakes.telegram.block(621)

    answer = fakes.amojo.message_hook("tg-620", text="Ответ")
    late = await status_of(fakes, await post(fakes, bridge, answer))
    assert (late["status"], late["error_code"]) == (-1, 905)
    assert late["error"].startswith(window)
    answer = fakes.amojo.message_hook("tg-621", text="Ответ")
    gone = await status_of(fakes, await post(fakes, bridge, answer))
    assert (gone["error_code"], gone["error"]) == (901, blocked)
    hook = fakes.amojo.message_hook(None, text="Здравствуйте", receiver_phone="+7 916 111-22-33")
    unknown = await status_of(fakes, await post(fakes, bridge, hook))
    assert unknown["error_code"] == 904 and unknown["error"].startswith(write_first)
    customer = make_user(622, language_code=language)  # the stand-in is in theirs
    await customer_says(fakes, 622, 1, text="пришлите счёт", user=customer)
    file = fakes.amojo.message_hook(
        "tg-622", msg_type="file", text="Счёт", media="http://10.0.0.5/secret", file_name="a.pdf"
    )
    unsent = await status_of(fakes, await post(fakes, bridge, file))
    assert (unsent["error_code"], unsent["error"]) == (905, refused)
    stand_in = "не доставлен" if language == "ru" else "not delivered"
    assert sends(fakes, 622)[-1].params["text"] == f"Счёт\n\n📎 a.pdf: {stand_in}"
