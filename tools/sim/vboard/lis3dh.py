"""An ST LIS3DH accelerometer on the virtual I2C bus, register-compatible for what a driver
uses: WHO_AM_I, CTRL_REG1/3/4/5, the output registers, the 32-sample FIFO (bypass, FIFO and
stream modes, watermark), FIFO_SRC and the INT1 watermark interrupt.

Register map and bit names: ST LIS3DH datasheet DocID17530 Rev 2, section 8 (registers) and
section 3.2 (FIFO); sensitivities: Table 4 (mg/digit per mode and full scale).
The sensor samples on its own clock from the moment an ODR is written, also while the ESP32
sleeps: samples come from a queue the test fills (in g), then the last value (at rest) repeats.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

WHO_AM_I = 0x0F
CTRL_REG1 = 0x20
CTRL_REG3 = 0x22
CTRL_REG4 = 0x23
CTRL_REG5 = 0x24
STATUS_REG = 0x27
OUT_X_L = 0x28
FIFO_CTRL_REG = 0x2E
FIFO_SRC_REG = 0x2F
FIFO_DEPTH = 32
ODR_HZ = {1: 1, 2: 10, 3: 25, 4: 50, 5: 100, 6: 200, 7: 400}
# mg per digit (Table 4) by full-scale code, and the left-justified shift, per mode.
_HR = ((1, 2, 4, 12), 4)
_NORMAL = ((4, 8, 16, 48), 6)
_LOW_POWER = ((16, 32, 64, 192), 8)


class Lis3dh:
    ADDRESS = 0x18  # SDO/SA0 tied low; 0x19 with SDO high

    def __init__(self) -> None:
        self.regs = bytearray(0x40)
        self.regs[WHO_AM_I] = 0x33
        self.regs[CTRL_REG1] = 0x07  # power-down, axes enabled (reset value)
        self.fifo: deque[tuple[float, float, float]] = deque()
        self.queue: deque[tuple[float, float, float]] = deque()
        self.rest = (0.0, -1.0, 0.0)  # worn upright: about -1 g on y (FALL_DETECTION.md axes)
        self.latest = self.rest
        self.overrun = False
        self.samples_made = 0
        self.dropped = 0  # samples lost to a full FIFO (the driver read too late)
        self._t0: float | None = None  # when the current ODR was set
        self._ticks = 0

    # -- the test side -----------------------------------------------------------------
    def feed(self, samples: Iterable[tuple[float, float, float]]) -> None:
        """Queue samples (g) for the sensor's next ticks; the last one then repeats."""
        self.queue.extend(samples)

    # -- time --------------------------------------------------------------------------
    def period_ms(self) -> float | None:
        hz = ODR_HZ.get(self.regs[CTRL_REG1] >> 4)
        return None if hz is None else 1000.0 / hz

    def _tick_time(self, k: int) -> float:
        p = self.period_ms()
        assert p is not None and self._t0 is not None
        return self._t0 + k * p

    def sync(self, t: int) -> None:
        """Produce every sample due up to virtual time t."""
        if self.period_ms() is None or self._t0 is None:
            return
        while self._tick_time(self._ticks + 1) <= t:
            self._ticks += 1
            self._sample()

    def _sample(self) -> None:
        if self.queue:
            self.rest = self.queue.popleft()
        self.latest = self.rest
        self.samples_made += 1
        if self._fifo_enabled():
            mode = self.regs[FIFO_CTRL_REG] >> 6
            if len(self.fifo) >= FIFO_DEPTH:
                self.overrun = True
                self.dropped += 1
                if mode == 0b01:  # FIFO mode: stop collecting when full
                    return
                self.fifo.popleft()  # stream mode: the oldest is overwritten
            self.fifo.append(self.latest)

    def _fifo_enabled(self) -> bool:
        return bool(self.regs[CTRL_REG5] & 0x40) and (self.regs[FIFO_CTRL_REG] >> 6) != 0

    def _watermark(self) -> int:
        return self.regs[FIFO_CTRL_REG] & 0x1F

    # -- INT1 --------------------------------------------------------------------------
    def int1(self) -> int:
        if self.regs[CTRL_REG3] & 0x04 and self._fifo_enabled():
            return int(len(self.fifo) > self._watermark())
        return 0

    def next_int1_rise(self, now: int) -> int | None:
        """Virtual time at which INT1 goes high if nobody reads the FIFO, or None (also when it
        is high already: a level that is already there is no edge to wake on)."""
        self.sync(now)
        if self.int1() or not (self.regs[CTRL_REG3] & 0x04 and self._fifo_enabled()):
            return None
        if self.period_ms() is None or self._t0 is None:
            return None
        need = self._watermark() + 1 - len(self.fifo)
        return max(now, math.ceil(self._tick_time(self._ticks + need)))

    # -- the bus side ------------------------------------------------------------------
    def write(self, reg: int, data: bytes, t: int) -> None:
        self.sync(t)
        reg &= 0x7F
        for i, b in enumerate(data):
            r = reg + i if len(data) > 1 else reg
            old_odr = self.regs[CTRL_REG1] >> 4
            self.regs[r] = b
            if r == CTRL_REG1 and (b >> 4) != old_odr:
                self._t0, self._ticks = float(t), 0
            if r == CTRL_REG5 and b & 0x80:  # BOOT: reload trimming, clear the FIFO
                self.fifo.clear()
            if r == FIFO_CTRL_REG and (b >> 6) == 0:  # bypass mode empties the FIFO
                self.fifo.clear()
                self.overrun = False

    def read(self, reg: int, n: int, t: int) -> bytes:
        self.sync(t)
        auto = bool(reg & 0x80)
        reg &= 0x7F
        if reg == OUT_X_L:
            return self._read_out(n if auto else 1)
        out = bytearray()
        for i in range(n):
            r = reg + i if auto else reg
            out.append(self._reg(r))
        return bytes(out)

    def _reg(self, r: int) -> int:
        if r == FIFO_SRC_REG:
            count = len(self.fifo)
            v = min(count, 31)
            if count > self._watermark():
                v |= 0x80
            if count >= FIFO_DEPTH or self.overrun:
                v |= 0x40
            if count == 0:
                v |= 0x20
            return v
        if r == STATUS_REG:
            return 0x0F if self.samples_made else 0
        return self.regs[r]

    def _scale(self) -> tuple[tuple[int, ...], int]:
        if self.regs[CTRL_REG1] & 0x08:
            return _LOW_POWER
        return _HR if self.regs[CTRL_REG4] & 0x08 else _NORMAL

    def _encode(self, g: float) -> bytes:
        sens, shift = self._scale()
        mg = sens[(self.regs[CTRL_REG4] >> 4) & 3]
        bits = 16 - shift
        lim = (1 << (bits - 1)) - 1
        raw = max(-lim - 1, min(lim, round(g * 1000 / mg)))
        v = (raw << shift) & 0xFFFF
        return bytes((v & 0xFF, v >> 8))

    def _read_out(self, n: int) -> bytes:
        # With the FIFO on, a burst read from OUT_X_L rolls over from OUT_Z_H back to
        # OUT_X_L and every 6 bytes pop the next sample (datasheet section 3.2).
        out = bytearray()
        while len(out) < n:
            if self._fifo_enabled():
                sample = self.fifo.popleft() if self.fifo else self.latest
                if not self.fifo:
                    self.overrun = False
            else:
                sample = self.latest
            for g in sample:
                out += self._encode(g)
        return bytes(out[:n])
