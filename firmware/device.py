# What every Tryggheim device does the same way: config, state kept across deep sleep,
# battery reading, and building/sending BTHome adverts. Role apps (pendant.py, ...) use it.
import json

from protocols import bthome

CONFIG_PATH = "config.json"

# Advert burst after an event: long enough that a scanner hears it, short enough that a
# plain BTHome receiver's 4 s packet-id window still treats repeats as one event.
BURST_MS = 3000
BURST_INTERVAL_MS = 50


class ConfigError(Exception):
    pass


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
    return cfg


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
        return [(bthome.BATTERY, pct), (bthome.VOLTAGE, mv)]

    def build(self, objects, trigger):
        self.state["packet_id"] = (self.state["packet_id"] + 1) & 0xFF
        objs = [(bthome.PACKET_ID, self.state["packet_id"])] + self.battery_objects() + objects
        svc = bthome.service_data(bthome.encode_objects(objs), trigger=trigger)
        return bthome.advert(svc)

    def send(self, objects, trigger=True, burst_ms=BURST_MS):
        adv = self.build(objects, trigger)
        self.save_state()
        self.board.advertise(adv, BURST_INTERVAL_MS)
        self.board.wait(burst_ms, ())
        self.board.advertise(None)
        return adv
