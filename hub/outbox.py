"""Durable outbox: every outgoing message is committed here (fsync'd) before anything else.

SQLite in WAL mode with synchronous=FULL: a committed row survives kill -9 and power loss
(NORMAL could roll back the last commits on power loss). Appends are batched into one
transaction (group commit), so a burst costs one fsync, not one per message.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hub.rules import Outgoing

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  msg_id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  priority INTEGER NOT NULL,
  created REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox(priority, seq);
"""


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    msg_id: str
    kind: str
    topic: str
    payload: bytes
    priority: int


class Outbox:
    """Synchronous store; safe to call from several threads (one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # synchronous is per connection and not stored in the file: set it on every open.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def append_many(self, items: list[tuple[str, Outgoing]], now: float) -> None:
        """Commit all items in one transaction. Returns only once they are on disk."""
        rows = [
            (o.msg_id, o.kind, topic, json.dumps(o.payload, separators=(",", ":")).encode(),
             o.priority, now)
            for topic, o in items
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO outbox(msg_id, kind, topic, payload, priority, created)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def next_batch(self, limit: int, exclude: set[int]) -> list[Row]:
        """The most urgent undelivered rows, in delivery order (priority, then arrival)."""
        if limit <= 0:
            return []
        with self._lock:
            cur = self._db.execute(
                "SELECT seq, msg_id, kind, topic, payload, priority FROM outbox"
                " ORDER BY priority, seq LIMIT ?",
                (limit + len(exclude),),
            )
            rows = [Row(*r) for r in cur.fetchall()]
        return [r for r in rows if r.seq not in exclude][:limit]

    def delete(self, seqs: list[int]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def depth(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class GroupCommitter:
    """Collects appends from the event loop and commits them together in a worker thread.

    `await append(...)` returns once the message is durable, so callers can acknowledge."""

    def __init__(self, outbox: Outbox, now: Callable[[], float]) -> None:
        self.outbox = outbox
        self.now = now
        self._pending: list[tuple[tuple[str, Outgoing], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self.committed = asyncio.Event()  # set after each commit (the publisher waits on it)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def append(self, topic: str, out: Outgoing) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((topic, out), fut))
        self._wake.set()
        await fut

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                await asyncio.to_thread(self.outbox.append_many, [b[0] for b in batch], self.now())
            except Exception as e:  # disk full, I/O error: the callers must know
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
            self.committed.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

