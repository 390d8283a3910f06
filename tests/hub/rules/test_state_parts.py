"""The rule state in the database is one row per part (hub/rules/store.py): each decision
writes only the parts it changed. What is on disk must always join back into exactly the
engine's snapshot, whatever happened in between (presses, cancels, acknowledgements,
expiries, clock steps, reloads, restarts), and a decision's writes must not grow with the
number of alarms held."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from hub.decode.decoder import Report
from hub.rules.engine import RuleEngine
from hub.rules.settings import BedExitRule, RulesConfig
from hub.rules.store import RuleStateStore, read_snapshot
from hub.rules.windows import parse_window
from hub.store import FULL, Database, write_rule_state
from protocols import bthome
from tests.hub.rules.test_rules import DEVICES, OSLO, at, counter_ids

CFG = RulesConfig(bed_exit=(BedExitRule("night", "bed-1", parse_window("22:00-06:00"), 30),))


def _report(engine: RuleEngine, dev: str, t: float, **values: int) -> None:
    engine.on_report(Report(DEVICES[dev], t, -60, dict(values), None), t)


def _plain(snap: dict[str, Any]) -> Any:
    return json.loads(json.dumps(snap, sort_keys=True))


class PartsOnDisk(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.db = Database(":memory:")
        self.ids = counter_ids()
        self.now = at("2026-11-26 21:00")
        self._restart()
        self.biggest = 0

    def _restart(self) -> None:
        self.engine = RuleEngine("home-1", OSLO, self.ids, devices=DEVICES, settings=CFG)
        self.store = RuleStateStore(self.db)
        self.store.load_into(self.engine)
        with self.db.lock:
            held = read_snapshot(self.db.conn) is not None
        self.expected = _plain(self.engine.snapshot()) if held else None

    def _commit(self) -> None:
        if self.engine.changed:  # what a decision takes: the state as it is now
            self.expected = _plain(self.engine.snapshot())
        changes = self.store.changes(self.engine)
        if changes:
            with self.db.transaction() as conn:
                write_rule_state(conn, changes)

    @rule(n=st.integers(1, 4), kind=st.sampled_from([bthome.BUTTON_PRESS,
                                                     bthome.BUTTON_DOUBLE_PRESS]))
    def presses(self, n: int, kind: int) -> None:
        for _ in range(n):
            self.now += 1
            _report(self.engine, "pendant-1", self.now, button=kind)
            self._commit()

    @rule()
    def cancel(self) -> None:
        self.now += 1
        _report(self.engine, "pendant-1", self.now, button=bthome.BUTTON_HOLD_RELEASE)
        self._commit()

    @rule(v=st.sampled_from([0, 1]), dev=st.sampled_from(["bed-1", "door-1"]))
    def sensor(self, v: int, dev: str) -> None:
        self.now += 5
        _report(self.engine, dev, self.now, **({"occupancy": v} if dev == "bed-1"
                                                else {"door": v}))
        self._commit()

    @rule(pick=st.integers(0, 10))
    def acknowledge(self, pick: int) -> None:
        active = list(self.engine.book.active.values())
        if active:
            self.engine.acknowledge(active[pick % len(active)]["alarm_id"], self.now, "centre")
            self._commit()

    @rule(s=st.sampled_from([10, 59, 61, 600, 3600]))
    def wait(self, s: int) -> None:
        self.now += s
        self.engine.tick(self.now)
        self._commit()

    @rule(delta=st.sampled_from([-2400.0, -30.0, 45.0, 3600.0]))
    def clock_step(self, delta: float) -> None:
        self.engine.clock_stepped(delta, self.now - 120, self.now + delta)
        self.now += delta
        self._commit()

    @rule()
    def reload(self) -> None:
        self.engine, _ = self.engine.reconfigured(DEVICES, CFG, self.now)
        self._commit()

    @rule()
    def restart(self) -> None:
        self._restart()

    @invariant()
    def disk_is_the_engine(self) -> None:
        if not hasattr(self, "engine"):
            return
        with self.db.lock:
            on_disk = read_snapshot(self.db.conn)
        assert (on_disk and _plain(on_disk)) == self.expected

    def teardown(self) -> None:
        if hasattr(self, "db"):
            self.db.close()


PartsOnDisk.TestCase.settings = settings(max_examples=60, stateful_step_count=30,
                                         deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestPartsOnDisk = PartsOnDisk.TestCase


def test_a_press_writes_its_own_alarm_not_every_alarm_held() -> None:
    """Before: every decision wrote the whole state; with 300 presses held in their cancel
    window that was 90 kB (22 WAL pages) and 0.7 ms of JSON per advert."""
    engine = RuleEngine("home-1", OSLO, counter_ids(), devices=DEVICES, settings=CFG)
    store = RuleStateStore(Database(":memory:"))
    store.load_into(engine)
    t = at("2026-11-26 10:00")
    sizes = []
    for i in range(300):
        _report(engine, "pendant-1", t + i * 0.1, button=bthome.BUTTON_PRESS)
        changes = store.changes(engine)
        assert changes is not None
        sizes.append(sum(len(v or b"") for v in changes.values()))
    assert len(engine.book.active) == 300
    assert sizes[-1] < 2 * sizes[1], sizes[:3] + sizes[-3:]
    assert FULL not in changes  # type: ignore[operator]


def test_the_one_row_state_of_an_older_hub_is_taken_over_as_parts() -> None:
    db = Database(":memory:")
    engine = RuleEngine("home-1", OSLO, counter_ids(), devices=DEVICES, settings=CFG)
    _report(engine, "pendant-1", at("2026-11-26 10:00"), button=bthome.BUTTON_PRESS)
    old = json.dumps(engine.snapshot()).encode()
    with db.transaction() as conn:
        conn.execute("INSERT INTO rule_state(id, snapshot) VALUES (1, ?)", (old,))
    fresh = RuleEngine("home-1", OSLO, counter_ids(), devices=DEVICES, settings=CFG)
    store = RuleStateStore(db)
    assert store.load_into(fresh)
    assert fresh.book.active.keys() == engine.book.active.keys()
    changes = store.changes(fresh)
    assert changes is not None and FULL in changes
    with db.transaction() as conn:
        write_rule_state(conn, changes)
        assert conn.execute("SELECT COUNT(*) FROM rule_state").fetchone() == (0,)
        assert _plain(read_snapshot(conn) or {}) == _plain(engine.snapshot())
