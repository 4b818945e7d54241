"""amoCRM: the signed amojo client, the CRM REST client, the channel connect, the hook listener."""
