"""Evaluate firmware/fall_detector.py on SisFall-format recordings.

    python -m tools.fall_eval DIR [--cv] [--json]

DIR is searched recursively for files named like F05_SA01_R05.txt (fall) or
D01_SA01_R01.txt (activity of daily living, ADL); the label comes from the
leading F/D. Each recording (200 Hz, ADXL345 counts, raw/256 = g) is turned
into what the wearable sees: averaged over blocks of 4 samples (a simple
anti-alias filter) and decimated to 50 Hz, then clipped to +-16 g (LIS3DH-class
sensor set to +-16 g).

Scoring is per trial, as in the SisFall paper: a fall trial counts as detected
if the detector emits at least one event; an ADL trial counts as a false alarm
if it emits any. False alarms per hour count every event over the ADL time.

Latency: the reference impact of a detected fall is the sample with the
largest |a| (50 Hz, clipped signal) within the LATENCY_LOOKBACK_S seconds
before the detection; latency = detection time - reference impact time.

--cv runs leave-one-subject-out cross-validation of the threshold-tuning
procedure (`tune`): thresholds are chosen on the other subjects only and the
held-out subject's trials are scored with them; the pooled held-out results
are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "firmware"))
from fall_detector import DEFAULTS, FallDetector  # noqa: E402

SRC_RATE_HZ = 200
RATE_HZ: int = int(FallDetector.SAMPLE_RATE_HZ)
RANGE_G = float(FallDetector.RANGE_G)
COUNTS_PER_G = 256.0
LATENCY_LOOKBACK_S = 5.0
NAME_RE = re.compile(r"^([FD])(\d\d)_([A-Z]{2}\d\d)_R(\d\d)\.txt$")

# Threshold grid searched by `tune`. impact_g changes which episodes the
# detector forms, so it needs a detector run per value; the other thresholds
# only gate the decision and are applied to the recorded episode features.
GRID_IMPACT = (1.6, 1.8, 2.0, 2.2, 2.5, 3.0)
GRID_ANGLE = (30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0)
GRID_STILL = (0.06, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25, 0.30)
GRID_HARD = (2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 99.0)  # 99 g: rule off
GRID_HARD_ANGLE = (15.0, 20.0, 25.0, 30.0)
GRID_UPRIGHT = (45.0, 60.0, 75.0, 180.0)  # 180: check off
MIN_TRAIN_SP = 0.995  # tuning constraint on the training ADLs (at most 1 in 200)


Sample = tuple[float, float, float]


@dataclass
class Trial:
    path: str
    activity: str  # e.g. "F05" or "D01"
    subject: str
    is_fall: bool
    samples: list[Sample]  # 50 Hz, g, clipped

    @property
    def duration_s(self) -> float:
        return len(self.samples) / RATE_HZ


@dataclass
class Candidate:
    """Features of one impact candidate evaluated by the detector."""

    impact_ms: int
    peak_g: float
    angle_deg: float
    still_g: float
    ff_g: float
    confirm_ms: int
    tilt_deg: float  # tilt of FallDetector.UP_AXIS before the episode

    def main_rule(self, angle_deg: float, still_g: float, upright_deg: float) -> bool:
        return self.angle_deg >= angle_deg and self.still_g <= still_g and self.tilt_deg <= upright_deg

    def hard_rule(self, hard_g: float, hard_angle_deg: float, still_g: float, upright_deg: float) -> bool:
        return self.peak_g >= hard_g and self.main_rule(hard_angle_deg, still_g, upright_deg)


@dataclass
class TrialResult:
    trial: Trial
    events: list[tuple[int, int, float]]  # (impact_ms, confirm_ms, peak_g)
    candidates: list[Candidate] = field(default_factory=list)


# -- reading ---------------------------------------------------------------
def read_raw(path: str) -> list[tuple[int, int, int]]:
    """ADXL345 columns (1-3) of a SisFall file, raw counts at 200 Hz."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.strip().rstrip(";").split(",")
            if len(parts) < 3 or not parts[2].strip():
                continue  # a few files end with a blank line
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return rows


def to_sensor(raw: Sequence[tuple[int, int, int]], factor: int = SRC_RATE_HZ // RATE_HZ,
              range_g: float = RANGE_G) -> list[Sample]:
    """Block-average `factor` samples, convert to g and clip to +-range_g."""
    out = []
    k = factor * COUNTS_PER_G
    for i in range(0, len(raw) - factor + 1, factor):
        sx = sy = sz = 0
        for j in range(i, i + factor):
            x, y, z = raw[j]
            sx += x
            sy += y
            sz += z
        out.append((max(-range_g, min(range_g, sx / k)),
                    max(-range_g, min(range_g, sy / k)),
                    max(-range_g, min(range_g, sz / k))))
    return out


def find_recordings(root: str) -> list[str]:
    paths: list[str] = []
    for d, _, files in os.walk(root):
        paths.extend(os.path.join(d, f) for f in files if NAME_RE.match(f))
    return sorted(paths)


def load_trials(root: str) -> list[Trial]:
    trials = []
    for p in find_recordings(root):
        m = NAME_RE.match(os.path.basename(p))
        assert m
        trials.append(Trial(p, m.group(1) + m.group(2), m.group(3), m.group(1) == "F",
                            to_sensor(read_raw(p))))
    return trials


# -- running ---------------------------------------------------------------
@dataclass
class Timing:
    calls: int = 0
    total_ns: int = 0
    max_ns: int = 0


def run_trial(trial: Trial, params: dict[str, float], timing: Timing | None = None) -> TrialResult:
    det = FallDetector(RATE_HZ, **params)
    res = TrialResult(trial, [])
    step_ms = 1000 // RATE_HZ
    clock = time.perf_counter_ns
    for n, (x, y, z) in enumerate(trial.samples):
        det.last = None
        if timing is not None:
            t0 = clock()
            ev = det.feed(n * step_ms, x, y, z)
            dt = clock() - t0
            timing.calls += 1
            timing.total_ns += dt
            timing.max_ns = max(timing.max_ns, dt)
        else:
            ev = det.feed(n * step_ms, x, y, z)
        if det.last is not None:
            res.candidates.append(Candidate(*det.last))
        if ev is not None:
            res.events.append((ev.impact_ms, ev.confirm_ms, ev.peak_g))
    return res


def reference_impact_ms(trial: Trial, confirm_ms: int) -> int:
    """Time of the max-|a| sample in the LATENCY_LOOKBACK_S before detection."""
    step_ms = 1000 // RATE_HZ
    end = min(len(trial.samples) - 1, confirm_ms // step_ms)
    start = max(0, end - int(LATENCY_LOOKBACK_S * RATE_HZ))
    best = max(range(start, end + 1), key=lambda i: sum(v * v for v in trial.samples[i]))
    return int(best * step_ms)


# -- scoring ---------------------------------------------------------------
def summarize(results: Iterable[TrialResult]) -> dict[str, Any]:
    results = list(results)
    falls = [r for r in results if r.trial.is_fall]
    adls = [r for r in results if not r.trial.is_fall]
    tp = sum(1 for r in falls if r.events)
    fp_trials = sum(1 for r in adls if r.events)
    fa_events = sum(len(r.events) for r in adls)
    adl_h = sum(r.trial.duration_s for r in adls) / 3600.0
    lat, impact_err = [], []
    for r in falls:
        if r.events:
            imp, conf, _ = r.events[0]
            ref = reference_impact_ms(r.trial, conf)
            lat.append(conf - ref)
            impact_err.append(imp - ref)
    per_act: dict[str, dict[str, int]] = {}
    for r in results:
        a = per_act.setdefault(r.trial.activity, {"trials": 0, "with_event": 0, "events": 0})
        a["trials"] += 1
        a["with_event"] += 1 if r.events else 0
        a["events"] += len(r.events)
    return {
        "falls": len(falls), "falls_detected": tp,
        "sensitivity": tp / len(falls) if falls else None,
        "adl": len(adls), "adl_with_false_alarm": fp_trials,
        "specificity": 1 - fp_trials / len(adls) if adls else None,
        "adl_hours": adl_h, "false_alarms": fa_events,
        "false_alarms_per_hour": fa_events / adl_h if adl_h else None,
        "latency_ms_median": statistics.median(lat) if lat else None,
        "latency_ms_max": max(lat) if lat else None,
        "impact_time_error_ms_max_abs": max((abs(e) for e in impact_err), default=None),
        "per_activity": dict(sorted(per_act.items())),
        "missed_falls": [os.path.basename(r.trial.path) for r in falls if not r.events],
        "false_alarm_trials": [os.path.basename(r.trial.path) for r in adls if r.events],
    }


# -- tuning and cross-validation --------------------------------------------
Table = dict[float, list[list[Candidate]]]


def candidate_table(trials: list[Trial]) -> Table:
    """Per impact threshold, every trial's episodes (decision thresholds off)."""
    off = {"angle_deg": 0.0, "still_g": 1e9, "hard_g": 1e9, "upright_deg": 180.0}
    return {imp: [run_trial(t, dict(off, impact_g=imp)).candidates for t in trials]
            for imp in GRID_IMPACT}


def _bitsets(table: Table) -> tuple[dict[tuple[float, ...], int], dict[tuple[float, ...], int]]:
    """Trial sets (bit i = trial i has an event) for the two rules. A trial
    has an event iff some episode passes the main rule or some episode passes
    the hard rule, so the union of the two sets is exact."""
    main: dict[tuple[float, ...], int] = {}
    hard: dict[tuple[float, ...], int] = {}
    for imp, per_trial in table.items():
        for i, cands in enumerate(per_trial):
            bit = 1 << i
            for c in cands:
                for st in GRID_STILL:
                    for up in GRID_UPRIGHT:
                        if c.still_g > st or c.tilt_deg > up:
                            continue
                        for ang in GRID_ANGLE:
                            if c.main_rule(ang, st, up):
                                main[(imp, ang, st, up)] = main.get((imp, ang, st, up), 0) | bit
                        for h in GRID_HARD:
                            for ha in GRID_HARD_ANGLE:
                                if c.hard_rule(h, ha, st, up):
                                    kh = (imp, h, ha, st, up)
                                    hard[kh] = hard.get(kh, 0) | bit
    return main, hard


def tune(table: Table, trials: list[Trial], idx: Iterable[int],
         bitsets: tuple[dict[tuple[float, ...], int], dict[tuple[float, ...], int]] | None = None
         ) -> dict[str, float]:
    """Choose thresholds on trials[idx] only: the highest sensitivity among
    settings whose specificity is >= MIN_TRAIN_SP; ties go to the higher
    specificity, then to the most permissive setting (lowest impact and angle
    thresholds first), because older people's falls are softer than the
    young volunteers' falls the thresholds are learnt from."""
    main, hard = bitsets or _bitsets(table)
    fall_mask = adl_mask = 0
    for i in idx:
        if trials[i].is_fall:
            fall_mask |= 1 << i
        else:
            adl_mask |= 1 << i
    n_f, n_a = max(1, fall_mask.bit_count()), max(1, adl_mask.bit_count())
    best: tuple[Any, ...] | None = None
    for imp in GRID_IMPACT:
        for st in GRID_STILL:
            for up in GRID_UPRIGHT:
                for ang in GRID_ANGLE:
                    m = main.get((imp, ang, st, up), 0)
                    for h in GRID_HARD:
                        for ha in GRID_HARD_ANGLE:
                            if h == GRID_HARD[-1] and ha != GRID_HARD_ANGLE[0]:
                                continue  # rule off: one representative
                            ev = m | hard.get((imp, h, ha, st, up), 0)
                            se = (ev & fall_mask).bit_count() / n_f
                            sp = 1 - (ev & adl_mask).bit_count() / n_a
                            ok = sp >= MIN_TRAIN_SP
                            key = (ok, se if ok else sp, sp, -imp, -ang, st, up, -h, -ha)
                            if best is None or key > best:
                                best = key
    assert best is not None
    return {"impact_g": -best[3], "angle_deg": -best[4], "still_g": best[5], "upright_deg": best[6],
            "hard_g": -best[7], "hard_angle_deg": -best[8]}


def cross_validate(trials: list[Trial]) -> dict[str, Any]:
    table = candidate_table(trials)
    bits = _bitsets(table)
    held: list[TrialResult] = []
    folds = []
    for s in sorted({t.subject for t in trials}):
        train = [i for i, t in enumerate(trials) if t.subject != s]
        test = [i for i, t in enumerate(trials) if t.subject == s]
        th = tune(table, trials, train, bits)
        # Score the held-out subject with the real detector, not the table.
        fold = [run_trial(trials[i], th) for i in test]
        held.extend(fold)
        r = summarize(fold)
        folds.append({"subject": s, "params": th, "falls_detected": r["falls_detected"], "falls": r["falls"],
                      "adl_with_false_alarm": r["adl_with_false_alarm"], "adl": r["adl"]})
    return {"scheme": "leave-one-subject-out", "folds": folds, "pooled": summarize(held),
            "params_on_all": tune(table, trials, range(len(trials)), bits)}


# -- report ----------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "n/a" if x is None else "%.1f %%" % (100 * x)


def print_summary(s: dict[str, Any], title: str) -> None:
    print("== %s" % title)
    print("falls detected        %d / %d  sensitivity %s" % (s["falls_detected"], s["falls"], _pct(s["sensitivity"])))
    print("ADL with false alarm  %d / %d  specificity %s" % (s["adl_with_false_alarm"], s["adl"], _pct(s["specificity"])))
    fah = s["false_alarms_per_hour"]
    print("false alarms          %d in %.2f h of ADL = %s per hour" % (
        s["false_alarms"], s["adl_hours"], "n/a" if fah is None else "%.2f" % fah))
    if s["latency_ms_median"] is not None:
        print("latency after impact  median %.0f ms, max %.0f ms (impact = max |a| in the %.0f s before detection;"
              " reported impact time off by <= %d ms)" % (s["latency_ms_median"], s["latency_ms_max"],
                                                           LATENCY_LOOKBACK_S, s["impact_time_error_ms_max_abs"]))
    print("per activity (trials with an event / trials, events):")
    for act, a in s["per_activity"].items():
        print("  %s  %2d / %2d  %d" % (act, a["with_event"], a["trials"], a["events"]))
    if s["missed_falls"]:
        print("missed falls: " + " ".join(s["missed_falls"]))
    if s["false_alarm_trials"]:
        print("ADL false alarms: " + " ".join(s["false_alarm_trials"]))


def resources(timing: Timing) -> dict[str, Any]:
    det = FallDetector(RATE_HZ)
    return {
        "rate_hz": RATE_HZ, "range_g": RANGE_G,
        "window_samples": det.window, "window_s": det.window / RATE_HZ,
        "ring_buffer_bytes": det.buf_bytes,
        "work_per_sample": "O(1): one |a|^2, a compare and a ring write, plus 7 sums in the post window; "
                           "once per trigger a pass over the %d-sample ring" % det.window,
        "cpython_us_per_sample_mean": timing.total_ns / max(1, timing.calls) / 1000,
        "cpython_us_per_sample_max": timing.max_ns / 1000,
        "samples_timed": timing.calls,
        "machine": "%s, %d cores, Python %s" % (sys.platform, os.cpu_count() or 0, sys.version.split()[0]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="directory of SisFall-format recordings (searched recursively)")
    ap.add_argument("--cv", action="store_true", help="leave-one-subject-out CV of the threshold tuning")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = ap.parse_args(argv)
    trials = load_trials(args.dir)
    if not trials:
        print("no recordings found under %s" % args.dir, file=sys.stderr)
        return 2
    timing = Timing()
    results = [run_trial(t, {}, timing) for t in trials]
    out: dict[str, Any] = {"dir": args.dir, "params": dict(DEFAULTS), "recordings": len(trials),
                           "result": summarize(results), "resources": resources(timing)}
    if args.cv:
        out["cv"] = cross_validate(trials)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print("recordings: %d under %s; detector defaults: %s" % (
        len(trials), args.dir, ", ".join("%s=%g" % kv for kv in sorted(DEFAULTS.items()))))
    print_summary(out["result"], "detector (firmware defaults)")
    r = out["resources"]
    print("memory: ring of %d samples (%.1f s) x 3 axes float32 = %d bytes" % (
        r["window_samples"], r["window_s"], r["ring_buffer_bytes"]))
    print("work per sample: %s; CPython %.1f us mean, %.0f us max per sample (%s)" % (
        r["work_per_sample"], r["cpython_us_per_sample_mean"], r["cpython_us_per_sample_max"], r["machine"]))
    if args.cv:
        cv = out["cv"]
        print_summary(cv["pooled"], "cross-validation (%s, pooled held-out trials)" % cv["scheme"])
        for f in cv["folds"]:
            print("  fold %s: falls %d/%d, ADL false alarms %d/%d, params %s" % (
                f["subject"], f["falls_detected"], f["falls"], f["adl_with_false_alarm"], f["adl"],
                ", ".join("%s=%g" % kv for kv in sorted(f["params"].items()))))
        print("tuning on all subjects picks: %s" % ", ".join("%s=%g" % kv for kv in sorted(cv["params_on_all"].items())))
        stale = {k: v for k, v in cv["params_on_all"].items() if DEFAULTS[k] != v}
        if stale:
            print("NOTE: firmware defaults differ from this tuning: %s" % stale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
