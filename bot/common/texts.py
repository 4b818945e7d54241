"""Every text the bridge shows people, in Russian and English, and who reads which language.

Three audiences:
- customers in Telegram: Russian for Russian-speaking clients (`language_of`);
- staff in Telegram: their Telegram language, `ru` or `en`, else the default (`staff_language`);
- managers in amoCRM reading why a message failed: the account's language (`account_language`).

The default for the last two is `LANGUAGE`, or the account's: `*.amocrm.ru` is Russian,
`*.kommo.com` (and anything else) English. A test fails if a key lacks either language, or
the two languages' placeholders differ.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

Language = Literal["ru", "en"]
LANGUAGES: tuple[Language, ...] = ("ru", "en")

TEXTS: dict[str, dict[Language, str]] = {
    # ----- customers -------------------------------------------------------------------------
    "greeting": {
        "ru": (
            "Здравствуйте! Напишите ваш вопрос прямо здесь — менеджер ответит в этом чате.\n"
            "Можно поделиться номером телефона кнопкой ниже, чтобы мы узнали вас и могли "
            "написать первыми."
        ),
        "en": (
            "Hello! Write your question right here and a manager will answer in this chat.\n"
            "You can share your phone number with the button below so we recognise you and "
            "can write to you first."
        ),
    },
    "share_phone_button": {"ru": "📱 Поделиться номером", "en": "📱 Share my phone number"},
    "phone_saved": {
        "ru": "Спасибо, номер сохранён. Менеджер скоро ответит.",
        "en": "Thank you, your number is saved. A manager will answer soon.",
    },
    # what stands in for a manager's file the customer cannot get as a file
    "stand_in.not_delivered": {"ru": "не доставлен", "en": "not delivered"},
    "stand_in.picture": {"ru": "Изображение", "en": "Picture"},
    "stand_in.video": {"ru": "Видео", "en": "Video"},
    "stand_in.file": {"ru": "Файл", "en": "File"},
    "stand_in.voice": {"ru": "Голосовое сообщение", "en": "Voice message"},
    "stand_in.audio": {"ru": "Аудио", "en": "Audio"},
    "stand_in.sticker": {"ru": "Стикер", "en": "Sticker"},
    "stand_in.attachment": {"ru": "Вложение", "en": "Attachment"},
    # ----- amoCRM: what stands in for what amoCRM chats cannot show --------------------------
    "amo.forwarded": {"ru": "↪ Переслано от {name}", "en": "↪ Forwarded from {name}"},
    "amo.hidden_user": {"ru": "скрытого пользователя", "en": "a hidden user"},
    "amo.too_big": {
        "ru": (
            "[файл «{name}», {size}: Telegram не даёт ботам скачивать файлы больше 20 МБ, "
            "поэтому его здесь не показать. Попросите клиента прислать его иначе (ссылкой или "
            "файлом поменьше).]"
        ),
        "en": (
            "[file «{name}», {size}: Telegram does not let bots download files over 20 MB, so "
            "it cannot be shown here. Ask the customer to send it another way (a link or a "
            "smaller file).]"
        ),
    },
    "amo.poll": {"ru": "[Опрос] {question}\n{options}", "en": "[Poll] {question}\n{options}"},
    "amo.dice": {"ru": "[Кубик {emoji}: {value}]", "en": "[Dice {emoji}: {value}]"},
    "amo.unreadable_fields": {
        "ru": "[Эта версия моста не смогла прочитать часть сообщения: {fields}]",
        "en": "[This version of the bridge could not read part of this message: {fields}]",
    },
    "amo.unsupported": {
        "ru": "[Клиент отправил в Telegram {what}; чаты amoCRM это не показывают]",
        "en": "[The customer sent a Telegram {what} that amoCRM chats cannot show]",
    },
    # ----- durations (staff and amoCRM) ------------------------------------------------------
    "units.seconds": {"ru": "{n} с", "en": "{n} s"},
    "units.minutes": {"ru": "{n} мин", "en": "{n} min"},
    "units.hours": {"ru": "{n} ч", "en": "{n} h"},
    "units.hours_minutes": {"ru": "{hours} ч {minutes} мин", "en": "{hours} h {minutes} min"},
    "units.days": {"ru": "{n} дн.", "en": "{n} days"},
    # ----- staff: usage and argument errors ----------------------------------------------
    "staff.usage.talk": {
        "ru": "Как вызвать: /talk <номер беседы>\nПример: /talk 117",
        "en": "Usage: /talk <talk id>\nExample: /talk 117",
    },
    "staff.usage.close": {
        "ru": (
            "Как вызвать: /close <номер беседы> [nps]\n"
            "Пример: /close 117 (закрывает сразу)\n"
            "Пример: /close 117 nps (сначала отработает NPS-бот amoCRM)"
        ),
        "en": (
            "Usage: /close <talk id> [nps]\n"
            "Example: /close 117 (closes at once)\n"
            "Example: /close 117 nps (lets amoCRM's NPS bot run first)"
        ),
    },
    "staff.usage.call": {
        "ru": (
            "Как вызвать: /call <телефон> <длительность> [in|out] [статус] [результат…]\n"
            "длительность: 150, 2:30, 1:02:30 или 2m30s; направление: in (входящий) или out "
            "(исходящий, по умолчанию)\n"
            "статус: 1 left_message, 2 call_back, 3 not_available, 4 talked, 5 wrong_number, "
            "6 no_answer, 7 busy; текст результата идёт после статуса\n"
            "Пример: /call +79161234567 2:30 out talked Договорились о доставке"
        ),
        "en": (
            "Usage: /call <phone> <duration> [in|out] [status] [result text…]\n"
            "duration: 150, 2:30, 1:02:30 or 2m30s; direction: in or out (default out)\n"
            "status: 1 left_message, 2 call_back, 3 not_available, 4 talked, 5 wrong_number, "
            "6 no_answer, 7 busy; result text follows the status\n"
            "Example: /call +79161234567 2:30 out talked Agreed on delivery"
        ),
    },
    "staff.usage.retry": {
        "ru": "Как вызвать: /retry <номер задачи> или /retry all\nПример: /retry 42",
        "en": "Usage: /retry <job id> or /retry all\nExample: /retry 42",
    },
    "staff.which_talk": {"ru": "Какая беседа?", "en": "Which talk?"},
    "staff.talk_id_not_number": {
        "ru": "Номер беседы должен быть числом, а не {word!r}.",
        "en": "Talk id must be a number, not {word!r}.",
    },
    "staff.unexpected": {"ru": "Лишнее: {words!r}.", "en": "Unexpected {words!r}."},
    "staff.duration_unreadable": {
        "ru": "Не удалось разобрать длительность {raw!r}.",
        "en": "Cannot read the duration {raw!r}.",
    },
    "staff.not_a_phone": {
        "ru": "{raw!r} — не номер телефона (нужно хотя бы {digits} цифр).",
        "en": "{raw!r} is not a phone number (at least {digits} digits).",
    },
    "staff.phone_and_duration": {
        "ru": "Нужны телефон и длительность.",
        "en": "Phone and duration are required.",
    },
    "staff.unknown_status": {
        "ru": "Неизвестный статус звонка {word!r}.",
        "en": "Unknown call status {word!r}.",
    },
    "staff.unknown_direction_or_status": {
        "ru": "Неизвестное направление или статус звонка {word!r}.",
        "en": "Unknown direction or call status {word!r}.",
    },
    "staff.unknown_command": {
        "ru": "Неизвестная команда {word}, см. /help",
        "en": "Unknown command {word}, see /help",
    },
    "staff.not_a_command": {
        "ru": "/{command} не команда этого моста.",
        "en": "/{command} is not a command of this bridge.",
    },
    "staff.help": {
        "ru": (
            "Команды для сотрудников:\n"
            "/talk <номер> — беседа: состояние, контакт, сделка, время, NPS\n"
            "  /talk 117\n"
            "/close <номер> [nps] — закрыть беседу сразу или после NPS-бота\n"
            "  /close 117\n"
            "  /close 117 nps\n"
            "/call <телефон> <длительность> [in|out] [статус] [результат…] — записать звонок "
            "в amoCRM\n"
            "  /call +79161234567 150\n"
            "  /call +7 916 123-45-67 150\n"
            "  /call +79161234567 2:30 in talked Спросил про доставку\n"
            "  /call 89161234567 1m5s out busy\n"
            "  статусы: 1 left_message, 2 call_back, 3 not_available, 4 talked, 5 wrong_number, "
            "6 no_answer, 7 busy\n"
            "/status — состояние моста\n"
            "/failed — задачи с ошибкой и их причины\n"
            "/retry <номер>|all — повторить задачу с ошибкой или все такие задачи\n"
            "  /retry 42\n"
            "/link <ключ=значение…> — ссылка t.me на каждого бота с метками и её QR-код\n"
            "  /link utm_source=vk utm_campaign=spring\n"
            "/help — этот список"
        ),
        "en": (
            "Staff commands:\n"
            "/talk <id> — a talk: state, contact, lead, times, NPS\n"
            "  /talk 117\n"
            "/close <id> [nps] — close a talk now, or let the NPS bot run first\n"
            "  /close 117\n"
            "  /close 117 nps\n"
            "/call <phone> <duration> [in|out] [status] [result…] — log a call in amoCRM\n"
            "  /call +79161234567 150\n"
            "  /call +7 916 123-45-67 150\n"
            "  /call +79161234567 2:30 in talked Asked about delivery\n"
            "  /call 89161234567 1m5s out busy\n"
            "  statuses: 1 left_message, 2 call_back, 3 not_available, 4 talked, 5 wrong_number, "
            "6 no_answer, 7 busy\n"
            "/status — bridge health\n"
            "/failed — dead-lettered jobs with their reasons\n"
            "/retry <id>|all — re-drive a dead-lettered job, or all of them\n"
            "  /retry 42\n"
            "/link <key=value…> — a t.me link to each bot carrying these values, with its QR code\n"
            "  /link utm_source=vk utm_campaign=spring\n"
            "/help — this list"
        ),
    },
    # ----- staff: the command menu (setMyCommands) ---------------------------------------
    "staff.menu.talk": {"ru": "Беседа: /talk 117", "en": "Look up a talk: /talk 117"},
    "staff.menu.close": {
        "ru": "Закрыть беседу: /close 117 [nps]",
        "en": "Close a talk: /close 117 [nps]",
    },
    "staff.menu.call": {
        "ru": "Записать звонок: /call +7916… 2:30 in talked",
        "en": "Log a call: /call +7916… 2:30 in talked",
    },
    "staff.menu.status": {"ru": "Состояние моста", "en": "Bridge health"},
    "staff.menu.failed": {"ru": "Задачи с ошибкой", "en": "Dead-lettered jobs"},
    "staff.menu.retry": {
        "ru": "Повторить задачу: /retry 42 | all",
        "en": "Re-drive a dead letter: /retry 42 | all",
    },
    "staff.menu.help": {"ru": "Команды с примерами", "en": "Staff commands with examples"},
    "staff.menu.link": {
        "ru": "Ссылка с метками: /link utm_source=vk",
        "en": "A tracked link: /link utm_source=vk",
    },
    "staff.link.usage": {
        "ru": "Не получилось: {reason}.\nКак вызвать: /link utm_source=vk utm_campaign=spring",
        "en": "Cannot make the link: {reason}.\nUsage: /link utm_source=vk utm_campaign=spring",
    },
    "staff.link.made": {
        "ru": "Ссылка на {bot}: {url}\nНачальное сообщение в amoCRM: «{line}»",
        "en": "Link to {bot}: {url}\nIn amoCRM the chat starts with: “{line}”",
    },
    "staff.link.no_username": {
        "ru": "У бота {bot} нет имени пользователя: ссылку t.me сделать нельзя",
        "en": "Bot {bot} has no username: no t.me link can be made",
    },
    # ----- staff: /talk, /close, /call -----------------------------------------------------
    "staff.talk.head": {"ru": "Беседа {id}: {state}, {read}", "en": "Talk {id}: {state}, {read}"},
    "staff.talk.open": {"ru": "открыта", "en": "open"},
    "staff.talk.closed": {"ru": "закрыта", "en": "closed"},
    "staff.talk.read": {"ru": "прочитана", "en": "read"},
    "staff.talk.unread": {"ru": "не прочитана", "en": "unread"},
    "staff.talk.origin": {"ru": "Источник: {origin}", "en": "Origin: {origin}"},
    "staff.talk.contact": {"ru": "Контакт {id}: {link}", "en": "Contact {id}: {link}"},
    "staff.talk.lead": {"ru": "Сделка {id}: {link}", "en": "Lead {id}: {link}"},
    "staff.talk.customer": {"ru": "Покупатель {id}: {link}", "en": "Customer {id}: {link}"},
    "staff.talk.created": {"ru": "Создана: {time}", "en": "Created: {time}"},
    "staff.talk.updated": {"ru": "Обновлена: {time}", "en": "Updated: {time}"},
    "staff.talk.missed": {"ru": "Пропущена: {time}", "en": "Missed: {time}"},
    "staff.talk.nps": {"ru": "NPS: {rate}", "en": "NPS: {rate}"},
    "staff.talk.not_found": {"ru": "Беседа {id} не найдена.", "en": "Talk {id} not found."},
    "staff.talk.already_closed": {
        "ru": "Беседа {id} уже закрыта или закрывается.",
        "en": "Talk {id} is already closed or closing.",
    },
    "staff.closed": {
        "ru": "Беседа {id} закрыта (без NPS).",
        "en": "Talk {id}: closed (without NPS).",
    },
    "staff.closing": {
        "ru": "Беседа {id} закрывается; сначала отработает NPS-бот amoCRM, если он включён.",
        "en": "Talk {id}: closing; amoCRM's NPS bot runs first if it is enabled.",
    },
    "staff.call.inbound": {"ru": "входящий", "en": "inbound"},
    "staff.call.outbound": {"ru": "исходящий", "en": "outbound"},
    "staff.call.summary": {
        "ru": "{direction} звонок {phone}, {duration}",
        "en": "{direction} call {phone}, {duration}",
    },
    "staff.call.status.1": {"ru": "оставлено сообщение", "en": "left a message"},
    "staff.call.status.2": {"ru": "перезвонить позже", "en": "call back later"},
    "staff.call.status.3": {"ru": "абонент недоступен", "en": "not available"},
    "staff.call.status.4": {"ru": "разговор состоялся", "en": "talk happened"},
    "staff.call.status.5": {"ru": "неверный номер", "en": "wrong number"},
    "staff.call.status.6": {"ru": "не дозвонились", "en": "could not get through"},
    "staff.call.status.7": {"ru": "занято", "en": "busy"},
    "staff.call.logged": {
        "ru": "Звонок записан: {entity} {id}: {link}\n{summary}",
        "en": "Call logged to {entity} {id}: {link}\n{summary}",
    },
    "staff.call.not_logged": {
        "ru": "Звонок не записан: amoCRM не привязал его ни к чему ({reason}).\n{summary}",
        "en": "Call not logged: amoCRM attached it nowhere ({reason}).\n{summary}",
    },
    "staff.call.no_entity": {
        "ru": "ни у одного контакта или компании нет этого телефона",
        "en": "no contact or company has this phone",
    },
    "staff.call.rejected": {
        "ru": "amoCRM не принял звонок: {message}",
        "en": "amoCRM rejected the call: {message}",
    },
    "staff.entity.contact": {"ru": "контакт", "en": "contact"},
    "staff.entity.lead": {"ru": "сделка", "en": "lead"},
    "staff.entity.customer": {"ru": "покупатель", "en": "customer"},
    "staff.entity.company": {"ru": "компания", "en": "company"},
    # ----- staff: amoCRM failures ----------------------------------------------------------
    "staff.crm.401": {
        "ru": (
            "amoCRM отклонил токен доступа (401): проверьте AMOCRM_ACCESS_TOKEN или выдайте "
            "доступ OAuth заново. ({message})"
        ),
        "en": (
            "amoCRM rejected the access token (401): check AMOCRM_ACCESS_TOKEN, or grant "
            "OAuth access again. ({message})"
        ),
    },
    "staff.crm.402": {
        "ru": "Аккаунт amoCRM не оплачен (402). ({message})",
        "en": "The amoCRM account is not paid (402). ({message})",
    },
    "staff.crm.403": {
        "ru": (
            "Нет прав на это в amoCRM (403): пользователь интеграции этого не видит, или IP "
            "заблокирован за слишком частые запросы. ({message})"
        ),
        "en": (
            "No rights for this in amoCRM (403): the integration's user may not see it, or "
            "the IP is blocked for too many requests. ({message})"
        ),
    },
    "staff.crm.429": {
        "ru": "amoCRM ограничивает частоту запросов моста (429); повторите через минуту.",
        "en": "amoCRM is rate limiting the bridge (429); try again in a minute.",
    },
    "staff.crm.other": {
        "ru": "Ошибка amoCRM {status}: {message}",
        "en": "amoCRM error {status}: {message}",
    },
    "staff.crm.unreachable": {
        "ru": "amoCRM недоступен ({error}); повторите.",
        "en": "amoCRM is unreachable ({error}); try again.",
    },
    "staff.command_failed": {
        "ru": "/{command} не выполнена: {reason}",
        "en": "/{command} failed: {reason}",
    },
    # ----- staff: /status ------------------------------------------------------------------
    "group.not_connected": {
        "ru": "Этот бот работает только в группах, куда его добавил сотрудник компании. "
        "Выхожу из группы.",
        "en": "This bot works only in groups a member of the company's staff added it to. "
        "Leaving the group.",
    },
    "group.removed": {
        "ru": "бота удалили из группы",
        "en": "the bot was removed from the group",
    },
    "start.from_link": {
        "ru": "Открыл бота по ссылке: {source}",
        "en": "Started the bot from: {source}",
    },
    "staff.status.title": {"ru": "Состояние моста", "en": "Bridge status"},
    "staff.status.healthy": {
        "ru": "Telegram, amoCRM и база: всё в порядке",
        "en": "Telegram, amoCRM and storage: all well",
    },
    "staff.status.problems": {
        "ru": "Проблемы (как в /healthz):",
        "en": "Problems (as in /healthz):",
    },
    "staff.status.queues_empty": {"ru": "Очереди: пусто", "en": "Queues: empty"},
    "staff.status.queue": {
        "ru": "Очередь {queue}: ждут {pending}, с ошибкой {dead}, самая старая ждёт {age}",
        "en": "Queue {queue}: {pending} pending, {dead} dead-lettered, oldest pending {age}",
    },
    "staff.status.last_crm": {
        "ru": "Последний успешный запрос к amoCRM: {ago}",
        "en": "Last successful amoCRM call: {ago}",
    },
    "staff.status.never": {"ru": "не было", "en": "none"},
    "staff.status.groups": {
        "ru": "Групп на связи: {count}",
        "en": "Groups bridged: {count}",
    },
    "staff.status.blocked": {
        "ru": "Клиентов, заблокировавших бота: {count}",
        "en": "Customers who blocked the bot: {count}",
    },
    "staff.status.bot": {"ru": "Бот {label}{role}: {state}", "en": "Bot {label}{role}: {state}"},
    "staff.status.primary": {"ru": " (основной)", "en": " (primary)"},
    "staff.status.polling": {"ru": "работает", "en": "polling"},
    "staff.status.stopped": {"ru": "остановлен: {reason}", "en": "stopped: {reason}"},
    "staff.status.business": {
        "ru": "Аккаунт Telegram Business {owner} ({owner_id}) через бота {bot}: {state}",
        "en": "Telegram Business account {owner} ({owner_id}) through bot {bot}: {state}",
    },
    "staff.status.business_on": {"ru": "подключён", "en": "connected"},
    "staff.status.business_off": {"ru": "отключён", "en": "disconnected"},
    "staff.status.business_no_reply": {
        "ru": ", но не может отвечать",
        "en": ", but may not reply",
    },
    "staff.status.business_no_read": {
        "ru": ", не отмечает прочитанным",
        "en": ", may not mark messages read",
    },
    "staff.status.no_gap": {
        "ru": "Восстановление пропущенных хуков: пропусков не было",
        "en": "Missed-hook recovery: no gap so far",
    },
    "staff.status.gap": {
        "ru": "Последний перерыв в приёме хуков: {length}, {ago} назад ({reason})",
        "en": "Last gap in hook intake: {length}, {ago} ago ({reason})",
    },
    "staff.status.recovering": {
        "ru": "{head}; идёт восстановление: прочитано бесед {scanned}/{total}, "
        "восстановлено {recovered}",
        "en": "{head}; recovering: {scanned}/{total} conversations read, {recovered} recovered",
    },
    "staff.status.recovered": {
        "ru": "{head}; восстановлено сообщений: {recovered} из бесед: {scanned}",
        "en": "{head}; recovered {recovered} message(s) from {scanned} conversation(s)",
    },
    "staff.gap.restart": {"ru": "перезапуск", "en": "restart"},
    "staff.gap.hook_not_stored": {"ru": "хук не сохранён", "en": "hook not stored"},
    "telegram.revoked": {
        "ru": (
            "Telegram не принимает TELEGRAM_BOT_TOKEN бота {bot} (401 Unauthorized): его "
            "отозвали в @BotFather? Укажите новый токен и перезапустите"
        ),
        "en": (
            "Telegram rejects TELEGRAM_BOT_TOKEN of bot {bot} (401 Unauthorized): was it revoked "
            "in @BotFather? Set the new token and restart"
        ),
    },
    "staff.ago": {"ru": "{age} назад", "en": "{age} ago"},
    # ----- staff: /failed and /retry -------------------------------------------------------
    "staff.failed.none": {"ru": "Задач с ошибкой нет.", "en": "No dead-lettered jobs."},
    "staff.failed.title": {"ru": "Задачи с ошибкой: {total}", "en": "Dead-lettered jobs: {total}"},
    "staff.failed.newest": {"ru": " (последние {shown})", "en": " (newest {shown})"},
    "staff.failed.line": {
        "ru": "#{id} {queue}/{kind} · {reference}{bot} · попыток: {attempts} · "
        "ошибка {age} назад\n  {reason}",
        "en": "#{id} {queue}/{kind} · {reference}{bot} · {attempts} attempt(s) · "
        "failed {age} ago\n  {reason}",
    },
    "staff.failed.bot": {"ru": " · бот {label}", "en": " · bot {label}"},
    "staff.failed.amo_message": {"ru": "сообщение amo {id}", "en": "amo message {id}"},
    "staff.failed.lane": {"ru": "очередь {lane}", "en": "lane {lane}"},
    "staff.failed.footer": {
        "ru": "Повторить: /retry <номер> или /retry all",
        "en": "Re-drive: /retry <id> or /retry all",
    },
    "staff.retry.no_job": {"ru": "Задачи #{id} нет.", "en": "There is no job #{id}."},
    "staff.retry.not_dead": {
        "ru": "Задача #{id} в состоянии {state}, а не с ошибкой; делать нечего.",
        "en": "Job #{id} is {state}, not dead-lettered; nothing to do.",
    },
    "staff.retry.one": {
        "ru": "Задача #{id} снова в очереди.",
        "en": "Job #{id} is back in its queue.",
    },
    "staff.retry.nothing": {"ru": "Ничего не возвращено в очередь.", "en": "Nothing re-driven."},
    "staff.retry.all": {
        "ru": "Задач с ошибкой возвращено в очереди: {count}.",
        "en": "{count} dead-lettered job(s) back in their queues.",
    },
    # ----- Telegram Business --------------------------------------------------------------
    "business.notice.connected": {
        "ru": (
            "Бот подключён к вашему аккаунту Telegram: сообщения клиентов в ваших чатах "
            "попадают в amoCRM, а ответы менеджеров из amoCRM уходят от вашего имени. То, что "
            "вы пишете сами, тоже сохраняется в amoCRM."
        ),
        "en": (
            "The bot is connected to your Telegram account: customers' messages in your chats "
            "reach amoCRM, and managers' answers from amoCRM are sent on your behalf. What you "
            "type yourself is kept in amoCRM too."
        ),
    },
    "business.notice.changed": {
        "ru": "Подключение бота к вашему аккаунту изменилось; чаты по-прежнему связаны с amoCRM.",
        "en": "The bot's connection to your account changed; your chats still reach amoCRM.",
    },
    "business.notice.removed": {
        "ru": (
            "Бот отключён от вашего аккаунта: ваши чаты больше не попадают в amoCRM, а ответы "
            "менеджеров не отправляются."
        ),
        "en": (
            "The bot is disconnected from your account: your chats no longer reach amoCRM, and "
            "managers' answers are not sent."
        ),
    },
    "business.notice.refused": {
        "ru": (
            "Этот бот работает только с аккаунтами Telegram для бизнеса сотрудников компании: "
            "из вашего аккаунта ничего не читается и от вашего имени ничего не отправляется. "
            "Отключить бота: Настройки → Telegram для бизнеса → Чат-боты."
        ),
        "en": (
            "This bot works only with the Telegram Business accounts of the company's staff: "
            "nothing of your account is read, and nothing is sent on your behalf. To remove it: "
            "Settings → Telegram Business → Chatbots."
        ),
    },
    "business.notice.no_reply": {
        "ru": (
            "Не хватает права «Отвечать на сообщения»: ответы менеджеров не будут отправлены, "
            "пока вы его не дадите (Настройки → Telegram для бизнеса → Чат-боты)."
        ),
        "en": (
            'The "reply to messages" right is missing: managers\' answers are not sent until '
            "you grant it (Settings → Telegram Business → Chatbots)."
        ),
    },
    "business.notice.no_read": {
        "ru": (
            "Не хватает права «Читать сообщения»: чаты, на которые ответили менеджеры, "
            "останутся непрочитанными у вас."
        ),
        "en": (
            'The "read messages" right is missing: chats the managers answered stay unread in '
            "your app."
        ),
    },
    "business.deleted_by_customer": {
        "ru": "🗑 Клиент удалил это сообщение в Telegram.",
        "en": "🗑 The customer deleted this message in Telegram.",
    },
    "business.deleted": {
        "ru": "🗑 Это сообщение удалено в Telegram.",
        "en": "🗑 This message was deleted in Telegram.",
    },
    # ----- amoCRM: why a manager's message was not delivered (status -1) --------------------
    "amo.group_gone": {
        "ru": "Бот больше не в группе «{title}» ({why}), поэтому сообщение не доставлено.",
        "en": "The bot is no longer in the group “{title}” ({why}), so the message was not "
        "delivered.",
    },
    "amo.blocked": {
        "ru": "Клиент заблокировал бота в Telegram, поэтому сообщение не доставлено.",
        "en": "The customer has blocked the bot in Telegram, so the message was not delivered.",
    },
    "amo.chat_not_found": {
        "ru": "В Telegram нет чата с этим клиентом (он не запускал бота или удалил чат).",
        "en": "Telegram has no chat with this customer (they never started the bot or "
        "deleted the chat).",
    },
    "amo.phone_unknown": {
        "ru": (
            "Клиент не делился этим телефоном с ботом, поэтому Telegram не может ему написать. "
            "Бот Telegram пишет только тем, кто его открыл; попросите клиента написать первым."
        ),
        "en": (
            "The customer has not shared this phone with the bot, so Telegram cannot reach them. "
            "A Telegram bot can only write to people who opened it; ask the customer to write "
            "first."
        ),
    },
    "amo.phone_shared": {
        "ru": (
            "Этим телефоном с ботом поделились несколько клиентов Telegram, и мост не может "
            "понять, кому писать. Ответьте в чате, из которого клиент писал."
        ),
        "en": (
            "Several Telegram customers shared this phone with the bot, so the bridge cannot "
            "tell which one is meant. Answer in the chat the customer wrote from."
        ),
    },
    "amo.bot_gone": {
        "ru": (
            "Этот чат принадлежит боту Telegram {bot}, которого мост больше не обслуживает "
            "(его токен убран из TELEGRAM_BOT_TOKEN), поэтому сообщение не доставлено."
        ),
        "en": (
            "This chat belongs to Telegram bot {bot}, which the bridge no longer runs (its token "
            "was taken out of TELEGRAM_BOT_TOKEN), so the message was not delivered."
        ),
    },
    "amo.source_mismatch": {
        "ru": (
            "Хук указывает источник {source}, но его беседа относится к источнику другого бота; "
            "мост не угадывает, какой бот должен отправить сообщение."
        ),
        "en": (
            "The hook names source {source}, but its conversation belongs to another bot's "
            "source; the bridge does not guess which bot should send it."
        ),
    },
    "amo.source_unknown": {
        "ru": "Написать первым через источник {source} нельзя: ни у одного бота моста нет "
        "такого источника.",
        "en": "Write-first through source {source}: no Telegram bot of this bridge has that "
        "source.",
    },
    "amo.no_conversation": {
        "ru": "amoCRM не указал беседу этого сообщения, поэтому его некуда отправить.",
        "en": "amoCRM named no conversation for this message, so there is nowhere to send it.",
    },
    "amo.not_our_chat": {
        "ru": "Беседа {conversation} — не чат Telegram этого моста.",
        "en": "Conversation {conversation} is not a Telegram chat of this bridge.",
    },
    "amo.business_write_first": {
        "ru": (
            "Написать первым через аккаунт Telegram Business нельзя: бот отвечает от имени "
            "аккаунта только тем, кто сам написал ему за последние 24 часа."
        ),
        "en": (
            "Writing first through a Telegram Business account is impossible: the bot answers "
            "on the account's behalf only to people who wrote to it in the last 24 hours."
        ),
    },
    "amo.business_disconnected": {
        "ru": (
            "Аккаунт Telegram Business этого чата отключил бота (или приостановил его), "
            "поэтому сообщение не отправлено."
        ),
        "en": (
            "The Telegram Business account of this chat disconnected the bot (or paused it), "
            "so the message was not sent."
        ),
    },
    "amo.business_cannot_reply": {
        "ru": (
            "Аккаунт Telegram Business этого чата не разрешил боту отвечать на сообщения "
            "(право «Отвечать на сообщения»), поэтому сообщение не отправлено."
        ),
        "en": (
            "The Telegram Business account of this chat does not let the bot reply to messages "
            '(the "reply to messages" right), so the message was not sent.'
        ),
    },
    "amo.window.never": {
        "ru": "Клиент ещё не писал боту",
        "en": "The customer has not written to the bot yet",
    },
    "amo.window.last": {
        "ru": "Клиент писал последний раз {ago} назад",
        "en": "The customer last wrote {ago} ago",
    },
    "amo.window.closed": {
        "ru": (
            "{since}; сообщения доставляются только в течение {window} после последнего "
            "сообщения клиента (временное окно). Дождитесь, когда клиент напишет снова."
        ),
        "en": (
            "{since}; messages are delivered only within {window} of the customer's last "
            "message (time window). Wait until the customer writes again."
        ),
    },
    "amo.empty": {
        "ru": "Сообщение пустое: в Telegram отправлять нечего.",
        "en": "The message is empty: nothing to send to Telegram.",
    },
    "amo.telegram_refused": {
        "ru": "Telegram отклонил сообщение: {description}",
        "en": "Telegram refused the message: {description}",
    },
    "amo.file_not_sent": {
        "ru": "Файл не отправлен ({reason}); клиент получил текст.",
        "en": "The file was not sent ({reason}); the customer got the text.",
    },
    "amo.not_delivered": {
        "ru": "Не доставлено; техническая причина: {reason}",
        "en": "Not delivered: {reason}",
    },
    # ----- amoCRM: why the bridge would not fetch a manager's file ---------------------------
    "media.not_url": {"ru": "адрес файла — не URL", "en": "the media address is not a URL"},
    "media.not_http": {
        "ru": "адрес файла не http(s): {scheme}://",
        "en": "the media address is not http(s): {scheme}://",
    },
    "media.host_not_allowed": {
        "ru": "сервер файла {host} не из тех, где amoCRM хранит файлы (MEDIA_ALLOWED_HOSTS)",
        "en": "the media host {host} is not one amoCRM uses for files (MEDIA_ALLOWED_HOSTS)",
    },
    "media.host_missing": {
        "ru": "сервера файла {host} не существует",
        "en": "the media host {host} does not exist",
    },
    "media.host_private": {
        "ru": "сервер файла {host} указывает на внутренний адрес",
        "en": "the media host {host} resolves to a private address",
    },
    "media.redirects": {
        "ru": "адрес файла перенаправляет больше {count} раз",
        "en": "the media address redirects more than {count} times",
    },
}


@dataclass(frozen=True, slots=True)
class Phrase:
    """A text of the catalogue with its values, worded once the reader's language is known.

    A value may be a Phrase itself (worded in the same language). `str()` gives English, for
    logs.
    """

    key: str
    params: Mapping[str, object] = field(default_factory=dict)

    def render(self, language: Language) -> str:
        """The text in `language`."""
        values = {
            name: value.render(language) if isinstance(value, Phrase) else value
            for name, value in self.params.items()
        }
        return TEXTS[self.key][language].format(**values)

    def __str__(self) -> str:
        return self.render("en")


def phrase(key: str, **params: object) -> Phrase:
    """A catalogue text with its values (KeyError at once for a key the catalogue lacks)."""
    if key not in TEXTS:
        raise KeyError(f"no text {key!r} in the catalogue")
    return Phrase(key, params)


def text(key: str, language: Language | str | None, **params: object) -> str:
    """The text `key` in `language` (`ru`/`en`; a Telegram language code is read as by
    `language_of`)."""
    return phrase(key, **params).render(as_language(language))


def as_language(language: Language | str | None) -> Language:
    """`ru` or `en` from a language (or a Telegram language code)."""
    if language == "ru":
        return "ru"
    if language == "en":
        return "en"
    return language_of(language)


def language_of(language_code: str | None) -> Language:
    """A customer's language: `ru` for Russian-speaking Telegram clients, else `en`."""
    if language_code and language_code.split("-")[0].lower() in {"ru", "uk", "be", "kk"}:
        return "ru"
    return "en"


def staff_language(language_code: str | None, default: Language) -> Language:
    """An operator's language: Russian for `ru`, English for `en`, else the default."""
    primary = (language_code or "").split("-")[0].lower()
    if primary == "ru":
        return "ru"
    if primary == "en":
        return "en"
    return default


def account_language(base_url: str, override: Language | None = None) -> Language:
    """The language of an amoCRM account: `LANGUAGE` when set, Russian for `*.ru`, else English."""
    if override is not None:
        return override
    host = (urlsplit(base_url).hostname or "").rstrip(".").lower()
    return "ru" if host.endswith(".ru") else "en"


def placeholders(template: str) -> set[str]:
    """The names a template fills in (for the catalogue's own test)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
