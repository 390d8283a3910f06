"""The hub's one database: outbox, replay counters, acknowledgement state and rule state.

Everything a decision on an advert changes lives in this one SQLite file, so that one
transaction (one fsync, group-committed over a burst) makes all of it durable together:
no crash image can hold an accepted counter or a rule state without the messages it implies
(hub/delivery/outbox.py `Outbox.commit`). WAL mode with synchronous=FULL: a commit survives kill -9
and power loss.

Opening it is also where damage is found and survived, never a reason not to start:

- `PRAGMA quick_check` at open. A file SQLite cannot read, or one that fails the check, is
  set aside (renamed `<name>.damaged-<time>`, with its -wal and -shm), the hub starts on a
  fresh file, salvages what rows it can still read from the damaged one, and reports
  `store_damaged` (the hub raises a technical alarm).
- A generation id is kept in the file and in a marker file beside it (`<name>.id`). A
  marker without its database (deleted, or truncated to nothing) or with a different one
  (replaced by an old copy) means messages may have been lost while the hub was stopped:
  reported as `store_missing`.
- Files are created 0600 by the hub itself (SQLite gives -wal and -shm the database's mode).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

DB_NAME = "outbox.sqlite"  # in the data directory; the name predates the other tables
FILE_MODE = 0o600
KEEP_DAMAGED = 2  # damaged files kept aside for inspection; older ones are removed
_SIDECARS = ("-wal", "-shm", "-journal")
# A checkpoint costs three fsyncs of its own (the WAL before, the database after, the WAL's
# new header). An alarm's whole life (stored, sent, waiting, confirmed, told) writes ~20 WAL
# pages, so SQLite's default of a checkpoint every 1000 pages comes every ~50 alarms. The
# hub checkpoints sooner, while it is idle (GroupCommitter): an alarm then waits for its own
# commit's fsync only; the automatic one is the backstop for a long burst. The WAL stays
# within WAL_LIMIT, inside the disk-full reserve (hub/delivery/outbox.py RESERVE_BYTES).
WAL_PAGES = 1000
WAL_LIMIT = 5 << 20
IDLE_CHECKPOINT_AFTER = 150  # transactions (~750 pages) since the last checkpoint

# Tables other than the outbox itself (hub/delivery/outbox.py creates that one). The acks
# table keeps
# alarms the device was told "received" for, until "help is coming" has reached it
# (delivered = 1: the receipt came back, the device still has to hear it).
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters(device TEXT PRIMARY KEY, counter INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS awaiting_receipt(
  msg_id TEXT PRIMARY KEY,
  device TEXT NOT NULL,
  counter INTEGER NOT NULL,
  advert BLOB,
  created REAL NOT NULL,
  delivered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rule_state(id INTEGER PRIMARY KEY CHECK (id = 1), snapshot BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rule_items(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Problem:
    """Something found at open that someone must hear about (a technical alarm)."""

    type: str  # store_damaged | store_missing
    detail: str


def create_private(path: Path, mode: int = FILE_MODE) -> None:
    """Create `path` empty with `mode` unless it exists; tighten a looser existing mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        st = os.stat(path)
        if st.st_mode & 0o777 & ~mode:
            os.chmod(path, mode)
        return
    os.close(fd)


def is_damage(e: BaseException | None) -> bool:
    """SQLite says the file itself is damaged (not full, not locked): retrying cannot help."""
    while e is not None:
        if isinstance(e, sqlite3.DatabaseError) and (
                getattr(e, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT,
                                                         sqlite3.SQLITE_NOTADB)
                or "malformed" in str(e)):
            return True
        e = e.__cause__
    return False


def set_aside(path: Path, why: str) -> Path:
    """Rename a damaged file (and its SQLite side files) out of the way, keeping it."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, aside)
    for s in _SIDECARS:
        side = path.with_name(path.name + s)
        if side.exists():
            os.replace(side, aside.with_name(aside.name + s))
    log.error("%s is damaged (%s): set aside as %s; starting on a fresh file", path, why, aside)
    # Kept for inspection, but not without bound: they share the disk with the alarms.
    old = sorted(path.parent.glob(f"{path.name}.damaged-*[0-9]"),
                 key=lambda p: p.stat().st_mtime)[:-KEEP_DAMAGED]
    for p in old:
        for f in (p, *(p.with_name(p.name + s) for s in _SIDECARS)):
            f.unlink(missing_ok=True)
        log.warning("removed the older damaged copy %s", p)
    return aside


def _check(path: Path) -> str | None:
    """None if SQLite reads the file and quick_check passes, else what is wrong."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
        db.text_factory = bytes  # the report may quote damaged bytes
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        return str(e)
    except UnicodeDecodeError as e:  # SQLite's message quotes a damaged schema
        return f"damaged schema ({e.object[:60]!r})"
    if rows != [(b"ok",)]:
        return "; ".join(bytes(r[0]).decode(errors="replace") for r in rows[:3])
    return None


class Database:
    """One connection to the hub's database, shared by its stores under one lock.

    `journal_size_limit` keeps the WAL small after checkpoints (on a full disk the free space
    may sit in it); the disk budget and the reserve (hub/delivery/outbox.py) count the WAL in."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.memory = str(path) == ":memory:"
        self.problems: list[Problem] = []
        self.salvaged = 0
        self.lock = threading.RLock()
        # Queries only (`reading`): a connection and lock of their own, except in memory,
        # where there is one connection for both.
        self.read_lock = self.lock if self.memory else threading.RLock()
        self._reader: sqlite3.Connection | None = None
        self.since_checkpoint = 0  # transactions committed since the last checkpoint
        self.generation = ""  # this file's id (also in the marker beside it)
        self.created = False  # a new, empty database was started at this open
        self.marker = self.path.with_name(self.path.name + ".id")
        self.damage_marker = self.path.with_name(self.path.name + ".damage-found")
        damaged: Path | None = None
        if not self.memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            damaged = self._examine()
            create_private(self.path)
        try:
            self.conn = self._connect()
        except sqlite3.OperationalError as e:
            # A full disk must not keep the hub from starting: this is what the reserve
            # kept for alarms (hub/delivery/outbox.py) is for. The outbox sets it aside again later.
            reserve = self.path.with_name(self.path.name + ".reserve")
            if "full" not in str(e) or not reserve.exists():
                raise
            log.error("%s: %s at open; releasing the reserve %s", self.path, e, reserve)
            reserve.unlink()
            self.conn = self._connect()
        if not self.memory:
            self._generation()
        self._damaged = damaged
        if damaged is not None:
            self._salvage_state()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            # synchronous is per connection and not stored in the file: set it on every open.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _examine(self) -> Path | None:
        """Before opening: is the file there when it should be, and readable?"""
        expected = self._read_marker()
        exists = self.path.exists() and self.path.stat().st_size > 0
        if expected is not None and not exists:
            self._problem("store_missing",
                          f"{self.path} is gone (generation {expected}): messages stored"
                          " before the hub stopped may be lost")
            if self.path.exists():
                self.path.unlink()
            self.damage_marker.unlink(missing_ok=True)
            for s in _SIDECARS:
                self.path.with_name(self.path.name + s).unlink(missing_ok=True)
            return None
        if not exists:
            self.damage_marker.unlink(missing_ok=True)
            return None
        why = _check(self.path)
        found = self._read_damage_marker()
        if why is None and found is not None:
            # A running hub hit the damage and stopped (`found_damaged`); whatever
            # quick_check says now, the file is not trusted again.
            why = f"found damaged while running: {found}"
        if why is None:
            return None
        aside = set_aside(self.path, why)
        self.damage_marker.unlink(missing_ok=True)
        self._problem("store_damaged", f"{self.path}: {why}; set aside as {aside.name}")
        return aside

    def _read_damage_marker(self) -> str | None:
        try:
            return self.damage_marker.read_text(errors="replace").strip()[:500] or "damaged"
        except FileNotFoundError:
            return None
        except OSError as e:
            return f"marker unreadable: {e}"

    def found_damaged(self, why: str) -> None:
        """SQLite found the file damaged while the hub runs. Recorded beside it so that the
        next start sets it aside, salvages what it can and reports `store_damaged`, as for
        damage found at start; the hub then stops (hub/service.py) and systemd restarts it."""
        log.critical("%s is damaged (%s): the hub stops; the next start sets it aside",
                     self.path, why)
        try:
            write_file_durably(self.damage_marker, why.encode()[:500] + b"\n")
        except OSError as err:
            log.error("cannot write %s: %s", self.damage_marker, err)

    def _problem(self, type_: str, detail: str) -> None:
        log.error("store: %s: %s", type_, detail)
        self.problems.append(Problem(type_, detail))

    def _read_marker(self) -> str | None:
        try:
            return self.marker.read_text().strip() or None
        except FileNotFoundError:
            return None
        except OSError as e:
            log.error("%s unreadable: %s", self.marker, e)
            return None

    def _generation(self) -> None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        expected = self._read_marker()
        if row is None:
            gen = uuid.uuid4().hex
            self.conn.execute("INSERT INTO meta VALUES ('generation', ?)", (gen,))
            # Also what a deleted data directory (marker and all) looks like: the hub's state
            # says so (service.py `status`), and the centre sees the generation change.
            self.created = True
            if expected is not None and not self.problems:
                # The file exists but is empty of our tables: truncated or replaced.
                self._problem("store_missing", f"{self.path} was replaced by an empty file"
                              f" (generation {expected} expected)")
        else:
            gen = str(row[0])
            if expected is not None and expected != gen:
                self._problem("store_missing", f"{self.path} is not the file the hub last"
                              f" used (generation {gen}, {expected} expected): an old copy?")
        self.generation = gen
        if expected != gen:
            self._write_marker(gen)

    def _write_marker(self, gen: str) -> None:
        try:
            write_file_durably(self.marker, gen.encode() + b"\n")
        except OSError as e:
            log.error("cannot write %s: %s (a lost database would go unnoticed)", self.marker, e)

    def salvage(self, table: str, columns: str) -> list[tuple[object, ...]]:
        """Rows of `table` still readable in the file set aside at open (best effort: as
        many as SQLite returns before it hits the damage)."""
        if self._damaged is None:
            return []
        rows: list[tuple[object, ...]] = []
        try:
            db = sqlite3.connect(f"file:{self._damaged}?mode=ro", uri=True)
            db.text_factory = bytes
            try:
                for r in db.execute(f"SELECT {columns} FROM {table}"):
                    try:  # a row with damaged text is garbage: skipped
                        rows.append(tuple(v.decode() if isinstance(v, bytes) and i < 3 else v
                                          for i, v in enumerate(r)))
                    except UnicodeDecodeError:
                        continue
            finally:
                db.close()
        except Exception as e:  # whatever the damage does, it must not stop the hub
            log.warning("salvage of %s from %s stopped: %s", table, self._damaged, e)
        return rows

    def _salvage_state(self) -> None:
        """Counters and acknowledgement state still readable in the damaged file: without
        them every repeat of an alarm already delivered would become a second alarm."""
        counters = [(d, c) for d, c in self.salvage("counters", "device, counter")
                    if isinstance(d, bytes | str) and isinstance(c, int)]
        acks = [r for r in self.salvage("awaiting_receipt",
                                        "msg_id, device, counter, advert, created, delivered")
                if isinstance(r[2], int) and isinstance(r[4], int | float)]
        try:
            with self.transaction() as db:
                db.executemany("INSERT OR IGNORE INTO counters VALUES (?, ?)",
                               [(_text(d), c) for d, c in counters])
                db.executemany("INSERT OR IGNORE INTO awaiting_receipt VALUES (?, ?, ?, ?, ?, ?)",
                               [(_text(r[0]), _text(r[1]), *r[2:]) for r in acks])
        except (sqlite3.Error, UnicodeDecodeError) as e:
            log.warning("salvage of counters and acknowledgements failed: %s", e)
            return
        if counters or acks:
            log.error("salvaged %d counter(s) and %d acknowledgement(s) from %s",
                      len(counters), len(acks), self._damaged)

    @contextlib.contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the lock. `durable=False`: bookkeeping whose
        loss in a power cut only means a re-send; it skips its own fsync (the next durable
        commit syncs the whole WAL, these frames included)."""
        with self.lock:
            if not durable:
                self.conn.execute("PRAGMA synchronous=NORMAL")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                    self.conn.execute("COMMIT")
                    self.since_checkpoint += 1
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    self.conn.execute("PRAGMA synchronous=FULL")

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for queries only, under its own lock: in WAL mode it reads the last
        commit while the writer commits or checkpoints, so the link's next rows never wait
        for a write-back or a checkpoint (which hold the write lock for as long as the disk
        takes). An in-memory database has one connection for both."""
        if self.memory:
            with self.read_lock:
                yield self.conn
            return
        with self.read_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(self.path, check_same_thread=False,
                                               isolation_level=None)
                self._reader.execute("PRAGMA query_only = 1")
            yield self._reader

    def checkpoint_if_due(self) -> bool:
        """Checkpoint the WAL if enough was written since the last one (called when nothing
        waits for the database). True if it ran."""
        with self.lock:
            if self.since_checkpoint < IDLE_CHECKPOINT_AFTER:
                return False
            self.since_checkpoint = 0
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return True

    def files_bytes(self) -> int:
        """The database with its WAL and shared-memory files, as the disk sees them."""
        total = 0
        for p in (self.path, *(self.path.with_name(self.path.name + s) for s in _SIDECARS)):
            try:
                total += p.stat().st_blocks * 512
            except (FileNotFoundError, AttributeError):
                pass
        return total

    def close(self) -> None:
        with self.read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self.lock:
            try:
                # A clean stop leaves no WAL behind: nothing depends on it surviving.
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def open_db(target: str | Path | Database) -> Database:
    return target if isinstance(target, Database) else Database(target)


# -- writes inside a caller's transaction (hub/delivery/outbox.py Outbox.commit / confirm) --
AckRow = tuple[str, str, int, "bytes | None"]  # (msg id, device id, advert counter, advert)
MAX_ACK_ROWS = 1000  # alarms remembered for "help is coming"; the oldest go beyond this


def write_counters(db: sqlite3.Connection, changes: dict[str, int | None]) -> None:
    db.executemany("DELETE FROM counters WHERE device = ?",
                   [(d,) for d, c in changes.items() if c is None])
    db.executemany(
        "INSERT INTO counters(device, counter) VALUES (?, ?)"
        " ON CONFLICT(device) DO UPDATE SET counter = excluded.counter",
        [(d, c) for d, c in changes.items() if c is not None],
    )


def write_acks(db: sqlite3.Connection, rows: list[AckRow], now: float) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO awaiting_receipt(msg_id, device, counter, advert, created,"
        " delivered) VALUES (?, ?, ?, ?, ?, 0)",
        [(*r, now) for r in rows],
    )
    # Older than the last MAX_ACK_ROWS alarms: forgotten. By rowid (insertion order), an
    # index lookup rather than a sort on every alarm's commit.
    db.execute("DELETE FROM awaiting_receipt WHERE rowid <= (SELECT MAX(rowid) FROM"
               " awaiting_receipt) - ?", (MAX_ACK_ROWS,))


# The rule state is kept as one row per part (hub/rules/store.py): a decision writes the
# parts it changed, so its cost does not grow with the number of alarms held. A change set
# maps a part's key to its JSON, or to None to delete it; with FULL in it, every part not in
# it goes (the state was rebuilt, e.g. taken over from the one-row format of older hubs).
FULL = "*"
RuleChanges = dict[str, "bytes | None"]


def write_rule_state(db: sqlite3.Connection, changes: RuleChanges) -> None:
    if FULL in changes:
        db.execute("DELETE FROM rule_items")
        db.execute("DELETE FROM rule_state")
    db.executemany("DELETE FROM rule_items WHERE key = ?",
                   [(k,) for k, v in changes.items() if v is None and k != FULL])
    db.executemany("INSERT OR REPLACE INTO rule_items(key, value) VALUES (?, ?)",
                   [(k, v) for k, v in changes.items() if v is not None])


def merge_rule_changes(sets: Sequence[RuleChanges]) -> RuleChanges:
    """Several decisions' change sets, in order, as one (a group commit writes it once)."""
    merged: RuleChanges = {}
    for c in sets:
        if FULL in c:
            merged = {}
        merged.update(c)
    return merged


def mark_delivered(db: sqlite3.Connection, msg_ids: list[str]) -> None:
    """The receipt came back: "help is coming" is now owed to the device, in the same
    transaction that removes the confirmed messages from the outbox."""
    for chunk in chunks(msg_ids):
        db.execute(f"UPDATE awaiting_receipt SET delivered = 1 WHERE msg_id IN"
                   f" ({','.join('?' * len(chunk))})", chunk)


SQL_VARIABLES = 500  # well below SQLite's limit (32766 since 3.32; 999 before)


def chunks(items: Sequence[T], n: int = SQL_VARIABLES) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield list(items[i:i + n])


# Files of hubs before the one database: taken over once at start, then renamed.
LEGACY = (("counters.sqlite", "counters", "device, counter"),
          ("acks.sqlite", "awaiting_receipt", "msg_id, device, counter, advert, created"))


def import_legacy(db: Database, data_dir: Path) -> int:
    """Counters and acknowledgement state from an older hub's own files (what is already in
    the database wins). A damaged one is set aside and reported like the database."""
    n = 0
    for name, table, cols in LEGACY:
        path = data_dir / name
        if not path.exists():
            continue
        try:
            src = sqlite3.connect(path, isolation_level=None)
            try:
                rows = src.execute(f"SELECT {cols} FROM {table}").fetchall()
            finally:
                src.close()
        except sqlite3.Error as e:
            aside = set_aside(path, str(e))
            db.problems.append(Problem("store_damaged", f"{path}: {e}; set aside as"
                                       f" {aside.name}"))
            continue
        marks = ",".join("?" * len(cols.split(",")))
        with db.transaction() as conn:
            conn.executemany(f"INSERT OR IGNORE INTO {table}({cols}) VALUES ({marks})", rows)
        n += len(rows)
        os.replace(path, path.with_name(name + ".imported"))
        for s in _SIDECARS:
            path.with_name(name + s).unlink(missing_ok=True)
        log.info("took over %d row(s) of %s from %s", len(rows), table, path)
    return n


def write_file_durably(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new file, never a
    torn one: written beside it, fsync'd, renamed, and the directory fsync'd (the rename is
    durable only then)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
