"""Wearable fall detector: a fall is recognised by what follows it.

Pure logic, runs unchanged on MicroPython and CPython. Feed one accelerometer
sample at a time (in g, sensor at 50 Hz, +-16 g); `feed` returns a FallEvent
once a fall is confirmed. Two paths, one event per fall:

  impact path (hard falls), confirmed 2.5 s after the last impact:
  1. an impact (|a| >= impact_g) starts an episode; impacts within
     max_episode_s extend it; the largest |a| is the reported impact.
  2. at the start, one pass over the ring buffer gives the orientation before
     (mean vector of the pre window) and the free-fall minimum of |a|.
  3. the post window after the last impact is summarised on the fly: the
     orientation after (mean vector) and the spread (stillness).
  4. fall = still, and turned by >= angle_deg, or by >= hard_angle_deg after
     a peak >= hard_g.

  posture path (soft falls: fainting, sliding off a chair, falling while
  getting up or sitting down), needing no impact threshold of 2.5 g:
  5. the signal is cut into 0.5 s blocks (mean vector, spread, peak |a|).
  6. a run of still blocks (spread <= post_still_g) in one posture starts:
     its posture is compared with the block mean up to lag_s before it; the
     transition must have turned the trunk by >= low_angle_deg and been
     violent (a peak >= low_g and a block spread >= low_spread_g).
  7. the fall is confirmed once the person has stayed still in that posture
     for low_confirm_s: a longer confirmation than the impact path.

Only magnitudes and angles between mean vectors are used, so the mounting does
not matter as long as the device is fixed to the trunk (see FALL_DETECTION.md
for the design, the measurements and the limits).
"""

import math
from array import array

try:
    from micropython import const
except ImportError:  # CPython: const() is the identity
    const = int

_IDLE = const(0)
_ACTIVE = const(1)

# Default thresholds: the setting the leave-one-subject-out folds chose on the
# SisFall dev subset (tools/falls/fall_eval.py, FALL_DETECTION.md).
DEFAULTS = {
    "impact_g": 3.0,      # |a| at or above this is an impact (starts/extends an episode)
    "angle_deg": 70.0,    # min orientation change, before vs. after the episode
    "still_g": 0.15,      # max spread of a in the post window (lying still)
    "hard_g": 3.0,        # a peak this hard needs only ...
    "hard_angle_deg": 30.0,  # ... this much orientation change
    "upright_deg": 180.0,  # max tilt of UP_AXIS before the episode; 180 = off
    "pre_from_s": 2.5,    # pre window: [start - pre_from, start - pre_to]
    "pre_to_s": 1.0,
    "ff_s": 1.0,          # free-fall dip searched from start - ff_s to the peak
    "post_from_s": 1.0,   # post window: [last impact + post_from, + post_to]
    "post_to_s": 2.5,
    "max_episode_s": 5.0,  # an impact after this long starts a new episode
    # posture path (soft falls)
    "post_still_g": 0.2,   # max spread of a 0.5 s block that counts as still
    "post_drift_deg": 10.0,  # a still run stays within this of its first block
    "low_angle_deg": 80.0,  # min turn from the posture before to the still posture
    "low_g": 1.8,           # min peak |a| in the transition (0 = no trigger)
    "low_spread_g": 0.5,    # min block spread in the transition (its violence)
    "low_confirm_s": 4.0,   # still this long before a soft fall is confirmed
    "lag_s": 4.0,           # the posture before is looked for up to this far back
    "refractory_s": 10.0,   # one event per fall: later events this soon are dropped
}

BLOCK_S = 0.5  # posture-path block length


# A window's moments: [count, sum x, y, z, sum x^2, y^2, z^2, origin x, y, z]. Sums are
# taken relative to the window's first sample, which keeps a float32 variance accurate.
def _add(w, x, y, z):
    if w[0] == 0:
        w[7] = x
        w[8] = y
        w[9] = z
    x -= w[7]
    y -= w[8]
    z -= w[9]
    w[0] += 1
    w[1] += x
    w[2] += y
    w[3] += z
    w[4] += x * x
    w[5] += y * y
    w[6] += z * z


def _moments(w):
    """(mean x, y, z, spread) of a window, and the window cleared for the next one."""
    c = w[0]
    mx = w[1] / c
    my = w[2] / c
    mz = w[3] / c
    var = (w[4] / c - mx * mx) + (w[5] / c - my * my) + (w[6] / c - mz * mz)
    mx += w[7]
    my += w[8]
    mz += w[9]
    for j in range(7):
        w[j] = 0.0
    return mx, my, mz, (math.sqrt(var) if var > 0.0 else 0.0)


class FallEvent:
    """A confirmed fall. `impact_ms` is the time of the largest |a| sample."""

    def __init__(self, impact_ms, peak_g, confirm_ms=0, angle_deg=0.0,
                 still_g=0.0, ff_g=0.0, kind="impact"):
        self.kind = kind  # "impact" or "posture" (which path confirmed it)
        self.impact_ms = impact_ms
        self.peak_g = peak_g
        self.confirm_ms = confirm_ms
        self.angle_deg = angle_deg
        self.still_g = still_g
        self.ff_g = ff_g

    def __repr__(self):
        return "FallEvent(%s, impact_ms=%d, peak_g=%.2f, angle=%.0f, still=%.3f)" % (
            self.kind, self.impact_ms, self.peak_g, self.angle_deg, self.still_g)


class FallDetector:
    SAMPLE_RATE_HZ = 50
    RANGE_G = 16
    # Sensor axis that points down when the wearer stands (belt clip or
    # pendant, README axes): standing reads about (0, -1, 0) g. Only used by
    # the optional upright check (upright_deg < 180).
    UP_AXIS = (0.0, -1.0, 0.0)
    record = False  # tuning: keep every still run's features (allocates); set per instance

    def __init__(self, rate_hz=50, **params):
        p = DEFAULTS  # shared, read only: a copy only when a parameter is overridden
        if params:
            p = dict(DEFAULTS)
            for k in params:
                if k not in p:
                    raise ValueError("unknown parameter " + k)
                p[k] = params[k]
        self.params = p
        self.rate_hz = rate_hz
        self._imp2 = float(p["impact_g"]) ** 2
        # Thresholds read once per decision are kept in tuples: every instance attribute
        # is a slot in one hash table, and past 47 of them it is a 944-byte block.
        self._thr = (float(p["still_g"]), math.cos(math.radians(p["upright_deg"])),
                     math.cos(math.radians(p["angle_deg"])), float(p["hard_g"]) ** 2,
                     math.cos(math.radians(p["hard_angle_deg"])))

        def n(s):
            return max(1, int(s * rate_hz + 0.5))

        pre_from = n(p["pre_from_s"])
        pre_to = n(p["pre_to_s"])
        n_ff = n(p["ff_s"])
        self._pre_w = (pre_to, pre_from, n_ff)
        self.n_post_from = n(p["post_from_s"])
        self.n_post_to = n(p["post_to_s"])
        self.n_max_ep = n(p["max_episode_s"])
        if not (pre_from > pre_to and
                self.n_post_to > self.n_post_from):
            raise ValueError("inconsistent windows")
        # The ring only has to reach back to the start of the pre window; the
        # post window is summarised on the fly.
        self.window = max(pre_from, n_ff)
        z = bytes(4 * self.window)  # zeros, without a list of floats twice the ring's size
        self._bx = array("f", z)
        self._by = array("f", z)
        self._bz = array("f", z)
        # Window moments (_add) in place: no float object per sample. 'd' holds the port's
        # float exactly (double on CPython and unix, float32 on the ESP32).
        self._acc = array("d", bytes(80))  # impact post window moments
        # Posture path: a ring of 0.5 s block summaries, long enough to reach
        # lag_s back from the second block of a still run.
        self.n_block = n(BLOCK_S)
        self.n_lag = max(1, int(p["lag_s"] / BLOCK_S + 0.5))
        self.n_confirm = max(2, int(p["low_confirm_s"] / BLOCK_S + 0.5))
        self.n_refr = n(p["refractory_s"])
        self.blocks = self.n_lag + 2
        self._still_blk = float(p["post_still_g"])
        self._cos_drift = math.cos(math.radians(p["post_drift_deg"]))
        self._low_thr = (math.cos(math.radians(p["low_angle_deg"])), float(p["low_g"]) ** 2,
                         float(p["low_spread_g"]))
        z = bytes(4 * self.blocks)
        self._kx = array("f", z)   # block mean vector
        self._ky = array("f", z)
        self._kz = array("f", z)
        self._ks = array("f", z)   # block spread (RMS of the 3 axes)
        self._kp = array("f", z)   # block peak |a|^2
        self._bacc = array("d", bytes(80))  # current block's moments
        self.reset()

    @property
    def buf_bytes(self):
        """RAM of the rings: 3 float32 per sample, 5 per block summary."""
        return 3 * 4 * self.window + 5 * 4 * self.blocks

    def reset(self):
        self._n = 0       # samples seen
        self._head = 0    # next write position in the ring
        self._state = _IDLE
        self.last = None  # features of the last decided episode (for tuning)
        self._nb = 0      # blocks completed
        self._bpk = 0.0   # peak |a|^2 in the current block
        self._run = 0     # still blocks in a row, in one posture
        self._ref = (0.0, 0.0, 1.0)  # first block mean of the run
        self._post_ok = False  # the run started after a fall-like transition
        self._post_feat = (0.0, 0.0, 0.0)  # (angle, peak, spread) of the judged transition
        self._ev_n = None  # sample of the last event (refractory)
        self._pk_blk = 0  # blocks from the posture-before block to the peak block
        self.run_cand = None  # tuning (record=True): features of a new still run
        for j in range(7):
            self._bacc[j] = 0.0

    # -- internals ---------------------------------------------------------
    def _clear_acc(self):
        a = self._acc  # zeroed in place: no allocation per impact
        for j in range(7):
            a[j] = 0.0

    def _start(self, t_ms, m2):
        """New episode at the current sample: summarise the ring (the samples
        before it) into the pre-episode orientation and free-fall minimum."""
        w = self.window
        pre_to, pre_from, n_ff = self._pre_w
        sx = sy = sz = 0.0
        cnt = 0
        min2 = m2
        for k in range(1, min(w, self._n) + 1):
            i = (self._head - k) % w  # k = 1: the sample just before this one
            x = self._bx[i]
            y = self._by[i]
            z = self._bz[i]
            if pre_to <= k <= pre_from:
                sx += x
                sy += y
                sz += z
                cnt += 1
            if k <= n_ff:
                q = x * x + y * y + z * z
                if q < min2:
                    min2 = q
        if cnt == 0:
            # Just after power-up: fall back on the oldest sample available.
            k = min(w, self._n)
            if k:
                i = (self._head - k) % w
                sx, sy, sz, cnt = self._bx[i], self._by[i], self._bz[i], 1
        self._pre = (sx / cnt, sy / cnt, sz / cnt) if cnt else None
        self._state = _ACTIVE
        self._start_n = self._n
        self._min2 = min2        # running min |a|^2 since start - ff window
        self._ff2 = min2         # min |a|^2 before the largest peak
        self._peak2 = m2
        self._peak_ms = t_ms
        self._last_n = self._n   # last impact sample

    def _decide(self, t_ms):
        mx, my, mz, spread = _moments(self._acc)
        cosang = 1.0
        cosup = 1.0
        if self._pre is not None:
            px, py, pz = self._pre
            pn = math.sqrt(px * px + py * py + pz * pz)
            den = pn * math.sqrt(mx * mx + my * my + mz * mz)
            if den > 0.0:
                cosang = max(-1.0, min(1.0, (px * mx + py * my + pz * mz) / den))
                ux, uy, uz = self.UP_AXIS
                cosup = max(-1.0, min(1.0, (px * ux + py * uy + pz * uz) / pn))
        peak = math.sqrt(self._peak2)
        ff = math.sqrt(self._ff2)
        angle = math.degrees(math.acos(cosang))
        tilt = math.degrees(math.acos(cosup))
        self.last = (self._peak_ms, peak, angle, spread, ff, t_ms, tilt)
        self._state = _IDLE
        still, cos_up, cos_min, hard2, cos_hard = self._thr
        if spread <= still and cosup >= cos_up and (
                cosang <= cos_min or
                (self._peak2 >= hard2 and cosang <= cos_hard)):
            return FallEvent(self._peak_ms, peak, t_ms, angle, spread, ff)
        return None

    def _block_end(self, t_ms):
        """Close a 0.5 s block; a soft fall is confirmed here. O(1), and once
        per still run a pass over the n_lag block summaries."""
        mx, my, mz, sp = _moments(self._bacc)
        k = self.blocks
        i = self._nb % k
        self._kx[i] = mx
        self._ky[i] = my
        self._kz[i] = mz
        self._ks[i] = sp
        self._kp[i] = self._bpk
        self._bpk = 0.0
        self._nb += 1
        if sp > self._still_blk:
            self._run = 0
            self._post_ok = False
            return None
        if self._run > 0:
            rx, ry, rz = self._ref
            den = math.sqrt((rx * rx + ry * ry + rz * rz) * (mx * mx + my * my + mz * mz))
            if den <= 0.0 or (rx * mx + ry * my + rz * mz) < self._cos_drift * den:
                self._run = 0  # still, but in another posture: a new run
                self._post_ok = False
        if self._run == 0:
            self._ref = (mx, my, mz)
        self._run += 1
        if self._run == 2:
            self._post_ok = self._judge_transition(i)
        if self._run == self.n_confirm and self._post_ok:
            ang, pk, tsp = self._post_feat
            return FallEvent(self._peak_blk_ms(t_ms), pk, t_ms, ang, sp, 0.0, "posture")
        return None

    def _judge_transition(self, i):
        """The run's first two blocks (i-1, i) against each block up to n_lag
        before them: turned far enough, with a violent enough transition?"""
        k = self.blocks
        j = (i - 1) % k
        qx = self._kx[i] + self._kx[j]
        qy = self._ky[i] + self._ky[j]
        qz = self._kz[i] + self._kz[j]
        qn = math.sqrt(qx * qx + qy * qy + qz * qz)
        pk2 = 0.0
        tsp = 0.0
        ok = False
        best = None
        feats = [] if self.record else None
        cos_low, low2, low_sp = self._low_thr
        self._pk_blk = 0
        for lag in range(1, min(self.n_lag, self._nb - 2) + 1):
            b = (i - 1 - lag) % k
            if self._kp[b] > pk2:
                pk2 = self._kp[b]
                self._pk_blk = lag
            if self._ks[b] > tsp:
                tsp = self._ks[b]
            px = self._kx[b]
            py = self._ky[b]
            pz = self._kz[b]
            den = qn * math.sqrt(px * px + py * py + pz * pz)
            cs = (px * qx + py * qy + pz * qz) / den if den > 0.0 else 1.0
            if feats is not None:
                feats.append((cs, pk2, tsp))
            if (not ok and cs <= cos_low and pk2 >= low2 and
                    tsp >= low_sp):
                ok = True
                best = (cs, pk2, tsp, self._pk_blk)
        if feats is not None:
            self.run_cand = feats
        if best is not None:
            cs, pk2, tsp, self._pk_blk = best
            self._post_feat = (math.degrees(math.acos(max(-1.0, min(1.0, cs)))),
                               math.sqrt(pk2), tsp)
        return ok

    def _peak_blk_ms(self, t_ms):
        """Start time of the transition's peak block (the soft impact), in ms."""
        # blocks back from the current one: the run so far, then the lag
        n0 = (self._nb - self._run - self._pk_blk) * self.n_block
        return t_ms - (self._n - n0) * 1000 // self.rate_hz

    # -- public ------------------------------------------------------------
    def feed(self, t_ms, ax, ay, az):
        """Returns None, or a FallEvent when a fall is confirmed."""
        m2 = ax * ax + ay * ay + az * az
        ev = None
        if self._state == _IDLE:
            if m2 >= self._imp2:
                self._start(t_ms, m2)
                self._clear_acc()
        elif m2 >= self._imp2:
            if self._n - self._start_n > self.n_max_ep:
                self._start(t_ms, m2)
            else:
                # A further impact in the same episode; quiet must follow it.
                self._last_n = self._n
                if m2 > self._peak2:
                    self._peak2 = m2
                    self._peak_ms = t_ms
                    self._ff2 = self._min2
            self._clear_acc()
        else:
            if m2 < self._min2:
                self._min2 = m2
            d = self._n - self._last_n
            if d >= self.n_post_from:
                _add(self._acc, ax, ay, az)  # the post window
                if d >= self.n_post_to:
                    ev = self._decide(t_ms)
        _add(self._bacc, ax, ay, az)  # posture path: the current block
        if m2 > self._bpk:
            self._bpk = m2
        if self._bacc[0] >= self.n_block:
            pev = self._block_end(t_ms)
            if ev is None:
                ev = pev
        i = self._head
        self._bx[i] = ax
        self._by[i] = ay
        self._bz[i] = az
        self._head = (i + 1) % self.window
        if ev is not None:
            if self._ev_n is not None and self._n - self._ev_n < self.n_refr:
                ev = None  # the same fall, confirmed by the other path
            else:
                self._ev_n = self._n
        self._n += 1
        return ev
