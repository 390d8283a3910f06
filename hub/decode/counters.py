"""The last accepted BTHome encryption counter per device, kept durably.

Replay protection is only as good as this memory: if the hub forgot the counters on a
restart, a recorded "door opened" or alarm advert could be played back and accepted again.
The counters live in the hub's one database (hub/store.py). Accepting updates memory; the
hub takes the changed counters (`take()`) into the same transaction as the messages and
rule state that the accepted advert leads to (hub/delivery/outbox.py `Outbox.commit`), so a counter
is never on disk ahead of its alarm: killed before that commit, the restarted hub accepts
the device's repeat of the frame and raises the alarm then. Standalone (tools, tests)
`flush()` writes them in a transaction of their own.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from hub import store
from hub.store import Database, open_db

log = logging.getLogger(__name__)


class CounterStore:
    def __init__(self, path: str | Path | Database) -> None:
        self._owns = not isinstance(path, Database)
        self.db = open_db(path)
        self.path = self.db.path
        self._db = self.db.conn
        with self.db.lock:
            self._last: dict[str, int] = dict(
                self.db.conn.execute("SELECT device, counter FROM counters").fetchall()
            )
        self._dirty: dict[str, int | None] = {}  # device -> counter to write (None: forget)

    def last(self, device: str) -> int | None:
        return self._last.get(device)

    def accept(self, device: str, counter: int) -> None:
        self._last[device] = counter
        self._dirty[device] = counter

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def take(self) -> dict[str, int | None]:
        """The changes since the last take, for the caller's transaction."""
        changes, self._dirty = self._dirty, {}
        return changes

    def flush(self) -> bool:
        """Write every change in a transaction of its own; True once on disk. A failing
        disk is logged and the changes stay pending."""
        changes = self.take()
        if not changes:
            return True
        try:
            with self.db.transaction() as db:
                store.write_counters(db, changes)
        except sqlite3.Error as e:
            log.error("%s: counters not saved (%s); replayed adverts may be accepted after a"
                      " restart until this is fixed", self.path, e)
            self._dirty = {**changes, **self._dirty}
            return False
        return True

    def reset(self, device: str) -> None:
        """Forget a device's counter (after re-provisioning it with a new key). Queued like
        an accepted counter, so it lands after the decisions already waiting for the disk."""
        self._last.pop(device, None)
        self._dirty[device] = None
        if self._owns:
            self.flush()

    def close(self) -> None:
        if self._owns:
            self.flush()
            self.db.close()
