"""Rule engine cost on a hub: one advert through the rules, one tick (the hub ticks every
second), the rule-state parts a decision commits (against the whole snapshot each decision
wrote before), one standalone state snapshot saved, for a typical home (6 devices, bed exit,
wandering, inactivity) against a baseline engine with no devices and no care rules, same process."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from hub.config.settings import Device
from hub.decode.decoder import Report
from hub.rules.engine import RuleEngine
from hub.rules.settings import BedExitRule, InactivityRule, RulesConfig, WanderingRule
from hub.rules.store import RuleStateStore
from hub.rules.windows import parse_window
from hub.store import Database

TZ = ZoneInfo("Europe/Oslo")
T0 = 1_795_650_000.0

DEVICES = {
    d: Device(d, role, f"C0:FF:EE:00:00:0{i}", "")
    for i, (d, role) in enumerate([("pendant-1", "pendant"), ("watch-1", "wearable"),
                                   ("bed-1", "bed"), ("door-1", "door"), ("pir-1", "pir"),
                                   ("pir-2", "pir")], start=1)
}
HOME = RulesConfig(
    bed_exit=(BedExitRule("bed", "bed-1", parse_window("20:30-06:00"), 30),),
    wandering=(WanderingRule("door", "door-1", parse_window("22:00-06:00"), 10,
                             inside=("pir-1",), bed="bed-1"),),
    inactivity=(InactivityRule("day", parse_window("08:00-22:00"), 4.0),),
)


def per_call(fn: Callable[[int], object], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def run() -> None:
    base = RuleEngine("b", TZ)
    home = RuleEngine("h", TZ, devices=DEVICES, settings=HOME)
    reports = [Report(DEVICES[d], 0.0, -60, v, None) for d, v in [
        ("pir-1", {"motion": 1, "battery": 80}), ("bed-1", {"occupancy": 1}),
        ("door-1", {"door": 0}), ("pendant-1", {"battery": 90, "battery_charging": 0})]]
    n = 20_000
    b_rep = per_call(lambda i: base.on_report(reports[i % 4], T0 + i), n)
    h_rep = per_call(lambda i: home.on_report(reports[i % 4], T0 + i), n)
    b_tick = per_call(lambda i: base.tick(T0 + n + i), n)
    h_tick = per_call(lambda i: home.tick(T0 + n + i), n)
    # What the hub does after each decision (hub/rules/store.py `changes`), against taking
    # the whole snapshot as it did before; both after the same advert.
    parts = RuleStateStore(Database(":memory:"))
    parts.load_into(home)
    sizes: list[int] = []

    def with_parts(i: int) -> None:
        home.on_report(reports[i % 4], T0 + 2 * n + i)
        sizes.append(sum(len(v or b"") for v in (parts.changes(home) or {}).values()))

    def with_whole(i: int) -> None:
        home.on_report(reports[i % 4], T0 + 3 * n + i)
        snap = parts.take(home)
        sizes.append(len(snap[1]) if snap else 0)

    h_parts = per_call(with_parts, n) - h_rep
    part_bytes = sum(sizes) / len(sizes)
    sizes.clear()
    h_whole = per_call(with_whole, n) - h_rep
    whole_bytes = sum(sizes) / len(sizes)
    with tempfile.TemporaryDirectory() as d:
        store = RuleStateStore(Path(d) / "s.json")
        save = per_call(lambda i: store.save(home), 200)
        size = (Path(d) / "s.json").stat().st_size
    print(f"advert through the rules: {h_rep * 1e6:7.1f} us  ({h_rep / b_rep:4.1f}x baseline"
          f" {b_rep * 1e6:.1f} us)")
    print(f"tick (every second):      {h_tick * 1e6:7.1f} us  ({h_tick / b_tick:4.1f}x baseline"
          f" {b_tick * 1e6:.1f} us) = {h_tick * 100:.4f} % of one core")
    print(f"rule state per decision:  {h_parts * 1e6:7.1f} us, {part_bytes:.0f} bytes of changed"
          f" parts (whole snapshot as before: {h_whole * 1e6:.1f} us, {whole_bytes:.0f} bytes)")
    print(f"state save (fsync):       {save * 1e3:7.2f} ms  ({save / h_rep:,.0f}x an advert;"
          f" {size} bytes)")


if __name__ == "__main__":
    run()
