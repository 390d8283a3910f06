"""Rule parameters as staff write them (rules.toml, or [rules] in a single hub.toml), checked.

Care rules (bed exit, wandering, inactivity) exist only where configured for the resident;
the alarm button, fall, battery, charging and silent-device rules are always on with the
defaults below, which any file may override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hub.config.tomlcheck import Reader
from hub.rules.windows import Window, WindowError, parse_clock, parse_window
from protocols import bthome


class _Device(Protocol):
    @property
    def role(self) -> str: ...


@dataclass(frozen=True)
class ButtonRule:
    # A BTHome button event name; "" = no cancel gesture. protocols/BTHOME.md: every press
    # kind raises an alarm; only a deliberate hold (hold_release) cancels.
    cancel_event: str = "hold_release"
    cancel_window_s: int = 60


@dataclass(frozen=True)
class BedExitRule:
    name: str
    bed: str
    window: Window
    return_min: int = 30
    # False: any time out of bed inside the window counts (from the window opening if she is
    # already up). True: armed only by leaving the bed inside the window (a late bedtime is
    # not an alarm; someone who never goes to bed is not watched by this rule).
    require_in_bed: bool = False


@dataclass(frozen=True)
class WanderingRule:
    name: str
    door: str
    window: Window
    return_min: int = 10  # 0 = alarm as soon as the door opens
    inside: tuple[str, ...] = ()  # motion sensors that show the resident is back inside
    bed: str | None = None  # getting into this bed also counts as back
    require_in_bed: bool = False  # armed only once the resident was in bed in this window
    mute_max_min: int = 240
    # The PIR firmware's hold-off (firmware/pir.py HOLDOFF_S): after reporting motion it
    # reports nothing new for this long, then "motion" again (still moving) or "clear".
    pir_holdoff_s: int = 300


@dataclass(frozen=True)
class InactivityRule:
    name: str
    window: Window
    hours: float = 4.0
    sensors: tuple[str, ...] = ()  # () = every motion, door and bed sensor


@dataclass(frozen=True)
class BatteryLimits:
    warn_percent: int
    critical_percent: int


DEFAULT_BATTERY = {
    "pendant": BatteryLimits(25, 10),
    "wearable": BatteryLimits(25, 10),
    "door": BatteryLimits(20, 5),
    "pir": BatteryLimits(20, 5),
    "bed": BatteryLimits(20, 5),
}


@dataclass(frozen=True)
class BatteryRule:
    limits: Mapping[str, BatteryLimits] = field(default_factory=lambda: dict(DEFAULT_BATTERY))
    confirm_reports: int = 3  # consecutive low reports before a warning: one cold morning is not
    repeat_h: float = 24.0


@dataclass(frozen=True)
class ChargingRule:
    remind_at_min: int = 19 * 60
    remind_below_percent: int = 30
    remind_after_days: float = 3.0
    complete_percent: int = 95
    off_charger_by_min: int | None = 9 * 60  # still on the charger then -> it is not being worn


DEFAULT_HEARTBEAT_S = 600


@dataclass(frozen=True)
class SilentRule:
    missed_heartbeats: int = 3
    heartbeat_s: Mapping[str, int] = field(default_factory=dict)  # role -> seconds

    def limit_s(self, role: str, device_heartbeat_s: int | None = None) -> float:
        hb = device_heartbeat_s or self.heartbeat_s.get(role, DEFAULT_HEARTBEAT_S)
        return float(hb * self.missed_heartbeats)


@dataclass(frozen=True)
class RulesConfig:
    button: ButtonRule = ButtonRule()
    fall: bool = True
    bed_exit: tuple[BedExitRule, ...] = ()
    wandering: tuple[WanderingRule, ...] = ()
    inactivity: tuple[InactivityRule, ...] = ()
    battery: BatteryRule = BatteryRule()
    charging: ChargingRule = ChargingRule()
    silent: SilentRule = SilentRule()


ROLES = ("pendant", "door", "pir", "bed", "wearable")
RULE_SECTIONS = ("button", "fall", "bed_exit", "wandering", "inactivity", "battery", "charging",
                 "silent")
CARRIED = ("pendant", "wearable")


def parse_rules(raw: dict[str, Any], r: Reader, prefix: str, devices: Mapping[str, _Device],
                declared: frozenset[str] = frozenset()) -> RulesConfig:
    """`raw` is the rules table; `prefix` is its path in the file ("" or "rules").
    `declared`: device ids written in the devices list but invalid there (already reported:
    a rule naming one is not reported a second time)."""

    def p(*parts: str) -> str:
        return ".".join(x for x in (prefix, *parts) if x)

    r.unknown(raw, prefix, set(RULE_SECTIONS))

    def device_ref(t: dict[str, Any], where: str, key: str, roles: tuple[str, ...],
                   required: bool = True) -> str | None:
        dev = r.get(t, where, key, str, ... if required else None)
        if dev is None:
            return None
        d = devices.get(dev)
        if d is None:
            if dev not in declared:
                r.error(f"{where}.{key}", f"no device {dev!r} in the devices list")
            return None
        if d.role not in roles:
            r.error(f"{where}.{key}", f"device {dev!r} is a {d.role}, expected {' or '.join(roles)}")
            return None
        return str(dev)

    def device_list(t: dict[str, Any], where: str, key: str, roles: tuple[str, ...]) -> tuple[str, ...]:
        names = r.get(t, where, key, list, [])
        out = []
        for i, name in enumerate(names):
            if not isinstance(name, str):
                r.error(f"{where}.{key}[{i}]", "expected a device id")
                continue
            ok = device_ref({key: name}, where, key, roles)
            if ok:
                out.append(ok)
        return tuple(out)

    def window(t: dict[str, Any], where: str) -> Window | None:
        text = r.get(t, where, "window", str)
        days = r.get(t, where, "days", (str, list), "all")
        if text is None:
            return None
        try:
            return parse_window(text, days)
        except WindowError as e:
            key = "days" if _days_bad(days) else "window"
            r.error(f"{where}.{key}", str(e))
            return None

    def unique(rules: list[Any], where: str, name: str) -> str:
        # The name keys the rule's state and alarms: two rules on one bed (weekdays and
        # weekends) need their own names.
        if any(x.name == name for x in rules):
            r.error(f"{where}.name", f"another rule of this kind is already called {name!r};"
                    " give each a distinct name")
        return name

    # Alarm button.
    b = r.table(raw, prefix, "button")
    r.unknown(b, p("button"), {"cancel_event", "cancel_window_s"})
    cancel = r.get(b, p("button"), "cancel_event", str, ButtonRule.cancel_event)
    alarming = {bthome.BUTTON_EVENT_NAMES[e] for e in bthome.ALARM_BUTTON_EVENTS}
    names = set(bthome.BUTTON_EVENT_NAMES.values()) - alarming - {"none"}
    if cancel and cancel not in names:
        r.error(p("button", "cancel_event"), f"{cancel!r} is not one of {', '.join(sorted(names))}"
                f" ({', '.join(sorted(alarming))} raise alarms)")
        cancel = ButtonRule.cancel_event
    button = ButtonRule(cancel, r.number(b, p("button"), "cancel_window_s", 60, 0, 600))

    f = r.table(raw, prefix, "fall")
    r.unknown(f, p("fall"), {"enabled"})
    fall = r.get(f, p("fall"), "enabled", bool, True)

    bed_exit: list[BedExitRule] = []
    for i, t in enumerate(r.tables(raw, prefix, "bed_exit")):
        where = p(f"bed_exit[{i}]")
        r.unknown(t, where, {"name", "bed", "window", "days", "return_min", "require_in_bed"})
        bed = device_ref(t, where, "bed", ("bed",))
        w = window(t, where)
        ret = r.number(t, where, "return_min", 30, 1, 24 * 60)
        armed_in_bed = r.get(t, where, "require_in_bed", bool, False)
        if bed and w:
            name = unique(bed_exit, where, r.get(t, where, "name", str, bed))
            bed_exit.append(BedExitRule(name, bed, w, ret, bool(armed_in_bed)))

    wandering: list[WanderingRule] = []
    for i, t in enumerate(r.tables(raw, prefix, "wandering")):
        where = p(f"wandering[{i}]")
        r.unknown(t, where, {"name", "door", "window", "days", "return_min", "inside", "bed",
                             "require_in_bed", "mute_max_min", "pir_holdoff_s"})
        door = device_ref(t, where, "door", ("door",))
        w = window(t, where)
        ret = r.number(t, where, "return_min", 10, 0, 24 * 60)
        inside = device_list(t, where, "inside", ("pir",))
        bed = device_ref(t, where, "bed", ("bed",), required=False)
        need_bed = r.get(t, where, "require_in_bed", bool, False)
        if need_bed and bed is None and "bed" not in t:
            r.error(f"{where}.require_in_bed", "needs a bed = \"<bed sensor id>\" in the same rule")
        if ret > 0 and not inside and "bed" not in t:
            r.error(f"{where}.inside", "name at least one motion sensor inside (or a bed) so the"
                    " hub can tell the resident came back")
        mute = r.number(t, where, "mute_max_min", 240, 1, 24 * 60)
        holdoff = r.number(t, where, "pir_holdoff_s", 300, 0, 3600)
        if door and w:
            name = unique(wandering, where, r.get(t, where, "name", str, door))
            wandering.append(WanderingRule(name, door, w, ret, inside, bed, need_bed, mute,
                                           holdoff))

    inactivity: list[InactivityRule] = []
    for i, t in enumerate(r.tables(raw, prefix, "inactivity")):
        where = p(f"inactivity[{i}]")
        r.unknown(t, where, {"name", "window", "days", "hours", "sensors"})
        w = window(t, where)
        hours = r.number(t, where, "hours", 4.0, 0.25, 48, kind=float)
        sensors = device_list(t, where, "sensors", ("pir", "door", "bed"))
        if w:
            name = unique(inactivity, where, r.get(t, where, "name", str, str(i + 1)))
            inactivity.append(InactivityRule(name, w, float(hours), sensors))

    bt = r.table(raw, prefix, "battery")
    r.unknown(bt, p("battery"), {"confirm_reports", "repeat_h", *ROLES})
    limits = dict(DEFAULT_BATTERY)
    for role in ROLES:
        lt = r.table(bt, p("battery"), role)
        where = p("battery", role)
        r.unknown(lt, where, {"warn_percent", "critical_percent"})
        d = DEFAULT_BATTERY[role]
        warn = r.number(lt, where, "warn_percent", d.warn_percent, 1, 99)
        crit = r.number(lt, where, "critical_percent", d.critical_percent, 0, 98)
        if crit >= warn:
            r.error(f"{where}.critical_percent", f"{crit} must be below warn_percent ({warn})")
        limits[role] = BatteryLimits(warn, crit)
    battery = BatteryRule(
        limits,
        r.number(bt, p("battery"), "confirm_reports", 3, 1, 50),
        float(r.number(bt, p("battery"), "repeat_h", 24.0, 1, 24 * 14, kind=float)),
    )

    ch = r.table(raw, prefix, "charging")
    where = p("charging")
    r.unknown(ch, where, {"remind_at", "remind_below_percent", "remind_after_days",
                          "complete_percent", "off_charger_by"})

    def clock(key: str, default: int | None) -> int | None:
        text = r.get(ch, where, key, str, None)
        if text is None:
            return default
        if text == "":
            return None
        try:
            return parse_clock(text)
        except WindowError as e:
            r.error(f"{where}.{key}", str(e))
            return default

    charging = ChargingRule(
        clock("remind_at", ChargingRule.remind_at_min) or 0,
        r.number(ch, where, "remind_below_percent", 30, 0, 100),
        float(r.number(ch, where, "remind_after_days", 3.0, 0.5, 60, kind=float)),
        r.number(ch, where, "complete_percent", 95, 50, 100),
        clock("off_charger_by", ChargingRule.off_charger_by_min),
    )

    si = r.table(raw, prefix, "silent")
    r.unknown(si, p("silent"), {"missed_heartbeats", "heartbeat_s"})
    hbt = r.table(si, p("silent"), "heartbeat_s")
    r.unknown(hbt, p("silent", "heartbeat_s"), set(ROLES))
    hb = {role: r.number(hbt, p("silent", "heartbeat_s"), role, DEFAULT_HEARTBEAT_S, 10, 86400)
          for role in ROLES}
    silent = SilentRule(r.number(si, p("silent"), "missed_heartbeats", 3, 2, 100), hb)

    return RulesConfig(button, bool(fall), tuple(bed_exit), tuple(wandering), tuple(inactivity),
                       battery, charging, silent)


def _days_bad(days: Any) -> bool:
    from hub.rules.windows import parse_days

    try:
        parse_days(days)
    except (WindowError, TypeError):
        return True
    return False
