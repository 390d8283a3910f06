# ST LIS3DH 3-axis accelerometer over I2C: the wearable's sensor. It samples on its own
# clock into a 32-sample FIFO and raises INT1 at a watermark, so the ESP32 sleeps between
# bursts and reads a whole burst in one I2C transaction.
# Registers: ST DocID17530 (LIS3DH datasheet) section 8; FIFO: section 3.2; sensitivity
# (mg/digit): Table 4. Current at 50 Hz in normal/high-resolution mode: 11 uA (Table 12).
try:
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:  # CPython (tools/sim/battery_model.py reads the constants)

    def const(x):
        return x


WHO_AM_I = const(0x0F)
CTRL_REG1 = const(0x20)
CTRL_REG3 = const(0x22)
CTRL_REG4 = const(0x23)
CTRL_REG5 = const(0x24)
OUT_X_L = const(0x28)
FIFO_CTRL_REG = const(0x2E)
FIFO_SRC_REG = const(0x2F)
AUTO_INC = const(0x80)
CHIP_ID = const(0x33)
_ODR = {1: 1, 10: 2, 25: 3, 50: 4, 100: 5, 200: 6, 400: 7}
_FS = {2: 0, 4: 1, 8: 2, 16: 3}
_MG_HR = (1, 2, 4, 12)  # mg/digit in high-resolution (12-bit) mode, by full-scale code


class LIS3DH:
    def __init__(self, i2c, addr=0x18):
        self.i2c = i2c
        self.addr = addr
        who = self._read(WHO_AM_I, 1)[0]
        if who != CHIP_ID:
            raise OSError("no LIS3DH at 0x%02x (WHO_AM_I 0x%02x)" % (addr, who))
        self.scale = 0.012

    def _read(self, reg, n):
        return self.i2c.readfrom_mem(self.addr, reg, n)

    def _write(self, reg, value):
        self.i2c.writeto_mem(self.addr, reg, bytes((value,)))

    def start(self, rate_hz=50, range_g=16, watermark=25):
        """Sample continuously into the FIFO (stream mode); INT1 high once more than
        `watermark` samples wait."""
        fs = _FS[range_g]
        self.scale = _MG_HR[fs] / 1000
        self._write(CTRL_REG1, (_ODR[rate_hz] << 4) | 0x07)  # ODR, normal mode, X/Y/Z on
        self._write(CTRL_REG4, 0x80 | (fs << 4) | 0x08)  # BDU, full scale, high resolution
        self._write(CTRL_REG5, 0x40)  # FIFO enable
        self._write(FIFO_CTRL_REG, 0x00)  # bypass first: empties the FIFO
        self._write(FIFO_CTRL_REG, 0x80 | (watermark & 0x1F))  # stream mode + watermark
        self._write(CTRL_REG3, 0x04)  # I1_WTM: watermark on INT1

    def power_down(self):
        self._write(CTRL_REG3, 0x00)
        self._write(CTRL_REG1, 0x07)  # ODR 0: power-down (0.5 uA)

    def pending(self):
        src = self._read(FIFO_SRC_REG, 1)[0]
        return 32 if src & 0x40 else src & 0x1F

    def read_fifo(self):
        """Every sample waiting, oldest first, as (x, y, z) in g."""
        n = self.pending()
        if n == 0:
            return []
        # Auto-increment from OUT_X_L rolls over at OUT_Z_H in FIFO mode: one transaction.
        raw = self._read(OUT_X_L | AUTO_INC, 6 * n)
        s = self.scale / 16  # 12-bit values are left-justified in 16
        out = []
        for i in range(0, 6 * n, 6):
            out.append((_s16(raw, i) * s, _s16(raw, i + 2) * s, _s16(raw, i + 4) * s))
        return out


def _s16(b, i):
    v = b[i] | (b[i + 1] << 8)
    return v - 65536 if v & 0x8000 else v
