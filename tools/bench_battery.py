"""`make bench`: the battery-life table (tools/battery_model.py) and each device's margin.

A model, not a measurement: the figure that matters is the ratio of expected life to the
goal, computed from the firmware's own timing in this run. Re-run after any timing change.
"""

from __future__ import annotations

from tools import battery_model


def run() -> None:
    rows = battery_model.table()
    print(battery_model.render().split("\n## Firmware timing")[0].rstrip())
    print()
    for r in rows:
        if r.profile.goal_days:
            print(f"{r.profile.role:9s} life / goal = {r.life_days / r.profile.goal_days:.2f}x")
    print("(hardware/battery.md holds the full table with sources; "
          "regenerate it with `python -m tools.battery_model --write`)")
