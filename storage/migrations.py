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
    (
        9,
        """
        CREATE TABLE job_keys (
            dedup_key TEXT PRIMARY KEY,
            finished_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX job_keys_finished ON job_keys (finished_at);
        CREATE TABLE queue_counts (
            queue TEXT NOT NULL,
            state TEXT NOT NULL,
            jobs INTEGER NOT NULL,
            PRIMARY KEY (queue, state)
        ) WITHOUT ROWID;
        INSERT INTO queue_counts (queue, state, jobs)
            SELECT queue, state, count(*) FROM jobs WHERE state IN ('pending', 'dead')
            GROUP BY queue, state;
        CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
        WHEN NEW.state IN ('pending', 'dead') BEGIN
            INSERT INTO queue_counts (queue, state, jobs) VALUES (NEW.queue, NEW.state, 1)
                ON CONFLICT (queue, state) DO UPDATE SET jobs = jobs + 1;
        END;
        CREATE TRIGGER jobs_counted_update AFTER UPDATE OF state ON jobs
        WHEN OLD.state IS NOT NEW.state BEGIN
            UPDATE queue_counts SET jobs = jobs - 1 WHERE queue = OLD.queue AND state = OLD.state;
            INSERT INTO queue_counts (queue, state, jobs)
                SELECT NEW.queue, NEW.state, 1 WHERE NEW.state IN ('pending', 'dead')
                ON CONFLICT (queue, state) DO UPDATE SET jobs = jobs + 1;
        END;
        CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
        WHEN OLD.state IN ('pending', 'dead') BEGIN
            UPDATE queue_counts SET jobs = jobs - 1 WHERE queue = OLD.queue AND state = OLD.state;
        END;
        CREATE INDEX jobs_pending_oldest ON jobs (queue, id) WHERE state = 'pending';
        """,
    ),
    (
        10,
        # The head (oldest pending job) of every lane, kept by triggers: a worker wake reads
        # the due heads only, not every pending job of a backlog.
        """
        CREATE TABLE lane_heads (
            queue TEXT NOT NULL,
            lane TEXT NOT NULL,
            job_id INTEGER NOT NULL,
            next_attempt_at REAL NOT NULL,
            PRIMARY KEY (queue, lane)
        ) WITHOUT ROWID;
        CREATE INDEX lane_heads_due ON lane_heads (queue, next_attempt_at);
        CREATE INDEX lane_heads_order ON lane_heads (queue, job_id);
        CREATE TABLE media_files (
            key TEXT PRIMARY KEY,
            file_id TEXT NOT NULL,
            stored_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX media_files_stored ON media_files (stored_at);
        INSERT INTO lane_heads (queue, lane, job_id, next_attempt_at)
            SELECT j.queue, j.lane, j.id, j.next_attempt_at FROM jobs AS j
            WHERE j.state = 'pending' AND j.id = (
                SELECT min(p.id) FROM jobs AS p
                WHERE p.queue = j.queue AND p.lane = j.lane AND p.state = 'pending'
            );
        CREATE TRIGGER lane_head_insert AFTER INSERT ON jobs WHEN NEW.state = 'pending' BEGIN
            INSERT OR IGNORE INTO lane_heads (queue, lane, job_id, next_attempt_at)
                VALUES (NEW.queue, NEW.lane, NEW.id, NEW.next_attempt_at);
        END;
        CREATE TRIGGER lane_head_update AFTER UPDATE OF state, next_attempt_at ON jobs
        WHEN OLD.state = 'pending' OR NEW.state = 'pending' BEGIN
            DELETE FROM lane_heads WHERE queue = NEW.queue AND lane = NEW.lane;
            INSERT INTO lane_heads (queue, lane, job_id, next_attempt_at)
                SELECT queue, lane, id, next_attempt_at FROM jobs INDEXED BY jobs_pending_lane
                WHERE queue = NEW.queue AND lane = NEW.lane AND state = 'pending'
                ORDER BY id LIMIT 1;
        END;
        CREATE TRIGGER lane_head_delete AFTER DELETE ON jobs WHEN OLD.state = 'pending' BEGIN
            DELETE FROM lane_heads WHERE queue = OLD.queue AND lane = OLD.lane;
            INSERT INTO lane_heads (queue, lane, job_id, next_attempt_at)
                SELECT queue, lane, id, next_attempt_at FROM jobs INDEXED BY jobs_pending_lane
                WHERE queue = OLD.queue AND lane = OLD.lane AND state = 'pending'
                ORDER BY id LIMIT 1;
        END;
        """,
    ),
    (
        11,
        # Several bots (bot 0 is the primary one, whose chats keep their pre-multi-bot ids):
        # a chat id alone no longer names a conversation, so customers and message links are
        # keyed by (bot, chat). Rebuilt, as SQLite cannot change a primary key in place.
        """
        CREATE TABLE customers_by_bot (
            bot INTEGER NOT NULL DEFAULT 0,
            chat_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            username TEXT,
            language_code TEXT,
            phone TEXT,
            last_message_at REAL,
            blocked INTEGER NOT NULL DEFAULT 0,
            amo_conversation_id TEXT,
            amo_user_id TEXT,
            updated_at REAL NOT NULL,
            amo_chat_id TEXT,
            PRIMARY KEY (bot, chat_id)
        );
        INSERT INTO customers_by_bot (bot, chat_id, user_id, name, username, language_code,
            phone, last_message_at, blocked, amo_conversation_id, amo_user_id, updated_at,
            amo_chat_id)
            SELECT 0, chat_id, user_id, name, username, language_code, phone, last_message_at,
                blocked, amo_conversation_id, amo_user_id, updated_at, amo_chat_id
            FROM customers;
        DROP TABLE customers;
        ALTER TABLE customers_by_bot RENAME TO customers;
        CREATE INDEX customers_phone ON customers (phone);
        CREATE INDEX customers_last_message ON customers (last_message_at);
        CREATE INDEX customers_amo_conversation ON customers (amo_conversation_id);

        CREATE TABLE message_links_by_bot (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            bot INTEGER NOT NULL DEFAULT 0,
            chat_id INTEGER NOT NULL,
            tg_message_id INTEGER NOT NULL,
            direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
            our_msgid TEXT,
            amo_message_id TEXT,
            content_hash TEXT,
            created_at REAL NOT NULL,
            UNIQUE (bot, chat_id, tg_message_id)
        );
        INSERT INTO message_links_by_bot (id, bot, chat_id, tg_message_id, direction, our_msgid,
            amo_message_id, content_hash, created_at)
            SELECT id, 0, chat_id, tg_message_id, direction, our_msgid, amo_message_id,
                content_hash, created_at
            FROM message_links;
        DROP TABLE message_links;
        ALTER TABLE message_links_by_bot RENAME TO message_links;
        CREATE INDEX message_links_amo ON message_links (amo_message_id);
        CREATE INDEX message_links_our ON message_links (our_msgid);

        ALTER TABLE operator_audit ADD COLUMN bot INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        12,
        """
        -- Telegram Business: a staff member's own account connected to one of the bots. Its
        -- chats are customers of the bot key -owner_id (bot/ids.py).
        CREATE TABLE business_connections (
            id TEXT PRIMARY KEY,
            bot INTEGER NOT NULL,
            owner_id INTEGER NOT NULL,
            owner_name TEXT NOT NULL,
            user_chat_id INTEGER NOT NULL,
            can_reply INTEGER NOT NULL,
            can_read INTEGER NOT NULL,
            enabled INTEGER NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX business_connections_owner ON business_connections (owner_id, updated_at);
        """,
    ),
    (
        13,
        # Reconciliation. A recovered manager message takes its place in its chat's lane by
        # the time it was sent (`pos` between two jobs' positions; NULL: the job's own id), so
        # it goes out before newer messages still waiting there. Every amo chat id ever seen
        # for a conversation is kept (a write-first chat is a second one of the customer).
        """
        ALTER TABLE jobs ADD COLUMN pos REAL;
        CREATE INDEX jobs_pending_lane_pos ON jobs (queue, lane, coalesce(pos, id))
            WHERE state = 'pending';
        DROP TRIGGER lane_head_insert;
        CREATE TRIGGER lane_head_insert AFTER INSERT ON jobs
        WHEN NEW.state = 'pending' AND NEW.pos IS NULL BEGIN
            INSERT OR IGNORE INTO lane_heads (queue, lane, job_id, next_attempt_at)
                VALUES (NEW.queue, NEW.lane, NEW.id, NEW.next_attempt_at);
        END;
        CREATE TRIGGER lane_head_insert_placed AFTER INSERT ON jobs
        WHEN NEW.state = 'pending' AND NEW.pos IS NOT NULL BEGIN
            DELETE FROM lane_heads WHERE queue = NEW.queue AND lane = NEW.lane;
            INSERT INTO lane_heads (queue, lane, job_id, next_attempt_at)
                SELECT queue, lane, id, next_attempt_at FROM jobs INDEXED BY jobs_pending_lane_pos
                WHERE queue = NEW.queue AND lane = NEW.lane AND state = 'pending'
                ORDER BY coalesce(pos, id) LIMIT 1;
        END;
        DROP TRIGGER lane_head_update;
        CREATE TRIGGER lane_head_update AFTER UPDATE OF state, next_attempt_at ON jobs
        WHEN OLD.state = 'pending' OR NEW.state = 'pending' BEGIN
            DELETE FROM lane_heads WHERE queue = NEW.queue AND lane = NEW.lane;
            INSERT INTO lane_heads (queue, lane, job_id, next_attempt_at)
                SELECT queue, lane, id, next_attempt_at FROM jobs INDEXED BY jobs_pending_lane_pos
                WHERE queue = NEW.queue AND lane = NEW.lane AND state = 'pending'
                ORDER BY coalesce(pos, id) LIMIT 1;
        END;
        DROP TRIGGER lane_head_delete;
        CREATE TRIGGER lane_head_delete AFTER DELETE ON jobs WHEN OLD.state = 'pending' BEGIN
            DELETE FROM lane_heads WHERE queue = OLD.queue AND lane = OLD.lane;
            INSERT INTO lane_heads (queue, lane, job_id, next_attempt_at)
                SELECT queue, lane, id, next_attempt_at FROM jobs INDEXED BY jobs_pending_lane_pos
                WHERE queue = OLD.queue AND lane = OLD.lane AND state = 'pending'
                ORDER BY coalesce(pos, id) LIMIT 1;
        END;

        CREATE TABLE amo_chats (
            amo_chat_id TEXT PRIMARY KEY,
            bot INTEGER NOT NULL,
            chat_id INTEGER NOT NULL,
            learned_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX amo_chats_conversation ON amo_chats (bot, chat_id);
        INSERT OR IGNORE INTO amo_chats (amo_chat_id, bot, chat_id, learned_at)
            SELECT amo_chat_id, bot, chat_id, updated_at FROM customers
            WHERE amo_chat_id IS NOT NULL;
        INSERT OR IGNORE INTO amo_chats (amo_chat_id, bot, chat_id, learned_at)
            SELECT amo_conversation_id, bot, chat_id, updated_at FROM customers
            WHERE amo_conversation_id IS NOT NULL;
        """,
    ),
    (
        14,
        # Where a lead came from: every deep-link payload (`/start <payload>`) a conversation
        # received; `first` marks the one whose values go on the lead (never replaced).
        """
        CREATE TABLE touches (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            bot INTEGER NOT NULL,
            chat_id INTEGER NOT NULL,
            tg_message_id INTEGER NOT NULL,
            raw TEXT NOT NULL,
            values_json TEXT NOT NULL,
            first INTEGER NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (bot, chat_id, tg_message_id)
        );
        """,
    ),
    (
        15,
        # Conversations beyond private chats: a topic (a forum's, a private chat's, a channel's
        # direct-messages topic) is its own conversation, so customers are keyed by (bot, chat,
        # thread) — rebuilt, as SQLite cannot change a primary key in place; thread 0 is the
        # whole chat, as every existing row. Message ids are unique per chat, so links keep
        # their key and only learn the thread. Groups the bridge serves: who added the bot,
        # and the chat's id now (a group upgraded to a supergroup keeps its conversation).
        """
        CREATE TABLE customers_by_thread (
            bot INTEGER NOT NULL DEFAULT 0,
            chat_id INTEGER NOT NULL,
            thread INTEGER NOT NULL DEFAULT 0,
            user_id INTEGER NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            username TEXT,
            language_code TEXT,
            phone TEXT,
            last_message_at REAL,
            blocked INTEGER NOT NULL DEFAULT 0,
            amo_conversation_id TEXT,
            amo_user_id TEXT,
            updated_at REAL NOT NULL,
            amo_chat_id TEXT,
            PRIMARY KEY (bot, chat_id, thread)
        );
        INSERT INTO customers_by_thread (bot, chat_id, thread, user_id, name, username,
            language_code, phone, last_message_at, blocked, amo_conversation_id, amo_user_id,
            updated_at, amo_chat_id)
            SELECT bot, chat_id, 0, user_id, name, username, language_code, phone,
                last_message_at, blocked, amo_conversation_id, amo_user_id, updated_at,
                amo_chat_id
            FROM customers;
        DROP TABLE customers;
        ALTER TABLE customers_by_thread RENAME TO customers;
        CREATE INDEX customers_phone ON customers (phone);
        CREATE INDEX customers_last_message ON customers (last_message_at);
        CREATE INDEX customers_amo_conversation ON customers (amo_conversation_id);

        ALTER TABLE message_links ADD COLUMN thread INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE amo_chats ADD COLUMN thread INTEGER NOT NULL DEFAULT 0;

        CREATE TABLE group_chats (
            bot INTEGER NOT NULL,
            tg_chat_id INTEGER NOT NULL,
            chat_id INTEGER NOT NULL,
            title TEXT NOT NULL,
            kind TEXT NOT NULL,
            added_by INTEGER,
            state TEXT NOT NULL CHECK (state IN ('active', 'removed', 'migrated')),
            reason TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (bot, tg_chat_id)
        );
        CREATE INDEX group_chats_conversation ON group_chats (bot, chat_id);

        -- The leads the bridge attributed: each gets UTM values and a campaign's pipeline at
        -- most once, whichever conversation leads to it (a database from a build whose
        -- migration 14 made it already keeps it).
        CREATE INDEX IF NOT EXISTS touches_conversation ON touches (bot, chat_id);
        CREATE TABLE IF NOT EXISTS attributed_leads (
            lead_id INTEGER PRIMARY KEY,
            touch_id INTEGER NOT NULL,
            moved_to INTEGER,
            created_at REAL NOT NULL
        );
        """,
    ),
]
