"""CRM-side storage: the OAuth token pair and the audit of operator commands."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from storage.repository import Repository, Transaction


@dataclass(frozen=True, slots=True)
class TokenPair:
    """The current OAuth2 pair; `auth_code_sha256` tells which grant it came from."""

    access_token: str
    refresh_token: str
    expires_at: float
    auth_code_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator command and what came of it."""

    at: float
    user_id: int
    chat_id: int
    message_id: int | None
    command: str
    args: str
    result: str
    bot: int = 0  # the bot the operator wrote to (0: the primary)


async def load_token_pair(repo: Repository) -> TokenPair | None:
    """The stored token pair, if the code was ever exchanged."""
    rows = await repo.reader.execute_fetchall(
        "SELECT access_token, refresh_token, expires_at, auth_code_sha256 FROM crm_tokens "
        "WHERE id = 1"
    )
    for row in rows:
        return TokenPair(str(row[0]), str(row[1]), float(row[2]), row[3])
    return None


async def save_token_pair(tx: Transaction, pair: TokenPair) -> None:
    """Replace the stored pair in one statement (the old refresh token is dead by now)."""
    await tx.execute(
        "INSERT INTO crm_tokens (id, access_token, refresh_token, expires_at, "
        "auth_code_sha256, updated_at) VALUES (1, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET access_token = excluded.access_token, "
        "refresh_token = excluded.refresh_token, expires_at = excluded.expires_at, "
        "auth_code_sha256 = excluded.auth_code_sha256, updated_at = excluded.updated_at",
        (
            pair.access_token,
            pair.refresh_token,
            pair.expires_at,
            pair.auth_code_sha256,
            time.time(),
        ),
    )


async def record_audit(tx: Transaction, entry: AuditEntry) -> None:
    """Append one operator action to the audit table."""
    await tx.execute(
        "INSERT INTO operator_audit (at, user_id, chat_id, message_id, command, args, result, "
        "bot) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.at,
            entry.user_id,
            entry.chat_id,
            entry.message_id,
            entry.command,
            entry.args,
            entry.result,
            entry.bot,
        ),
    )


async def audit_entries(repo: Repository, limit: int = 100) -> list[AuditEntry]:
    """The most recent operator actions, oldest first."""
    rows = await repo.reader.execute_fetchall(
        "SELECT at, user_id, chat_id, message_id, command, args, result, bot FROM "
        "(SELECT * FROM operator_audit ORDER BY id DESC LIMIT ?) ORDER BY id",
        (limit,),
    )
    return [AuditEntry(*row) for row in rows]


def token_pair_stored(path: Path) -> bool:
    """Whether the database at `path` holds an OAuth token pair (read-only; settings check).

    A missing file, or one without the table yet, holds none; so does one that cannot be read
    (opening it at start then says what is wrong with it).
    """
    if not path.is_file():
        return False
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            return db.execute("SELECT 1 FROM crm_tokens WHERE id = 1").fetchone() is not None
    except sqlite3.Error:
        return False
