"""Telegram ⇄ amoCRM chat bridge."""
