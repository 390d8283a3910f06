"""Fall detector cost per sample: FallDetector.feed against a baseline loop in the same
interpreter that only computes |a|^2 per sample (the least any detector must do), on CPython
and, when node and the npm package are there, on MicroPython (WebAssembly port). The ESP32
budget at 50 Hz is 20 ms per sample; the ratio is what carries over to another machine.

The stream is synthetic and deterministic (walking, a soft fall, lying still, getting up), so
the benchmark needs no recordings.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
RUNNER = os.path.join(ROOT, "tests", "mp_run.mjs")
NPM_PKG = os.path.join(ROOT, "node_modules", "@micropython", "micropython-webassembly-pyscript")
REPEAT = 5

# Runs unchanged on both interpreters: STREAM (flat list of milli-g ints) is prepended.
SCRIPT = """
import time
from fall_detector import FallDetector
try:
    clock = time.perf_counter_ns
    def us(t0):
        return (clock() - t0) / 1000
except AttributeError:
    clock = time.ticks_us
    def us(t0):
        return time.ticks_diff(clock(), t0)
v = [x / 1000 for x in STREAM]
n = len(v) // 3

def baseline():
    s = 0.0
    for i in range(n):
        x = v[3 * i]
        y = v[3 * i + 1]
        z = v[3 * i + 2]
        s += x * x + y * y + z * z
    return s

def detector():
    feed = FallDetector(50).feed
    e = 0
    for i in range(n):
        if feed(i * 20, v[3 * i], v[3 * i + 1], v[3 * i + 2]) is not None:
            e += 1
    return e

for name, fn in (("baseline", baseline), ("detector", detector)):
    best = None
    for _ in range(REPEAT):
        t0 = clock()
        r = fn()
        dt = us(t0)
        best = dt if best is None or dt < best else best
    print("%s %d %.3f %s" % (name, n, best / n, r))
"""


def stream(seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    out: list[tuple[float, float, float]] = []
    for _ in range(3):
        for k in range(20 * 50):  # walking
            b = 0.5 * math.sin(2 * math.pi * 2 * k / 50)
            out.append((rng.gauss(0, 0.1), -1 - b, 0.2 * b + rng.gauss(0, 0.1)))
        for k in range(40):  # a soft fall onto the back
            f = k / 40
            w = 0.8 * math.sin(2 * math.pi * 4 * k / 50)
            out.append((w, -(1 - f) - w, f + 0.5 * w))
        out += [(rng.gauss(0, 0.01), rng.gauss(0, 0.01), 1 + rng.gauss(0, 0.01)) for _ in range(500)]
    return [round(c * 1000) for s in out for c in s]


def _parse(text: str) -> dict[str, float]:
    res = {}
    for line in text.split("\n"):
        parts = line.split()
        if len(parts) == 4:
            res[parts[0]] = float(parts[2])
            if parts[0] == "detector":
                res["events"] = float(parts[3])
    return res


def run() -> None:
    src = "STREAM = %r\nREPEAT = %d\n%s" % (stream(), REPEAT, SCRIPT)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.py")
        with open(path, "w") as f:
            f.write(src)
        cp = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r)\n%s" % (FIRMWARE, src)],
                            capture_output=True, text=True, timeout=300, check=True)
        rows = [("CPython %s" % sys.version.split()[0], _parse(cp.stdout))]
        if shutil.which("node") and os.path.isdir(NPM_PKG):
            # The WebAssembly port's pystack cannot hold a large list literal: pass the stream
            # as a module with a string, parsed inside.
            mod = os.path.join(d, "mod")
            os.mkdir(mod)
            shutil.copy(os.path.join(FIRMWARE, "fall_detector.py"), mod)
            with open(os.path.join(mod, "benchdata.py"), "w") as f:
                f.write('DATA = "%s"\n' % ",".join(str(x) for x in stream()))
            mp_src = ("from benchdata import DATA\nSTREAM = [int(x) for x in DATA.split(',')]\n"
                      "REPEAT = %d\n%s" % (REPEAT, SCRIPT))
            with open(path, "w") as f:
                f.write(mp_src)
            t0 = time.perf_counter()
            mp = subprocess.run(["node", RUNNER, mod, path], capture_output=True, text=True, timeout=600)
            if mp.returncode == 0:
                rows.append(("MicroPython (WebAssembly, node %s)" % subprocess.run(
                    ["node", "--version"], capture_output=True, text=True).stdout.strip(), _parse(mp.stdout)))
            else:
                print("MicroPython run failed after %.1f s: %s" % (time.perf_counter() - t0, mp.stderr.strip()))
    print("best of %d runs over %d samples (50 Hz); us per sample" % (REPEAT, len(stream()) // 3))
    for name, r in rows:
        base, det = r.get("baseline"), r.get("detector")
        if base and det:
            print("  %-40s baseline %.2f  detector %.2f  ratio %.1fx  (%d falls detected)" % (
                name, base, det, det / base, r.get("events", 0)))
    print("  ESP32 budget at 50 Hz: 20000 us per sample (not measured on a board)")


if __name__ == "__main__":
    run()
