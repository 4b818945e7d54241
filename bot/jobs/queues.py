"""Names of the durable job queues, shared by everything that enqueues or runs jobs."""

AMOJO_QUEUE = "amojo"
TELEGRAM_QUEUE = "telegram"
RECOVERY_QUEUE = "recovery"
STAFF_QUEUE = "staff"  # staff commands that call amoCRM: never run inside Telegram polling

# A job kind both directions name: a Business owner's own message on its way to amoCRM
# (queue "amojo"); a manager's message to that chat waits for it (its echo is told by it).
KIND_OWNER_MESSAGE = "business.owner_message"
