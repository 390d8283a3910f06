"""Tests of firmware/fall_detector.py and tools/fall_eval.py.

Synthetic signals are in g, 50 Hz, README axes (standing ~ (0, -1, 0) g).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
sys.path.insert(0, FIRMWARE)

from fall_detector import FallDetector, FallEvent  # noqa: E402

from tools import fall_eval  # noqa: E402

RATE = 50
DT_MS = 1000 // RATE
DEV = "/work/shared/data/falls/dev"
UPRIGHT = (0.0, -1.0, 0.0)
LYING = (0.0, 0.0, 1.0)  # on the back: gravity along the forward axis


def still(vec, seconds, rng, noise=0.01):
    return [tuple(v + rng.gauss(0.0, noise) for v in vec) for _ in range(int(seconds * RATE))]


def tilt(deg):
    """Upright vector tilted backwards by deg (rotation about x)."""
    r = math.radians(deg)
    return (0.0, -math.cos(r), math.sin(r))


def impact(peak_g, direction, n=3):
    """A short impact spike along `direction` (unit-ish vector)."""
    norm = math.sqrt(sum(v * v for v in direction))
    shape = [0.5, 1.0, 0.6, 0.3][:n]
    return [tuple(peak_g * s * v / norm for v in direction) for s in shape]


def run(samples, **params):
    det = FallDetector(RATE, **params)
    return [ev for n, s in enumerate(samples) if (ev := det.feed(n * DT_MS, *s)) is not None]


def fall_signal(peak_g=5.0, end=LYING, dip=True, seed=1):
    rng = random.Random(seed)
    sig = still(UPRIGHT, 3.0, rng)
    if dip:  # ~0.4 s of reduced |a| while falling
        sig += [(0.05, -0.3, 0.1)] * 20
    impact_at = len(sig) + 1
    sig += impact(peak_g, (0.3, -0.5, 0.8))
    sig += still(end, 6.0, rng)
    return sig, impact_at * DT_MS


# -- falls -------------------------------------------------------------------
def test_clean_fall_gives_one_event_at_impact():
    sig, impact_ms = fall_signal()
    evs = run(sig)
    assert len(evs) == 1
    ev = evs[0]
    assert isinstance(ev, FallEvent)
    assert ev.impact_ms == impact_ms
    assert ev.peak_g == pytest.approx(5.0, rel=1e-3)
    assert ev.angle_deg > 80
    # confirmed once the post window (2.5 s after the impact) is complete
    assert 2000 <= ev.confirm_ms - ev.impact_ms <= 3000


def test_soft_fall_without_free_fall_dip_is_detected():
    # Older people's falls are slower and cushioned: moderate peak, no dip.
    evs = run(fall_signal(peak_g=2.8, dip=False)[0])
    assert len(evs) == 1


def test_fall_onto_side_is_detected():
    evs = run(fall_signal(peak_g=4.0, end=(1.0, 0.0, 0.0))[0])
    assert len(evs) == 1


def test_fall_detected_whatever_the_mounting():
    # Rotate the whole recording (device worn upside down / sideways).
    sig, _ = fall_signal()
    for rot in ((lambda x, y, z: (x, -y, -z)), (lambda x, y, z: (y, x, -z))):
        assert len(run([rot(*s) for s in sig])) == 1


def test_hard_fall_ending_half_sitting_is_detected():
    # Backward fall onto the bottom: big impact, trunk ends ~35 deg reclined.
    evs = run(fall_signal(peak_g=6.0, end=tilt(35))[0])
    assert len(evs) == 1


# -- activities that must not alarm -------------------------------------------
def test_sitting_down_hard_is_not_a_fall():
    rng = random.Random(2)
    sig = still(UPRIGHT, 3.0, rng) + [(0.0, -0.6, 0.1)] * 15
    sig += impact(3.5, (0.0, -1.0, 0.2))
    sig += still(tilt(10), 6.0, rng)
    assert run(sig) == []


def test_sitting_down_and_leaning_back_softly_is_not_a_fall():
    rng = random.Random(3)
    sig = still(UPRIGHT, 3.0, rng) + impact(2.2, (0.0, -1.0, 0.3)) + still(tilt(40), 6.0, rng)
    assert run(sig) == []


def test_walking_is_not_a_fall():
    rng = random.Random(4)
    sig = []
    for n in range(30 * RATE):
        bounce = 0.6 * math.sin(2 * math.pi * 2.0 * n / RATE)
        sig.append((rng.gauss(0, 0.1), -1.0 - bounce, 0.2 * bounce + rng.gauss(0, 0.1)))
    assert run(sig) == []


def test_jogging_with_hard_steps_is_not_a_fall():
    rng = random.Random(5)
    sig = still(UPRIGHT, 2.0, rng)
    for _ in range(40):  # ~3 steps/s: flight, then a 4 g foot strike
        sig += [(0.0, -0.3, 0.1)] * 6 + impact(4.0, (0.1, -1.0, 0.2)) + still(UPRIGHT, 0.14, rng, 0.2)
    sig += still(UPRIGHT, 5.0, rng)
    assert run(sig) == []


def test_jumping_is_not_a_fall():
    rng = random.Random(6)
    sig = still(UPRIGHT, 3.0, rng)
    for _ in range(3):  # free fall, hard landing, stand still again
        sig += [(0.0, -0.05, 0.0)] * 15 + impact(5.0, (0.0, -1.0, 0.1)) + still(UPRIGHT, 2.0, rng)
    sig += still(UPRIGHT, 4.0, rng)
    assert run(sig) == []


def test_lying_down_slowly_is_not_a_fall():
    # Same end posture as a fall, but no impact.
    rng = random.Random(7)
    sig = still(UPRIGHT, 3.0, rng)
    for k in range(100):  # 2 s rotation to lying
        sig.append(tilt(90 * k / 100))
    sig += still(LYING, 6.0, rng)
    assert run(sig) == []


# -- API / resources ------------------------------------------------------------
def test_interface_and_bounded_memory():
    det = FallDetector()
    assert FallDetector.SAMPLE_RATE_HZ == 50 and FallDetector.RANGE_G == 16
    assert det.window == 125 and det.buf_bytes == 1500
    sig, impact_ms = fall_signal()
    evs = [e for n, s in enumerate(sig) if (e := det.feed(n * DT_MS, *s))]
    assert len(evs) == 1 and len(det._bx) == det.window
    det.reset()
    evs = [e for n, s in enumerate(sig) if (e := det.feed(n * DT_MS, *s))]
    assert [e.impact_ms for e in evs] == [impact_ms]
    with pytest.raises(ValueError):
        FallDetector(impact_gg=3)


def test_to_sensor_averages_decimates_and_clips():
    raw = [(256, -256, 0)] * 4 + [(256 * 20, 0, -256 * 20)] * 4 + [(1, 1, 1)] * 3
    assert fall_eval.to_sensor(raw) == [(1.0, -1.0, 0.0), (16.0, 0.0, -16.0)]


# -- evaluation tool on real recordings -------------------------------------------
DEV_FILES = ("SA01/F01_SA01_R01.txt", "SE04/D08_SE04_R03.txt")


def _dev_copy(tmp_path):
    for rel in DEV_FILES:
        src = os.path.join(DEV, rel)
        if not os.path.exists(src):
            pytest.skip("dev recording %s not available" % src)
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return tmp_path


def test_eval_tool_smoke(tmp_path, capsys):
    d = _dev_copy(tmp_path)
    assert fall_eval.main([str(d), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = out["result"]
    assert (r["falls"], r["adl"]) == (1, 1)
    assert r["falls_detected"] == 1 and r["adl_with_false_alarm"] == 0
    assert 0 < r["latency_ms_median"] <= 4000
    assert out["resources"]["window_samples"] == 125
    assert fall_eval.main([str(d)]) == 0
    text = capsys.readouterr().out
    assert "sensitivity 100.0 %" in text and "specificity 100.0 %" in text


# -- same events in real MicroPython -----------------------------------------------
MP_RUNNER = os.path.join(ROOT, "tests", "mp_run.mjs")
NPM_PKG = os.path.join(ROOT, "node_modules", "@micropython", "micropython-webassembly-pyscript")

# Inputs are 4-sample sums of raw counts, so /1024 gives the same float on both
# interpreters; events are printed with exact integers and 6-decimal floats.
EQUIV_SCRIPT = """
from fall_detector import FallDetector
det = FallDetector(50)
for n, s in enumerate(SAMPLES):
    ev = det.feed(n * 20, s[0] / 1024.0, s[1] / 1024.0, s[2] / 1024.0)
    if ev is not None:
        print('EV %d %d %.6f %.6f %.6f' % (ev.impact_ms, ev.confirm_ms, ev.peak_g, ev.angle_deg, ev.still_g))
print('DONE %d' % n)
"""


def _summed_counts(path):
    raw = fall_eval.read_raw(path)
    return [tuple(sum(raw[j][a] for j in range(i, i + 4)) for a in range(3))
            for i in range(0, len(raw) - 3, 4)]


def test_micropython_gives_same_events(tmp_path):
    if shutil.which("node") is None:
        pytest.skip("node not on PATH")
    if not os.path.isdir(NPM_PKG):
        pytest.skip("npm package @micropython/micropython-webassembly-pyscript not installed "
                    "(run `npm ci` at the repo root)")
    src = os.path.join(DEV, DEV_FILES[0])
    if not os.path.exists(src):
        pytest.skip("dev recording not available")
    script = "SAMPLES = %r\n%s" % (_summed_counts(src), EQUIV_SCRIPT)
    path = tmp_path / "equiv.py"
    path.write_text(script)
    mp = subprocess.run(["node", MP_RUNNER, FIRMWARE, str(path)], capture_output=True, text=True,
                        timeout=120)
    assert mp.returncode == 0, mp.stderr
    cp = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, %r)\n%s" % (FIRMWARE, script)],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "micropython" not in cp.stdout
    assert mp.stdout.split() == cp.stdout.split()
    assert mp.stdout.count("EV ") == 1
