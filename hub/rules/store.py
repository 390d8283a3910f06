"""The rule engine's state on disk, so a restart in the middle of "not back in bed within
30 minutes" resumes the same deadline.

In the hub it is a row in the one database (hub/store.py): `take()` gives the snapshot after
a decision and the hub commits it in the same transaction as the messages that decision
produced (hub/delivery/outbox.py `Outbox.commit`), so the state on disk never shows an alarm raised
that the outbox does not hold. A state file from an older hub (`rules_state.json` beside the
database) is taken over once. Standalone (a path to a JSON file; tests, benchmarks) it is
one file, replaced atomically and fsync'd. Unreadable state is set aside for inspection and
the engine starts empty (logged): better to lose a timer than to stop the hub from starting.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from hub import store as db_store
from hub.store import Database

if TYPE_CHECKING:
    from hub.rules.engine import RuleEngine

log = logging.getLogger(__name__)


LEGACY_FILE = "rules_state.json"


class RuleStateStore:
    def __init__(self, target: Path | Database) -> None:
        self.db = target if isinstance(target, Database) else None
        self.path = (target.path.with_name(LEGACY_FILE) if isinstance(target, Database)
                     else target)
        self.saves = 0
        self._seq = 0
        self._written = 0

    def load_into(self, engine: RuleEngine) -> bool:
        if self.db is None:
            return self._load_file(engine)
        with self.db.lock:
            row = self.db.conn.execute("SELECT snapshot FROM rule_state WHERE id = 1").fetchone()
        if row is None:
            # An older hub kept the state in a file: take it over (it is committed with the
            # next decision), then move the file out of the way.
            if not self._load_file(engine):
                return False
            engine.changed = True
            try:
                os.replace(self.path, self.path.with_suffix(".imported"))
            except OSError:
                pass
            return True
        try:
            engine.restore(json.loads(bytes(row[0])))
        except (ValueError, TypeError, AttributeError) as e:
            aside = self.path.with_suffix(".corrupt")
            log.error("rule state in %s unreadable (%s): kept as %s, starting fresh",
                      self.db.path, e, aside)
            try:
                fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with open(fd, "wb") as f:
                    f.write(bytes(row[0]))
            except OSError:
                pass
            return False
        engine.changed = False
        return True

    def _load_file(self, engine: RuleEngine) -> bool:
        try:
            snap = json.loads(self.path.read_text())
            engine.restore(snap)
        except FileNotFoundError:
            return False
        except (OSError, ValueError, TypeError, AttributeError) as e:
            aside = self.path.with_suffix(".corrupt")
            log.error("rule state %s unreadable (%s): kept as %s, starting fresh",
                      self.path, e, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return False
        engine.changed = False
        return True

    def take(self, engine: RuleEngine) -> tuple[int, bytes] | None:
        """A numbered snapshot if the state changed: the hub commits `snap[1]` with the
        decision's messages; standalone, `write` it once they are durable."""
        if not engine.changed:
            return None
        engine.changed = False
        self._seq += 1
        return self._seq, json.dumps(engine.snapshot(), separators=(",", ":"),
                                     sort_keys=True).encode()

    def write(self, snap: tuple[int, bytes] | None) -> None:
        """Write a snapshot unless a newer one is already on disk. Never raises: the alarms
        are in the outbox; a lost state write at worst repeats a timer after a restart."""
        if snap is None or snap[0] <= self._written:
            return
        try:
            if self.db is not None:
                with self.db.transaction() as db:
                    db_store.write_rule_state(db, snap[1])
            else:
                self._write(snap[1])
        except (OSError, sqlite3.Error) as e:
            log.error("cannot save rule state to %s: %s", self.path, e)
            return
        self._written = snap[0]
        self.saves += 1

    def save(self, engine: RuleEngine) -> None:
        engine.changed = True
        self.write(self.take(engine))

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db_store.write_file_durably(self.path, data)
