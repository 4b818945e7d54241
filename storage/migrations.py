"""Versioned schema migrations, applied in order at start (idempotent)."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE kv (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );

        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            kind TEXT NOT NULL,
            lane TEXT NOT NULL,
            dedup_key TEXT NOT NULL UNIQUE,
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_error TEXT
        );
        CREATE INDEX jobs_pending_lane ON jobs (queue, lane, id) WHERE state = 'pending';
        CREATE INDEX jobs_pending_due ON jobs (queue, next_attempt_at) WHERE state = 'pending';
        CREATE INDEX jobs_dead ON jobs (updated_at) WHERE state = 'dead';

        CREATE TABLE customers (
            chat_id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            username TEXT,
            language_code TEXT,
            phone TEXT,
            phone_last10 TEXT,
            last_message_at REAL,
            blocked INTEGER NOT NULL DEFAULT 0,
            amo_conversation_id TEXT,
            amo_user_id TEXT,
            updated_at REAL NOT NULL
        );
        CREATE INDEX customers_phone_last10 ON customers (phone_last10);

        CREATE TABLE message_links (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id INTEGER NOT NULL,
            tg_message_id INTEGER NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            our_msgid TEXT,
            amo_message_id TEXT,
            content_hash TEXT,
            created_at REAL NOT NULL,
            UNIQUE (chat_id, tg_message_id)
        );
        CREATE INDEX message_links_amo ON message_links (amo_message_id);
        CREATE INDEX message_links_our ON message_links (our_msgid);
        """,
    ),
    (
        3,
        """
        CREATE TABLE crm_tokens (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            access_token TEXT NOT NULL,
            refresh_token TEXT NOT NULL,
            expires_at REAL NOT NULL,
            auth_code_sha256 TEXT,
            updated_at REAL NOT NULL
        );

        CREATE TABLE operator_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            user_id INTEGER NOT NULL,
            chat_id INTEGER NOT NULL,
            message_id INTEGER,
            command TEXT NOT NULL,
            args TEXT NOT NULL DEFAULT '',
            result TEXT NOT NULL
        );
        CREATE INDEX operator_audit_at ON operator_audit (at);
        """,
    ),
    (
        5,
        """
        ALTER TABLE jobs ADD COLUMN redriven_at REAL;
        """,
    ),
    (
        7,
        """
        DROP INDEX customers_phone_last10;
        ALTER TABLE customers DROP COLUMN phone_last10;
        CREATE INDEX customers_phone ON customers (phone);
        """,
    ),
    (
        8,
        """
        CREATE TABLE gaps (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at REAL NOT NULL,
            ended_at REAL NOT NULL,
            reason TEXT NOT NULL,
            created_at REAL NOT NULL,
            conversations INTEGER,
            scanned INTEGER NOT NULL DEFAULT 0,
            recovered INTEGER NOT NULL DEFAULT 0,
            finished_at REAL
        );
        ALTER TABLE customers ADD COLUMN amo_chat_id TEXT;
        CREATE INDEX customers_last_message ON customers (last_message_at);
        """,
    ),
]
