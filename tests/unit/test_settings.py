"""`python -m bot` refuses a bad environment with one readable message and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
        "AMOCRM_BASE_URL": "https://example.amocrm.ru",
        "AMOJO_CHANNEL_ID": "344a5002-f8ca-454d-af3d-396180102ac7",
        "AMOJO_CHANNEL_SECRET": "secret",
        "PUBLIC_BASE_URL": "https://bridge.example.com",
    }
    result = run_bridge(env, tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "AMOCRM_ACCESS_TOKEN" in result.stderr
    assert "AMOCRM_CLIENT_ID" in result.stderr
    assert "123456:ABC" not in result.stderr
