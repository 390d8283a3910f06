"""Durable outbox: every outgoing message is committed here (fsync'd) before anything else.

SQLite in WAL mode with synchronous=FULL: a committed row survives kill -9 and power loss
(NORMAL could roll back the last commits on power loss). The outbox is a table of the hub's
one database (hub/store.py): a `Decision` (the messages of one advert, timer or command, with
the counters, rule state and acknowledgement state it changed) commits as a whole, and the
decisions waiting for the disk are batched into one transaction (group commit), so a burst
costs one fsync, not one per message.

A row's life: appended (pending) -> published -> PUBACK. Telemetry is deleted at PUBACK. Rows
that need an end-to-end receipt (alarms) stay, with `next_try` pushed into the future, until
the response centre's receipt names their id; if none comes they are published again (same
id) with back-off. Bookkeeping after the append (PUBACK, back-off, receipts) needs no fsync
of its own: losing it in a power cut only means a re-send, which receivers de-duplicate, and
a receipt's deletion and the "help is coming" it makes owed are lost or kept together.

Disk use is bounded by a byte budget over the stored messages: when a new message does not
fit, the oldest messages of the least urgent priority that do not need a receipt are dropped
(counted); messages that need a receipt are never dropped. A reserve file set aside on the
same filesystem is released when the disk itself fills, so alarms can still be stored.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from hub import store
from hub.rules.outgoing import Outgoing
from hub.store import Database, open_db
from hub.tasks import cancel_and_wait
from protocols import mqtt_schema

log = logging.getLogger(__name__)

# Kinds the response centre must confirm with a receipt; everything else may leave at PUBACK.
RECEIPT_KINDS = frozenset(mqtt_schema.RECEIPT_KINDS)

# Per-row bookkeeping on top of the message bytes (row header, index entries), so the budget
# roughly matches the file; measured by tools/bench/outbox.py.
ROW_OVERHEAD = 64
# Room kept for alarms when the filesystem fills: more than the WAL can grow to
# (hub/store.py WAL_LIMIT), since truncating the WAL to make room means it grows again.
RESERVE_BYTES = 6 << 20

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
# Columns added after the first release: added in place to an older file.
MIGRATIONS = {
    "receipt": "ALTER TABLE outbox ADD COLUMN receipt INTEGER NOT NULL DEFAULT 1",
    "size": "ALTER TABLE outbox ADD COLUMN size INTEGER NOT NULL DEFAULT 0",
    "next_try": "ALTER TABLE outbox ADD COLUMN next_try REAL NOT NULL DEFAULT 0",
}


class OutboxWriteError(Exception):
    """The message could not be stored (disk full, I/O error). Nothing was acknowledged."""


@dataclass(slots=True)
class Decision:
    """What one decision on an advert, a timer or a command changes (hub/service.py):
    committed together or not at all."""

    items: list[tuple[str, Outgoing]] = field(default_factory=list)  # (topic, message)
    counters: dict[str, int | None] = field(default_factory=dict)  # None: forget (new key)
    rule_state: store.RuleChanges | None = None  # the rule-state parts it changed
    acks: list[store.AckRow] = field(default_factory=list)  # "received" owed once stored

    def __bool__(self) -> bool:
        return bool(self.items or self.counters or self.rule_state or self.acks)


class Row(NamedTuple):
    # A tuple, built straight from SQLite's: a replay reads thousands a second, and a frozen
    # dataclass's __init__ cost 0.8 µs a row, about what reading the row costs.
    seq: int
    msg_id: str
    kind: str
    topic: str
    payload: bytes
    priority: int
    receipt: int = 1  # 1: the receiver confirms it with a receipt (SQLite's boolean)
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    awaiting_receipt: int
    used_bytes: int
    budget_bytes: int | None
    dropped: int

    @property
    def fill(self) -> float:
        return 0.0 if not self.budget_bytes else self.used_bytes / self.budget_bytes


_COLS = "seq, msg_id, kind, topic, payload, priority, receipt, attempts"


def runs(seqs: list[int]) -> list[tuple[int, int]]:
    """The seqs as runs of consecutive numbers: (first, last) each, ascending."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def _intact(r: tuple[object, ...]) -> bool:
    """A row read from a damaged file that is still the message it was (else: not sent)."""
    msg_id, kind, topic, payload, prio, created, receipt, size = r
    if not (isinstance(msg_id, str) and isinstance(kind, str) and isinstance(topic, str)
            and isinstance(payload, bytes) and isinstance(prio, int)
            and isinstance(created, (int, float)) and isinstance(receipt, int)
            and isinstance(size, int)):
        return False
    try:
        msg = json.loads(payload)
    except ValueError:
        return False
    return isinstance(msg, dict) and msg.get("id") == msg_id and msg.get("kind") == kind


def is_disk_full(e: BaseException) -> bool:
    if isinstance(e, sqlite3.Error):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(e)
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


class Outbox:
    """Synchronous store; safe to call from several threads (one connection, one lock)."""

    def __init__(
        self,
        path: str | Path | Database,
        budget_bytes: int | None = None,
        reserve_bytes: int = RESERVE_BYTES,
    ) -> None:
        self._owns = not isinstance(path, Database)
        self.store = open_db(path)
        self.path = self.store.path
        self.budget_bytes = budget_bytes
        self.reserve_bytes = reserve_bytes
        self.reserve_path = self.path.with_name(self.path.name + ".reserve")
        self.dropped = 0  # low-priority messages dropped to stay within the budget
        self._lock = self.store.lock
        self._db = self.store.conn
        self._db.executescript(SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
        for col, sql in MIGRATIONS.items():
            if col not in have:
                self._db.execute(sql)
        # msg_id's UNIQUE constraint is an index already: a second one (older hubs made it)
        # only cost a page in the WAL on every insert and delete (more checkpoints).
        self._db.execute("DROP INDEX IF EXISTS outbox_id")
        # Back-off deadlines are on this process's monotonic clock, meaningless to the
        # next one: whatever was not confirmed goes out again now.
        self._db.execute("UPDATE outbox SET next_try = 0 WHERE next_try > 0")
        self.salvaged = self._salvage()
        self._db.execute(
            "UPDATE outbox SET size = length(payload) + length(topic) + length(msg_id) + ?"
            " WHERE size = 0",
            (ROW_OVERHEAD,),
        )
        (used,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._used = int(used)
        self.commits = 0  # durable commits (each one fsync of the WAL)
        if reserve_bytes:
            self.ensure_reserve()

    def _salvage(self) -> int:
        """Messages still readable in a damaged file set aside at open go out again."""
        rows = [r for r in self.store.salvage("outbox", "msg_id, kind, topic, payload,"
                                              " priority, created, receipt, size")
                if _intact(r)]
        if not rows:
            return 0
        with self.store.transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox(msg_id, kind, topic, payload, priority, created,"
                " receipt, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        log.error("outbox: %d message(s) salvaged from the damaged file", len(rows))
        return len(rows)

    # -- appending ---------------------------------------------------------------------------
    def append_many(self, items: list[tuple[str, Outgoing]], now: float) -> None:
        """Commit all items in one transaction. Returns only once they are on disk.

        Raises OutboxWriteError when the store cannot take them (nothing is stored then)."""
        self.commit([Decision(items)], now)

    def commit(self, decisions: list[Decision], now: float) -> None:
        """Everything the decisions change, in their order, in ONE durable transaction:
        their messages, the counters they accepted, the rule state they leave behind and the
        acknowledgements they owe. Returns only once it is on disk; raises OutboxWriteError
        (nothing of it is stored then)."""
        rows = []
        for d in decisions:
            for topic, o in d.items:
                payload = json.dumps(o.payload, separators=(",", ":")).encode()
                size = len(payload) + len(topic) + len(o.msg_id) + ROW_OVERHEAD
                rows.append((o.msg_id, o.kind, topic, payload, o.priority, now,
                             int(o.kind in RECEIPT_KINDS), size))
        try:
            with self.store.transaction() as db:
                added = 0
                if rows:
                    before = db.total_changes
                    db.executemany(
                        "INSERT OR IGNORE INTO outbox(msg_id, kind, topic, payload, priority,"
                        " created, receipt, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    if db.total_changes - before != len(rows):
                        # Some ids were stored already (a re-emitted message): recount.
                        (used,) = db.execute(
                            "SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
                        self._used = int(used)
                    else:
                        added = sum(r[7] for r in rows)
                for d in decisions:
                    if d.counters:
                        store.write_counters(db, d.counters)
                    if d.acks:
                        store.write_acks(db, d.acks, now)
                changes = store.merge_rule_changes(
                    [d.rule_state for d in decisions if d.rule_state])
                if changes:
                    store.write_rule_state(db, changes)
                freed, dropped = self._fit_budget(added)
        except (sqlite3.Error, OSError) as e:
            raise OutboxWriteError(f"{self.path}: cannot store message: {e}") from e
        self.commits += 1
        self._used += added - freed
        self.dropped += dropped

    def _fit_budget(self, added: int) -> tuple[int, int]:
        """Drop the oldest least-urgent droppable rows until the budget holds. Never a row
        that needs a receipt: over budget with only those left, the budget gives way."""
        if self.budget_bytes is None or self._used + added <= self.budget_bytes:
            return 0, 0
        excess = self._used + added - self.budget_bytes
        freed = dropped = 0
        prios = [p for (p,) in self._db.execute(
            "SELECT DISTINCT priority FROM outbox WHERE receipt = 0 ORDER BY priority DESC")]
        for p in prios:
            while freed < excess:
                victims = self._db.execute(
                    "SELECT seq, size FROM outbox WHERE priority = ? AND receipt = 0"
                    " ORDER BY seq LIMIT 256",
                    (p,),
                ).fetchall()
                if not victims:
                    break
                take = []
                for seq, size in victims:
                    take.append((seq,))
                    freed += size
                    if freed >= excess:
                        break
                self._db.executemany("DELETE FROM outbox WHERE seq = ?", take)
                dropped += len(take)
            if freed >= excess:
                break
        if dropped:
            log.warning("outbox over budget: dropped %d low-priority messages", dropped)
        return freed, dropped

    # -- the reserve: room for alarms when the filesystem fills ------------------------------
    def ensure_reserve(self) -> bool:
        """Set the reserve aside again if it is missing. False if there is no room for it."""
        if not self.reserve_bytes or self.reserve_path.exists():
            return True
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(fd, "wb") as f:
                # Real bytes, not a sparse file: tmpfs and most filesystems count only those.
                chunk = b"\0" * 65536
                left = self.reserve_bytes
                while left > 0:
                    f.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            self.reserve_path.unlink(missing_ok=True)
            return False

    def release_reserve(self) -> bool:
        """Give the reserve's space to the database. True if there was a reserve to give."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        return True

    def make_room(self) -> bool:
        """The filesystem is full: shrink the WAL, then give the database the reserve, or if
        that is gone, the space of the least urgent messages. True if the reserve went."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
        released = self.release_reserve()
        if not released:
            self.drop_droppable()
        return released

    def drop_droppable(self, fraction: float = 0.25) -> int:
        """Free space inside the database file by dropping the oldest least-urgent rows that
        need no receipt (used when the disk is full)."""
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM outbox WHERE receipt = 0").fetchone()
            if not n:
                return 0
            k = max(1, int(n * fraction))
            try:
                cur = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE receipt = 0"
                    " ORDER BY priority DESC, seq LIMIT ?) RETURNING size",
                    (k,),
                )
                sizes = [s for (s,) in cur.fetchall()]
            except sqlite3.Error:
                return 0
            self._used -= sum(sizes)
            self.dropped += len(sizes)
            return len(sizes)

    # -- delivery ----------------------------------------------------------------------------
    def next_batch(
        self,
        limit: int,
        exclude: set[int],
        now: float = float("inf"),
        hold: frozenset[int] | set[int] = frozenset(),
        allow: frozenset[int] | set[int] = frozenset(),
        hold_copies: frozenset[tuple[str, int]] | set[tuple[str, int]] = frozenset(),
        copies_prefix: str = "",
        after: tuple[int, int] | None = None,
    ) -> list[Row]:
        """The most urgent rows due for (re-)publishing, in delivery order (priority, then
        arrival). Rows waiting for a receipt are due only when their back-off has run out.
        Priorities in `hold` are held back (flow control), except the rows in `allow`; with
        `copies_prefix`, `hold` is only for rows whose topic does not start with it (the
        response centre's), and `hold_copies` holds (topic prefix, priority) pairs: each
        receiver of routed copies has its own window. `after` = (priority, seq): only rows
        later in delivery order (the link fetching ahead of what it holds)."""
        if limit <= 0:
            return []
        where = "next_try <= ?"
        args: list[float | int | str] = [now]
        held: list[str] = []
        if hold:
            c = f"priority IN ({','.join('?' * len(hold))})"
            args += [*hold]
            if copies_prefix:
                c += " AND substr(topic, 1, ?) != ?"
                args += [len(copies_prefix), copies_prefix]
            held.append(c)
        for prefix, p in hold_copies:
            held.append("(priority = ? AND substr(topic, 1, ?) = ?)")
            args += [p, len(prefix), prefix]
        if after is not None:
            where += " AND (priority > ? OR (priority = ? AND seq > ?))"
            args += [after[0], after[0], after[1]]
        if held:
            where += (f" AND (NOT ({' OR '.join(held)})"
                      f" OR seq IN ({','.join('?' * len(allow)) or 'NULL'}))")
            args += [*allow]
        with self.store.reading() as db:
            cur = db.execute(
                f"SELECT {_COLS} FROM outbox WHERE {where} ORDER BY priority, seq LIMIT ?",
                (*args, limit + len(exclude)),
            )
            rows = cur.fetchall()
        if exclude:
            rows = [r for r in rows if r[0] not in exclude]
        return list(map(Row._make, rows[:limit]))

    def settle(self, delete: list[int], wait: list[tuple[int, float]]) -> None:
        """After PUBACKs: delete rows that are done, push the others' next try into the
        future (they wait for a receipt). One transaction for the lot, without an fsync of
        its own: losing it in a power cut only means a re-send (receivers de-duplicate)."""
        if not delete and not wait:
            return
        with self.store.transaction(durable=False) as db:
            # Done telemetry comes in runs of consecutive rows (a replay): a run is two
            # statements, not a variable and a returned row per message.
            for lo, hi in runs(delete):
                (freed,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox"
                                      " WHERE seq BETWEEN ? AND ?", (lo, hi)).fetchone()
                db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (lo, hi))
                self._used -= freed
            db.executemany(
                "UPDATE outbox SET next_try = ?, attempts = attempts + 1 WHERE seq = ?",
                [(t, s) for s, t in wait],
            )

    def delete(self, seqs: list[int]) -> None:
        self.settle(seqs, [])

    def confirm(self, msg_ids: list[str]) -> list[Row]:
        """A receipt came back for these ids: they are done. Returns the rows removed (ids
        not in the outbox, e.g. a second receipt for the same alarm, are ignored). In the
        same transaction the device is now owed "help is coming" (hub/delivery/acks.py): a crash
        cannot leave the message gone and the resident not told. Any number of ids: the
        SQL goes in chunks."""
        if not msg_ids:
            return []
        ids = list(dict.fromkeys(msg_ids))
        rows: list[Row] = []
        with self.store.transaction(durable=False) as db:
            for chunk in store.chunks(ids):
                marks = ",".join("?" * len(chunk))
                cur = db.execute(
                    f"DELETE FROM outbox WHERE msg_id IN ({marks}) RETURNING {_COLS}, size",
                    chunk)
                for r in cur.fetchall():
                    rows.append(Row._make(r[:8]))
                    self._used -= r[8]
            store.mark_delivered(db, [r.msg_id for r in rows])
        rows.sort(key=lambda r: r.seq)
        return rows

    def make_due(self) -> None:
        """Everything waiting for a receipt is due now (after a reconnect: the broker may
        have lost what it acknowledged)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET next_try = 0 WHERE next_try > 0")

    def next_due(self) -> float | None:
        """When the earliest row waiting for a receipt is due again."""
        with self._lock:
            (t,) = self._db.execute(
                "SELECT MIN(next_try) FROM outbox WHERE next_try > 0"
            ).fetchone()
        return None if t is None else float(t)

    # -- state -------------------------------------------------------------------------------
    def fill(self) -> float:
        """Share of the budget in use (cheap: kept in memory)."""
        return 0.0 if not self.budget_bytes else self._used / self.budget_bytes

    def depth(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(n)

    def stats(self) -> OutboxStats:
        with self._lock:
            n, r = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(receipt), 0) FROM outbox"
            ).fetchone()
        return OutboxStats(int(n), int(r), self._used, self.budget_bytes, self.dropped)

    def ids(self) -> list[str]:
        with self._lock:
            return [i for (i,) in self._db.execute("SELECT msg_id FROM outbox ORDER BY seq")]

    def close(self) -> None:
        if self._owns:
            self.store.close()


# (problem, detail, messages held in memory): problem is "disk_full" (stored after the
# reserve was released: act now) or "write_failed" (not stored; held and retried).
StoreProblemCallback = Callable[[str, str, list[tuple[str, Outgoing]]], None]


class GroupCommitter:
    """Collects decisions from the event loop and commits them together in a worker thread.

    `await commit(decision)` returns once it is durable, so callers can acknowledge. The
    order of submission is the order on disk: a later decision (whose rule state already
    shows an earlier one's alarm raised) never lands before the earlier one. When the store
    fails (disk full) the decisions stay queued here, in memory, in order, and are retried
    with back-off; `on_problem` is told so the hub can raise a technical alarm."""

    RETRY_MIN_S = 0.2
    RETRY_MAX_S = 5.0
    RESERVE_RETRY_S = 60.0

    def __init__(
        self,
        outbox: Outbox,
        now: Callable[[], float],
        on_problem: StoreProblemCallback | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self.now = now
        self.monotonic = monotonic
        self.on_problem = on_problem
        self.failures = 0
        self._reserve_tried = float("-inf")
        self._pending: list[tuple[Decision, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self.committed = asyncio.Event()  # set after each commit (the publisher waits on it)
        self._task: asyncio.Task[None] | None = None
        # Test hook (tests/test_chaos.py): called in the worker thread right before and
        # right after each commit, to make the windows around it hittable.
        self.hook: Callable[[str], None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    def submit(self, decision: Decision) -> asyncio.Future[None]:
        """Queue a decision now (its place in the order is taken here); the future is done
        once it is durable."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((decision, fut))
        self._wake.set()
        return fut

    async def commit(self, decision: Decision) -> None:
        await self.submit(decision)

    async def append(self, topic: str, out: Outgoing) -> None:
        await self.submit(Decision([(topic, out)]))

    @property
    def waiting(self) -> int:
        """Messages not yet stored (non-zero only while the store is failing)."""
        return sum(len(d.items) for d, _ in self._pending)

    def _tell(self, problem: str, detail: str, items: list[tuple[str, Outgoing]]) -> None:
        if self.on_problem is None:
            return
        try:
            self.on_problem(problem, detail, items)
        except Exception:
            log.exception("outbox problem handler failed")

    async def _run(self) -> None:
        delay = self.RETRY_MIN_S
        while True:
            await self._wake.wait()
            self._wake.clear()
            # A cancelled caller's decision is still committed: its counter and rule state
            # are already in memory, and later decisions build on them.
            batch, self._pending = self._pending, []
            if not batch:
                continue
            decisions = [b[0] for b in batch]
            try:
                stored, released = await asyncio.to_thread(self._store, decisions)
            except Exception as e:
                stored, released, error = 0, False, str(e)
                if store.is_damage(e):
                    # Retrying a damaged file cannot help: the hub stops and its next start
                    # sets the file aside (hub/store.py found_damaged). The decisions were
                    # not acknowledged: the devices repeat them to the next run.
                    self._tell("damaged", error, [i for d in decisions for i in d.items])
            else:
                error = "" if stored == len(decisions) else "filesystem full"
            for _, fut in batch[:stored]:
                if not fut.done():
                    fut.set_result(None)
            if stored:
                self.committed.set()
                if not self._pending:
                    await self._idle_checkpoint()
            if released:
                self._tell("disk_full", f"{self.outbox.path.parent}: filesystem full, "
                           "reserve released for alarms", [])
            if not error:
                delay = self.RETRY_MIN_S
                continue
            held = batch[stored:]
            self.failures += 1
            items = [i for d, _ in held for i in d.items]
            log.error("outbox %s: %s; %d decision(s), %d message(s) held in memory, retrying",
                      self.outbox.path, error, len(held), len(items))
            self._tell("write_failed", error, items)
            # Keep the order: the held decisions go before anything newer.
            self._pending = held + self._pending
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.RETRY_MAX_S)
            self._wake.set()

    async def _idle_checkpoint(self) -> None:
        # Nothing waits to be stored: the WAL's checkpoint (three fsyncs) goes now rather
        # than in the middle of the next alarm's commit (hub/store.py WAL_PAGES).
        if self.outbox.store.since_checkpoint < store.IDLE_CHECKPOINT_AFTER:
            return  # (read without the lock: the thread re-checks)
        try:
            await asyncio.to_thread(self.outbox.store.checkpoint_if_due)
        except sqlite3.Error as e:
            log.warning("outbox %s: checkpoint failed: %s", self.outbox.path, e)

    def _commit(self, decisions: list[Decision]) -> None:
        if self.hook is not None:
            self.hook("before_commit")
        self.outbox.commit(decisions, self.now())
        if self.hook is not None:
            self.hook("after_commit")

    def _store(self, decisions: list[Decision]) -> tuple[int, bool]:
        """Commit; on a full filesystem make room and store as many as fit, in order, one
        per transaction. Returns (how many were stored, whether the reserve was released)."""
        try:
            self._commit(decisions)
            self._restore_reserve()
            return len(decisions), False
        except OutboxWriteError as e:
            if e.__cause__ is None or not is_disk_full(e.__cause__):
                raise
            first = e
        released = self.outbox.make_room()
        stored = 0
        for d in decisions:
            try:
                self._commit([d])
            except OutboxWriteError:
                break
            stored += 1
        if not stored and not released:
            raise first
        return stored, released

    def _restore_reserve(self) -> None:
        # After a full disk: put the reserve back once there is room again (tried at most
        # once a minute; it writes a megabyte).
        ob = self.outbox
        if not ob.reserve_bytes or ob.reserve_path.exists():
            return
        now = self.monotonic()
        if now - self._reserve_tried < self.RESERVE_RETRY_S:
            return
        self._reserve_tried = now
        if ob.ensure_reserve():
            log.info("outbox: reserve for alarms set aside again")

    async def stop(self) -> None:
        """Stop; what is still queued gets one last try (a clean stop keeps the counters
        and rule state of its last decisions)."""
        await cancel_and_wait([self._task])
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            stored, _ = await asyncio.to_thread(self._store, [d for d, _ in batch])
        except Exception as e:
            log.error("outbox %s: %d decision(s) not stored at stop: %s",
                      self.outbox.path, len(batch), e)
            return
        for _, fut in batch[:stored]:
            if not fut.done():
                fut.set_result(None)
