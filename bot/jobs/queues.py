"""Names of the durable job queues, shared by everything that enqueues or runs jobs."""

AMOJO_QUEUE = "amojo"
TELEGRAM_QUEUE = "telegram"
RECOVERY_QUEUE = "recovery"
STAFF_QUEUE = "staff"  # staff commands that call amoCRM: never run inside Telegram polling
