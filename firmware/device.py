# What every Tryggheim device does the same way: config, state kept across deep sleep,
# battery reading, and building/sending BTHome adverts. Role apps (pendant.py, ...) use it.
import binascii
import json
import os

from protocols import bthome

CONFIG_PATH = "config.json"
# hardware/pinmap.json, put on the flash at provisioning: the default pins per role, so the
# wiring docs and the firmware read one source.
PINMAP_PATH = "pinmap.json"
HEARTBEAT_S = 600  # default: the hub reports a silent device after 3 missed (30 min)
HEARTBEAT_BURST_MS = 500  # 5 adverts; a heartbeat may be missed now and then, an event not
EVENT_BURST_MS = 1000  # door/motion/bed state changes: 10 adverts, no ack (not alarms)
LOW_BATTERY_PCT = 20
# Firmware version sent in heartbeats (BTHome 0xF2: major << 16 | minor << 8 | patch).
VERSION = (0, 2, 0)
WATCHDOG_MS = 20000

# Advert burst after an event: long enough that a scanner hears it, short enough that a
# plain BTHome receiver's 4 s packet-id window still treats repeats as one event.
BURST_MS = 3000
# Non-connectable scannable adverts (ADV_SCAN_IND): 100 ms is the least Bluetooth 4.2
# allows, and NimBLE rejects less. Connectable adverts (ADV_IND, the alarms) may go to 20 ms.
BURST_INTERVAL_MS = 100

# GPIOs of the ESP32 (WROOM-32E): 20, 24 and 28-31 do not exist, 6-11 run the SPI flash,
# 34-39 are inputs only (no output driver, no pulls); deep-sleep wake needs an RTC GPIO and
# the battery an ADC1 channel (ADC2 belongs to the radio).
GPIOS = tuple(n for n in range(40) if n not in (6, 7, 8, 9, 10, 11, 20, 24, 28, 29, 30, 31))
INPUT_ONLY = (34, 35, 36, 37, 38, 39)
RTC_GPIOS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27, 32, 33, 34, 35, 36, 37, 38, 39)
ADC1_GPIOS = (32, 33, 34, 35, 36, 37, 38, 39)
DEFAULT_LED = 2


class ConfigError(Exception):
    pass


# Encryption counter high-water mark on flash (see Device.next_counter).
COUNTER_HWM_PATH = "counter_hwm"
COUNTER_HWM_STEP = 64


def read_counter_hwm(path=COUNTER_HWM_PATH):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0  # never written: a freshly provisioned device starts at 0


def write_counter_hwm(value, path=COUNTER_HWM_PATH):
    # Write then rename: the rename is atomic on LittleFS, so a power cut leaves either the
    # old mark or the new one, never a torn file that would read as 0.
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(str(value))
    os.rename(tmp, path)


def load_config(path=CONFIG_PATH):
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError:
        raise ConfigError("no config file " + path) from None
    except ValueError:
        raise ConfigError("config file is not valid JSON") from None
    for key in ("id", "role"):
        if key not in cfg:
            raise ConfigError("config lacks " + key)
    key = cfg.get("key")
    if key is not None:
        try:
            ok = len(binascii.unhexlify(key)) == 16
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise ConfigError("config key is not 32 hex digits")
    apply_defaults(cfg)
    return cfg


def apply_defaults(cfg, pinmap_path=PINMAP_PATH):
    """Fill pins and hardware facts from the pin map for the role; check what apps rely on."""
    try:
        with open(pinmap_path) as f:
            roles = json.load(f)["roles"]
    except (OSError, ValueError, KeyError):
        raise ConfigError("pin map %s missing or invalid" % pinmap_path) from None
    spec = roles.get(cfg["role"])
    if spec is None:
        raise ConfigError("role %r is not one of %s" % (cfg["role"], ", ".join(sorted(roles))))
    given = cfg.get("pins", {})
    if not isinstance(given, dict):
        raise ConfigError("config pins must be an object of name: GPIO")
    pins = dict(spec["pins"])
    pins.update(given)
    cfg["pins"] = pins
    for k in ("chemistry", "divider", "i2c", "wake", "outputs", "active_low"):
        if k in spec:
            cfg.setdefault(k, spec[k])
    check_pins(cfg)
    if cfg.get("chemistry") not in ("alkaline_2aa", "lipo"):
        raise ConfigError("chemistry %r is not alkaline_2aa or lipo" % cfg.get("chemistry"))
    hb = cfg.setdefault("heartbeat_s", HEARTBEAT_S)
    if not isinstance(hb, int) or not 60 <= hb <= 86400:
        raise ConfigError("heartbeat_s %r is not an integer 60..86400" % (hb,))


def check_pins(cfg):
    """Each pin is one the chip has and can use for its job."""
    pins = cfg["pins"]
    used = {}
    for name, gpio in pins.items():
        if not isinstance(gpio, int) or isinstance(gpio, bool) or gpio not in GPIOS:
            raise ConfigError("pin %s: %r is not a usable ESP32 GPIO (0-39 without 6-11, "
                              "20, 24, 28-31)" % (name, gpio))
        if gpio in used:
            raise ConfigError("pin %s: GPIO %d is already %s" % (name, gpio, used[gpio]))
        used[gpio] = name
    for name in cfg.get("outputs", ()):
        if pins.get(name) in INPUT_ONLY:
            raise ConfigError("pin %s: GPIO %d is input only" % (name, pins[name]))
    for name in cfg.get("wake", ()):
        if name in pins and pins[name] not in RTC_GPIOS:
            raise ConfigError("pin %s: GPIO %d cannot wake from deep sleep (not an RTC "
                              "GPIO)" % (name, pins[name]))
    if "battery" in pins and pins["battery"] not in ADC1_GPIOS:
        raise ConfigError("pin battery: GPIO %d is not an ADC1 input (32-39)"
                          % pins["battery"])


def default_led(pinmap_path=PINMAP_PATH):
    """The LED's GPIO, from the pin map if it can be read (to show a config error)."""
    try:
        with open(pinmap_path) as f:
            roles = json.load(f)["roles"]
        for name in sorted(roles):
            led = roles[name]["pins"].get("led")
            if led in GPIOS and led not in INPUT_ONLY:
                return led
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass
    return DEFAULT_LED


def version_objects():
    """What every heartbeat carries besides the battery: the firmware version."""
    major, minor, patch = VERSION
    return [(bthome.FIRMWARE_VERSION, major << 16 | minor << 8 | patch)]


def battery_percent(mv, chemistry="alkaline_2aa"):
    # Piecewise-linear discharge curves (mV, %) for the two chemistries we ship.
    if chemistry == "lipo":
        curve = ((3300, 0), (3600, 10), (3700, 30), (3800, 55), (3950, 80), (4150, 100))
    else:
        curve = ((2000, 0), (2200, 10), (2400, 35), (2600, 65), (2800, 85), (3100, 100))
    if mv <= curve[0][0]:
        return 0
    for i in range(1, len(curve)):
        v1, p1 = curve[i]
        if mv <= v1:
            v0, p0 = curve[i - 1]
            return p0 + (p1 - p0) * (mv - v0) // (v1 - v0)
    return 100


class Device:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        self.state = self._load_state()
        self._aes = None
        self.changed = []  # inputs that changed during the last send() burst

    def _load_state(self):
        raw = self.board.rtc_load()
        try:
            state = json.loads(raw) if raw else {}
        except ValueError:
            state = {}
        state.setdefault("packet_id", 0)
        return state

    def save_state(self):
        self.board.rtc_save(json.dumps(self.state).encode())

    def battery_objects(self):
        mv = self.board.battery_mv()
        pct = battery_percent(mv, self.cfg.get("chemistry", "alkaline_2aa"))
        objs = [(bthome.BATTERY, pct), (bthome.VOLTAGE, mv),
                (bthome.BATTERY_LOW, 1 if pct <= LOW_BATTERY_PCT else 0)]
        if self.cfg.get("chemistry") == "lipo":  # rechargeable: say whether it is on charge
            objs.append((bthome.BATTERY_CHARGING, 1 if self.board.charging() else 0))
        return objs

    # -- time across deep sleep: the RTC clock, and when the next heartbeat is due --------
    def clock(self):
        return self.board.clock_ms()

    def heartbeat_due(self):
        due = self.state.get("hb_due")
        return not isinstance(due, int) or self.clock() >= due

    def sleep(self, pins, wake_in_ms=None):
        """Deep sleep until the next heartbeat, an earlier wake_in_ms, or an edge on pins."""
        due = self.state.get("hb_due")
        left = self.cfg["heartbeat_s"] * 1000
        if isinstance(due, int):
            left = max(0, due - self.clock())
        if wake_in_ms is not None:
            left = min(left, max(0, wake_in_ms))
        if self.state.pop("faults", None):  # got here cleanly: the fault is over
            self.board.indicate("off")
        self.save_state()
        self.board.deep_sleep(left, pins)

    def build(self, objects, trigger):
        # Called once per new advert content; the burst repeats the returned bytes unchanged.
        self.state["packet_id"] = (self.state["packet_id"] + 1) & 0xFF
        objs = [(bthome.PACKET_ID, self.state["packet_id"])] + self.battery_objects() + objects
        payload = bthome.encode_objects(objs)
        aes = self._cipher()
        if aes is None:
            svc = bthome.service_data(payload, trigger=trigger)
        else:
            svc = bthome.encrypt_service_data(
                aes, self.board.mac(), payload, self.next_counter(), trigger
            )
        return bthome.advert(svc)

    def _cipher(self):
        # The hub accepts only encrypted adverts from a provisioned device; a device without
        # a key (a bench unit) sends plain ones, which the hub counts as "plaintext" and drops.
        if self._aes is None and self.cfg.get("key"):
            self._aes = self.board.aes_ecb(binascii.unhexlify(self.cfg["key"]))
        return self._aes

    def next_counter(self):
        """The encryption counter for a new advert: never used before, even across power loss.
        RTC memory keeps it across deep sleep; the flash high-water mark is above every counter
        ever used, so after power loss the device resumes there. The mark moves in steps of
        COUNTER_HWM_STEP: one flash write per that many adverts, plus one per power-on."""
        ctr = self.state.get("ctr")
        if not isinstance(ctr, int):
            ctr = read_counter_hwm()
        if ctr >= bthome.COUNTER_MAX:
            raise bthome.EncodeError("encryption counter exhausted: re-key the device")
        hwm = self.state.get("ctr_hwm")
        if not isinstance(hwm, int) or ctr >= hwm:
            # Write the new mark before the counter is used: if power fails right after, the
            # device still resumes above it.
            hwm = min(ctr + COUNTER_HWM_STEP, bthome.COUNTER_MAX)
            try:
                write_counter_hwm(hwm)
                self.state["ctr_hwm"] = hwm
            except OSError as e:
                # A full or failing flash must not stop an alarm from going out now; the
                # write is tried again on the next advert (the mark stays unset).
                self.board.log("counter mark not saved: %s" % e)
        self.state["ctr"] = ctr + 1
        return ctr

    def status(self, trigger, watch=("button",)):
        """A short advert with no event (battery, charging): at power-on, on the charger
        edge, as heartbeat. Returns True if a watched input went high meanwhile."""
        self.state["chg"] = 1 if self.board.charging() else 0
        self.send(version_objects(), trigger=trigger, burst_ms=HEARTBEAT_BURST_MS, watch=watch)
        return any(self.board.pin(p) for p in self.changed)

    def send(self, objects, trigger=True, burst_ms=BURST_MS, watch=()):
        """Advertise a new advert for burst_ms. Inputs in `watch` stay watched meanwhile:
        the pins that changed are in self.changed afterwards, so no event is lost."""
        adv = self.build(objects, trigger)
        # Every advert proves the device alive: the next heartbeat is one interval away.
        self.state["hb_due"] = self.clock() + self.cfg["heartbeat_s"] * 1000
        self.save_state()
        board = self.board
        board.advertise(adv, BURST_INTERVAL_MS)
        self.changed = []
        end = board.ticks_add(board.ticks_ms(), burst_ms)
        while True:
            left = board.ticks_diff(end, board.ticks_ms())
            if left <= 0:
                break
            pin = self.board.wait(left, watch)
            if pin is None:
                break
            if pin not in self.changed:
                self.changed.append(pin)
        self.board.advertise(None)
        return adv
