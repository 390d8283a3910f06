"""Expected battery life of every Tryggheim device.

Timing comes from the firmware itself (its constants are imported, not copied): heartbeat
interval, advert burst lengths and intervals, hold-off, debounce, FIFO watermark. Currents
come from datasheets (each with its source below); the few figures no datasheet gives (boot
time from deep sleep, MicroPython time per sample) are marked as assumptions, to be replaced
by measurements from the hardware-in-the-loop rig.

`python -m tools.sim.battery_model` prints the table; `--write` regenerates hardware/battery.md;
`make bench` prints it too (tools/bench/battery.py).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "hardware" / "battery.md"


def firmware() -> dict[str, ModuleType]:
    """The firmware modules, imported from firmware/ as the device runs them."""
    fw = str(ROOT / "firmware")
    if fw not in sys.path:
        sys.path.insert(0, fw)
    import alarm
    import bed
    import device
    import door
    import pir
    import wearable

    return {"device": device, "alarm": alarm, "door": door, "pir": pir, "bed": bed,
            "wearable": wearable}


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    source: str


ESP32_DS = "Espressif ESP32 Series Datasheet v4.6, section 5.4 'RF/power consumption' tables"
FIGURES = {
    "deep_sleep_ma": Figure(0.010, "mA", ESP32_DS + ": Deep-sleep, RTC timer + RTC memory 10 uA"),
    "light_sleep_ma": Figure(0.8, "mA", ESP32_DS + ": Light-sleep 0.8 mA"),
    "active_ma": Figure(25.0, "mA", ESP32_DS + ": Modem-sleep, CPU 80 MHz 20-31 mA "
                        "(board_esp32 sets 80 MHz; the CPU mostly idles while advertising)"),
    "ble_tx_ma": Figure(130.0, "mA", ESP32_DS + ": Bluetooth LE TX at 0 dBm 130 mA"),
    "boot_ma": Figure(40.0, "mA", ESP32_DS + ": Modem-sleep 160 MHz 27-44 mA (before the "
                      "firmware lowers the clock)"),
    "boot_ms": Figure(200.0, "ms", "ASSUMPTION: wake from deep sleep to the first advert "
                      "(ROM + bootloader + MicroPython start + importing the .mpy firmware + "
                      "BLE init) at 40 mA; not measured yet: tools/hil/board_check.py prints it "
                      "('wake-to-advert'); the life at 500 and 1000 ms is shown beside"),
    "ble_on_ms": Figure(50.0, "ms", "ASSUMPTION: BLE controller start + service "
                        "registration, when the wearable switches the radio on from light sleep "
                        "(the radio is off in light sleep: ESP-IDF rule)"),
    "light_wake_ms": Figure(1.0, "ms", "ASSUMPTION: wake from light sleep and back"),
    "sample_cpu_ms": Figure(0.25, "ms", "ASSUMPTION: FallDetector.feed per sample in "
                            "MicroPython at 80 MHz"),
    "adv_pdu_ms": Figure(0.376, "ms", "Bluetooth Core 5.x Vol 6 Part B 2.1: 47-byte legacy "
                         "ADV_IND PDU at 1 Mbit/s, sent on 3 channels per advertising event"),
    "divider_ma": Figure(0.0015, "mA", "battery divider 2 x 1 MOhm at 3 V (bom.md)"),
    "buckboost_iq_ma": Figure(0.000075, "mA", "TI TPS63900 datasheet (SLVSEU6): 75 nA Iq"),
    "ldo_iq_ma": Figure(0.004, "mA", "Holtek HT7833 datasheet: 4 uA quiescent"),
    "reed_pullup_ma": Figure(0.00064, "mA", "4.7 MOhm pull-up at 3 V while the door is closed"),
    "pir_ma": Figure(0.001, "mA", "Panasonic EKMB1101111 (PaPIRs EKMB) datasheet: 1 uA"),
    "mat_pull_ma": Figure(0.00021, "mA", "4.7 MOhm pull-down at 3 V, 1/3 of the day on the mat"),
    "lis3dh_ma": Figure(0.011, "mA", "ST LIS3DH datasheet DocID17530 Table 12: 11 uA at 50 Hz"),
    "lis3dh_off_ma": Figure(0.0005, "mA", "ST LIS3DH datasheet: power-down 0.5 uA"),
    "i2c_hz": Figure(400_000, "Hz", "LIS3DH fast-mode I2C (hardware/pinmap.json)"),
}
AA_MAH = Figure(2400, "mAh", "Energizer E91 datasheet: ~2400 mAh to 0.9 V/cell at light "
                "drain (the TPS63900 runs down to 1.8 V input); x0.9 for self-discharge and cold")
AA_DERATE = 0.9
AA_MEAN_V = 2.5  # 2 x 1.25 V over the discharge curve
BUCKBOOST_EFF = 0.88  # TPS63900 efficiency at 10 uA-100 mA loads, datasheet figure 8-1 region
VOUT = 3.0  # TPS63900 output for the ESP32-WROOM-32E (3.0-3.6 V)
LIPO_DERATE = 0.9  # ageing and charge termination


@dataclass(frozen=True)
class Profile:
    role: str
    battery: str
    capacity_mah: float
    goal_days: float
    usage: str


PROFILES = (
    Profile("door", "2xAA alkaline", AA_MAH.value * AA_DERATE, 730,
            "40 door events a day (open or close)"),
    Profile("pir", "2xAA alkaline", AA_MAH.value * AA_DERATE, 730,
            "300 motion triggers a day over 16 waking hours"),
    Profile("bed", "2xAA alkaline", AA_MAH.value * AA_DERATE, 730,
            "4 bed exits a night (8 reports), 20 turns in bed"),
    Profile("pendant", "LiPo 300 mAh (502030)", 300 * LIPO_DERATE, 0,
            "1 alarm a week, 1 charge a week"),
    Profile("wearable", "LiPo 500 mAh (503035)", 500 * LIPO_DERATE, 7,
            "worn 24 h, sampling at 50 Hz; 1 alarm a week"),
)


def f(name: str) -> float:
    return FIGURES[name].value


def advert_mas(burst_ms: float, interval_ms: float) -> float:
    """Charge (mA*s) of an advert burst with the CPU idling at the active current."""
    events = burst_ms / interval_ms
    tx_extra = events * 3 * f("adv_pdu_ms") / 1000 * (f("ble_tx_ma") - f("active_ma"))
    return burst_ms / 1000 * f("active_ma") + tx_extra


def wake_mas() -> float:
    return f("boot_ms") / 1000 * f("boot_ma")


def daily_mas(role: str) -> dict[str, float]:
    """mA*s per day at the 3 V rail, by what spends it."""
    fw = firmware()
    dev = fw["device"]
    interval = dev.BURST_INTERVAL_MS
    hb_per_day = 86400 / dev.HEARTBEAT_S
    hb = advert_mas(dev.HEARTBEAT_BURST_MS, interval)
    event = advert_mas(dev.EVENT_BURST_MS, interval)
    day = 86400.0
    out: dict[str, float] = {}
    rechargeable = role in ("pendant", "wearable")
    out["sleep floor"] = day * (f("deep_sleep_ma") + f("divider_ma") + (
        f("ldo_iq_ma") if rechargeable else f("buckboost_iq_ma")))
    reports = 0.0  # event adverts a day, spread over `active_h` hours
    active_h = 16.0
    per_interval = 1.0  # reports that come together (door open + close): one interval
    if role == "door":
        settle = fw["door"].SETTLE_MS / 1000 * f("active_ma")
        reports, per_interval = 40, 2.0  # opened, closed a little later
        out["events"] = reports * (wake_mas() + settle + event)
        out["sensor"] = day * f("reed_pullup_ma") * 0.95
    elif role == "pir":
        pir = fw["pir"]
        reports = min(300, active_h * 3600 / pir.HOLDOFF_S)
        motion = advert_mas(pir.MOTION_BURST_MS, interval)
        # Triggers inside a hold-off cost nothing: the PIR cannot wake the ESP32 then.
        # + the hold-off end: a wake, and "no motion" (clear) when the room is still
        clear = advert_mas(pir.CLEAR_BURST_MS, interval)
        out["events"] = reports * (wake_mas() + motion) + reports * (wake_mas() + clear)
        out["sensor"] = day * f("pir_ma")
    elif role == "bed":
        # Each report: a wake on the edge, a wake when the debounce ends, the burst.
        reports, active_h, per_interval = 8, 8.0, 2.0  # out, back in a few minutes
        out["events"] = reports * (2 * wake_mas() + event) + 40 * wake_mas()
        out["sensor"] = day * f("mat_pull_ma")
    elif role in ("pendant", "wearable"):
        al = fw["alarm"]
        attempt = advert_mas(al.BURST_MS, al.FAST_INTERVAL_MS)
        listen = advert_mas(al.RECEIVED_LISTEN_MS, al.SLOW_INTERVAL_MS)
        show = al.HELP_SHOW_MS / 1000 * f("active_ma")
        out["events"] = (wake_mas() + attempt + listen + show) / 7 + 2 * (wake_mas() + hb) / 7
    # Every advert postpones the next heartbeat (Device.send): an interval with an event in
    # it needs none. Events are taken as spread evenly over the active hours.
    covered = min(reports / per_interval, active_h * 3600 / dev.HEARTBEAT_S)
    out["heartbeats"] = (hb_per_day - covered) * (wake_mas() + hb)
    if role == "wearable":
        w = fw["wearable"]
        per_wake = w.WATERMARK + 1
        wakes = day * w.RATE_HZ / per_wake
        i2c_ms = 6 * per_wake * 9 / f("i2c_hz") * 1000
        awake_ms = f("light_wake_ms") + i2c_ms + per_wake * f("sample_cpu_ms")
        out["sampling (awake)"] = wakes * awake_ms / 1000 * f("active_ma")
        # No deep sleep between heartbeats: the radio is started from light sleep each time.
        out["heartbeats"] += hb_per_day * f("ble_on_ms") / 1000 * f("active_ma")
        out["light sleep"] = day * f("light_sleep_ma")
        out["sensor"] = day * f("lis3dh_ma")
        out["sleep floor"] = day * (f("divider_ma") + f("ldo_iq_ma"))  # never in deep sleep
    return out


@dataclass(frozen=True)
class Row:
    profile: Profile
    rail_ua: float  # average at the 3 V rail
    battery_ua: float  # average drawn from the cells
    life_days: float
    breakdown: dict[str, float]

    @property
    def meets_goal(self) -> bool:
        return self.life_days >= self.profile.goal_days


def table() -> list[Row]:
    rows = []
    for p in PROFILES:
        parts = daily_mas(p.role)
        rail_ma = sum(parts.values()) / 86400
        if p.battery.startswith("2xAA"):
            batt_ma = rail_ma * VOUT / (AA_MEAN_V * BUCKBOOST_EFF)
        else:
            batt_ma = rail_ma  # LDO: battery current = load current
        rows.append(Row(p, rail_ma * 1000, batt_ma * 1000, p.capacity_mah / batt_ma / 24,
                        {k: v / 86400 * 1000 for k, v in parts.items()}))
    return rows


# -- cross-check: the same prices applied to what the firmware really did in the simulator --

def sensor_and_floor_ua(role: str) -> float:
    """The always-on part (sleep floor, regulator, sensor), uA at the rail."""
    parts = daily_mas(role)
    return sum(v for k, v in parts.items() if k in ("sensor", "sleep floor")) / 86400 * 1000


def simulate(role: str, hours: float = 24.0) -> tuple[float, dict[str, float]]:
    """Run the real firmware on the virtual board through the usage profile for `hours` of
    device time (the wearable: 10 minutes, scaled) and price its time in each state.
    Returns (average uA at the 3 V rail without the always-on part, the usage figures)."""
    from tools.sim.vboard import VirtualBoard

    fw = firmware()
    cfg: dict[str, object] = {"id": f"{role}-1", "role": role,
                              "key": "00112233445566778899aabbccddeeff"}
    mv = 4000 if role in ("pendant", "wearable") else 3000
    if role == "wearable":
        hours = 1 / 6
    total = int(hours * 3_600_000)
    board = VirtualBoard(cfg, battery_mv=mv)
    day_ms = 16 * 3_600_000  # waking hours, from 06:00
    if role == "door":  # 40 events: 20 times open, close 30 s later
        for k in range(20):
            t = k * day_ms // 20 + 60_000
            board.schedule(t, "door", 1)
            board.schedule(t + 30_000, "door", 0)
    elif role == "pir":  # 300 triggers, each a 2 s pulse of the PIR output
        for k in range(300):
            t = k * day_ms // 300 + 60_000
            board.schedule(t, "motion", 1)
            board.schedule(t + 2000, "motion", 0)
    elif role == "bed":  # in bed 22:00-06:00: 4 exits of 5 min, 20 turns (3 s off the mat)
        night = 16 * 3_600_000
        board.schedule(night, "mat", 1)
        for k in range(20):
            t = night + 600_000 + k * 1_380_000
            board.schedule(t, "mat", 0)
            board.schedule(t + 3000, "mat", 1)
        for k in range(4):
            t = night + 1_200_000 + k * 7_000_000
            board.schedule(t, "mat", 0)
            board.schedule(t + 300_000, "mat", 1)
        board.schedule(night + 8 * 3_600_000 - 60_000, "mat", 0)
    try:
        board.start()
        board.advance(total)
    finally:
        board.stop()
    u = board.usage
    per_wake_ms = f("light_wake_ms")
    if role == "wearable":
        w = fw["wearable"]
        n = w.WATERMARK + 1
        per_wake_ms += 6 * n * 9 / f("i2c_hz") * 1000 + n * f("sample_cpu_ms")
    mas = (len(board.boots) * wake_mas()
           + u.adv_ms / 1000 * f("active_ma")
           + u.adv_events * 3 * f("adv_pdu_ms") / 1000 * (f("ble_tx_ma") - f("active_ma"))
           + u.light_ms / 1000 * f("light_sleep_ma")
           + u.awake_ms / 1000 * f("active_ma")
           + u.light_wakes * per_wake_ms / 1000 * f("active_ma"))
    figures = {"boots": len(board.boots), "advertising s": u.adv_ms / 1000,
               "light sleep s": u.light_ms / 1000, "light wakes": u.light_wakes,
               "awake s": u.awake_ms / 1000,
               "deep sleep s": u.deep_ms / 1000, "hours": hours}
    return mas / (hours * 3600) * 1000, figures


BOOT_MS_CASES = (200.0, 500.0, 1000.0)


def life_by_boot_ms() -> dict[str, dict[float, float]]:
    """Life in days per role if a wake took each of BOOT_MS_CASES instead of the assumed
    boot_ms (the figure most likely to be wrong until measured on a board)."""
    saved = FIGURES["boot_ms"]
    out: dict[str, dict[float, float]] = {}
    try:
        for ms in BOOT_MS_CASES:
            FIGURES["boot_ms"] = Figure(ms, saved.unit, saved.source)
            for r in table():
                out.setdefault(r.profile.role, {})[ms] = r.life_days
    finally:
        FIGURES["boot_ms"] = saved
    return out


def _life(days: float) -> str:
    return f"{days / 365:.1f} years" if days >= 365 else f"{days:.0f} days"


def render() -> str:
    fw = firmware()
    dev, pir, bed, al, w = (fw[k] for k in ("device", "pir", "bed", "alarm", "wearable"))
    lines = [
        "# Battery life (generated by `python -m tools.sim.battery_model --write`; do not edit)",
        "",
        "| device | battery | usable | usage profile | average (battery side) | life | goal | meets |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table():
        p = r.profile
        goal = _life(p.goal_days) if p.goal_days else "-"
        lines.append(
            f"| {p.role} | {p.battery} | {p.capacity_mah:.0f} mAh | {p.usage} | "
            f"{r.battery_ua:.0f} uA | {_life(r.life_days)} | {goal} | "
            f"{'yes' if r.meets_goal else 'NO'} |"
        )
    lines += [
        "",
        "## Boot time",
        "",
        f"Every wake from deep sleep is priced as `boot_ms` = {f('boot_ms'):g} ms at "
        f"{f('boot_ma'):g} mA: an ASSUMPTION until `tools/hil/board_check.py` measures "
        "wake-to-advert on a real board. Life if a wake took longer:",
        "",
        "| device | " + " | ".join(f"boot {ms:g} ms" for ms in BOOT_MS_CASES) + " | goal |",
        "|---|" + "---|" * (len(BOOT_MS_CASES) + 1),
    ]
    goals = {p.role: p.goal_days for p in PROFILES}
    for role, lives in life_by_boot_ms().items():
        goal = _life(goals[role]) if goals[role] else "-"
        lines.append(f"| {role} | " + " | ".join(
            _life(lives[ms]) + ("" if not goals[role] or lives[ms] >= goals[role] else " (NO)")
            for ms in BOOT_MS_CASES) + f" | {goal} |")
    lines += ["", "## Where the charge goes (uA at the 3 V rail)", ""]
    for r in table():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r.breakdown.items(),
                                                          key=lambda kv: -kv[1]))
        lines.append(f"- **{r.profile.role}**: {parts}")
    lines += [
        "",
        "## Firmware timing used (imported from firmware/)",
        "",
        f"- heartbeat every {dev.HEARTBEAT_S} s, burst {dev.HEARTBEAT_BURST_MS} ms "
        f"(device.HEARTBEAT_S, HEARTBEAT_BURST_MS)",
        f"- advert interval {dev.BURST_INTERVAL_MS} ms (non-connectable: the legal minimum), "
        f"alarm attempts {al.FAST_INTERVAL_MS} ms (connectable); door/bed event burst "
        f"{dev.EVENT_BURST_MS} ms; motion burst {pir.MOTION_BURST_MS} ms; motion hold-off "
        f"{pir.HOLDOFF_S} s",
        f"- bed debounce: out {bed.OUT_DEBOUNCE_S} s, in {bed.IN_DEBOUNCE_S} s",
        f"- alarm: burst {al.BURST_MS} ms, then listening {al.RECEIVED_LISTEN_MS} ms at "
        f"{al.SLOW_INTERVAL_MS} ms for 'delivered', 'help coming' shown {al.HELP_SHOW_MS} ms",
        f"- wearable: {w.RATE_HZ} Hz, FIFO watermark {w.WATERMARK} "
        f"(a wake every {w.WATERMARK + 1} samples)",
        "",
        "## Figures and sources",
        "",
        "2xAA devices run the ESP32 from a TPS63900 buck-boost at "
        f"{VOUT} V: battery current = rail current x {VOUT} V / "
        f"({AA_MEAN_V} V x {BUCKBOOST_EFF}). LiPo devices use an LDO (battery current = "
        "rail current). Heartbeats: every event "
        "advert postpones the next heartbeat, and the model counts only the intervals without "
        "an event (events spread evenly over 16 waking hours, bed exits over 8 night hours; "
        "door open/close and bed out/in pairs count as one interval).",
        "",
        "The model is checked against the firmware itself: `simulate()` runs the real "
        "firmware on the virtual board through the same usage profile for a day of device "
        "time, records the time it spent in each state (boots, advertising, light sleep, "
        "deep sleep; tools/sim/vboard Usage) and prices it with the figures below. `make bench` "
        "prints both; tests/firmware/test_battery_sim.py keeps them within a band.",
        "",
    ]
    for name, fig in FIGURES.items():
        lines.append(f"- `{name}` = {fig.value:g} {fig.unit}: {fig.source}")
    lines.append(f"- AA capacity {AA_MAH.value:g} mAh x {AA_DERATE}: {AA_MAH.source}")
    lines.append(f"- LiPo usable = nominal x {LIPO_DERATE}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    text = render()
    if args.write:
        OUT.write_text(text)
    print(text, end="")
    return 0 if all(r.meets_goal for r in table()) else 1


if __name__ == "__main__":
    sys.exit(main())
