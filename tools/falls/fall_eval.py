"""Evaluate firmware/fall_detector.py on SisFall-format recordings.

    python tools/falls/fall_eval.py DIR [--no-cv | --held-out] [--json]

DIR is searched recursively for files named like F05_SA01_R05.txt (fall) or
D01_SA01_R01.txt (activity of daily living, ADL); the label comes from the
leading F/D. Each recording (200 Hz, ADXL345 counts, raw/256 = g) is turned
into what the wearable sees: averaged over blocks of 4 samples (a simple
anti-alias filter) and decimated to 50 Hz, then clipped to +-16 g (LIS3DH-class
sensor set to +-16 g).

Scoring is per trial, as in the SisFall paper: a fall trial counts as detected
if the detector emits at least one event; an ADL trial counts as a false alarm
if it emits any. False alarms per hour count every event over the ADL time.

Latency: the reference impact of a detected fall (the end of the fall) is the
sample with the largest |a| (50 Hz, clipped signal) within the
LATENCY_LOOKBACK_S seconds before the detection; latency = detection time -
reference impact time. The alarm itself leaves after the cancel window
(firmware/fall_alert.py) on top of that.

Unless --no-cv is given, leave-one-subject-out cross-validation of the
threshold tuning (`tune`) runs: for each subject, the thresholds are chosen on
the other subjects only and the held-out subject's trials are scored with the
real detector; the goal figures are those of the pooled held-out trials. The
firmware defaults are the setting the folds chose most often (`consensus`), so
no figure or default comes from tuning on the whole set at once. With
--held-out, DIR is a set kept outside all tuning: the firmware defaults are
scored against the goals as they are, and nothing is tuned.

Tuning is cheap because the detector runs once per run-forming parameter with
its decision thresholds off and records every candidate's features
(`FallDetector.last`, `FallDetector.run_cand`); the decision thresholds are then
applied to those features as trial bitsets, exactly as the detector would.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))
from fall_detector import DEFAULTS, FallDetector  # noqa: E402

SRC_RATE_HZ = 200
RATE_HZ: int = int(FallDetector.SAMPLE_RATE_HZ)
RANGE_G = float(FallDetector.RANGE_G)
COUNTS_PER_G = 256.0
LATENCY_LOOKBACK_S = 8.0
CANCEL_WINDOW_S = 30  # firmware/fall_alert.py: the alarm leaves this long after detection
NAME_RE = re.compile(r"^([FD])(\d\d)_([A-Z]{2}\d\d)_R(\d\d)\.txt$")
FALL_CODES = tuple("F%02d" % i for i in range(1, 16))
ADL_CODES = tuple("D%02d" % i for i in range(1, 20))
# The falls of older people: fainting, getting up, sitting down, asleep in a chair.
LOW_IMPACT = ("F06", "F07", "F08", "F09", "F10", "F13", "F14", "F15")
GOALS = {"sensitivity": 0.98, "low_impact_sensitivity": 0.95, "specificity": 0.99,
         "false_alarms_per_hour": 0.5, "latency_s_median": 3.0}

# Threshold grid searched by `tune` (coarse on purpose: few settings, less
# room to fit the noise of 23 subjects). Run-forming parameters (impact_g for
# the impact path, post_still_g for the posture path) need a detector run per
# value; the others only gate decisions and are applied to recorded features.
GRID_IMPACT = (2.0, 2.5, 3.0)
GRID_ANGLE = (40.0, 50.0, 55.0, 60.0, 70.0)
GRID_STILL = (0.15, 0.2, 0.3)
GRID_HARD = (3.0, 4.0, 99.0)  # 99 g: rule off
GRID_HARD_ANGLE = (20.0, 30.0)
GRID_POST_STILL = (0.1, 0.15, 0.2)
GRID_LOW_ANGLE = (60.0, 70.0, 80.0, 180.0)  # 180: posture path off
GRID_LOW_G = (0.0, 1.6, 1.8, 2.0)
GRID_LOW_SPREAD = (0.3, 0.4, 0.5, 0.6)
GRID_LOW_CONFIRM = (2.0, 3.0, 4.0, 5.0)
MIN_TRAIN_SP = 0.995  # tuning constraint on the training ADLs (at most 1 in 200)
# Last tie-break, most conservative first: the posture path catches what a
# high impact threshold lets through, and new people's ADLs are the risk.
CONSERVATIVE = (("impact_g", 1), ("low_g", 1), ("low_spread_g", 1), ("low_angle_deg", 1),
                ("low_confirm_s", 1), ("angle_deg", 1), ("hard_g", 1), ("hard_angle_deg", 1),
                ("still_g", -1), ("post_still_g", -1))


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

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass
class Candidate:
    """Features of one impact episode evaluated by the detector."""

    impact_ms: int
    peak_g: float
    angle_deg: float
    still_g: float
    ff_g: float
    confirm_ms: int
    tilt_deg: float  # tilt of FallDetector.UP_AXIS before the episode

    def main_rule(self, angle_deg: float, still_g: float) -> bool:
        return self.angle_deg >= angle_deg and self.still_g <= still_g

    def hard_rule(self, hard_g: float, hard_angle_deg: float, still_g: float) -> bool:
        return self.peak_g >= hard_g and self.main_rule(hard_angle_deg, still_g)


@dataclass
class RunCandidate:
    """A still run of the posture path: per lag (cos of the turn, peak |a|^2
    and block spread so far), and how many still blocks the run lasted."""

    feats: list[tuple[float, float, float]]
    blocks: int = 2

    def passes(self, cos_low: float, low2: float, low_sp: float, n_confirm: int) -> bool:
        if self.blocks < n_confirm:
            return False
        return any(c <= cos_low and p >= low2 and s >= low_sp for c, p, s in self.feats)


@dataclass
class TrialResult:
    trial: Trial
    events: list[tuple[int, int, float, str]]  # (impact_ms, confirm_ms, peak_g, kind)
    candidates: list[Candidate] = field(default_factory=list)
    runs: list[RunCandidate] = field(default_factory=list)


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


def run_trial(trial: Trial, params: dict[str, float], timing: Timing | None = None,
              record: bool = False) -> TrialResult:
    det = FallDetector(RATE_HZ, **params)
    det.record = record
    res = TrialResult(trial, [])
    step_ms = 1000 // RATE_HZ
    clock = time.perf_counter_ns
    run: RunCandidate | None = None
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
        if record:
            if det.last is not None:
                res.candidates.append(Candidate(*det.last))
            if det.run_cand is not None:
                run = RunCandidate(det.run_cand)
                res.runs.append(run)
                det.run_cand = None
            if run is not None:
                if det._run >= run.blocks:
                    run.blocks = det._run
                else:
                    run = None  # the run ended
        if ev is not None:
            res.events.append((ev.impact_ms, ev.confirm_ms, ev.peak_g, ev.kind))
    return res


def reference_impact_ms(trial: Trial, confirm_ms: int) -> int:
    """Time of the max-|a| sample in the LATENCY_LOOKBACK_S before detection."""
    step_ms = 1000 // RATE_HZ
    end = min(len(trial.samples) - 1, confirm_ms // step_ms)
    start = max(0, end - int(LATENCY_LOOKBACK_S * RATE_HZ))
    best = max(range(start, end + 1), key=lambda i: sum(v * v for v in trial.samples[i]))
    return int(best * step_ms)


# -- scoring ---------------------------------------------------------------
def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def summarize(results: Iterable[TrialResult]) -> dict[str, Any]:
    results = list(results)
    falls = [r for r in results if r.trial.is_fall]
    adls = [r for r in results if not r.trial.is_fall]
    low = [r for r in falls if r.trial.activity in LOW_IMPACT]
    tp = sum(1 for r in falls if r.events)
    tp_low = sum(1 for r in low if r.events)
    fp_trials = sum(1 for r in adls if r.events)
    fa_events = sum(len(r.events) for r in adls)
    adl_h = sum(r.trial.duration_s for r in adls) / 3600.0
    lat: dict[str, list[int]] = {}
    lat_kind: dict[str, list[int]] = {}
    impact_err = []
    by_kind: Counter[str] = Counter()
    for r in falls:
        if r.events:
            imp, conf, _, kind = r.events[0]
            ref = reference_impact_ms(r.trial, conf)
            lat.setdefault(r.trial.activity, []).append(conf - ref)
            lat_kind.setdefault(kind, []).append(conf - ref)
            by_kind[kind] += 1
            if kind == "impact":
                impact_err.append(imp - ref)
    all_lat = [v for vs in lat.values() for v in vs]
    per_act: dict[str, dict[str, Any]] = {}
    for r in results:
        a = per_act.setdefault(r.trial.activity, {"trials": 0, "with_event": 0, "events": 0,
                                                  "impact": 0, "posture": 0, "adl_s": 0.0})
        a["trials"] += 1
        a["with_event"] += 1 if r.events else 0
        a["events"] += len(r.events)
        if r.events:
            a[r.events[0][3]] += 1
        if not r.trial.is_fall:
            a["adl_s"] += r.trial.duration_s
    for act, a in per_act.items():
        a["latency_ms_median"] = statistics.median(lat[act]) if act in lat else None
    return {
        "falls": len(falls), "falls_detected": tp, "sensitivity": _rate(tp, len(falls)),
        "low_impact_falls": len(low), "low_impact_detected": tp_low,
        "low_impact_sensitivity": _rate(tp_low, len(low)),
        "detected_by": dict(by_kind),
        "adl": len(adls), "adl_with_false_alarm": fp_trials,
        "specificity": 1 - fp_trials / len(adls) if adls else None,
        "adl_hours": adl_h, "false_alarms": fa_events,
        "false_alarms_per_hour": fa_events / adl_h if adl_h else None,
        "latency_ms_median": statistics.median(all_lat) if all_lat else None,
        "latency_ms_max": max(all_lat) if all_lat else None,
        "latency_ms_median_by_path": {k: statistics.median(v) for k, v in sorted(lat_kind.items())},
        "impact_time_error_ms_max_abs": max((abs(e) for e in impact_err), default=None),
        "per_activity": dict(sorted(per_act.items())),
        "missed_falls": [r.trial.name for r in falls if not r.events],
        "false_alarm_trials": [r.trial.name for r in adls if r.events],
    }


# -- tuning and cross-validation --------------------------------------------
# A setting is a pair of index tuples into the grids: the impact path
# (impact, angle, still, hard, hard_angle) and the posture path (post_still,
# low_angle, low_g, low_spread, low_confirm).
IMPACT_GRIDS = (GRID_IMPACT, GRID_ANGLE, GRID_STILL, GRID_HARD, GRID_HARD_ANGLE)
POSTURE_GRIDS = (GRID_POST_STILL, GRID_LOW_ANGLE, GRID_LOW_G, GRID_LOW_SPREAD, GRID_LOW_CONFIRM)
Key = tuple[int, ...]


@dataclass
class Table:
    """Trial bitsets (bit i = trial i has an event) per setting of each path.
    A trial has an event iff some candidate of either path passes, so the OR
    of the two paths' bitsets is exact."""

    impact: dict[Key, int]
    posture: dict[Key, int]


def _keys(grids: tuple[tuple[float, ...], ...]) -> list[Key]:
    return list(product(*(range(len(g)) for g in grids)))


def _impact_keys() -> list[Key]:
    # hard rule off (99 g): one representative hard angle
    return [k for k in _keys(IMPACT_GRIDS) if not (GRID_HARD[k[3]] >= 99 and k[4])]


def _posture_keys() -> list[Key]:
    # posture path off (180 deg): one representative of the other thresholds
    return [k for k in _keys(POSTURE_GRIDS) if not (GRID_LOW_ANGLE[k[1]] >= 180 and any(k[:1] + k[2:]))]


def params_of(ik: Key, pk: Key) -> dict[str, float]:
    return {"impact_g": GRID_IMPACT[ik[0]], "angle_deg": GRID_ANGLE[ik[1]],
            "still_g": GRID_STILL[ik[2]], "hard_g": GRID_HARD[ik[3]],
            "hard_angle_deg": GRID_HARD_ANGLE[ik[4]],
            "post_still_g": GRID_POST_STILL[pk[0]], "low_angle_deg": GRID_LOW_ANGLE[pk[1]],
            "low_g": GRID_LOW_G[pk[2]], "low_spread_g": GRID_LOW_SPREAD[pk[3]],
            "low_confirm_s": GRID_LOW_CONFIRM[pk[4]]}


def candidate_table(trials: list[Trial]) -> Table:
    """Run the detector with its decision thresholds off, once per value of
    the run-forming parameters, and turn the candidates into bitsets."""
    import math

    off = {"angle_deg": 0.0, "still_g": 1e9, "hard_g": 1e9, "upright_deg": 180.0,
           "low_angle_deg": 180.0, "low_confirm_s": max(GRID_LOW_CONFIRM)}
    impact: dict[Key, int] = {}
    posture: dict[Key, int] = {}
    ikeys = _impact_keys()
    pkeys = _posture_keys()
    for v in range(max(len(GRID_IMPACT), len(GRID_POST_STILL))):
        p = dict(off, impact_g=GRID_IMPACT[min(v, len(GRID_IMPACT) - 1)],
                 post_still_g=GRID_POST_STILL[min(v, len(GRID_POST_STILL) - 1)])
        for i, t in enumerate(trials):
            r = run_trial(t, p, record=True)
            bit = 1 << i
            if v < len(GRID_IMPACT):
                for ik in ikeys:
                    if ik[0] != v:
                        continue
                    ang, st = GRID_ANGLE[ik[1]], GRID_STILL[ik[2]]
                    h, ha = GRID_HARD[ik[3]], GRID_HARD_ANGLE[ik[4]]
                    if any(c.main_rule(ang, st) or c.hard_rule(h, ha, st) for c in r.candidates):
                        impact[ik] = impact.get(ik, 0) | bit
            if v < len(GRID_POST_STILL):
                for pk in pkeys:
                    if pk[0] != v or GRID_LOW_ANGLE[pk[1]] >= 180:
                        continue
                    cos_low = math.cos(math.radians(GRID_LOW_ANGLE[pk[1]]))
                    low2 = GRID_LOW_G[pk[2]] ** 2
                    n_conf = max(2, int(GRID_LOW_CONFIRM[pk[4]] / 0.5 + 0.5))
                    if any(rc.passes(cos_low, low2, GRID_LOW_SPREAD[pk[3]], n_conf) for rc in r.runs):
                        posture[pk] = posture.get(pk, 0) | bit
    return Table(impact, posture)


def _neighbours(k: Key, grids: tuple[tuple[float, ...], ...]) -> list[Key]:
    out = []
    for d in range(len(k)):
        for step in (-1, 1):
            j = k[d] + step
            if 0 <= j < len(grids[d]):
                out.append(k[:d] + (j,) + k[d + 1:])
    return out


TIE_BREAKS = ("conservative", "neighbours", "permissive")


def tune(table: Table, trials: list[Trial], idx: Iterable[int],
         tie_break: str = "conservative") -> tuple[Key, Key]:
    """Choose a setting on trials[idx] only: the highest sensitivity among
    settings whose specificity is >= MIN_TRAIN_SP; ties go to the higher
    specificity, then by `tie_break`:
      conservative  the most conservative setting (CONSERVATIVE): the training
                    folds cannot see a new person's hard ADL, and false alarms
                    per hour is the tightest goal (the default);
      neighbours    the setting whose grid neighbours (one threshold one step
                    away) change the fewest training trials, then conservative;
      permissive    the least conservative (lowest thresholds first).
    Settings with identical trial sets are scored once."""
    fall_mask = adl_mask = 0
    for i in idx:
        if trials[i].is_fall:
            fall_mask |= 1 << i
        else:
            adl_mask |= 1 << i
    n_f, n_a = max(1, fall_mask.bit_count()), max(1, adl_mask.bit_count())
    mask = fall_mask | adl_mask
    ib = {k: table.impact.get(k, 0) & mask for k in _impact_keys()}
    pb = {k: table.posture.get(k, 0) & mask for k in _posture_keys()}
    igroups: dict[int, list[Key]] = {}
    for k, v in ib.items():
        igroups.setdefault(v, []).append(k)
    pgroups: dict[int, list[Key]] = {}
    for k, v in pb.items():
        pgroups.setdefault(v, []).append(k)

    best: tuple[Any, ...] | None = None
    tied: list[tuple[list[Key], list[Key]]] = []
    for a, iks in igroups.items():
        for b, pks in pgroups.items():
            ev = a | b
            sp = 1 - (ev & adl_mask).bit_count() / n_a
            ok = sp >= MIN_TRAIN_SP
            sc = (ok, (ev & fall_mask).bit_count() / n_f if ok else sp, sp)
            if best is None or sc > best:
                best, tied = sc, [(iks, pks)]
            elif sc == best:
                tied.append((iks, pks))
    assert best is not None
    cands = [(ik, pk) for iks, pks in tied for ik in iks for pk in pks]

    def conservative(ik: Key, pk: Key) -> tuple[float, ...]:
        p = params_of(ik, pk)
        return tuple(p[k] * sign for k, sign in CONSERVATIVE)

    if tie_break == "permissive":
        return min(cands, key=lambda c: conservative(*c))
    if tie_break == "neighbours":
        def changed(ik: Key, pk: Key) -> int:
            ev = ib[ik] | pb[pk]
            n = sum((ev ^ (ib[k] | pb[pk])).bit_count() for k in _neighbours(ik, IMPACT_GRIDS) if k in ib)
            return n + sum((ev ^ (ib[ik] | pb[k])).bit_count() for k in _neighbours(pk, POSTURE_GRIDS) if k in pb)

        return max(cands, key=lambda c: (-changed(*c), conservative(*c)))
    return max(cands, key=lambda c: conservative(*c))


def nested_cross_validate(trials: list[Trial], table: Table | None = None) -> dict[str, Any]:
    """Leave-one-subject-out with the tie-break rule itself chosen inside each
    training fold, by an inner leave-one-subject-out over the training subjects
    (scored on the trial bitsets): the rule meeting the most goals on the inner
    held-out trials wins, then the higher sensitivity + specificity."""
    table = table or candidate_table(trials)
    subjects = sorted({t.subject for t in trials})
    of = {s: [i for i, t in enumerate(trials) if t.subject == s] for s in subjects}

    def bits(choice: tuple[Key, Key]) -> int:
        ik, pk = choice
        return table.impact.get(ik, 0) | table.posture.get(pk, 0)

    held: list[TrialResult] = []
    picked = []
    for s in subjects:
        train_subjects = [u for u in subjects if u != s]
        best: tuple[Any, ...] | None = None
        for rule in TIE_BREAKS:
            tp = n_f = fp = n_a = 0
            for u in train_subjects:
                idx = [i for v in train_subjects if v != u for i in of[v]]
                ev = bits(tune(table, trials, idx, rule))
                for i in of[u]:
                    hit = bool(ev >> i & 1)
                    if trials[i].is_fall:
                        n_f += 1
                        tp += hit
                    else:
                        n_a += 1
                        fp += hit
            se = tp / n_f if n_f else 0.0
            sp = 1 - fp / n_a if n_a else 0.0
            met = (se >= GOALS["sensitivity"]) + (sp >= GOALS["specificity"]) + (fp == 0)
            key = (met, se + sp, -TIE_BREAKS.index(rule))
            if best is None or key > best:
                best = key + (rule,)
        assert best is not None
        rule = best[-1]
        choice = tune(table, trials, [i for u in train_subjects for i in of[u]], rule)
        picked.append({"subject": s, "tie_break": rule, "params": params_of(*choice)})
        held.extend(run_trial(trials[i], params_of(*choice)) for i in of[s])
    return {"scheme": "nested leave-one-subject-out (tie-break chosen by inner folds)",
            "folds": picked, "pooled": summarize(held),
            "rules_chosen": dict(Counter(f["tie_break"] for f in picked))}


def consensus(choices: Sequence[tuple[Key, Key]]) -> tuple[Key, Key]:
    """The setting the folds chose most often (ties: the first chosen)."""
    return Counter(choices).most_common(1)[0][0]


def cross_validate(trials: list[Trial], table: Table | None = None) -> dict[str, Any]:
    table = table or candidate_table(trials)
    held: list[TrialResult] = []
    folds = []
    choices = []
    for s in sorted({t.subject for t in trials}):
        train = [i for i, t in enumerate(trials) if t.subject != s]
        test = [i for i, t in enumerate(trials) if t.subject == s]
        choice = tune(table, trials, train)
        choices.append(choice)
        th = params_of(*choice)
        # Score the held-out subject with the real detector, not the table.
        fold = [run_trial(trials[i], th) for i in test]
        held.extend(fold)
        r = summarize(fold)
        folds.append({"subject": s, "params": th, "falls_detected": r["falls_detected"], "falls": r["falls"],
                      "sensitivity": r["sensitivity"], "specificity": r["specificity"],
                      "adl_with_false_alarm": r["adl_with_false_alarm"], "adl": r["adl"],
                      "false_alarms": r["false_alarms"], "adl_hours": r["adl_hours"]})
    chosen = params_of(*consensus(choices))
    spread: dict[str, dict[str, int]] = {}
    for f in folds:
        for k, v in f["params"].items():
            d = spread.setdefault(k, {})
            d["%g" % v] = d.get("%g" % v, 0) + 1
    se = [f["sensitivity"] for f in folds if f["sensitivity"] is not None]
    sp = [f["specificity"] for f in folds if f["specificity"] is not None]
    return {"scheme": "leave-one-subject-out", "folds": folds, "pooled": summarize(held),
            "consensus": chosen,
            "folds_agreeing": sum(1 for f in folds if f["params"] == chosen),
            "param_choices": spread,
            "fold_sensitivity": _spread(se), "fold_specificity": _spread(sp)}


def _spread(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs),
            "stdev": statistics.pstdev(xs), "folds": len(xs)}


# -- report ----------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "n/a" if x is None else "%.1f %%" % (100 * x)


def goal_lines(s: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, measured, goal, met) for the issue's goals."""
    lat = s["latency_ms_median"]
    fah = s["false_alarms_per_hour"]

    def ge(x: float | None, g: float) -> bool | None:
        return None if x is None else x >= g

    return [
        ("sensitivity, all falls", _pct(s["sensitivity"]), ">= %.0f %%" % (100 * GOALS["sensitivity"]),
         ge(s["sensitivity"], GOALS["sensitivity"])),
        ("sensitivity, low-impact falls", _pct(s["low_impact_sensitivity"]),
         ">= %.0f %%" % (100 * GOALS["low_impact_sensitivity"]),
         ge(s["low_impact_sensitivity"], GOALS["low_impact_sensitivity"])),
        ("specificity (ADL trials)", _pct(s["specificity"]), ">= %.0f %%" % (100 * GOALS["specificity"]),
         ge(s["specificity"], GOALS["specificity"])),
        ("false alarms per hour of ADL", "n/a" if fah is None else "%.2f" % fah,
         "<= %.1f" % GOALS["false_alarms_per_hour"],
         None if fah is None else fah <= GOALS["false_alarms_per_hour"]),
        ("median detection latency", "n/a" if lat is None else "%.2f s" % (lat / 1000),
         "<= %.0f s" % GOALS["latency_s_median"],
         None if lat is None else lat / 1000 <= GOALS["latency_s_median"]),
    ]


def print_goals(s: dict[str, Any], title: str) -> None:
    print("== goals (%s)" % title)
    for name, got, goal, met in goal_lines(s):
        print("  %-32s %-9s goal %-8s %s" % (name, got, goal, {True: "met", False: "NOT MET", None: "n/a"}[met]))


def print_summary(s: dict[str, Any], title: str) -> None:
    print("== %s" % title)
    print("falls detected        %d / %d  sensitivity %s" % (s["falls_detected"], s["falls"], _pct(s["sensitivity"])))
    print("low-impact falls      %d / %d  sensitivity %s  (%s)" % (
        s["low_impact_detected"], s["low_impact_falls"], _pct(s["low_impact_sensitivity"]),
        " ".join(LOW_IMPACT)))
    print("ADL with false alarm  %d / %d  specificity %s" % (s["adl_with_false_alarm"], s["adl"], _pct(s["specificity"])))
    fah = s["false_alarms_per_hour"]
    print("false alarms          %d in %.2f h of ADL = %s per hour" % (
        s["false_alarms"], s["adl_hours"], "n/a" if fah is None else "%.2f" % fah))
    if s["latency_ms_median"] is not None:
        print("latency after impact  median %.0f ms, max %.0f ms (impact = max |a| in the %.0f s before detection);"
              " alarm after the %d s cancel window: median %.1f s" % (
                  s["latency_ms_median"], s["latency_ms_max"], LATENCY_LOOKBACK_S, CANCEL_WINDOW_S,
                  CANCEL_WINDOW_S + s["latency_ms_median"] / 1000))
    if s["detected_by"]:
        print("detected by           %s" % ", ".join(
            "%s path %d (latency median %.2f s)" % (k, n, s["latency_ms_median_by_path"][k] / 1000)
            for k, n in sorted(s["detected_by"].items())))
    print_table(s)
    if s["missed_falls"]:
        print("missed falls: " + " ".join(s["missed_falls"]))
    if s["false_alarm_trials"]:
        print("ADL false alarms: " + " ".join(s["false_alarm_trials"]))


def print_table(s: dict[str, Any]) -> None:
    per = s["per_activity"]
    print("  type  trials  detected  rate     impact posture  latency median")
    for code in FALL_CODES:
        if code in per:
            a = per[code]
            lat = a["latency_ms_median"]
            print("  %s%s %6d  %8d  %-7s  %6d %7d  %s" % (
                code, "*" if code in LOW_IMPACT else " ", a["trials"], a["with_event"],
                _pct(a["with_event"] / a["trials"]), a["impact"], a["posture"],
                "-" if lat is None else "%.2f s" % (lat / 1000)))
    print("  (* low-impact group)")
    print("  type  trials  false-alarm trials  events  ADL hours  events per hour")
    for code in ADL_CODES:
        if code in per:
            a = per[code]
            h = a["adl_s"] / 3600
            print("  %s  %6d  %18d  %6d  %9.3f  %.2f" % (
                code, a["trials"], a["with_event"], a["events"], h, a["events"] / h if h else 0.0))


def resources(timing: Timing) -> dict[str, Any]:
    det = FallDetector(RATE_HZ)
    return {
        "rate_hz": RATE_HZ, "range_g": RANGE_G,
        "window_samples": det.window, "window_s": det.window / RATE_HZ,
        "posture_blocks": det.blocks,
        "ring_buffer_bytes": det.buf_bytes,
        "work_per_sample": "O(1): one |a|^2, a compare and a ring write, 7 block sums, plus 7 sums in the "
                           "post window; once per trigger a pass over the %d-sample ring, once per 0.5 s "
                           "block a few compares, once per still run a pass over %d block summaries" % (
                               det.window, det.n_lag),
        "cpython_us_per_sample_mean": timing.total_ns / max(1, timing.calls) / 1000,
        "cpython_us_per_sample_max": timing.max_ns / 1000,
        "samples_timed": timing.calls,
        "machine": "%s, %d cores, Python %s" % (sys.platform, os.cpu_count() or 0, sys.version.split()[0]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="directory of SisFall-format recordings (searched recursively)")
    ap.add_argument("--no-cv", action="store_true", help="skip the leave-one-subject-out cross-validation")
    ap.add_argument("--cv", action="store_true", help=argparse.SUPPRESS)  # the default now
    ap.add_argument("--held-out", action="store_true",
                    help="DIR is a held-out set: score the firmware defaults against the goals, no tuning")
    ap.add_argument("--nested", action="store_true",
                    help="also choose the tuning's tie-break rule inside each fold (inner leave-one-subject-out; "
                         "about 2 minutes on 2 cores)")
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
    cv_ok = not args.no_cv and not args.held_out and len({t.subject for t in trials}) >= 2
    if args.held_out:
        out["goals"] = [dict(zip(("figure", "measured", "goal", "met"), g, strict=True))
                        for g in goal_lines(out["result"])]
    if cv_ok:
        table = candidate_table(trials)
        out["cv"] = cross_validate(trials, table)
        if args.nested:
            out["nested"] = nested_cross_validate(trials, table)
        out["goals"] = [dict(zip(("figure", "measured", "goal", "met"), g, strict=True))
                        for g in goal_lines(out["cv"]["pooled"])]
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print("recordings: %d under %s; detector defaults: %s" % (
        len(trials), args.dir, ", ".join("%s=%g" % kv for kv in sorted(DEFAULTS.items()))))
    print_summary(out["result"], "detector (firmware defaults, all recordings%s)" % (
        ", held-out set" if args.held_out else "; defaults chosen by the folds"))
    if args.held_out:
        print_goals(out["result"], "held-out set, firmware defaults")
    r = out["resources"]
    print("memory: ring of %d samples (%.1f s) x 3 axes + %d block summaries x 5, float32 = %d bytes" % (
        r["window_samples"], r["window_s"], r["posture_blocks"], r["ring_buffer_bytes"]))
    print("work per sample: %s; CPython %.1f us mean, %.0f us max per sample (%s)" % (
        r["work_per_sample"], r["cpython_us_per_sample_mean"], r["cpython_us_per_sample_max"], r["machine"]))
    if cv_ok:
        cv = out["cv"]
        print_summary(cv["pooled"], "cross-validation (%s, thresholds tuned on the other subjects, "
                      "pooled held-out trials)" % cv["scheme"])
        print_goals(cv["pooled"], "cross-validated")
        print("== fold stability")
        for key, title in (("fold_sensitivity", "sensitivity"), ("fold_specificity", "specificity")):
            sp = cv[key]
            if sp:
                print("  per-fold %s: min %s, median %s, max %s, stdev %.1f points over %d folds" % (
                    title, _pct(sp["min"]), _pct(sp["median"]), _pct(sp["max"]), 100 * sp["stdev"], sp["folds"]))
        for f in cv["folds"]:
            diff = {k: v for k, v in f["params"].items() if cv["consensus"][k] != v}
            print("  fold %s: falls %d/%d, ADL false alarms %d/%d, params %s" % (
                f["subject"], f["falls_detected"], f["falls"], f["adl_with_false_alarm"], f["adl"],
                "as consensus" if not diff else ", ".join("%s=%g" % kv for kv in sorted(diff.items()))))
        print("  %d of %d folds chose the consensus setting: %s" % (
            cv["folds_agreeing"], len(cv["folds"]), ", ".join("%s=%g" % kv for kv in sorted(cv["consensus"].items()))))
        moved = {k: v for k, v in cv["param_choices"].items() if len(v) > 1}
        if moved:
            print("  thresholds that moved between folds: %s" % "; ".join(
                "%s %s" % (k, ", ".join("%s (%d)" % kv for kv in sorted(v.items()))) for k, v in sorted(moved.items())))
        if "nested" in out:
            nc = out["nested"]
            print_summary(nc["pooled"], nc["scheme"])
            print_goals(nc["pooled"], "nested cross-validation")
            print("  tie-break rules the folds chose: %s" % ", ".join(
                "%s (%d)" % kv for kv in sorted(nc["rules_chosen"].items())))
        stale = {k: v for k, v in cv["consensus"].items() if DEFAULTS[k] != v}
        if stale:
            print("NOTE: firmware defaults differ from the folds' consensus: %s" % stale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
