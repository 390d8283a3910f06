"""The rule engine's state on disk, so a restart in the middle of "not back in bed within
30 minutes" resumes the same deadline.

In the hub it is one row per rule, alarm and device in the one database (hub/store.py
rule_items): `changes()` gives the parts a decision changed and the hub commits them in the
same transaction as the messages that decision produced (hub/delivery/outbox.py
`Outbox.commit`), so the state on disk never shows an alarm raised that the outbox does not
hold, and a decision's cost follows what it changed, not how many alarms are held. The one-row
snapshot of older hubs, or their state file (`rules_state.json` beside the database), is
taken over once. Standalone (a path to a JSON file; tests, benchmarks) it is
one file, replaced atomically and fsync'd. Unreadable state is set aside for inspection and
the engine starts empty (logged): better to lose a timer than to stop the hub from starting.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub import store as db_store
from hub.store import Database

if TYPE_CHECKING:
    from hub.rules.engine import RuleEngine

log = logging.getLogger(__name__)


LEGACY_FILE = "rules_state.json"
# Part keys in the database (hub/store.py rule_items).
HEADER = "header"
RULE = "rule/"
ALARM = "alarm/"
DEVICE = "device/"


# One encoder for every part: json.dumps with arguments builds a new one per call, a third
# of the cost of a decision's parts (`make bench`, rules).
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def _dump(v: Any) -> bytes:
    return _ENCODER.encode(v).encode()


def split(snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot (RuleEngine.snapshot) as its parts: one per rule, alarm and device."""
    parts: dict[str, Any] = {HEADER: {"version": snap.get("version"), "site": snap.get("site")}}
    for k, v in snap.get("rules", {}).items():
        parts[RULE + k] = v
    for k, v in snap.get("active", {}).items():
        parts[ALARM + k] = v
    values, seen = snap.get("last_values", {}), snap.get("seen", {})
    for dev in set(values) | set(seen):
        parts[DEVICE + dev] = {"values": values.get(dev), "seen": seen.get(dev)}
    return parts


def join(parts: dict[str, Any]) -> dict[str, Any]:
    """The snapshot the parts were split from. Raises ValueError for a part it cannot use."""
    head = parts.get(HEADER)
    if not isinstance(head, dict):
        raise ValueError("no header part")
    snap: dict[str, Any] = {**head, "rules": {}, "active": {}, "last_values": {}, "seen": {}}
    for key, v in parts.items():
        if key.startswith(RULE):
            snap["rules"][key[len(RULE):]] = v
        elif key.startswith(ALARM):
            snap["active"][key[len(ALARM):]] = v
        elif key.startswith(DEVICE):
            if not isinstance(v, dict):
                raise ValueError(f"part {key!r} is not an object")
            if v.get("values") is not None:
                snap["last_values"][key[len(DEVICE):]] = v["values"]
            if v.get("seen") is not None:
                snap["seen"][key[len(DEVICE):]] = v["seen"]
        elif key != HEADER:
            raise ValueError(f"unknown part {key!r}")
    return snap


def read_stored(conn: sqlite3.Connection) -> tuple[dict[str, bytes], bytes | None]:
    """What a database holds of the rule state: its parts, or else the one-row snapshot of
    an older hub (None if neither)."""
    rows = {str(k): bytes(v) for k, v in conn.execute("SELECT key, value FROM rule_items")}
    if rows:
        return rows, None
    old = conn.execute("SELECT snapshot FROM rule_state WHERE id = 1").fetchone()
    return rows, None if old is None else bytes(old[0])


def _snapshot(rows: dict[str, bytes], old: bytes | None) -> dict[str, Any] | None:
    if rows:
        return join({k: json.loads(v) for k, v in rows.items()})
    return None if old is None else dict(json.loads(old))


def read_snapshot(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """The rule state in a database (either format), or None if it holds none."""
    return _snapshot(*read_stored(conn))


class RuleStateStore:
    def __init__(self, target: Path | Database) -> None:
        self.db = target if isinstance(target, Database) else None
        self.path = (target.path.with_name(LEGACY_FILE) if isinstance(target, Database)
                     else target)
        self.saves = 0
        self._seq = 0
        self._written = 0
        # In the database: each part's JSON as last taken (in decision order, so as it
        # will be on disk once those decisions commit): a decision writes what differs.
        self._parts: dict[str, bytes] = {}
        self._rebuild = False  # the next change set replaces every part (FULL)

    def load_into(self, engine: RuleEngine) -> bool:
        if self.db is None:
            return self._load_file(engine)
        with self.db.lock:
            try:
                rows, old = read_stored(self.db.conn)
            except sqlite3.Error as e:
                log.error("rule state in %s unreadable (%s): starting fresh", self.db.path, e)
                self._rebuild = True
                return False
        if not rows and old is None:
            # An older hub kept the state in a file: take it over (it is committed with the
            # next decision), then move the file out of the way.
            if not self._load_file(engine):
                return False
            self._rebuild = engine.changed = True
            try:
                os.replace(self.path, self.path.with_suffix(".imported"))
            except OSError:
                pass
            return True
        try:
            engine.restore(_snapshot(rows, old) or {})
        except (ValueError, TypeError, AttributeError) as e:
            aside = self.path.with_suffix(".corrupt")
            log.error("rule state in %s unreadable (%s): kept as %s, starting fresh",
                      self.db.path, e, aside)
            kept = old if old is not None else b"\n".join(
                k.encode() + b" " + v for k, v in sorted(rows.items()))
            try:
                fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with open(fd, "wb") as f:
                    f.write(kept)
            except OSError:
                pass
            self._rebuild = True
            return False
        if rows:
            self._parts = rows
            engine.changed = False
        else:  # the one-row format of older hubs: rewritten as parts with the next decision
            self._rebuild = engine.changed = True
        engine.book.touched = set() if rows else None
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
        """A numbered whole snapshot if the state changed (standalone: `write` it once the
        messages are durable)."""
        if not engine.changed:
            return None
        engine.changed = False
        self._seq += 1
        return self._seq, _dump(engine.snapshot())

    def changes(self, engine: RuleEngine) -> db_store.RuleChanges | None:
        """In the database: the parts the state changed since the last call, for the hub to
        commit with the decision's messages. Only the alarms the book touched are looked at,
        so the cost follows what changed, not how many alarms are held."""
        if not engine.changed:
            return None
        engine.changed = False
        book = engine.book
        touched, book.touched = book.touched, set()
        snap = engine.snapshot()
        active = snap.pop("active")
        now = split({**snap, "active": {}})
        if touched is None:
            now.update((ALARM + c, a) for c, a in active.items())
        out: db_store.RuleChanges = {}
        if self._rebuild:
            self._rebuild = False
            self._parts = {}
            out[db_store.FULL] = None
        for key, v in now.items():
            data = _dump(v)
            if self._parts.get(key) != data:
                self._parts[key] = out[key] = data
        for c in touched or ():
            key = ALARM + c
            if c in active:
                data = _dump(active[c])
                if self._parts.get(key) != data:
                    self._parts[key] = out[key] = data
            elif self._parts.pop(key, None) is not None:
                out[key] = None
        for key in [k for k in self._parts if k not in now
                    and (touched is None or not k.startswith(ALARM))]:
            del self._parts[key]
            out[key] = None
        return out or None

    def write(self, snap: tuple[int, bytes] | None) -> None:
        """Standalone: write a snapshot unless a newer one is already on disk. A failed write
        is logged, not raised: the alarms are in the outbox; a lost state write at worst
        repeats a timer after a restart."""
        if snap is None or snap[0] <= self._written:
            return
        if self.db is not None:
            # In the database the state goes only with a decision (`changes`), never alone.
            raise TypeError("a database-backed rule state is committed with its decision")
        try:
            self._write(snap[1])
        except OSError as e:
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
