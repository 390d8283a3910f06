"""Home Assistant discovery ([home_assistant], hub/delivery/home_assistant.py) against real
Mosquitto brokers: the family's broker (Home Assistant's) and, separately, the response centre's.

Every discovery config the hub leaves on the family's broker validates against the schema
written from Home Assistant's documentation (tests/hub/delivery/ha_discovery_schema.py);
states follow the devices; a silent device becomes unavailable; configs come back on Home Assistant's
birth message and go away when a device is removed; only what the section allows is there.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from hub.admin.audit import Who
from hub.admin.control import ControlError
from hub.clock import ManualClock
from hub.config import keys
from hub.config import settings as config
from hub.config.home_assistant import ENTITIES
from hub.decode.shelly import build_service_data
from hub.radio.scanner import Advert
from hub.service import Hub
from protocols import bthome
from tests.conftest import requires_mosquitto
from tests.hub.delivery.ha_discovery_schema import SchemaError, validate
from tests.hub_support import SilentRadio, open_for_broker, until
from tests.protocols.test_ccm import Ecb
from tools.centre.mosquitto import Mosquitto

pytestmark = requires_mosquitto

SITE = "home-ha"
T0 = 1_790_000_000.0
DEVICES = {  # id -> (role, mac, model)
    "door-1": ("door", "C0:FF:EE:00:00:11", ""),
    "pir-1": ("pir", "7C:C6:B6:00:00:12", "shelly-blu-motion"),
    "bed-1": ("bed", "C0:FF:EE:00:00:13", ""),
    "button-1": ("pendant", "7C:C6:B6:00:00:14", "shelly-blu-button1"),
}
KEYS = {d: bytes([i + 1]) * 16 for i, d in enumerate(DEVICES)}
ALL = '["door", "motion", "occupancy", "battery", "alarm"]'


def write_config(workdir: Path, centre_port: int, ha_port: int, publish: str = ALL,
                 devices: tuple[str, ...] = tuple(DEVICES), extra: str = "") -> Path:
    lines = [f'[site]\nid = "{SITE}"\n\n[hub]\nid = "hub-ha"\ndata_dir = "var"\n',
             f'[mqtt]\nhost = "127.0.0.1"\nport = {centre_port}\nkeepalive = 5\n',
             '[radio]\nkind = "virtual"\nair = "air.sock"\n',
             f'[home_assistant]\nenabled = true\nhost = "127.0.0.1"\nport = {ha_port}\n'
             f'publish = {publish}\n{extra}']
    for d in devices:
        role, mac, model = DEVICES[d]
        lines.append(f'[[device]]\nid = "{d}"\nrole = "{role}"\nmac = "{mac}"\nroom = "hall"\n'
                     + (f'model = "{model}"\n' if model else ""))
    lines.append('[rules.silent.heartbeat_s]\ndoor = 60\npir = 60\nbed = 60\npendant = 60\n')
    path = workdir / "hub.toml"
    path.write_text("\n".join(lines))
    keys.write(workdir / "keys.toml", KEYS)
    return path


class Watcher:
    """Everything retained on the family's broker, as Home Assistant would see it."""

    n = 0

    def __init__(self, port: int) -> None:
        self.retained: dict[str, bytes] = {}
        self.lock = threading.Lock()
        Watcher.n += 1
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watcher-{Watcher.n}")
        self.c.on_message = self._msg
        self.c.on_connect = lambda c, *a: c.subscribe("#", qos=1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _msg(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.payload:
                self.retained[msg.topic] = bytes(msg.payload)
            else:
                self.retained.pop(msg.topic, None)

    def get(self, topic: str) -> bytes | None:
        with self.lock:
            return self.retained.get(topic)

    def snapshot(self) -> dict[str, bytes]:
        with self.lock:
            return dict(self.retained)

    def configs(self) -> dict[str, bytes]:
        return {t: p for t, p in self.snapshot().items() if t.endswith("/config")}

    def state(self, dev: str) -> dict[str, object] | None:
        raw = self.get(f"tryggheim/{SITE}/{dev}/state")
        return None if raw is None else dict(json.loads(raw))

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def ha_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "ha-broker").start()
    try:
        yield b
    finally:
        b.close()


@asynccontextmanager
async def hub_running(cfg_path: Path, clock: ManualClock) -> AsyncIterator[Hub]:
    hub = Hub(config.load(cfg_path), clock=clock)
    hub.scanner = SilentRadio()
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        yield hub
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def advert(dev: str, objects: list[tuple[int, int]], counter: int, t: float,
           trigger: bool = False) -> Advert:
    role, mac, model = DEVICES[dev]
    if model:
        svc = build_service_data(KEYS[dev], mac, objects, counter, trigger)
    else:
        svc = bthome.encrypt_service_data(Ecb(KEYS[dev]), bthome.mac_bytes(mac),
                                          bthome.encode_objects(objects), counter, trigger)
    return Advert(mac, -60, svc, t)


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An async test run in its own event loop (fixtures still resolve by name)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


def expected_configs(publish: list[str], devices: tuple[str, ...] = tuple(DEVICES)) -> set[str]:
    node = f"tryggheim_{SITE}"
    by_role = {"door": "door", "pir": "motion", "bed": "occupancy"}
    out = set()
    for d in devices:
        role = DEVICES[d][0]
        for e in publish:
            if e in ("battery", "alarm") or by_role.get(role) == e:
                comp = "sensor" if e == "battery" else "binary_sensor"
                out.add(f"homeassistant/{comp}/{node}/{d}_{e}/config")
    return out


@run_async
async def test_discovery_validates_and_states_follow_the_devices(
        tmp_path: Path, broker: Mosquitto, ha_broker: Mosquitto) -> None:
    clock = ManualClock(T0)
    cfg = write_config(tmp_path, broker.port, ha_broker.port)
    w = Watcher(ha_broker.port)
    try:
        async with hub_running(cfg, clock) as hub:
            want = expected_configs(["door", "motion", "occupancy", "battery", "alarm"])
            await until(lambda: set(w.configs()) == want, what=lambda: str(set(w.configs())))
            for topic, raw in w.configs().items():
                p = validate(topic, raw)  # the documented schema: keys, abbreviations, availability
                assert p["availability_mode"] == "all"
                assert [a["topic"] for a in p["availability"]] == [
                    f"tryggheim/{SITE}/bridge", p["state_topic"].replace("/state", "/availability")]
            assert w.get(f"tryggheim/{SITE}/bridge") == b"online"
            # Retained: a Home Assistant connecting later gets them all from the broker.
            late = Watcher(ha_broker.port)
            try:
                await until(lambda: set(late.configs()) == want)
            finally:
                late.close()
            # Never heard yet: unavailable, state unknown.
            await until(lambda: w.get(f"tryggheim/{SITE}/door-1/availability") == b"offline")
            assert w.state("door-1") == {"door": None, "battery": None, "alarm": "OFF"}

            # The door opens; the Shelly motion sees someone; she gets into bed.
            hub.on_advert(advert("door-1", [(0x00, 1), (0x01, 80), (0x1A, 1)], 1, T0, True))
            hub.on_advert(advert("pir-1", [(0x00, 1), (0x01, 95), (0x21, 1)], 1, T0, True))
            hub.on_advert(advert("bed-1", [(0x00, 1), (0x01, 70), (0x23, 1)], 1, T0, True))
            await until(lambda: w.state("door-1") == {"door": "ON", "battery": 80, "alarm": "OFF"},
                        what=lambda: str(w.state("door-1")))
            await until(lambda: w.state("pir-1") == {"motion": "ON", "battery": 95,
                                                     "alarm": "OFF"})
            await until(lambda: w.state("bed-1") == {"occupancy": "ON", "battery": 70,
                                                     "alarm": "OFF"})
            for d in ("door-1", "pir-1", "bed-1"):
                await until(lambda d=d: w.get(f"tryggheim/{SITE}/{d}/availability") == b"online")
            hub.on_advert(advert("door-1", [(0x00, 2), (0x01, 80), (0x1A, 0)], 2, T0 + 1))
            await until(lambda: (w.state("door-1") or {}).get("door") == "OFF")

            # The Shelly button is pressed: an alarm is active for it.
            hub.on_advert(advert("button-1", [(0x00, 1), (0x01, 90), (0x3A, 1)], 1, T0, True))
            await until(lambda: (w.state("button-1") or {}).get("alarm") == "ON",
                        what=lambda: str(w.state("button-1")))

            # The door falls silent (3 x its 60 s heartbeat): unavailable in Home Assistant,
            # while the bed, still reporting, stays available.
            clock.advance(150)
            hub.on_advert(advert("bed-1", [(0x00, 2), (0x01, 70), (0x23, 1)], 2, T0 + 150))
            clock.advance(40)
            await until(lambda: w.get(f"tryggheim/{SITE}/door-1/availability") == b"offline")
            assert w.get(f"tryggheim/{SITE}/bed-1/availability") == b"online"

            # Home Assistant restarts and lost its entities: its birth message brings them back.
            lost = f"homeassistant/binary_sensor/tryggheim_{SITE}/door-1_door/config"
            w.publish(lost, b"", retain=True)
            await until(lambda: lost not in w.configs())
            births = hub.home_assistant.stats["births"] if hub.home_assistant else 0
            w.publish("homeassistant/status", "online")
            await until(lambda: lost in w.configs())
            assert hub.home_assistant is not None
            assert hub.home_assistant.stats["births"] == births + 1
        # The hub stopped: everything it published becomes unavailable.
        await until(lambda: w.get(f"tryggheim/{SITE}/bridge") == b"offline")
    finally:
        w.close()


@run_async
async def test_only_what_the_section_allows_leaves_the_home(
        tmp_path: Path, broker: Mosquitto, ha_broker: Mosquitto) -> None:
    clock = ManualClock(T0)
    cfg = write_config(tmp_path, broker.port, ha_broker.port, publish='["door", "battery"]',
                       extra='devices = ["door-1", "bed-1"]\n')
    w = Watcher(ha_broker.port)
    try:
        async with hub_running(cfg, clock) as hub:
            want = expected_configs(["door", "battery"], ("door-1", "bed-1"))
            await until(lambda: set(w.configs()) == want, what=lambda: str(set(w.configs())))
            for d, objs in (("door-1", [(0x1A, 1)]), ("bed-1", [(0x23, 1)]),
                            ("pir-1", [(0x21, 1)]), ("button-1", [(0x3A, 1)])):
                hub.on_advert(advert(d, [(0x00, 1), (0x01, 66), *objs], 1, T0, True))
            await until(lambda: w.state("bed-1") == {"battery": 66})
            await until(lambda: w.state("door-1") == {"door": "ON", "battery": 66})
            seen = w.snapshot()
        everything = b" ".join(t.encode() + b" " + p for t, p in seen.items())
        # Nothing about the motion sensor or the button, no bed occupancy, no alarms, no
        # addresses or signal strengths: only what publish and devices allow.
        for secret in (b"pir-1", b"button-1", b"occupancy", b"alarm", b"C0:FF:EE", b"7C:C6",
                       b"rssi"):
            assert secret not in everything, secret
        assert {t.split("/")[0] for t in seen} <= {"homeassistant", "tryggheim"}
    finally:
        w.close()


@run_async
async def test_removed_device_and_stale_configs_are_removed(
        tmp_path: Path, broker: Mosquitto, ha_broker: Mosquitto) -> None:
    clock = ManualClock(T0)
    cfg = write_config(tmp_path, broker.port, ha_broker.port)
    w = Watcher(ha_broker.port)
    # Left at the broker by an earlier configuration: a device that no longer exists.
    stale = f"homeassistant/binary_sensor/tryggheim_{SITE}/gone-1_door/config"
    w.publish(stale, json.dumps({"state_topic": f"tryggheim/{SITE}/gone-1/state",
                                 "availability": [{"topic": f"tryggheim/{SITE}/gone-1/availability"}]}),
              retain=True)
    w.publish(f"tryggheim/{SITE}/gone-1/state", '{"door":"ON"}', retain=True)
    try:
        async with hub_running(cfg, clock) as hub:
            await until(lambda: stale not in w.configs()
                        and w.get(f"tryggheim/{SITE}/gone-1/state") is None)
            await until(lambda: set(w.configs()) == expected_configs(
                ["door", "motion", "occupancy", "battery", "alarm"]))
            # The admin removes the bed sensor and reloads: its entities go.
            cfg.write_text(cfg.read_text().replace(
                '[[device]]\nid = "bed-1"\nrole = "bed"\nmac = "C0:FF:EE:00:00:13"\n'
                'room = "hall"\n', ""))
            result = hub.admin.reload(Who(0, "root"))
            assert result["changed"]
            await until(lambda: not any("bed-1" in t for t in w.snapshot()),
                        what=lambda: str([t for t in w.snapshot() if "bed-1" in t]))
            assert set(w.configs()) == expected_configs(
                ["door", "motion", "occupancy", "battery", "alarm"],
                ("door-1", "pir-1", "button-1"))
            # What may leave the home changes only with a restart: reload refuses it.
            cfg.write_text(cfg.read_text().replace(f"publish = {ALL}", 'publish = ["door"]'))
            with pytest.raises(ControlError, match="home_assistant"):
                hub.admin.reload(Who(0, "root"))
    finally:
        w.close()


@run_async
async def test_configs_come_back_after_the_family_broker_lost_them(
        tmp_path: Path, broker: Mosquitto, ha_broker: Mosquitto) -> None:
    cfg = write_config(tmp_path, broker.port, ha_broker.port)
    want = expected_configs(["door", "motion", "occupancy", "battery", "alarm"])
    w = Watcher(ha_broker.port)
    try:
        async with hub_running(cfg, ManualClock(T0)) as hub:
            await until(lambda: set(w.configs()) == want)
            hub.on_advert(advert("door-1", [(0x00, 1), (0x01, 80), (0x1A, 1)], 1, T0, True))
            await until(lambda: (w.state("door-1") or {}).get("door") == "ON")
            w.close()
            # The family's broker crashes and comes back empty (no retained messages).
            ha_broker.kill()
            shutil.rmtree(ha_broker.dir / "data")
            ha_broker.start()
            w = Watcher(ha_broker.port)
            await until(lambda: set(w.configs()) == want, timeout=30,
                        what=lambda: str(set(w.configs())))
            await until(lambda: (w.state("door-1") or {}).get("door") == "ON")
            assert w.get(f"tryggheim/{SITE}/bridge") == b"online"
    finally:
        w.close()


def test_off_by_default_publishes_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    cfg = write_config(tmp_path, broker.port, 1)
    cfg.write_text(cfg.read_text().split("[home_assistant]")[0]
                   + "[[device]]" + cfg.read_text().split("[[device]]", 1)[1])
    hub = Hub(config.load(cfg), clock=ManualClock(T0))
    assert hub.home_assistant is None and hub.cfg.home_assistant is None
    off = write_config(tmp_path, broker.port, 1, extra="")
    off.write_text(off.read_text().replace("enabled = true", "enabled = false"))
    assert config.load(off).home_assistant is None


@run_async
async def test_credentials_for_the_family_broker(tmp_path: Path, broker: Mosquitto) -> None:
    ha = Mosquitto(open_for_broker(tmp_path) / "ha-auth", users={"tryggheim": "s3cret"}).start()
    try:
        (tmp_path / "ha-password").write_text("wrong\n")
        (tmp_path / "ha-password").chmod(0o600)
        cfg = write_config(tmp_path, broker.port, ha.port, publish='["door"]',
                           extra='username = "tryggheim"\npassword_file = "ha-password"\n')
        async with hub_running(cfg, ManualClock(T0)) as hub:
            # Refused: logged, retried, and the hub carries on (its alarms do not depend on it).
            assert hub.home_assistant is not None
            await until(lambda: "not authorised" in ha.log_text().lower()
                        or "not authorized" in ha.log_text().lower(), what="a refusal")
            assert not hub.home_assistant.connected
            hub.on_advert(advert("door-1", [(0x00, 1), (0x01, 80), (0x1A, 1)], 1, T0, True))
            assert hub.rules.last_values["door-1"]["door"] == 1
        (tmp_path / "ha-password").write_text("s3cret\n")
        async with hub_running(cfg, ManualClock(T0)) as hub:
            await until(lambda: hub.home_assistant is not None and hub.home_assistant.connected)
            assert hub.home_assistant.stats["configs"] == 1  # door-1's door entity
            st = hub.admin.status()["home_assistant"]
            assert (st["connected"], st["broker"], st["publish"]) == (
                True, f"127.0.0.1:{ha.port}", ["door"])
    finally:
        ha.close()


@pytest.mark.parametrize("section, problem", [
    ('enabled = true\nhost = "h"\npublish = ["door", "location"]\n',
     ":{n}: home_assistant.publish[1]: 'location' is not one of door, motion"),
    ('enabled = true\npublish = ["door"]\n', ":{h}: home_assistant.host: missing"),
    ('enabled = true\nhost = "h"\n', ":{h}: home_assistant.publish: missing"),
    ('enabled = true\nhost = "h"\npublish = ["door"]\ndevices = ["nobody"]\n',
     ":{n}: home_assistant.devices[0]: no device 'nobody' in the devices list"),
    ('enabled = true\nhost = "h"\npublish = ["door"]\nprefix = "x"\n',
     ":{n}: home_assistant.prefix: unknown setting"),
    ('enabled = true\nhost = "h"\npublish = ["door"]\nusername = "u"\n'
     'password_file = "pw"\n', ":{n}: home_assistant.password_file: "),
])
def test_section_errors_name_file_line_and_field(tmp_path: Path, section: str,
                                                 problem: str) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    site = f'[site]\nid = "{SITE}"\n\n[hub]\nid = "h"\n\n[home_assistant]\n{section}'
    (conf / "site.toml").write_text(site)
    (conf / "pw").write_text("secret\n")
    (conf / "pw").chmod(0o644)
    header = site.splitlines().index("[home_assistant]") + 1
    last = len(site.splitlines())
    with pytest.raises(config.ConfigError) as e:
        config.load(conf)
    expected = problem.format(h=header, n=last)
    assert any(p.startswith(str(conf / "site.toml")) and expected in p
               for p in e.value.problems), (expected, e.value.problems)


def test_schema_check_catches_what_home_assistant_would_not_accept() -> None:
    good = {"~": "tryggheim/x/d", "name": "Door", "stat_t": "~/state", "dev_cla": "door",
            "uniq_id": "u1", "dev": {"ids": ["d"], "mf": "Tryggheim"},
            "avty": [{"t": "~/availability"}], "avty_mode": "all", "o": {"name": "t"}}
    p = validate("homeassistant/binary_sensor/node/d_door/config", json.dumps(good))
    assert p["state_topic"] == "tryggheim/x/d/state"
    assert p["availability"] == [{"topic": "tryggheim/x/d/availability"}]
    bad = [
        ({**good, "stat_topic": "x"}, "unknown keys"),
        ({k: v for k, v in good.items() if k != "stat_t"}, "missing required"),
        ({**good, "avty": [{"payload_available": "up"}]}, "topic is required"),
        ({**good, "avty_t": "x/y"}, "must not be used together"),
        ({**good, "avty_mode": "some"}, "availability_mode"),
        ({**good, "dev": {"mf": "x"}}, "identifiers or connections"),
        ({**good, "dev_cla": "temperature"}, "device class"),
        ({**good, "stat_t": "a/+/b"}, "without wildcards"),
    ]
    for payload, why in bad:
        with pytest.raises(SchemaError, match=why):
            validate("homeassistant/binary_sensor/node/d_door/config", json.dumps(payload))
    with pytest.raises(SchemaError, match="not <prefix>"):
        validate("homeassistant/binary_sensor/a b/config", json.dumps(good))


def test_the_documented_example_section_is_valid_and_off_as_shipped(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3] / "docs" / "example-config"
    assert config.load(root).home_assistant is None  # shipped commented out: off
    conf = tmp_path / "conf"
    shutil.copytree(root, conf)
    site = conf / "site.toml"
    lines = site.read_text().splitlines()
    start = lines.index("# [home_assistant]")
    lines[start:] = [x[2:] for x in lines[start:]]
    site.write_text("\n".join(lines) + "\n")
    ha = config.load(conf).home_assistant
    assert ha is not None
    assert (ha.host, ha.publish, ha.devices) == (
        "192.168.1.20", ("door", "battery", "alarm"), ("door-front", "pendant-1"))


def test_status_text_shows_the_home_assistant_link() -> None:
    from hub.admin.cli import _status_text

    text = _status_text({"home_assistant": {"connected": False, "broker": "10.0.0.5:1883",
                                            "publish": ["door", "battery"]}})
    assert "home assist.  NOT CONNECTED to 10.0.0.5:1883, publishing door, battery" in text
    assert "home assist." not in _status_text({"home_assistant": None})


@settings(max_examples=60, deadline=None)
@given(publish=st.sets(st.sampled_from(ENTITIES), min_size=1),
       chosen=st.sets(st.sampled_from(sorted(DEVICES))),
       values=st.dictionaries(st.sampled_from(["door", "motion", "occupancy", "battery",
                                               "button", "problem", "voltage_mv"]),
                              st.integers(0, 100)))
def test_every_combination_publishes_only_what_is_allowed_and_validates(
        tmp_path_factory: pytest.TempPathFactory, publish: set[str], chosen: set[str],
        values: dict[str, int]) -> None:
    """Without a broker: what the publisher would put on it, for any section."""
    from hub.delivery.home_assistant import HomeAssistant, HubView
    from hub.rules.engine import RuleEngine

    d = tmp_path_factory.mktemp("ha")
    listed = "[" + ", ".join(f'"{x}"' for x in sorted(publish)) + "]"
    extra = ("devices = [" + ", ".join(f'"{x}"' for x in sorted(chosen)) + "]\n") if chosen else ""
    cfg = config.load(write_config(d, 1, 2, publish=listed, extra=extra))
    assert cfg.home_assistant is not None
    engine = RuleEngine(cfg.site, cfg.timezone, devices=cfg.devices, settings=cfg.rules)
    for dev in cfg.devices:
        engine.last_values[dev] = dict(values)
        engine.seen[dev] = [T0, -60.0]
    ha = HomeAssistant(cfg.home_assistant, HubView(lambda: cfg, lambda: engine, lambda: T0))
    want = ha.wanted(T0)
    shown = chosen or set(DEVICES)
    for topic, payload in want.items():
        if topic.endswith("/config"):
            p = validate(topic, payload)
            entity = p["unique_id"].rsplit("_", 1)[1]
            assert entity in publish
            assert any(p["unique_id"] == f"tryggheim_{SITE}_{x}_{entity}" for x in shown)
        elif topic.endswith("/state"):
            assert topic.split("/")[2] in shown
            assert set(json.loads(payload)) <= publish
        else:
            assert topic.endswith("/availability") and payload in ("online", "offline")
    assert all(b"C0:FF:EE" not in p.encode() and "hall" not in p for p in want.values())
