"""Telegram → amoCRM: map a customer message, record it durably, send it to amojo, link media."""
