"""Home Assistant MQTT discovery, for homes where the family runs it ([home_assistant]).

Off by default (hub/config/home_assistant.py). When on, the hub keeps, on the family's broker
and over its own connection (never the response centre's):

- one retained discovery config per entity the section allows
  (`<prefix>/<component>/tryggheim_<site>/<device>_<entity>/config`): door (binary_sensor,
  door), motion (motion), occupancy (in bed), battery (sensor, %), alarm (binary_sensor,
  problem: an alarm is active for the device);
- per device a retained state (`tryggheim/<site>/<device>/state`, JSON with only the allowed
  fields) and a retained availability (`.../availability`, online/offline): offline when the
  device has not been heard within the limit the hub's silent-device rule uses, so a silent
  sensor shows "unavailable" in Home Assistant rather than its last state;
- the hub's own availability (`tryggheim/<site>/bridge`, the connection's last will), which
  every entity also requires (availability_mode "all"), so a stopped hub makes all
  unavailable.

Configs are sent again when Home Assistant's birth message (`<prefix>/status` "online")
arrives and after every reconnect. Configs under our node id that the hub does not publish
(a device removed, an entity no longer allowed; also from an earlier run: they are retained
at the broker) are removed with an empty retained config, and their state and availability
topics are cleared.

Everything runs in the hub's event loop; paho's thread only hands messages over. The hub
calls `changed(device_id)` after each accepted report and stored message; a 1 s tick applies
the silence limits and configuration reloads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from hub.config import models
from hub.config.home_assistant import HomeAssistantSettings
from hub.delivery.mqtt_link import read_password
from hub.rules.alarms import CARE

if TYPE_CHECKING:
    from hub.config.settings import Device, HubConfig
    from hub.rules.engine import RuleEngine

log = logging.getLogger(__name__)

ONLINE, OFFLINE = "online", "offline"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# entity -> (component, roles that have it (None: every role), extra config)
ENTITY_SPECS: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {
    "door": ("binary_sensor", ("door",), {"device_class": "door", "name": "Door"}),
    "motion": ("binary_sensor", ("pir",), {"device_class": "motion", "name": "Motion"}),
    "occupancy": ("binary_sensor", ("bed",), {"device_class": "occupancy", "name": "In bed"}),
    "battery": ("sensor", None, {"device_class": "battery", "name": "Battery",
                                 "unit_of_measurement": "%", "state_class": "measurement",
                                 "entity_category": "diagnostic"}),
    "alarm": ("binary_sensor", None, {"device_class": "problem", "name": "Alarm"}),
}
_VALUE_KEYS = {"door": ("door", "opening"), "motion": ("motion",), "occupancy": ("occupancy",)}


def word(s: str) -> str:
    """A topic level Home Assistant accepts: [a-zA-Z0-9_-]."""
    return _UNSAFE.sub("_", s)


class HubView:
    """What the publisher reads from the hub; the hub swaps cfg and rules on reload, so
    both are read through callables, every time."""

    def __init__(self, cfg: Callable[[], HubConfig], rules: Callable[[], RuleEngine],
                 now: Callable[[], float]) -> None:
        self.cfg = cfg
        self.rules = rules
        self.now = now


class HomeAssistant:
    def __init__(self, settings: HomeAssistantSettings, view: HubView) -> None:
        self.s = settings
        self.view = view
        cfg = view.cfg()
        self.site = cfg.site
        self.node = word(f"tryggheim_{cfg.site}")
        self.base = f"tryggheim/{word(cfg.site)}"
        self.bridge = f"{self.base}/bridge"
        self.birth_topic = f"{settings.discovery_prefix}/status"
        self.config_filter = f"{settings.discovery_prefix}/+/{self.node}/+/config"
        self.connected = False
        self.stats: dict[str, int] = {"configs": 0, "removed": 0, "states": 0, "births": 0}
        self._sent: dict[str, str] = {}  # topic -> payload last published this connection
        self._configs_of: HubConfig | None = None
        self._config_cache: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2,
                        client_id=settings.client_id or f"tryggheim-{cfg.hub_id}-ha",
                        protocol=mqtt.MQTTv311)
        c.will_set(self.bridge, OFFLINE, qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        if settings.tls_ca is not None:
            c.tls_set(ca_certs=str(settings.tls_ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if settings.username:
            pw = read_password(settings.password_file) if settings.password_file else None
            c.username_pw_set(settings.username, pw)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    # -- lifecycle (event loop) ---------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.s.host, self.s.port, self.s.keepalive)
        self.client.loop_start()
        self._task = asyncio.create_task(self._tick(), name="home-assistant")
        log.info("Home Assistant discovery on %s:%d (%s)", self.s.host, self.s.port,
                 ", ".join(self.s.publish))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.connected:  # a clean disconnect sends no will: say it ourselves
            self.client.publish(self.bridge, OFFLINE, qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    async def _tick(self) -> None:
        while True:
            try:
                self.sync()
            except Exception:
                log.exception("Home Assistant update failed")
            await asyncio.sleep(1.0)

    def changed(self, device_id: str | None = None) -> None:
        """Hub hook: a report from the device was accepted (or a message about it stored);
        publish what changed. Never raises: nothing here may hold up the alarm path."""
        if not self.connected:
            return
        try:
            if device_id is None or self._configs_of is not self.view.cfg():
                self.sync()
            else:
                self._sync_device(device_id)
        except Exception:
            log.exception("Home Assistant update failed")

    def changed_by(self, out: object) -> None:
        """Hub.on_stored hook: an alarm raised or cleared shows at once."""
        self.changed(getattr(out, "device", None))

    def status(self) -> dict[str, Any]:
        """For `tryggheim status`."""
        return {"connected": self.connected, "broker": f"{self.s.host}:{self.s.port}",
                "publish": list(self.s.publish), **self.stats}

    # -- what should be on the broker ----------------------------------------------------------
    def devices(self) -> list[Device]:
        cfg = self.view.cfg()
        allowed = set(self.s.devices)
        return [d for d in sorted(cfg.devices.values(), key=lambda d: d.id)
                if not allowed or d.id in allowed]

    def entities(self, dev: Device) -> list[str]:
        return [e for e in self.s.publish
                if ENTITY_SPECS[e][1] is None or dev.role in (ENTITY_SPECS[e][1] or ())]

    def topics(self, dev: Device) -> tuple[str, str]:
        t = f"{self.base}/{word(dev.id)}"
        return f"{t}/state", f"{t}/availability"

    def config_topic(self, dev: Device, entity: str) -> str:
        component = ENTITY_SPECS[entity][0]
        return f"{self.s.discovery_prefix}/{component}/{self.node}/{word(dev.id)}_{entity}/config"

    def config(self, dev: Device, entity: str) -> dict[str, Any]:
        state, avail = self.topics(dev)
        spec = models.MODELS.get(dev.model)
        device: dict[str, Any] = {
            "identifiers": [f"{self.node}_{word(dev.id)}"],
            "name": dev.id,
            "manufacturer": "Shelly" if spec else "Tryggheim",
            "model": spec.product if spec else f"Tryggheim {dev.role}",
        }
        # No room, no MAC: only what [home_assistant] allows leaves the home.
        payload: dict[str, Any] = {
            **ENTITY_SPECS[entity][2],
            "unique_id": f"{self.node}_{word(dev.id)}_{entity}",
            "state_topic": state,
            "value_template": "{{ value_json.%s }}" % entity,
            "availability": [{"topic": self.bridge}, {"topic": avail}],
            "availability_mode": "all",
            "qos": 1,
            "device": device,
            "origin": {"name": "Tryggheim"},
        }
        return payload

    def _alarmed(self) -> set[str]:
        """Devices with an active (care) alarm: raised and not cleared or expired."""
        return {a["device"] for a in self.view.rules().book.active.values()
                if a["kind"] == CARE and a["device"]}

    def state(self, dev: Device, now: float,
              alarmed: set[str] | None = None) -> tuple[dict[str, Any], str]:
        rules = self.view.rules()
        if alarmed is None:
            alarmed = self._alarmed()
        values = rules.last_values.get(dev.id, {})
        out: dict[str, Any] = {}
        for entity in self.entities(dev):
            if entity == "battery":
                out[entity] = values.get("battery")
            elif entity == "alarm":
                out[entity] = "ON" if dev.id in alarmed else "OFF"
            else:
                v = next((values[k] for k in _VALUE_KEYS[entity] if k in values), None)
                out[entity] = None if v is None else ("ON" if v else "OFF")
        seen = rules.seen.get(dev.id)
        cfg = self.view.cfg()
        limit = cfg.rules.silent.limit_s(dev.role, dev.heartbeat_s)
        avail = ONLINE if seen is not None and now - float(seen[0]) < limit else OFFLINE
        return out, avail

    def _configs(self) -> dict[str, str]:
        # Rebuilt only when the hub's configuration object changes (start, reload): the
        # per-advert path then only renders states.
        cfg = self.view.cfg()
        if self._configs_of is not cfg:
            self._configs_of = cfg
            self._config_cache = {
                self.config_topic(dev, e): json.dumps(self.config(dev, e), separators=(",", ":"))
                for dev in self.devices() for e in self.entities(dev)}
        return self._config_cache

    def wanted(self, now: float) -> dict[str, str]:
        """topic -> retained payload, for everything the hub should have on the broker."""
        want = dict(self._configs())
        alarmed = self._alarmed()
        for dev in self.devices():
            if self.entities(dev):
                want.update(self._device_topics(dev, now, alarmed))
        return want

    def _device_topics(self, dev: Device, now: float, alarmed: set[str]) -> dict[str, str]:
        values, avail = self.state(dev, now, alarmed)
        state_t, avail_t = self.topics(dev)
        return {state_t: json.dumps(values, separators=(",", ":")), avail_t: avail}

    def _sync_device(self, device_id: str) -> None:
        dev = next((d for d in self.devices() if d.id == device_id), None)
        if dev is None or not self.entities(dev):
            return  # not published (not allowed, or not a device)
        for topic, payload in self._device_topics(dev, self.view.now(), self._alarmed()).items():
            if self._sent.get(topic) != payload:
                self._publish(topic, payload)
                self.stats["states"] += 1

    # -- publishing ---------------------------------------------------------------------------
    def sync(self, full: bool = False) -> None:
        """Publish every wanted topic whose payload differs from what was sent (all with
        `full`), configs before states; clear what was sent and is no longer wanted."""
        if not self.connected:
            return
        want = self.wanted(self.view.now())
        if full:
            self._sent = {t: p for t, p in self._sent.items() if t not in want}
        for topic in [t for t in self._sent if t not in want]:
            self._clear(topic)
        configs = [t for t in want if t.endswith("/config")]
        for topic in configs + [t for t in want if not t.endswith("/config")]:
            if self._sent.get(topic) != want[topic]:
                self._publish(topic, want[topic])
                self.stats["configs" if topic.endswith("/config") else "states"] += 1

    def _publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1, retain=True)
        self._sent[topic] = payload

    def _clear(self, topic: str) -> None:
        self.client.publish(topic, b"", qos=1, retain=True)  # empty retained: deleted
        self._sent.pop(topic, None)
        if topic.endswith("/config"):
            self.stats["removed"] += 1

    def _stale_config(self, topic: str, payload: bytes) -> None:
        """A retained config under our node id that we do not publish: from an earlier run or
        configuration. Remove it, and its state and availability if they are ours."""
        if not self.connected or topic in self.wanted(self.view.now()):
            return
        log.info("Home Assistant: removing %s (no longer published)", topic)
        self.client.publish(topic, b"", qos=1, retain=True)
        self.stats["removed"] += 1
        try:
            old = json.loads(payload)
            topics = [old.get("state_topic")] + [a.get("topic") for a in old.get("availability", [])]
        except (ValueError, AttributeError, TypeError):
            return
        want = self.wanted(self.view.now())
        for t in topics:
            if isinstance(t, str) and t.startswith(self.base + "/") and t != self.bridge \
                    and t not in want:
                self.client.publish(t, b"", qos=1, retain=True)

    # -- paho callbacks (paho's thread): hand over to the event loop -----------------------
    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            log.error("Home Assistant broker %s:%d refused the connection: %s", self.s.host,
                      self.s.port, rc)
            return
        client.publish(self.bridge, ONLINE, qos=1, retain=True)
        client.subscribe([(self.birth_topic, 1), (self.config_filter, 1)])
        self._call(self._connected)

    def _connected(self) -> None:
        log.info("Home Assistant broker connected; publishing discovery")
        self.connected = True
        self._sent.clear()
        self.sync(full=True)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self._call(self._disconnected)

    def _disconnected(self) -> None:
        self.connected = False

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.birth_topic:
            if msg.payload == b"online":
                self._call(self._birth)
        elif msg.payload:
            self._call(self._stale_config, msg.topic, bytes(msg.payload))

    def _birth(self) -> None:
        # Home Assistant (re)started: it needs the configs again, then the states.
        self.stats["births"] += 1
        self.sync(full=True)


def attach(cfg: Callable[[], HubConfig], rules: Callable[[], RuleEngine],
           now: Callable[[], float]) -> HomeAssistant | None:
    """The publisher for the hub, or None when [home_assistant] is not on."""
    settings = cfg().home_assistant
    if settings is None:
        return None
    return HomeAssistant(settings, HubView(cfg, rules, now))
