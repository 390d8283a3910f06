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
from hub.rules.alarms import CARE, AlarmBook
from hub.rules.base import Ctx, Rule, State
from hub.rules.care import BedExit, Inactivity, Wandering
from hub.rules.outgoing import Outgoing, new_id
from hub.rules.settings import RulesConfig
from hub.rules.technical import Battery, Charging, Immediate, Silent
from protocols import mqtt_schema

if TYPE_CHECKING:
    from hub.config import Device
    from hub.decode import Report

STATE_VERSION = 1


def build_rules(cfg: RulesConfig) -> list[Rule]:
    rules: list[Rule] = [Immediate(cfg.button, cfg.fall)]
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
        return Ctx(self.book, self.tz, self.devices)

    def _st(self, rule: Rule) -> State:
        return self.state.setdefault(rule.key, {})

    def on_report(self, report: Report, now: float) -> list[Outgoing]:
        dev = report.device.id
        prev = self.last_values.get(dev, {})
        changed = {k: v for k, v in report.values.items() if prev.get(k) != v}
        self.last_values[dev] = {**prev, **report.values}
        self.seen[dev] = [now, float(report.rssi)]
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
