"""`make bench`: the battery-life table (tools/sim/battery_model.py) and each device's margin,
and the model checked against the firmware: the same usage profile run on the virtual board
(real firmware, device time), its time in each state priced with the same figures.

Ratios, not absolute timings: simulated / modelled current (1.00 = the model describes what
the firmware really does), and life / goal.
"""

from __future__ import annotations

import time

from tools.sim import battery_model


def run() -> None:
    rows = battery_model.table()
    print(battery_model.render().split("\n## Firmware timing")[0].rstrip())
    print()
    print(f"{'device':9s} {'model uA':>9s} {'sim uA':>8s} {'sim/model':>9s} "
          f"{'life/goal':>9s}  simulated (wall s)")
    for r in rows:
        role = r.profile.role
        floor = battery_model.sensor_and_floor_ua(role)
        t0 = time.perf_counter()
        sim, fig = battery_model.simulate(role)
        wall = time.perf_counter() - t0
        model = r.rail_ua
        goal = f"{r.life_days / r.profile.goal_days:.2f}x" if r.profile.goal_days else "-"
        span = f"{fig['hours']:.3g} h device time, {fig['boots']} boots"
        print(f"{role:9s} {model:9.1f} {sim + floor:8.1f} {(sim + floor) / model:9.2f} "
              f"{goal:>9s}  {span} ({wall:.1f} s)")
    print("(hardware/battery.md holds the full table with sources; "
          "regenerate it with `python -m tools.sim.battery_model --write`)")
