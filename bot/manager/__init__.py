"""amoCRM → Telegram: map a hook, deliver it, report its status, typing, recover missed hooks."""
