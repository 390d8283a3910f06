"""The rule engine: reports and clock ticks in, messages out. Pure: never reads the clock.

All mutable state (rule timers, the alarm book, the last values per device) lives in one
JSON-serialisable dict, so `snapshot()` after a change and `restore()` at start carry a pending
"not back in bed" across a restart, and a reload keeps the state of rules that still exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from hub.clock import iso
from hub.rules.alarms import CARE, TECHNICAL, AlarmBook
from hub.rules.base import Ctx, Rule, State, event_time, is_late
from hub.rules.care import Activity, BedExit, Inactivity, Wandering
from hub.rules.outgoing import Outgoing, new_id
from hub.rules.settings import RulesConfig
from hub.rules.technical import Battery, Charging, Immediate, Silent
from protocols import mqtt_schema

if TYPE_CHECKING:
    from hub.config.settings import Device
    from hub.decode.decoder import Report

STATE_VERSION = 1
CLOCK_CAUSE = "clock_unsynchronised"


def build_rules(cfg: RulesConfig) -> list[Rule]:
    rules: list[Rule] = [Immediate(cfg.button, cfg.fall), Activity()]
    rules += [BedExit(r) for r in cfg.bed_exit]
    rules += [Wandering(r) for r in cfg.wandering]
    rules += [Inactivity(r) for r in cfg.inactivity]
    rules += [Battery(cfg.battery), Charging(cfg.charging), Silent(cfg.silent)]
    return rules


class RuleEngine:
    def __init__(
        self,
        site: str,
        tz: ZoneInfo,
        id_factory: Callable[[], str] = new_id,
        *,
        devices: Mapping[str, Device] | None = None,
        settings: RulesConfig | None = None,
    ) -> None:
        self.site = site
        self.tz = tz
        self.new_id = id_factory
        self.book = AlarmBook(site, tz, id_factory)
        self.devices: Mapping[str, Device] = devices or {}
        self.settings = settings or RulesConfig()
        self.rules = build_rules(self.settings)
        self.state: dict[str, State] = {}  # rule key -> its state
        self.last_values: dict[str, dict[str, int]] = {}
        self.seen: dict[str, list[float]] = {}  # device -> [time, rssi] of its last report
        self.changed = False  # set by every call that changed state; the caller persists

    @property
    def ctx(self) -> Ctx:
        return Ctx(self.book, self.tz, self.devices, self.state.setdefault(Activity.key, {}))

    def _st(self, rule: Rule) -> State:
        return self.state.setdefault(rule.key, {})

    def on_report(self, report: Report, now: float) -> list[Outgoing]:
        dev = report.device.id
        t = event_time(report, now)
        newest = self.seen.get(dev)
        if newest is not None and is_late(t, newest[0], now):
            # Older than what this device already told us: its values are history, not the
            # current state, and a state it repeats is no change. Each rule decides what a
            # late report still means (a press is still a press).
            changed: dict[str, int] = {}
        else:
            prev = self.last_values.get(dev, {})
            changed = {k: v for k, v in report.values.items() if prev.get(k) != v}
            self.last_values[dev] = {**prev, **report.values}
            self.seen[dev] = [t, float(report.rssi)]
        ctx = self.ctx
        out: list[Outgoing] = []
        for rule in self.rules:
            out += rule.on_report(ctx, self._st(rule), report, changed, now)
        self.changed = True
        return out

    def tick(self, now: float) -> list[Outgoing]:
        """Fire due timers. Call often (the hub does every second); any instant works."""
        ctx = self.ctx
        out: list[Outgoing] = []
        for rule in self.rules:
            out += rule.tick(ctx, self._st(rule), now)
        before = len(self.book.active)
        self.book.expire(now)
        if out or len(self.book.active) != before:
            self.changed = True
        return out

    # -- the clock (hub/clock.py ClockWatch tells the engine) -------------------------------
    def clock_stepped(self, delta: float, since: float, now: float) -> list[Outgoing]:
        """The wall clock jumped by `delta` seconds (NTP stepped it). Instants recorded
        after `since` (the start of the current time base) move with it, so "out of bed for
        10 minutes" is still 10 minutes and a deadline still lies as far ahead as it did;
        windows are evaluated on the new wall time."""
        for rule in self.rules:
            rule.shift(self._st(rule), delta, since)
        self.book.shift(delta, since)
        for seen in self.seen.values():
            if seen[0] > since:
                seen[0] += delta
        self.changed = True
        # An event (the local log; routable): what reaches the centre is clock_unsynchronised.
        return self.book.event("clock_stepped", None, now, step_s=round(delta, 3))

    def clock_sync(self, synchronised: bool, now: float, **fields: Any) -> list[Outgoing]:
        """Raise (once) or clear the hub's technical alarm for a clock not synchronised."""
        if synchronised:
            out = self.book.clear(CLOCK_CAUSE, now, "synchronised")
        else:
            out = self.book.raise_(CLOCK_CAUSE, TECHNICAL, "clock_unsynchronised", None,
                                   mqtt_schema.PRIORITY_TECHNICAL, now, **fields)
        self.changed |= bool(out)
        return out

    def newest_instant(self) -> float | None:
        """The latest report time the state holds (the clock should not be behind it)."""
        times = [s[0] for s in self.seen.values()]
        return max(times) if times else None

    # -- commands (admin CLI, response centre) ---------------------------------------------
    def acknowledge(self, alarm_id: str, now: float, by: str) -> list[Outgoing]:
        out = self.book.acknowledge(alarm_id, now, by)
        self.changed |= bool(out)
        return out

    def mute_wandering(self, now: float, minutes: float, by: str,
                       door: str | None = None) -> list[Outgoing]:
        """Staff on a visit: wandering rules (all, or the one for `door`) ignore the door."""
        out: list[Outgoing] = []
        for rule in self.rules:
            if isinstance(rule, Wandering) and door in (None, rule.cfg.door):
                until = rule.mute(self._st(rule), now, minutes)
                # A status: the response centre must know not to expect wandering alarms.
                out += self.book.event("wandering_muted", rule.cfg.door, now, kind="status",
                                       by=by, until=iso(until, self.tz))
        self.changed |= bool(out)
        return out

    def test_alarm(self, now: float, by: str) -> list[Outgoing]:
        """An end-to-end test: a real alarm message (stored, published, receipted like any
        alarm), clearly marked as a test, queued behind every real message."""
        msg = self.book.event("test_alarm", None, now, priority=mqtt_schema.PRIORITY_INFO,
                              test=True, by=by, state="test")[0]
        payload = {**msg.payload, "kind": "alarm"}
        return [Outgoing("alarm", None, mqtt_schema.PRIORITY_INFO, payload)]

    def active_alarms(self, now: float) -> list[dict[str, Any]]:
        return self.book.listing(now)

    # -- persistence and reload ------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "site": self.site, "rules": self.state,
                "active": self.book.active, "last_values": self.last_values, "seen": self.seen}

    def restore(self, snap: Mapping[str, Any]) -> None:
        if snap.get("version") != STATE_VERSION:
            raise ValueError(f"rule state version {snap.get('version')!r} is not {STATE_VERSION}")
        self.state = dict(snap.get("rules", {}))
        self.book.active = dict(snap.get("active", {}))
        self.book.touched = None
        self.last_values = dict(snap.get("last_values", {}))
        self.seen = dict(snap.get("seen", {}))
        keys = {r.key for r in self.rules}
        for k in [k for k in self.state if k not in keys]:
            del self.state[k]

    def reconfigured(self, devices: Mapping[str, Device], settings: RulesConfig,
                     now: float) -> tuple[RuleEngine, list[Outgoing]]:
        """A new engine for new settings that carries over the state of rules that remain;
        alarms whose rule is gone are cleared (published), not left hanging."""
        new = RuleEngine(self.site, self.tz, self.new_id, devices=devices, settings=settings)
        new.restore(self.snapshot())
        kept = set().union(*(r.causes() for r in new.rules))
        owned = set().union(*(r.causes() for r in self.rules))
        out: list[Outgoing] = []
        for cause in [c for c in new.book.active if c in owned and c not in kept]:
            out += new.book.clear(cause, now, "rule_removed")
        for cause, a in list(new.book.active.items()):
            dev = a.get("device")
            if dev is not None and dev not in devices and a["kind"] != CARE:
                out += new.book.clear(cause, now, "device_removed")
        new.changed = True
        return new, out
