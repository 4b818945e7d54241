"""`python -m bot` refuses a bad environment with one readable message and exit code 2."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.common.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]

REQUIRED = (
    "TELEGRAM_BOT_TOKEN",
    "AMOCRM_BASE_URL",
    "AMOJO_CHANNEL_ID",
    "AMOJO_CHANNEL_SECRET",
    "PUBLIC_BASE_URL",
)


def run_bridge(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the real entry point with only `env` (cwd has no .env file)."""
    clean = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        env=clean,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_missing_settings_are_all_named_at_once(tmp_path: Path) -> None:
    result = run_bridge({}, tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("invalid configuration") == 1
    for name in REQUIRED:
        assert f"{name}: is required but not set" in result.stderr


def test_malformed_settings_are_named_without_their_values(tmp_path: Path) -> None:
    secrets = {
        "TELEGRAM_BOT_TOKEN": "leaked-token-without-colon",
        "AMOJO_CHANNEL_SECRET": "s3cr3t-channel-value",
        "AMOCRM_ACCESS_TOKEN": "crm-token-value-xyz",
    }
    malformed = {
        "AMOCRM_BASE_URL": "not a url",
        "AMOJO_CHANNEL_ID": "344a5002-f8ca-454d-af3d-396180102ac7",
        "PUBLIC_BASE_URL": "https://bridge.example.com",
        "HTTP_PORT": "99999",
        "OPERATOR_IDS": "12,abc",
        "LOG_LEVEL": "LOUD",
        "TIME_WINDOW_SECONDS": "-5",
    }
    result = run_bridge({**secrets, **malformed}, tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("invalid configuration") == 1
    offending = (
        "TELEGRAM_BOT_TOKEN",
        "AMOCRM_BASE_URL",
        "HTTP_PORT",
        "OPERATOR_IDS",
        "LOG_LEVEL",
        "TIME_WINDOW_SECONDS",
    )
    for name in offending:
        assert f"  {name}: " in result.stderr
    for value in (*secrets.values(), "not a url", "99999", "LOUD"):
        assert value not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()


def test_crm_auth_missing_names_both_ways(tmp_path: Path) -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": "123456:ABC",
        "AMOCRM_BASE_URL": "https://acme.amocrm.ru",
        "AMOJO_CHANNEL_ID": "344a5002-f8ca-454d-af3d-396180102ac7",
        "AMOJO_CHANNEL_SECRET": "f2d7f8704eff95087ed45b23ba99c0b5aac8278e",
        "PUBLIC_BASE_URL": "https://bridge.acme.ru",
    }
    result = run_bridge(env, tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "AMOCRM_ACCESS_TOKEN" in result.stderr
    assert "AMOCRM_CLIENT_ID" in result.stderr
    assert "123456:ABC" not in result.stderr


VALID = {
    "TELEGRAM_BOT_TOKEN": "123456:AAE-valid_token",
    "AMOCRM_BASE_URL": "https://acme.amocrm.ru",
    "AMOCRM_ACCESS_TOKEN": "crm-token",
    "AMOJO_CHANNEL_ID": "344a5002-f8ca-454d-af3d-396180102ac7",
    "AMOJO_CHANNEL_SECRET": "f2d7f8704eff95087ed45b23ba99c0b5aac8278e",
    "PUBLIC_BASE_URL": "https://bridge.acme.ru",
}


def problems(env: dict[str, str], cwd: Path) -> dict[str, str]:
    """Exit code 2, no traceback; the problems by variable."""
    result = run_bridge(env, cwd)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("invalid configuration") == 1
    found = {}
    for line in result.stderr.splitlines():
        name, sep, message = line.strip().partition(": ")
        if sep and name.isupper():
            found[name] = message
    return found


def test_nothing_set_names_the_crm_credentials_in_the_same_run(tmp_path: Path) -> None:
    found = problems({}, tmp_path)
    assert set(found) == {*REQUIRED, "AMOCRM_ACCESS_TOKEN"}
    assert "AMOCRM_CLIENT_ID" in found["AMOCRM_ACCESS_TOKEN"]
    assert not any("Value error" in message for message in found.values())


def test_a_copy_of_env_example_names_every_placeholder(tmp_path: Path) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    found = problems({}, tmp_path)

    placeholders = {name for name, message in found.items() if "placeholder" in message}
    assert placeholders == {
        "TELEGRAM_BOT_TOKEN",
        "AMOCRM_BASE_URL",
        "AMOJO_CHANNEL_ID",
        "AMOJO_CHANNEL_SECRET",
        "PUBLIC_BASE_URL",
    }
    assert "AMOCRM_ACCESS_TOKEN" in found  # empty in the example: counts as not set


def test_oauth_half_set_names_what_is_missing_including_the_code(tmp_path: Path) -> None:
    env = {k: v for k, v in VALID.items() if k != "AMOCRM_ACCESS_TOKEN"}
    found = problems({**env, "AMOCRM_CLIENT_ID": "client", "AMOCRM_ACCESS_TOKEN": ""}, tmp_path)
    assert set(found) == {"AMOCRM_CLIENT_SECRET", "AMOCRM_REDIRECT_URI", "AMOCRM_AUTH_CODE"}


def test_the_code_is_not_needed_once_a_token_is_stored(tmp_path: Path) -> None:
    database = tmp_path / "bridge.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE crm_tokens (id INTEGER PRIMARY KEY)")
        db.execute("INSERT INTO crm_tokens (id) VALUES (1)")
    oauth = {
        "AMOCRM_CLIENT_ID": "client",
        "AMOCRM_CLIENT_SECRET": "secret",
        "AMOCRM_REDIRECT_URI": "https://acme.ru/oauth",
    }
    env = {k: v for k, v in VALID.items() if k != "AMOCRM_ACCESS_TOKEN"}
    settings = load_settings(_env_file=None, **env, **oauth, DATABASE_PATH=str(database))
    assert settings.uses_oauth
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **env, **oauth, DATABASE_PATH=str(tmp_path / "new.sqlite3"))
    assert [p.variable for p in caught.value.problems] == ["AMOCRM_AUTH_CODE"]


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("PUBLIC_BASE_URL", "bridge.acme.ru", "must start with https://"),
        ("AMOCRM_BASE_URL", "acme.amocrm.ru", "must start with https://"),
        ("AMOCRM_BASE_URL", "https://acme.amocrm.ru/leads", "without a path"),
        ("AMOJO_BASE_URL", "ftp://amojo.amocrm.ru", "must start with https://"),
        ("TELEGRAM_BOT_TOKEN", "123456:AAE with-space", "contains a space"),
        ("TELEGRAM_BOT_TOKEN", "AAE-no-bot-id", "must look like 123456789:AAE"),
        ("AMOJO_CHANNEL_SECRET", "da39a3ee5e6b4b0d3255bfef95601890afd8070", "40 hexadecimal"),
        ("AMOJO_CHANNEL_SECRET", "zz39a3ee5e6b4b0d3255bfef95601890afd80709", "40 hexadecimal"),
        ("AMOJO_CHANNEL_ID", "channel-1", "must be a UUID"),
        ("AMOJO_CHANNEL_ID", "00000000-0000-0000-0000-000000000000", "placeholder"),
        ("AMOJO_ACCOUNT_ID", "52e591f7", "must be a UUID"),
        ("HTTP_PORT", "http", "must be a whole number"),
        ("HTTP_PORT", "70000", "must be at most 65535"),
        ("AMOCRM_REDIRECT_URI", "acme.ru/oauth", "must start with https://"),
        ("LANGUAGE", "русский", "must be ru or en"),
        ("HTTP_HOST", "a" * 64, "must be an IP address of this machine or a host name"),
        ("HTTP_HOST", "a..b", "must be an IP address of this machine or a host name"),
        ("TIMEZONE", "Europe/" + "x" * 5000, "must be an IANA time zone name"),
        ("OPERATOR_IDS", "\uff11\uff12\uff13", "digits 0-9"),  # full-width 123
        ("BUSINESS_OWNER_USERS", "\uff19:1", "pairs"),
    ],
)
def test_malformed_values_are_named_in_plain_words(
    variable: str, value: str, complaint: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **{**VALID, variable: value})
    [problem] = caught.value.problems
    assert problem.variable == variable
    assert complaint in problem.message
    if "SECRET" in variable or "TOKEN" in variable:
        assert value not in str(caught.value)


def test_http_is_accepted_with_a_warning_except_on_loopback() -> None:
    settings = load_settings(
        _env_file=None,
        **{
            **VALID,
            "PUBLIC_BASE_URL": "http://bridge.acme.ru",
            "TELEGRAM_API_URL": "http://127.0.0.1:8081",
        },
    )
    [warning] = settings.warnings()
    assert warning.startswith("PUBLIC_BASE_URL uses http://")
    assert load_settings(_env_file=None, **VALID).warnings() == []


def test_a_token_with_a_space_exits_2_at_once(tmp_path: Path) -> None:
    found = problems({**VALID, "TELEGRAM_BOT_TOKEN": "123456:AAE token"}, tmp_path)
    assert set(found) == {"TELEGRAM_BOT_TOKEN"}
    assert "contains a space" in found["TELEGRAM_BOT_TOKEN"]


def test_several_tokens_are_checked_one_by_one_and_named_by_position() -> None:
    settings = load_settings(_env_file=None, **{**VALID, "TELEGRAM_BOT_TOKEN": "11:aa, 22:bb"})
    assert settings.bot_ids == [11, 22]
    assert settings.bot_tokens == ["11:aa", "22:bb"]
    for tokens, complaint in [
        ("11:aa,22:b b", "token 2 (bot 22) contains a space"),
        ("11:aa,22:SECRET-ONE,22:SECRET-TWO", "tokens 2 and 3 are both for bot 22"),
        ("11:aa,,22:bb", "empty token between commas"),
        ("11:aa,no-id-SECRET", "token 2 (no bot id) must look like"),
    ]:
        with pytest.raises(SettingsError) as caught:
            load_settings(_env_file=None, **{**VALID, "TELEGRAM_BOT_TOKEN": tokens})
        [problem] = caught.value.problems
        assert problem.variable == "TELEGRAM_BOT_TOKEN"
        assert complaint in problem.message
        assert "SECRET" not in str(caught.value) and "b b" not in str(caught.value)


def test_source_pipelines_name_configured_bots() -> None:
    tokens = {"TELEGRAM_BOT_TOKEN": "11:aa,22:bb"}
    settings = load_settings(
        _env_file=None, **{**VALID, **tokens, "AMOCRM_SOURCE_PIPELINES": "22:4401, 11:4402"}
    )
    assert settings.AMOCRM_SOURCE_PIPELINES == {22: 4401, 11: 4402}
    assert not settings.AMOCRM_SOURCES
    for value, complaint in [
        ("33:1", "names bot 33, which is not among the bots"),
        ("22-4401", "<bot_id>:<pipeline_id> pairs"),
        ("22:1,22:2", "names bot 22 twice"),
    ]:
        with pytest.raises(SettingsError) as caught:
            load_settings(_env_file=None, **{**VALID, **tokens, "AMOCRM_SOURCE_PIPELINES": value})
        [problem] = caught.value.problems
        assert problem.variable == "AMOCRM_SOURCE_PIPELINES"
        assert complaint in problem.message


@pytest.mark.parametrize(
    ("base_url", "language", "expected"),
    [
        ("https://acme.amocrm.ru", None, "ru"),
        ("https://acme.kommo.com", None, "en"),
        ("https://acme.amocrm.com", None, "en"),
        ("https://acme.amocrm.ru", "en", "en"),
        ("https://acme.kommo.com", " RU ", "ru"),
        # The gettext variable of the host (Ubuntu's /etc/default/locale): its first ru/en item.
        ("https://acme.kommo.com", "ru_RU:ru", "ru"),
        ("https://acme.amocrm.ru", "en_US.UTF-8:en", "en"),
        ("https://acme.amocrm.ru", "de_DE:de", "ru"),
        ("https://acme.kommo.com", "C", "en"),
    ],
)
def test_the_default_language_is_the_accounts_unless_language_is_set(
    base_url: str, language: str | None, expected: str
) -> None:
    env = {**VALID, "AMOCRM_BASE_URL": base_url}
    if language is not None:
        env["LANGUAGE"] = language
    assert load_settings(_env_file=None, **env).default_language == expected


def test_a_locale_list_in_language_is_read_with_a_warning_not_refused() -> None:
    settings = load_settings(_env_file=None, **{**VALID, "LANGUAGE": "de_DE:de"})
    [warning] = settings.warnings()
    assert "LANGUAGE is 'de_DE:de'" in warning and "account's is used" in warning
    assert load_settings(_env_file=None, **{**VALID, "LANGUAGE": "ru"}).warnings() == []


def test_a_database_path_that_is_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, **{**VALID, "DATABASE_PATH": str(tmp_path)})
    [problem] = caught.value.problems
    assert problem.variable == "DATABASE_PATH"
    assert f"is a directory; name the database file in it, e.g. {tmp_path}" in problem.message


@pytest.mark.parametrize(
    ("variable", "value"),
    [("HTTP_HOST", "a" * 70), ("HTTP_HOST", "a..b"), ("TIMEZONE", "x" * 5000)],
)
def test_hostile_settings_exit_2_with_one_line_not_a_traceback(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = run_bridge({**VALID, variable: value}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{variable}: must be" in result.stderr
