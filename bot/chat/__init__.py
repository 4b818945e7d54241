"""What both directions of a chat share: the bot's own notices, reactions both ways."""
