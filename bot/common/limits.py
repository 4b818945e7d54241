"""Limits of Telegram and amoCRM, in one place."""

TELEGRAM_TEXT_LIMIT = 4096
TELEGRAM_CAPTION_LIMIT = 1024
# A send Telegram answers 401 (the bot's token revoked) is retried this much later, until its
# kind gives up: a restart with the new token (same bot, same chats) still delivers it.
TELEGRAM_UNAUTHORIZED_RETRY_SECONDS = 60.0
TELEGRAM_ALBUM_MAX = 10  # items of one sendMediaGroup
# A manager's album comes as one hook per file (spec §3.2): its first part waits until no
# further part has arrived for this long, and never longer than the maximum.
ALBUM_QUIET_SECONDS = 1.5
ALBUM_MAX_WAIT_SECONDS = 5.0
TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
TELEGRAM_UPLOAD_LIMIT = 50 * 1024 * 1024
TELEGRAM_GLOBAL_RATE = 30
TELEGRAM_PER_CHAT_INTERVAL = 1.0
TELEGRAM_PER_CHAT_BURST = 3
TELEGRAM_SEND_RATE = 27  # ~10 % under the global limit: network jitter bunches requests
TELEGRAM_PHOTO_UPLOAD_LIMIT = 10 * 1024 * 1024
TELEGRAM_CHAT_ACTION_SECONDS = 5.0
TELEGRAM_TYPING_REPEAT_SECONDS = 4.5
TELEGRAM_TYPING_MAX_SECONDS = 15.0

AMOCRM_RATE_PER_SECOND = 7
# Paced below the documented 7 rps: the limit is per IP and arrival jitter must not tip it.
AMOCRM_PACED_RATE_PER_SECOND = 6
AMOCRM_TOKEN_REFRESH_MARGIN_SECONDS = 10 * 60
AMOCRM_RATE_LIMIT_MAX_WAIT_SECONDS = 30.0
AMOCRM_RATE_LIMIT_RETRIES = 3
AMOJO_HOOK_DEADLINE_SECONDS = 5.0
HOOK_BODY_TIMEOUT_SECONDS = 10.0  # a hook's body, once its head arrived
AMOJO_SIGNATURE_TTL_SECONDS = 15 * 60
# Our clock is followed to amojo's once they differ by more than this (Date has 1 s steps).
AMOJO_CLOCK_SKEW_TOLERANCE_SECONDS = 30.0
AMOJO_CLOCK_SKEW_UNDO_SECONDS = 10.0  # ...and no longer once they agree within this
AMOJO_CLOCK_OFFSET_MAX_SECONDS = 24 * 60 * 60  # a Date further off is never followed
# /healthz calls signature refusals a problem while the last one is this recent.
AMOJO_REFUSAL_HEALTH_SECONDS = 5 * 60
# A job refused for its signature (clock or secret) keeps retrying this long, then dead-letters.
AMOJO_REFUSAL_GIVE_UP_SECONDS = 6 * 60 * 60
AMOJO_REQUEST_TIMEOUT_SECONDS = 5.0
AMOJO_MEDIA_TIMEOUT_SECONDS = 60.0  # connect, and between two chunks
MEDIA_DOWNLOAD_DEADLINE_SECONDS = 300.0  # one whole manager media download
MEDIA_CONCURRENCY = 4  # manager media downloads/uploads at once
MEDIA_CHUNK_BYTES = 256 * 1024
AMOJO_DELIVERY_ERROR_MAX_CHARS = 500
AMOJO_HISTORY_PAGE_LIMIT = 50  # spec §5.3: at most 50 a page
# Recovery reads history at most this fast, beside the live traffic (amojo's limit is undocumented).
AMOJO_HISTORY_RATE_PER_SECOND = 10
RECOVERY_MAX_PAGES = 200  # 10,000 messages of one chat inside one gap at most

DELIVERY_GIVE_UP_SECONDS = 60 * 60
# A live manager message waits at most this long while older ones of its chat are recovered.
RECONCILE_HOLD_SECONDS = 120.0
PRUNE_INTERVAL_SECONDS = 10 * 60
# A pruned job's dedup key outlives it by this much: longer than Telegram keeps an update and
# than any gap recovery looks back (RECOVERY_LOOKBACK_DAYS at most 365 is read per gap window).
DEDUP_KEY_EXTRA_DAYS = 30
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 300.0

FILE_LINK_TTL_SECONDS = 7 * 24 * 60 * 60

# Telegram Business: a bot may answer on an account's behalf only this long after the
# customer's last message (Bot API: "active in the last 24 hours").
BUSINESS_REPLY_WINDOW_SECONDS = 24 * 3600
