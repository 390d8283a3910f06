"""The last accepted BTHome encryption counter per device, kept durably.

Replay protection is only as good as this memory: if the hub forgot the counters on a
restart, a recorded "door opened" or alarm advert could be played back and accepted again.
SQLite in WAL mode with synchronous=FULL (as the outbox) so a flushed counter survives
kill -9 and power loss. Accepting updates memory; `flush()` writes every changed counter in
one transaction, so a burst of adverts costs one fsync. The hub flushes before it acts on
an accepted advert, and on shutdown.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters(
  device TEXT PRIMARY KEY,
  counter INTEGER NOT NULL
);
"""


class CounterStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._last: dict[str, int] = dict(
            self._db.execute("SELECT device, counter FROM counters").fetchall()
        )
        self._dirty: set[str] = set()

    def last(self, device: str) -> int | None:
        return self._last.get(device)

    def accept(self, device: str, counter: int) -> None:
        self._last[device] = counter
        self._dirty.add(device)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def flush(self) -> bool:
        """Write every changed counter; True once they are on disk. A failing disk is logged
        and the counters stay pending for the next flush: it must not stop the alarm that
        came with the advert (replay protection across a restart is what is at risk)."""
        if not self._dirty:
            return True
        rows = [(d, self._last[d]) for d in self._dirty]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO counters(device, counter) VALUES (?, ?)"
                    " ON CONFLICT(device) DO UPDATE SET counter = excluded.counter",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            log.error("%s: counters not saved (%s); replayed adverts may be accepted after a"
                      " restart until this is fixed", self.path, e)
            return False
        self._dirty.clear()
        return True

    def reset(self, device: str) -> None:
        """Forget a device's counter (after re-provisioning it with a new key)."""
        self._last.pop(device, None)
        self._dirty.discard(device)
        self._db.execute("DELETE FROM counters WHERE device = ?", (device,))

    def close(self) -> None:
        self.flush()
        try:
            self._db.close()
        except sqlite3.Error:
            pass
