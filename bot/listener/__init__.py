"""The HTTP listener: amojo's hooks, customer file links, health, metrics, its guard."""
