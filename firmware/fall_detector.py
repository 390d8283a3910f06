"""Wearable fall detector: impact, then lying still in a changed orientation.

Pure logic, runs unchanged on MicroPython and CPython. Feed one accelerometer
sample at a time (in g, sensor at 50 Hz, +-16 g); `feed` returns a FallEvent
once a fall is confirmed, 2.5 s after the last impact.

  1. an impact (|a| >= impact_g) starts an episode; impacts within
     max_episode_s extend it; the largest |a| is the reported impact.
  2. at the start, one pass over the ring buffer gives the orientation before
     (mean vector of the pre window) and the free-fall minimum of |a|.
  3. the post window after the last impact is summarised on the fly: the
     orientation after (mean vector) and the spread (stillness).
  4. fall = still, and turned by >= angle_deg, or by >= hard_angle_deg after
     a peak >= hard_g.
Only the angle between the two mean vectors is used, so the mounting does not
matter as long as the device is fixed to the trunk (see FALL_DETECTION.md for
the design, the measurements and the limits).
"""

import math

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

try:
    from array import array
except ImportError:  # pragma: no cover - every MicroPython port has array
    array = None

_IDLE = const(0)
_ACTIVE = const(1)

# Default thresholds, tuned on the SisFall dev subset (FALL_DETECTION.md).
DEFAULTS = {
    "impact_g": 2.5,      # |a| at or above this is an impact (starts/extends an episode)
    "angle_deg": 55.0,    # min orientation change, before vs. after the episode
    "still_g": 0.30,      # max spread of a in the post window (lying still)
    "hard_g": 3.0,        # a peak this hard needs only ...
    "hard_angle_deg": 20.0,  # ... this much orientation change
    "upright_deg": 180.0,  # max tilt of UP_AXIS before the episode; 180 = off
    "pre_from_s": 2.5,    # pre window: [start - pre_from, start - pre_to]
    "pre_to_s": 1.0,
    "ff_s": 1.0,          # free-fall dip searched from start - ff_s to the peak
    "post_from_s": 1.0,   # post window: [last impact + post_from, + post_to]
    "post_to_s": 2.5,
    "max_episode_s": 5.0,  # an impact after this long starts a new episode
}


class FallEvent:
    """A confirmed fall. `impact_ms` is the time of the largest |a| sample."""

    def __init__(self, impact_ms, peak_g, confirm_ms=0, angle_deg=0.0,
                 still_g=0.0, ff_g=0.0):
        self.impact_ms = impact_ms
        self.peak_g = peak_g
        self.confirm_ms = confirm_ms
        self.angle_deg = angle_deg
        self.still_g = still_g
        self.ff_g = ff_g

    def __repr__(self):
        return "FallEvent(impact_ms=%d, peak_g=%.2f, angle=%.0f, still=%.3f)" % (
            self.impact_ms, self.peak_g, self.angle_deg, self.still_g)


class FallDetector:
    SAMPLE_RATE_HZ = 50
    RANGE_G = 16
    # Sensor axis that points down when the wearer stands (belt clip or
    # pendant, README axes): standing reads about (0, -1, 0) g. Only used by
    # the optional upright check (upright_deg < 180).
    UP_AXIS = (0.0, -1.0, 0.0)

    def __init__(self, rate_hz=50, **params):
        p = dict(DEFAULTS)
        for k in params:
            if k not in p:
                raise ValueError("unknown parameter " + k)
            p[k] = params[k]
        self.params = p
        self.rate_hz = rate_hz
        self._imp2 = float(p["impact_g"]) ** 2
        self._cos_min = math.cos(math.radians(p["angle_deg"]))
        self._still = float(p["still_g"])
        self._hard2 = float(p["hard_g"]) ** 2
        self._cos_hard = math.cos(math.radians(p["hard_angle_deg"]))
        self._cos_up = math.cos(math.radians(p["upright_deg"]))

        def n(s):
            return max(1, int(s * rate_hz + 0.5))

        self.n_pre_from = n(p["pre_from_s"])
        self.n_pre_to = n(p["pre_to_s"])
        self.n_ff = n(p["ff_s"])
        self.n_post_from = n(p["post_from_s"])
        self.n_post_to = n(p["post_to_s"])
        self.n_max_ep = n(p["max_episode_s"])
        if not (self.n_pre_from > self.n_pre_to and
                self.n_post_to > self.n_post_from):
            raise ValueError("inconsistent windows")
        # The ring only has to reach back to the start of the pre window; the
        # post window is summarised on the fly.
        self.window = max(self.n_pre_from, self.n_ff)
        self.buf_bytes = 3 * 4 * self.window
        self._bx = array("f", [0.0] * self.window)
        self._by = array("f", [0.0] * self.window)
        self._bz = array("f", [0.0] * self.window)
        self._acc = [0.0] * 7  # post window: count, sums, squared sums
        self._org = (0.0, 0.0, 0.0)
        self.reset()

    def reset(self):
        self._n = 0       # samples seen
        self._head = 0    # next write position in the ring
        self._state = _IDLE
        self.last = None  # features of the last decided episode (for tuning)

    # -- internals ---------------------------------------------------------
    def _clear_acc(self):
        a = self._acc  # zeroed in place: no allocation per impact
        for j in range(7):
            a[j] = 0.0

    def _start(self, t_ms, m2):
        """New episode at the current sample: summarise the ring (the samples
        before it) into the pre-episode orientation and free-fall minimum."""
        w = self.window
        sx = sy = sz = 0.0
        cnt = 0
        min2 = m2
        for k in range(1, min(w, self._n) + 1):
            i = (self._head - k) % w  # k = 1: the sample just before this one
            x = self._bx[i]
            y = self._by[i]
            z = self._bz[i]
            if self.n_pre_to <= k <= self.n_pre_from:
                sx += x
                sy += y
                sz += z
                cnt += 1
            if k <= self.n_ff:
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
        c, sx, sy, sz, sxx, syy, szz = self._acc
        mx = sx / c
        my = sy / c
        mz = sz / c
        var = (sxx / c - mx * mx) + (syy / c - my * my) + (szz / c - mz * mz)
        ox, oy, oz = self._org
        mx += ox
        my += oy
        mz += oz
        spread = math.sqrt(var) if var > 0.0 else 0.0
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
        if spread <= self._still and cosup >= self._cos_up and (
                cosang <= self._cos_min or
                (self._peak2 >= self._hard2 and cosang <= self._cos_hard)):
            return FallEvent(self._peak_ms, peak, t_ms, angle, spread, ff)
        return None

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
                # Post window: sums and squared sums relative to its first
                # sample, which keeps a float32 variance accurate.
                a = self._acc
                if a[0] == 0:
                    self._org = (ax, ay, az)
                ox, oy, oz = self._org
                x = ax - ox
                y = ay - oy
                z = az - oz
                a[0] += 1
                a[1] += x
                a[2] += y
                a[3] += z
                a[4] += x * x
                a[5] += y * y
                a[6] += z * z
                if d >= self.n_post_to:
                    ev = self._decide(t_ms)
        i = self._head
        self._bx[i] = ax
        self._by[i] = ay
        self._bz[i] = az
        self._head = (i + 1) % self.window
        self._n += 1
        return ev
