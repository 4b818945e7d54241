"""What every part of the bridge uses: settings, ids, limits, texts, health, metrics, the bots."""
