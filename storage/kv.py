"""Small named values (the scope, the primary bot, watermarks)."""

from __future__ import annotations

from storage.core import RepositoryCore, TransactionCore


class KvWrites(TransactionCore):
    """Writes of kv (a part of Transaction)."""

    async def get_kv(self, key: str) -> str | None:
        """A small named value, as this transaction sees it."""
        async with self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def set_kv(self, key: str, value: str) -> None:
        """Store a small named value."""
        await self._conn.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def delete_kv(self, key: str) -> None:
        """Forget one key."""
        await self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))


class KvReads(RepositoryCore):
    """Reads of kv (a part of Repository)."""

    async def get_kv(self, key: str) -> str | None:
        """Read a small named value."""
        rows = await self._all("SELECT value FROM kv WHERE key = ?", (key,))
        for row in rows:
            return str(row[0])
        return None

    async def set_kv(self, key: str, value: str) -> None:
        """Store a small named value."""
        async with self.transaction() as tx:
            await tx.set_kv(key, value)
