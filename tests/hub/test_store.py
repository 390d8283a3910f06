"""The hub's one database (hub/store.py): what a crash can leave on disk, damaged and missing
files, file modes. Crash images are copies of the data directory taken at an instant, which
is what kill -9 or a power cut (with honoured fsyncs) leaves behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any

from hub.config import keys
from hub.config import settings as config
from hub.delivery.acks import AckSender, AckStore
from hub.delivery.outbox import Outbox
from hub.radio.scanner import Advert
from hub.rules.store import read_snapshot
from hub.service import Hub
from hub.store import DB_NAME, Database
from protocols import ack, bthome
from tests.hub.admin.test_server import DEVICES, KEYS, write_config_dir
from tests.hub_support import outgoing, running, until
from tests.protocols.test_ccm import Ecb
from tools.centre.mosquitto import free_port

PENDANT, DOOR = "pendant-1", "door-1"


class Radio:
    """Records the acknowledgements the hub transmits."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def start(self, on_advert: Any) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def transmit(self, mac: str, data: bytes) -> None:
        self.sent.append((mac, data))

    def acks(self, dev: str) -> list[tuple[int, int]]:
        aes = ack.host_aes(KEYS[dev])
        mac = DEVICES[dev][1]
        return [ack.decode(aes, bthome.mac_bytes(mac), f) for m, f in self.sent if m == mac]


def advert(dev: str, counter: int, objs: list[tuple[int, int]], trigger: bool = True) -> Advert:
    mac = DEVICES[dev][1]
    svc = bthome.encrypt_service_data(Ecb(KEYS[dev]), bthome.mac_bytes(mac),
                                      bthome.encode_objects(objs), counter, trigger)
    return Advert(mac, -60, bytes(svc), 0.0)


def press(counter: int) -> Advert:
    return advert(PENDANT, counter, [(bthome.PACKET_ID, counter & 0xFF),
                                     (bthome.BUTTON, bthome.BUTTON_PRESS)])


def heartbeat(dev: str, counter: int) -> Advert:
    return advert(dev, counter, [(bthome.PACKET_ID, counter & 0xFF), (bthome.BATTERY, 90)],
                  trigger=False)


def hub_in(d: Path, radio: Radio | None = None) -> Hub:
    """A hub whose broker is not there: everything it stores stays in the outbox."""
    if not (d / "site.toml").exists():
        write_config_dir(d, free_port())
    hub = Hub(keys.attach(config.load(d)))
    radio = radio or Radio()
    hub.scanner = radio  # type: ignore[assignment]
    hub.acks.transmit = radio.transmit
    return hub


def crash_image(data: Path, into: Path) -> Path:
    """The files as they are at this instant (SQLite's -wal included)."""
    into.mkdir(parents=True)
    for p in data.iterdir():
        if p.is_file() and not p.name.endswith(".sock"):
            shutil.copy2(p, into / p.name)
    return into


def read_image(img: Path) -> tuple[dict[str, int], list[dict[str, Any]], dict[str, Any]]:
    """(counters, outbox payloads, rule state) in a crash image, wherever the hub keeps them."""
    counters: dict[str, int] = {}
    payloads: list[dict[str, Any]] = []
    for f in img.glob("*.sqlite"):
        db = sqlite3.connect(f)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "counters" in tables:
                counters.update(db.execute("SELECT device, counter FROM counters").fetchall())
            if "outbox" in tables:
                payloads += [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox")]
            if "rule_state" in tables:
                snap = read_snapshot(db)
                if snap is not None:
                    return counters, payloads, snap
        finally:
            db.close()
    legacy = img / "rules_state.json"
    return counters, payloads, json.loads(legacy.read_text()) if legacy.exists() else {}


def assert_consistent(img: Path, pressed: int) -> None:
    counters, payloads, rules = read_image(img)
    raised = [p for p in payloads if p.get("type") == "alarm_button" and p["device"] == PENDANT]
    if counters.get(PENDANT, 0) >= pressed:
        # The repeat of that frame will be dropped as a repeat: its alarm must be stored.
        assert raised, f"{img.name}: counter {counters[PENDANT]} on disk, its alarm is not"
    ids = {p.get("alarm_id") for p in payloads}
    for cause, a in rules.get("active", {}).items():
        assert a["alarm_id"] in ids, f"{img.name}: rule state shows {cause} raised, no message"


def test_no_crash_image_holds_a_counter_or_rule_state_ahead_of_its_alarm(tmp_path: Path) -> None:
    hub = hub_in(tmp_path / "etc")
    data = hub.cfg.data_dir

    async def main() -> None:
        async with running(hub):
            hub.on_advert(press(10))  # its decision is now waiting for the disk ...
            hub.on_advert(heartbeat(DOOR, 5))  # ... when a second advert arrives
            crash_image(data, tmp_path / "while-pending")
            await until(lambda: any(p["type"] == "alarm_button" for p in
                                    map(json.loads, _payloads(hub))), what="alarm stored")
            await until(lambda: not hub.committer._pending, what="idle")
            crash_image(data, tmp_path / "after")

    asyncio.run(main())
    assert_consistent(tmp_path / "while-pending", 10)
    assert_consistent(tmp_path / "after", 10)
    counters, payloads, rules = read_image(tmp_path / "after")
    assert counters == {PENDANT: 10, DOOR: 5} and rules["active"]


def _payloads(hub: Hub) -> list[bytes]:
    db = sqlite3.connect(hub.cfg.data_dir / DB_NAME)
    try:
        return [bytes(p) for (p,) in db.execute("SELECT payload FROM outbox")]
    finally:
        db.close()


def test_one_durable_commit_per_alarm_decision(tmp_path: Path) -> None:
    hub = hub_in(tmp_path / "etc")

    async def main() -> None:
        async with running(hub):
            await until(lambda: hub.committer._task is not None, what="started")
            before = hub.outbox.commits
            hub.on_advert(press(20))
            await until(lambda: hub.outbox.depth() >= 1, what="stored")
            await until(lambda: not hub.committer._pending and not hub._tasks, what="idle")
            # Counter, rule state, the alarm and its "received" obligation: one commit.
            assert hub.outbox.commits - before == 1

    asyncio.run(main())


def test_help_is_coming_is_owed_in_the_same_transaction_as_the_confirmation(
        tmp_path: Path) -> None:
    """Killed between confirming the alarm and telling the pendant: the restarted hub still
    tells it (before: the obligation was only in memory, the pendant stayed on "received")."""
    d = tmp_path / "etc"
    radio = Radio()
    hub = hub_in(d, radio)

    async def first() -> str:
        async with running(hub):
            hub.on_advert(press(30))
            await until(lambda: radio.acks(PENDANT) == [(30, ack.RECEIVED)], what="received")
            (msg_id,) = hub.outbox.ids()
            hub.outbox.confirm([msg_id])  # the receipt is in; the crash comes now
            # What kill -9 leaves: the files as they are, nothing else runs.
            crash_image(hub.cfg.data_dir, tmp_path / "image")
        return msg_id

    asyncio.run(first())
    shutil.rmtree(hub.cfg.data_dir)
    shutil.copytree(tmp_path / "image", hub.cfg.data_dir)
    radio2 = Radio()
    hub2 = hub_in(d, radio2)

    async def after_restart() -> None:
        async with running(hub2):
            assert hub2.outbox.depth() == 0
            await until(lambda: radio2.acks(PENDANT) == [(30, ack.DELIVERED)],
                        what="help is coming after the restart")

    asyncio.run(after_restart())
    # Heard: nothing is owed any more.
    assert AckStore(hub2.cfg.data_dir / DB_NAME).load(hub2.clock.now()) == []


def _technical(hub: Hub) -> list[dict[str, Any]]:
    return [p for p in map(json.loads, _payloads(hub)) if p["kind"] == "technical_alarm"]


def test_a_damaged_database_is_set_aside_and_the_hub_starts_and_says_so(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    write_config_dir(d, free_port())
    data = d / "var"
    data.mkdir()
    (data / DB_NAME).write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    hub = hub_in(d)

    async def main() -> None:
        async with running(hub):
            await until(lambda: _technical(hub), what="technical alarm")
            (t,) = _technical(hub)
            assert t["type"] == "store_damaged" and t["state"] == "raised"
            hub.on_advert(press(40))  # and alarms are stored as ever
            await until(lambda: len(hub.outbox.ids()) == 2, what="alarm stored")

    asyncio.run(main())
    aside = list(data.glob(f"{DB_NAME}.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes().endswith(b"\xff" * 100)


def test_a_truncated_outbox_is_reported_and_what_is_readable_is_salvaged(
        tmp_path: Path) -> None:
    d = tmp_path / "etc"
    hub = hub_in(d)

    async def fill() -> None:
        async with running(hub):
            for i in range(200):
                hub.on_advert(press(100 + i))
            await until(lambda: hub.outbox.depth() == 200, what="stored")

    asyncio.run(fill())
    path = hub.cfg.data_dir / DB_NAME
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    hub2 = hub_in(d)

    async def main() -> None:
        async with running(hub2):
            await until(lambda: _technical(hub2), what="technical alarm")
            assert _technical(hub2)[0]["type"] == "store_damaged"

    asyncio.run(main())
    assert hub2.outbox.salvaged > 0 or list(hub2.cfg.data_dir.glob(f"{DB_NAME}.damaged-*"))


def test_an_outbox_deleted_while_the_hub_was_stopped_is_detected(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    hub = hub_in(d)

    async def fill() -> None:
        async with running(hub):
            hub.on_advert(press(50))
            await until(lambda: hub.outbox.depth() == 1, what="stored")

    asyncio.run(fill())
    (hub.cfg.data_dir / DB_NAME).unlink()
    hub2 = hub_in(d)

    async def main() -> None:
        async with running(hub2):
            await until(lambda: _technical(hub2), what="technical alarm")
            assert _technical(hub2)[0]["type"] == "store_missing"

    asyncio.run(main())
    # Reported once: the next start is on the file the hub made.
    assert Database(hub2.cfg.data_dir / DB_NAME).problems == []


def test_a_deleted_data_directory_shows_in_the_hubs_state(tmp_path: Path) -> None:
    """The marker goes with the directory, so the hub itself cannot tell this from a new
    installation; its state tells the centre: a new generation, started new."""
    d = tmp_path / "etc"
    hub = hub_in(d)
    first = hub.status()["store"]
    assert first["new"] and len(first["generation"]) == 32
    hub.db.close()
    again = hub_in(d)
    assert again.status()["store"] == {"generation": first["generation"], "new": False}
    again.db.close()
    shutil.rmtree(again.cfg.data_dir)
    wiped = hub_in(d)
    st = wiped.status()["store"]
    assert st["new"] and st["generation"] != first["generation"]
    wiped.db.close()


def test_an_outbox_replaced_by_an_empty_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    Outbox(path).close()
    path.write_bytes(b"")  # truncated to nothing: SQLite would take it for a new database
    assert [p.type for p in Database(path).problems] == ["store_missing"]


def test_data_files_are_created_private(tmp_path: Path) -> None:
    hub = hub_in(tmp_path / "etc")

    async def main() -> None:
        async with running(hub):
            hub.on_advert(press(60))
            await until(lambda: hub.outbox.depth() == 1, what="stored")
            await until(lambda: (hub.cfg.data_dir / "events.jsonl").exists(), what="event log")
            check(hub.cfg.data_dir)

    def check(data: Path) -> None:
        names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir() if p.is_file()}
        assert {DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", "events.jsonl"} <= set(names)
        loose = {n: oct(m) for n, m in names.items() if m & 0o037}
        assert not loose, f"readable or writable by others: {loose}"

    asyncio.run(main())


def test_standalone_ack_store_keeps_the_obligation_until_the_device_heard_it(
        tmp_path: Path) -> None:
    """AckStore on its own (no outbox): "help is coming" owed at the restart."""
    from hub.config.settings import Device

    dev = Device(PENDANT, "pendant", DEVICES[PENDANT][1], "", KEYS[PENDANT])
    path = tmp_path / DB_NAME
    ob = Outbox(path)
    st = AckStore(ob.store)
    ob.append_many([("t/alarm", outgoing("alarm", "m1"))], 0.0)
    st.put("m1", PENDANT, 7, b"adv", 0.0)
    ob.confirm(["m1", "m1", "not-there"])
    assert st.load(0.0) == [("m1", PENDANT, 7, b"adv", True)]
    radio = Radio()

    async def main() -> None:
        acks = AckSender(radio.transmit, store=st, devices={PENDANT: dev}, now=lambda: 0.0)
        acks.start()
        await until(lambda: radio.acks(PENDANT) == [(7, ack.DELIVERED)], what="sent")
        await until(lambda: st.load(0.0) == [], what="row gone")
        await acks.close()

    asyncio.run(main())


def test_an_older_hubs_counters_are_taken_over_so_replays_stay_refused(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    write_config_dir(d, free_port())
    data = d / "var"
    data.mkdir()
    old = sqlite3.connect(data / "counters.sqlite")
    old.execute("CREATE TABLE counters(device TEXT PRIMARY KEY, counter INTEGER NOT NULL)")
    old.execute("INSERT INTO counters VALUES (?, 500)", (PENDANT,))
    old.commit()
    old.close()
    (data / "acks.sqlite").write_bytes(b"not a database at all" * 100)
    hub = hub_in(d)
    assert hub.counters.last(PENDANT) == 500
    hub.decoder.on_alert = None  # (the technical alarm needs the running hub)
    assert hub.decoder.decode(press(400)) is None  # a recording from before the upgrade
    assert hub.decoder.stats["replay"] == 1
    assert (data / "counters.sqlite.imported").exists()
    assert [p.type for p in hub.db.problems] == ["store_damaged"]  # the acks file
    hub.db.close()


def test_the_wal_files_stay_within_the_reserve_kept_for_alarms(tmp_path: Path) -> None:
    """Before: counters and acks had WAL files of their own, checkpointed at SQLite's default
    1000 pages and never truncated: megabytes the disk-full reserve did not cover."""
    hub = hub_in(tmp_path / "etc")
    data = hub.cfg.data_dir

    async def main() -> None:
        async with running(hub):
            for i in range(1500):
                hub.on_advert(heartbeat(DOOR, 10 + i))
                if i % 50 == 0:
                    hub.on_advert(press(1000 + i))
                await asyncio.sleep(0)  # one decision at a time: 1,500 commits
            await until(lambda: hub.counters.last(DOOR) == 1509 and not hub.committer._pending,
                        what="all committed")
            wal = sum(p.stat().st_size for p in data.glob("*-wal"))
            assert wal <= hub.outbox.reserve_bytes, wal

    asyncio.run(main())


def test_an_unreadable_rule_state_is_kept_aside_and_the_engine_starts_empty(
        tmp_path: Path) -> None:
    from hub.rules.store import RuleStateStore
    from hub.store import write_rule_state

    d = tmp_path / "etc"
    write_config_dir(d, free_port())
    db = Database(d / "var" / DB_NAME)
    with db.transaction() as conn:
        write_rule_state(conn, {"header": b'{"version": 1, "site": '})
    hub = hub_in(d)  # starts
    assert hub.rules.book.active == {}
    assert (d / "var" / "rules_state.corrupt").read_bytes() == b'header {"version": 1, "site": '
    assert not RuleStateStore(hub.db).load_into(hub.rules)
    hub.db.close()
    db.close()


def test_random_damage_never_stops_the_hub_from_starting(tmp_path: Path) -> None:
    """As the chaos soak does it: garbage at a random place of a database with messages in
    it (before: a damaged page could make the integrity report itself undecodable, and the
    hub exited at start)."""
    import random

    rng = random.Random(5)
    good = tmp_path / "good.sqlite"
    ob = Outbox(good, reserve_bytes=0)
    ob.append_many([("t/alarm", outgoing("alarm", f"a{i}", pad=300)) for i in range(300)],
                   0.0)
    ob.close()
    port = free_port()
    for trial in range(80):
        d = tmp_path / f"t{trial}"
        write_config_dir(d, port)
        (d / "var").mkdir()
        path = d / "var" / DB_NAME
        shutil.copy(good, path)
        with open(path, "r+b") as f:
            # Half of them in the first page, where the schema is (as the chaos soak does).
            f.seek(rng.randint(0, 4096 if trial % 2 else path.stat().st_size - 1))
            f.write(bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096))))
        hub = hub_in(d)
        assert set(hub.outbox.ids()) <= {f"a{i}" for i in range(300)}
        assert [p.type for p in hub.db.problems] in ([], ["store_damaged"])
        hub.db.close()


def test_only_the_two_newest_damaged_copies_are_kept(tmp_path: Path) -> None:
    """Found by the chaos soak: damaged copies piled up until the disk was full."""
    path = tmp_path / DB_NAME
    for i in range(4):
        path.write_bytes(b"garbage %d" % i * 1000)
        os.utime(path, (1000 + i, 1000 + i))
        assert [p.type for p in Database(path).problems] == ["store_damaged"]
        Database(path).close()
    aside = sorted(tmp_path.glob(f"{DB_NAME}.damaged-*[0-9]"))
    assert len(aside) == 2


def test_the_hub_starts_on_a_full_disk_with_the_reserve(tmp_path: Path) -> None:
    """Found by the chaos soak: a restart on a full disk failed at `journal_mode=WAL`."""
    import subprocess

    import pytest

    from tests.hub.delivery.test_outbox import _fill, _mount_tmpfs

    fs = tmp_path / "fs"
    if not _mount_tmpfs(fs, 2048):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        path = fs / DB_NAME
        Outbox(path, reserve_bytes=1 << 20).close()
        path.unlink()  # a fresh start, as after a damaged file was set aside
        (fs / (DB_NAME + ".id")).unlink()
        _fill(fs)
        ob = Outbox(path, reserve_bytes=1 << 20)
        ob.append_many([("t/alarm", outgoing("alarm", "a1"))], 0.0)
        assert ob.ids() == ["a1"]
        ob.close()
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def test_a_damaged_schema_is_set_aside(tmp_path: Path) -> None:
    """The chaos soak also found SQLite's error message quoting a damaged schema in bytes
    that are not UTF-8: decoding the message raised UnicodeDecodeError at open. Both the
    check and the hub's open treat that as damage."""
    path = tmp_path / DB_NAME
    Outbox(path).close()
    data = bytearray(path.read_bytes())
    at = data.find(b"CREATE TABLE outbox")
    assert at > 0
    data[at:at + 2] = b"\xe7\xff"  # the SQL no longer parses, and is not UTF-8
    path.write_bytes(bytes(data))
    db = Database(path)
    assert [p.type for p in db.problems] == ["store_damaged"]
    db.close()


def test_ack_state_is_bounded_to_the_last_thousand_alarms(tmp_path: Path) -> None:
    st = AckStore(tmp_path / DB_NAME)
    for i in range(1200):
        st.put(f"m{i}", PENDANT, i, None, float(i))
    rows = st.load(1200.0)
    assert len(rows) == 1000 and rows[0][0] == "m200" and rows[-1][0] == "m1199"
    st.close()


def test_the_wal_is_checkpointed_while_the_hub_is_idle_not_in_an_alarms_commit(
        tmp_path: Path) -> None:
    """A checkpoint is three fsyncs: SQLite runs it inside the commit that crosses its
    threshold, so the alarm of that commit waited for four. The hub runs it when nothing is
    waiting to be stored; SQLite's own (at 1000 pages) is only the backstop."""
    from hub import store

    hub = hub_in(tmp_path / "etc")
    ran: list[bool] = []
    real = hub.db.checkpoint_if_due

    def spy() -> bool:
        r = real()
        ran.append(r and not hub.committer._pending)
        return r

    hub.db.checkpoint_if_due = spy  # type: ignore[method-assign]

    async def main() -> None:
        async with running(hub):
            for i in range(store.IDLE_CHECKPOINT_AFTER + 10):
                hub.on_advert(heartbeat(DOOR, 10 + i))
                await until(lambda: not hub.committer._pending, what="committed")
            await until(lambda: any(ran), what="an idle checkpoint")
            assert hub.db.since_checkpoint < store.IDLE_CHECKPOINT_AFTER
            (auto,) = hub.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()
            assert auto == store.WAL_PAGES

    asyncio.run(main())


def test_damage_found_while_running_stops_the_hub_and_the_next_start_sets_it_aside(
        tmp_path: Path) -> None:
    """Before: a commit SQLite refused as "database disk image is malformed" was retried for
    ever; nothing more was stored, and a restart that passed quick_check kept the file."""
    d = tmp_path / "etc"
    hub = hub_in(d)
    data = hub.cfg.data_dir
    path = data / DB_NAME

    async def main() -> None:
        async with running(hub):
            hub.on_advert(press(70))
            await until(lambda: hub.outbox.depth() == 1, what="stored")
            with hub.db.lock:
                hub.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = path.stat().st_size
            with open(path, "r+b") as f:  # every page but the first (the header) garbage
                f.seek(4096)
                f.write(os.urandom(size - 4096))
            other = sqlite3.connect(path)  # a write elsewhere: the hub's page cache is stale
            other.execute("PRAGMA user_version = 7")
            other.close()
            hub.on_advert(press(71))
            await until(lambda: hub.fatal, what="the hub giving up on the file")
            assert hub._stop is not None and hub._stop.is_set()

    asyncio.run(main())
    assert "damaged" in hub.fatal
    assert (data / f"{DB_NAME}.damage-found").exists()
    hub2 = hub_in(d)  # as systemd restarts it
    assert [p.type for p in hub2.db.problems] == ["store_damaged"]
    assert list(data.glob(f"{DB_NAME}.damaged-*"))
    assert not (data / f"{DB_NAME}.damage-found").exists()

    async def again() -> None:
        async with running(hub2):
            hub2.on_advert(press(71))  # the pendant repeats the press it was not told of
            await until(lambda: any(p.get("type") == "alarm_button"
                                    for p in map(json.loads, _payloads(hub2))),
                        what="the repeated press stored")

    asyncio.run(again())
    hub2.db.close()


def test_a_file_the_running_hub_found_damaged_is_set_aside_even_if_quick_check_passes(
        tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    Database(path).close()
    db = Database(path)
    db.found_damaged("database disk image is malformed")
    db.close()
    again = Database(path)
    assert [p.type for p in again.problems] == ["store_damaged"]
    assert "found damaged while running" in again.problems[0].detail
    assert list(tmp_path.glob(f"{DB_NAME}.damaged-*"))
    again.close()
    assert Database(path).problems == []  # reported once
