"""The durable outbox on its own: ordering, receipts, budget, restart, kill -9, a full disk."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.delivery.outbox import GroupCommitter, Outbox, OutboxWriteError, is_disk_full
from hub.rules.outgoing import Outgoing
from protocols import mqtt_schema

ROOT = Path(__file__).resolve().parents[3]
SITE = "t-site"


def msg(kind: str, msg_id: str, priority: int | None = None, pad: int = 0) -> tuple[str, Outgoing]:
    """(topic, Outgoing) as the hub would store it."""
    if priority is None:
        priority = {"alarm": 1, "technical_alarm": 3}.get(kind, mqtt_schema.PRIORITY_INFO)
    payload = mqtt_schema.message(kind, msg_id, SITE, "dev-1", "test", priority,
                                  "2026-01-01T00:00:00.000+01:00", pad="x" * pad)
    return mqtt_schema.topic(SITE, kind), Outgoing(kind, "dev-1", priority, payload)


def ids(rows: list) -> list[str]:  # type: ignore[type-arg]
    return [r.msg_id for r in rows]


def test_after_an_outage_alarms_go_first_each_priority_in_order(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many([msg("status", "s1"), msg("alarm", "a1"), msg("status", "s2")], now=1.0)
    ob.append_many([msg("technical_alarm", "t1"), msg("alarm", "a2")], now=2.0)
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite")  # a restart: everything is still there
    assert ids(ob.next_batch(10, set())) == ["a1", "a2", "t1", "s1", "s2"]
    rows = ob.next_batch(10, set())
    assert [r.receipt for r in rows] == [True, True, True, False, False]
    assert ids(ob.next_batch(2, {rows[0].seq})) == ["a2", "t1"]


def test_same_id_is_stored_once(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many([msg("alarm", "a1")], now=1.0)
    used = ob.stats().used_bytes
    ob.append_many([msg("alarm", "a1"), msg("alarm", "a2")], now=2.0)
    assert ids(ob.next_batch(10, set())) == ["a1", "a2"]
    assert ob.stats().used_bytes == 2 * used


def test_alarm_waits_for_its_receipt_then_goes_again_and_restart_makes_it_due(
    tmp_path: Path,
) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many([msg("alarm", "a1"), msg("status", "s1")], now=0.0)
    a1, s1 = ob.next_batch(10, set(), now=100.0)
    ob.settle([s1.seq], [(a1.seq, 110.0)])  # PUBACKs: telemetry done, the alarm waits
    assert ob.next_batch(10, set(), now=105.0) == []
    assert ob.next_due() == 110.0
    [again] = ob.next_batch(10, set(), now=110.0)
    assert again.msg_id == "a1" and again.attempts == 1
    ob.settle([], [(a1.seq, 200.0)])
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite")  # not confirmed before the restart: due again at once
    assert ids(ob.next_batch(10, set(), now=0.0)) == ["a1"]
    assert ids(ob.confirm(["a1", "unknown"])) == ["a1"]
    assert ob.confirm(["a1"]) == []  # a second receipt changes nothing
    assert ob.depth() == 0 and ob.stats().used_bytes == 0


def test_budget_drops_oldest_telemetry_first_never_alarms(tmp_path: Path) -> None:
    one = Outbox(tmp_path / "probe.sqlite", reserve_bytes=0)
    one.append_many([msg("status", "probe", pad=200)], now=0.0)
    size = one.stats().used_bytes
    ob = Outbox(tmp_path / "o.sqlite", budget_bytes=10 * size, reserve_bytes=0)
    ob.append_many([msg("status", f"s{i}", pad=200) for i in range(6)], now=0.0)
    ob.append_many([msg("event", f"e{i}", priority=4, pad=200) for i in range(2)], now=0.0)
    ob.append_many([msg("alarm", f"a{i}", pad=200) for i in range(4)], now=1.0)
    st = ob.stats()
    assert st.used_bytes <= st.budget_bytes  # type: ignore[operator]
    left = ids(ob.next_batch(100, set()))
    assert left[:4] == ["a0", "a1", "a2", "a3"]
    # Priority 5 goes before priority 4, oldest first.
    k = st.dropped
    assert k >= 2 and left[4:] == ["e0", "e1"] + [f"s{i}" for i in range(k, 6)]
    # Only alarms left and more coming: the budget gives way, no alarm is dropped.
    ob.append_many([msg("alarm", f"b{i}", pad=200) for i in range(20)], now=2.0)
    left = ids(ob.next_batch(100, set()))
    assert [i for i in left if i[0] in "ab"] == [f"a{i}" for i in range(4)] + [
        f"b{i}" for i in range(20)]
    assert ob.stats().fill > 1.0
    used = ob.stats().used_bytes
    ob.close()
    assert Outbox(tmp_path / "o.sqlite", budget_bytes=10 * size).stats().used_bytes == used


def test_old_outbox_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, msg_id TEXT NOT NULL UNIQUE,"
        " kind TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL, priority INTEGER NOT"
        " NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO outbox(msg_id, kind, topic, payload, priority, created)"
        " VALUES ('old1', 'alarm', 't', x'7b7d', 1, 0);"
    )
    db.commit()
    db.close()
    ob = Outbox(path)
    [row] = ob.next_batch(10, set())
    assert row.msg_id == "old1" and row.receipt
    assert ob.stats().used_bytes > 0


def test_connection_is_wal_and_full_sync(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # Delivery bookkeeping runs relaxed, and appends are strict again afterwards.
    ob.append_many([msg("alarm", "a1"), msg("status", "s1")], now=0.0)
    a1, s1 = ob.next_batch(10, set())
    ob.settle([s1.seq], [(a1.seq, 5.0)])
    ob.confirm(["a1"])
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2


KILL_WRITER = textwrap.dedent("""
    import asyncio, sys
    from hub.delivery.outbox import GroupCommitter, Outbox
    from tests.hub.delivery.test_outbox import msg

    async def main():
        ob = Outbox(sys.argv[1])
        gc = GroupCommitter(ob, lambda: 0.0)
        gc.start()
        i = 0
        while True:
            batch = [asyncio.create_task(gc.append(*msg("alarm", f"k{i + j}"))) for j in range(7)]
            for j, t in enumerate(batch):
                await t
                print(f"k{i + j}", flush=True)   # acknowledged: must survive
            i += 7

    asyncio.run(main())
""")


def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_WRITER, str(path)], stdout=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    acked = []
    for line in proc.stdout:
        acked.append(line.decode().strip())
        if len(acked) >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acked += [line.decode().strip() for line in proc.stdout]
    stored = set(Outbox(path).ids())
    assert len(acked) >= 300
    assert set(acked) <= stored


def test_disk_full_is_a_clean_error(tmp_path: Path) -> None:
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(OSError(28, "No space left on device"))
    assert not is_disk_full(sqlite3.OperationalError("no such table"))


def _mount_tmpfs(where: Path, size_kb: int) -> bool:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)],
                       capture_output=True)
    return r.returncode == 0


def _fill(where: Path) -> Path:
    junk = where / "junk"
    with open(junk, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\xff" * 4096)
        except OSError:
            pass
    return junk


def test_full_filesystem_uses_the_reserve_then_holds_alarms_in_memory(tmp_path: Path) -> None:
    fs = tmp_path / "fs"
    if not _mount_tmpfs(fs, 2048):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        asyncio.run(_full_filesystem(fs))
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


async def _full_filesystem(fs: Path) -> None:
    problems: list[tuple[str, int]] = []
    ob = Outbox(fs / "o.sqlite", reserve_bytes=256 * 1024)
    gc = GroupCommitter(ob, lambda: 0.0, lambda p, d, held: problems.append((p, len(held))))
    gc.RETRY_MAX_S = 0.2
    gc.start()
    for i in range(20):
        await gc.append(*msg("status", f"s{i}", pad=2000))
    junk = _fill(fs)
    # The disk is full; what SQLite already holds (free pages, the WAL's tail) goes first,
    # then the reserve makes room: every alarm is stored, and the hub is told.
    n = 0
    while not problems and n < 300:
        await asyncio.wait_for(gc.append(*msg("alarm", f"a{n}", pad=2000)), 10)
        n += 1
    assert problems == [("disk_full", 0)]
    assert not ob.reserve_path.exists()
    # Keep going until even the reserve is used up: telemetry gives way, then nothing fits
    # and alarms wait in memory, unacknowledged, while the hub keeps running.
    waiting = [asyncio.create_task(gc.append(*msg("alarm", f"a{i}", pad=20000)))
               for i in range(n, n + 50)]
    for _ in range(500):
        if any(p == "write_failed" for p, _ in problems):
            break
        await asyncio.sleep(0.02)
    assert any(p == "write_failed" for p, _ in problems)
    assert gc.waiting > 0 and not all(t.done() for t in waiting)
    assert "a0" in ob.ids()
    junk.unlink()  # space again: every held alarm gets stored
    await asyncio.wait_for(asyncio.gather(*waiting), 20)
    stored = set(ob.ids())
    assert {f"a{i}" for i in range(n + 50)} <= stored
    assert ob.stats().dropped > 0  # telemetry made room first
    await gc.stop()
    ob.close()


def test_write_error_names_the_file(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob._db.execute("DROP TABLE outbox")
    with pytest.raises(OutboxWriteError, match="o.sqlite"):
        ob.append_many([msg("alarm", "x")], now=0.0)



def test_held_priority_lets_only_its_allowed_rows_through(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many([msg("alarm", "a1"), msg("alarm", "a2"), msg("technical_alarm", "t1"),
                    msg("status", "s1")], now=0.0)
    a1 = ob.next_batch(1, set())[0]
    assert ids(ob.next_batch(10, set(), hold={1}, allow={a1.seq})) == ["a1", "t1", "s1"]
    assert ids(ob.next_batch(10, set(), hold={1, 3})) == ["s1"]


def test_a_receipt_naming_260000_ids_is_confirmed_in_chunks(tmp_path: Path) -> None:
    """Before: one SQL statement per receipt, "too many SQL variables", retried forever."""
    ob = Outbox(tmp_path / "o.sqlite")
    ob.append_many([msg("alarm", "a1"), msg("alarm", "a2")], 0.0)
    many = [f"x{i}" for i in range(260_000)] + ["a2", "a1", "a2"]
    assert ids(ob.confirm(many)) == ["a1", "a2"]
    assert ob.depth() == 0 and ob.stats().used_bytes == 0
    ob.append_many([msg("alarm", f"b{i}") for i in range(2000)], 0.0)
    seqs = [r.seq for r in ob.next_batch(2000, set())]
    ob.settle(seqs[:1500], [(s, 5.0) for s in seqs[1500:]])
    assert ob.depth() == 500


def test_decisions_commit_in_order_with_their_state(tmp_path: Path) -> None:
    from hub.delivery.outbox import Decision

    ob = Outbox(tmp_path / "o.sqlite")
    ob.commit([Decision([msg("alarm", "a1")], {"d1": 5}, {"x": b"1", "y": b"1"},
                        [("a1", "d1", 5, b"x")]),
               Decision([], {"d1": None, "d2": 9}, {"x": b"2", "y": None})], 0.0)
    db = ob.store.conn
    assert db.execute("SELECT device, counter FROM counters").fetchall() == [("d2", 9)]
    assert db.execute("SELECT key, value FROM rule_items").fetchall() == [("x", b"2")]
    assert db.execute("SELECT msg_id, delivered FROM awaiting_receipt").fetchall() == [
        ("a1", 0)]
    assert ob.ids() == ["a1"] and ob.commits == 1


def test_msg_id_has_one_index_so_each_alarm_writes_fewer_wal_pages(tmp_path: Path) -> None:
    """Older hubs added an index on msg_id beside its UNIQUE constraint's own: one more WAL
    page on every insert and delete, so more checkpoints (fsyncs) per alarm."""
    path = tmp_path / "o.sqlite"
    ob = Outbox(path)
    ob._db.execute("CREATE INDEX outbox_id ON outbox(msg_id)")  # as an older hub left it
    ob.close()
    ob = Outbox(path)
    names = {n for (n,) in ob._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "outbox_id" not in names
    plan = ob._db.execute("EXPLAIN QUERY PLAN DELETE FROM outbox WHERE msg_id IN (?, ?)",
                          ("a", "b")).fetchall()
    assert "USING INDEX sqlite_autoindex_outbox" in str(plan)
    ob.close()


def test_the_next_rows_are_read_while_a_write_back_holds_the_database(tmp_path: Path) -> None:
    """A write-back or a WAL checkpoint holds the writer for as long as the disk takes
    (100-350 ms seen on a busy machine); the link's next rows must not wait for it."""
    import threading

    ob = Outbox(tmp_path / "o.sqlite", reserve_bytes=0)
    ob.append_many([msg("alarm", "a1")], 0.0)
    holding, release = threading.Event(), threading.Event()

    def write_back() -> None:
        with ob.store.transaction(durable=False) as db:
            db.execute("DELETE FROM outbox")  # not committed yet
            holding.set()
            release.wait(10)

    t = threading.Thread(target=write_back)
    t.start()
    try:
        assert holding.wait(10)
        got: list[list[str]] = []
        reader = threading.Thread(target=lambda: got.append(
            [r.msg_id for r in ob.next_batch(10, set())]))
        reader.start()
        reader.join(5)
        assert got == [["a1"]], "next_batch waited for the writer"  # the last commit's view
    finally:
        release.set()
        t.join()
    assert ob.next_batch(10, set()) == []
    ob.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["status", "alarm"]), st.integers(0, 40)),
                min_size=1, max_size=60),
       st.data())
def test_write_back_deletes_exactly_the_done_rows_and_keeps_the_byte_count(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, int]], data: st.DataObject,
) -> None:
    """Done rows are deleted as runs of consecutive seqs: never a row between two runs,
    and the budget's byte count stays what the file holds."""
    path = tmp_path_factory.mktemp("o") / "o.sqlite"
    ob = Outbox(path, reserve_bytes=0)
    try:
        ob.append_many([msg(k, f"{k}-{i}", pad=pad) for i, (k, pad) in enumerate(rows)], 0.0)
        stored = ob.next_batch(len(rows), set())
        done = data.draw(st.lists(st.sampled_from([r.seq for r in stored]), unique=True))
        ob.settle(done, [])
        left = {r.seq for r in ob.next_batch(len(rows), set())}
        assert left == {r.seq for r in stored} - set(done)
        used = ob.stats().used_bytes
    finally:
        ob.close()
    again = Outbox(path, reserve_bytes=0)  # counts the bytes from the file
    try:
        assert again.stats().used_bytes == used
    finally:
        again.close()
