import asyncio

from bot.app import main

if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
