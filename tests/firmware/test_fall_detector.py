"""Tests of firmware/fall_detector.py and tools/falls/fall_eval.py.

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
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
sys.path.insert(0, FIRMWARE)

from fall_detector import FallDetector, FallEvent  # noqa: E402

from tools.falls import fall_eval  # noqa: E402

RATE = 50
DT_MS = 1000 // RATE
# The dev recordings sit beside the checkout (../shared), never in the repository.
DEV = os.path.join(os.path.dirname(ROOT), "shared", "data", "falls", "dev")
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
    # Older people's falls are slower and cushioned: moderate peak, no dip
    # (soft_fall_signal below has none), below the impact threshold.
    evs = run(soft_fall_signal(peak_g=2.8))
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


def soft_fall_signal(peak_g=2.0, wobble_g=0.8, end=LYING, after_s=8.0, seed=11):
    """A fainting / sliding fall: no hard impact, a short violent transition
    (the trunk swings while it goes down), then lying still."""
    rng = random.Random(seed)
    sig = still(UPRIGHT, 4.0, rng, 0.03)
    for k in range(40):  # 0.8 s going down, turning to `end`, shaken by wobble_g
        f = k / 40
        v = [u * (1 - f) + e * f for u, e in zip(UPRIGHT, end, strict=True)]
        w = wobble_g * math.sin(2 * math.pi * 4 * k / RATE)
        sig.append((v[0] + w, v[1] - w, v[2] + 0.5 * w))
    sig += impact(peak_g, end, 2)
    sig += still(end, after_s, rng)
    return sig


def test_soft_fall_below_impact_threshold_is_detected_by_what_follows():
    sig = soft_fall_signal()
    assert max(math.sqrt(sum(v * v for v in s)) for s in sig) < FallDetector().params["impact_g"]
    evs = run(sig)
    assert [e.kind for e in evs] == ["posture"]
    ev = evs[0]
    end_of_fall_ms = (4.0 * RATE + 40) * DT_MS
    # confirmed only after low_confirm_s of stillness: a longer confirmation
    assert 4000 <= ev.confirm_ms - end_of_fall_ms <= 5500
    assert ev.angle_deg > 80 and ev.peak_g >= 1.8


def test_soft_fall_detected_whatever_the_mounting():
    sig = soft_fall_signal(seed=12)
    for rot in ((lambda x, y, z: (x, -y, -z)), (lambda x, y, z: (z, x, y))):
        assert [e.kind for e in run([rot(*s) for s in sig])] == ["posture"]


def test_soft_fall_then_getting_up_is_not_an_alarm():
    # Down and up again within 3 s: the confirmation needs 4 s of stillness.
    rng = random.Random(13)
    sig = soft_fall_signal(after_s=3.0, seed=13) + still(UPRIGHT, 8.0, rng, 0.3)
    assert run(sig) == []


def test_lying_down_gently_is_not_a_fall():
    # Same end posture as the soft fall, but a calm transition (lying down on a bed).
    assert run(soft_fall_signal(peak_g=1.3, wobble_g=0.1, seed=14)) == []


def test_hard_fall_gives_one_event_although_both_paths_confirm_it():
    sig, impact_ms = fall_signal(peak_g=6.0)
    sig += still(LYING, 10.0, random.Random(15))
    evs = run(sig)
    assert [(e.kind, e.impact_ms) for e in evs] == [("impact", impact_ms)]
    # the posture path alone confirms it too
    alone = run(sig, impact_g=99.0)
    assert [e.kind for e in alone] == ["posture"]


def test_two_falls_far_apart_give_two_events():
    rng = random.Random(16)
    first = soft_fall_signal(seed=16)
    sig = first + still(UPRIGHT, 15.0, rng, 0.3) + still(UPRIGHT, 3.0, rng, 0.02) + soft_fall_signal(seed=17)
    assert len(run(sig)) == 2


def test_float32_inputs_give_the_same_decision():
    # The ESP32 port computes in float32: round every input, and a large DC
    # offset on each axis, must not change the spread-based decisions.
    from array import array

    def f32(v):
        return array("f", [v])[0]

    sig = soft_fall_signal(seed=18)
    ref = [(e.kind, e.confirm_ms) for e in run(sig)]
    assert ref and [(e.kind, e.confirm_ms) for e in run([tuple(f32(v) for v in s) for s in sig])] == ref


def rotation(yaw, pitch, roll):
    """A rotation matrix (how the device may be worn), as rows."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    return ((cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr),
            (sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr),
            (-sp, cp * sr, cp * cr))


ANGLES = st.floats(-math.pi, math.pi, allow_nan=False)


@settings(max_examples=25, deadline=None)
@given(yaw=ANGLES, pitch=ANGLES, roll=ANGLES, seed=st.integers(0, 1000), soft=st.booleans())
def test_any_mounting_gives_the_same_events(yaw, pitch, roll, seed, soft):
    # Only |a| and angles between mean vectors decide: a rigid rotation of the whole stream
    # (the device worn another way round) changes nothing.
    # (5.2 g: no impact sample sits exactly on the 3 g threshold, where rounding decides)
    sig = soft_fall_signal(seed=seed) if soft else fall_signal(peak_g=5.2, seed=seed)[0]
    m = rotation(yaw, pitch, roll)
    turned = [tuple(sum(m[r][c] * s[c] for c in range(3)) for r in range(3)) for s in sig]
    ref = [(e.kind, e.impact_ms, e.confirm_ms) for e in run(sig)]
    assert len(ref) == 1
    assert [(e.kind, e.impact_ms, e.confirm_ms) for e in run(turned)] == ref


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-16, 16, allow_nan=False)] * 3), min_size=1, max_size=400),
       st.integers(1, 40))
def test_arbitrary_input_never_breaks_the_detector(samples, repeat):
    # Noise, clipping, long still stretches: bounded state, and one event per refractory time.
    det = FallDetector()
    sig = [s for s in samples for _ in range(repeat)][:3000]
    evs = [(n, e) for n, s in enumerate(sig) if (e := det.feed(n * DT_MS, *s)) is not None]
    assert len(det._bx) == det.window and len(det._kx) == det.blocks
    assert all(b - a >= det.n_refr for (a, _), (b, _) in zip(evs, evs[1:], strict=False))


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
    # 125-sample ring x 3 axes + 10 block summaries x 5, float32
    assert det.window == 125 and det.blocks == 10 and det.buf_bytes == 1500 + 200
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
# A hard fall, a soft fall (1.99 g, confirmed by the posture path) and a quick sit-down.
DEV_FILES = ("SA01/F01_SA01_R01.txt", "SA01/F10_SA01_R05.txt", "SE04/D08_SE04_R03.txt")


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
    assert (r["falls"], r["adl"], r["low_impact_falls"]) == (2, 1, 1)
    assert r["falls_detected"] == 2 and r["adl_with_false_alarm"] == 0
    assert r["detected_by"] == {"impact": 1, "posture": 1}
    assert 0 < r["latency_ms_median"] <= 6000
    assert out["resources"]["window_samples"] == 125
    # two subjects: the cross-validation runs and reports the goal figures
    assert [f["subject"] for f in out["cv"]["folds"]] == ["SA01", "SE04"]
    assert [g["figure"] for g in out["goals"]][:2] == ["sensitivity, all falls", "sensitivity, low-impact falls"]
    assert fall_eval.main([str(d)]) == 0
    text = capsys.readouterr().out
    assert "sensitivity 100.0 %" in text and "specificity 100.0 %" in text
    assert "low-impact falls      1 / 1  sensitivity 100.0 %" in text
    assert "  F10*      1         1  100.0 %       0       1" in text
    assert "== goals (cross-validated)" in text and "== fold stability" in text
    # the tie-break rule chosen inside each fold, too
    assert fall_eval.main([str(d), "--nested", "--json"]) == 0
    nested = json.loads(capsys.readouterr().out)["nested"]
    assert [f["subject"] for f in nested["folds"]] == ["SA01", "SE04"]
    assert set(nested["rules_chosen"]) <= set(fall_eval.TIE_BREAKS)
    # a held-out set: the defaults against the goals, nothing tuned
    assert fall_eval.main([str(d), "--held-out"]) == 0
    text = capsys.readouterr().out
    assert "== goals (held-out set, firmware defaults)" in text and "fold" not in text
    assert "  sensitivity, all falls           100.0 %   goal >= 98 %  met" in text


def test_cross_validation_never_tunes_on_the_held_out_subject(monkeypatch):
    # Each fold's tuning sees only the other subjects' trials.
    trials = [fall_eval.Trial("F01_S%d" % i, "F01" if i % 2 else "D07", "SA%02d" % (i // 2), bool(i % 2),
                              [(0.0, -1.0, 0.0)] * 50) for i in range(6)]
    seen = []
    real_tune = fall_eval.tune

    def spy(table, trs, idx):
        idx = list(idx)
        seen.append({trs[i].subject for i in idx})
        return real_tune(table, trs, idx)

    monkeypatch.setattr(fall_eval, "tune", spy)
    cv = fall_eval.cross_validate(trials)
    assert seen == [{"SA01", "SA02"}, {"SA00", "SA02"}, {"SA00", "SA01"}]
    assert cv["folds_agreeing"] == 3


def test_tuning_prefers_the_conservative_setting_among_ties():
    # No candidates at all: every setting ties; the most conservative wins.
    trials = [fall_eval.Trial("x", "D07", "SA01", False, [(0.0, -1.0, 0.0)] * 50)]
    ik, pk = fall_eval.tune(fall_eval.Table({}, {}), trials, [0])
    p = fall_eval.params_of(ik, pk)
    assert p["impact_g"] == max(fall_eval.GRID_IMPACT) and p["low_g"] == max(fall_eval.GRID_LOW_G)


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
        print('EV %s %d %d %.6f %.6f %.6f' % (ev.kind, ev.impact_ms, ev.confirm_ms, ev.peak_g, ev.angle_deg,
                                              ev.still_g))
print('DONE %d' % n)
"""


def _summed_counts(path):
    raw = fall_eval.read_raw(path)
    return [tuple(sum(raw[j][a] for j in range(i, i + 4)) for a in range(3))
            for i in range(0, len(raw) - 3, 4)]


@pytest.mark.parametrize("rel", DEV_FILES[:2])
def test_micropython_gives_same_events(tmp_path, rel):
    if shutil.which("node") is None:
        pytest.skip("node not on PATH")
    if not os.path.isdir(NPM_PKG):
        pytest.skip("npm package @micropython/micropython-webassembly-pyscript not installed "
                    "(run `npm ci` at the repo root)")
    src = os.path.join(DEV, rel)
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
    assert ("EV posture " if "F10" in rel else "EV impact ") in mp.stdout


@pytest.mark.slow
def test_full_dev_evaluation_meets_the_goals(capsys):
    # The whole dev set, leave-one-subject-out (about 5 s; `pytest -m slow`).
    if not os.path.isdir(DEV):
        pytest.skip("dev recordings not available")
    assert fall_eval.main([DEV, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recordings"] == 311
    assert [g["figure"] for g in out["goals"] if not g["met"]] == []
    assert out["cv"]["consensus"] == {k: fall_eval.DEFAULTS[k] for k in out["cv"]["consensus"]}
