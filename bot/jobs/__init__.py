"""The durable job engine under both directions: per-lane queues, retries, dead letters, pacing."""
