"""Shared fixtures: real Mosquitto brokers on free loopback ports, the virtual home, and a
watch on every broker a test starts: everything hubs publish must match protocols/schemas.

`schema_watch` (autouse): each `tools.centre.mosquitto.Mosquitto` started during a test gets a
client subscribed to `#` (as the broker's observer user where passwords are on). Every
message on a hub topic (`tryggheim/v1/<site>/<kind>...`, also routed copies under
`.../to/<receiver>/<kind>...`, for the kinds in `mqtt_schema.KINDS`) is validated against
`protocols/schemas/<kind>.json`; a mismatch fails the test. Receipts and commands come from
the centre side and are not the hub's output. A test that publishes invalid messages on hub
topics itself (to test a consumer) names their ids: `@pytest.mark.schema_exempt("z1")`.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from jsonschema import Draft202012Validator
from paho.mqtt.enums import CallbackAPIVersion

from protocols import mqtt_schema
from tools.centre.mosquitto import Mosquitto
from tools.sim.vboard import node_available

ROOT = Path(__file__).resolve().parents[1]

requires_node = pytest.mark.skipif(
    not node_available(), reason="node and the MicroPython npm package are needed (make setup)"
)
requires_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed (make setup)",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "schema_exempt(*ids): messages with these ids are "
                            "published invalid on purpose by the test itself")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.close()


_VALIDATORS: dict[str, Draft202012Validator] = {}


def schema_validator(kind: str) -> Draft202012Validator:
    if kind not in _VALIDATORS:
        text = resources.files("protocols").joinpath(mqtt_schema.schema_file(kind)).read_text()
        _VALIDATORS[kind] = Draft202012Validator(
            json.loads(text), format_checker=Draft202012Validator.FORMAT_CHECKER)
    return _VALIDATORS[kind]


def hub_kind(topic: str) -> str | None:
    """The message kind of a hub topic, None for anything else (receipts, commands, ...)."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != mqtt_schema.TOPIC_ROOT:
        return None
    kind = parts[3]
    if kind == "to" and len(parts) >= 6:
        kind = parts[5]
    return kind if kind in mqtt_schema.KINDS else None


def schema_problems(topic: str, payload: bytes) -> list[str]:
    kind = hub_kind(topic)
    if kind is None:
        return []
    try:
        msg = json.loads(payload)
    except ValueError:
        return [f"{topic}: not JSON: {payload[:80]!r}"]
    if not isinstance(msg, dict):
        return [f"{topic}: not an object"]
    if msg.get("kind") != kind:
        return [f"{topic}: kind {msg.get('kind')!r} on a {kind} topic"]
    return [f"{topic} {msg.get('id')}: {e.message}"
            for e in schema_validator(kind).iter_errors(msg)]


class SchemaWatch:
    def __init__(self, exempt: set[str]) -> None:
        self.exempt = exempt
        self.problems: list[str] = []
        self.checked = 0
        self._clients: dict[int, mqtt.Client] = {}
        self._lock = threading.Lock()

    def attach(self, b: Mosquitto) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                        client_id=f"schema-watch-{secrets.token_hex(4)}")
        if b.tls is not None:
            c.tls_set(ca_certs=str(b.tls.ca), tls_version=ssl.PROTOCOL_TLS_CLIENT,
                      certfile=str(b.tls.client_cert) if b.require_certificate else None,
                      keyfile=str(b.tls.client_key) if b.require_certificate else None)
        if b.observer is not None:
            c.username_pw_set(*b.observer)
        subscribed = threading.Event()
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("#", qos=1)
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_message = self._on_message
        c.suppress_exceptions = True
        host = "localhost" if b.tls is not None and b.host == "127.0.0.1" else b.host
        try:
            c.connect(host, b.port)
        except OSError as e:
            self.problems.append(f"schema watch cannot connect to the broker: {e}")
            return
        c.loop_start()
        if not subscribed.wait(10):
            self.problems.append("schema watch could not subscribe to #")
        self._clients[id(b)] = c

    def detach(self, b: Mosquitto) -> None:
        c = self._clients.pop(id(b), None)
        if c is not None:
            c.disconnect()
            c.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
            if isinstance(body, dict) and body.get("id") in self.exempt:
                return
        except ValueError:
            pass
        found = schema_problems(msg.topic, bytes(msg.payload))
        with self._lock:
            self.checked += 1
            self.problems += found

    def close(self) -> None:
        for c in list(self._clients.values()):
            c.disconnect()
            c.loop_stop()
        self._clients.clear()


@pytest.fixture(autouse=True)
def schema_watch(request: pytest.FixtureRequest,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[SchemaWatch]:
    exempt: set[str] = set()
    for m in request.node.iter_markers("schema_exempt"):
        exempt.update(m.args)
    watch = SchemaWatch(exempt)
    start, stop = Mosquitto.start, Mosquitto.stop

    def watched_start(self: Mosquitto) -> Mosquitto:
        b = start(self)
        watch.attach(b)
        return b

    def watched_stop(self: Mosquitto, *args: Any, **kwargs: Any) -> None:
        watch.detach(self)
        stop(self, *args, **kwargs)

    monkeypatch.setattr(Mosquitto, "start", watched_start)
    monkeypatch.setattr(Mosquitto, "stop", watched_stop)
    try:
        yield watch
    finally:
        watch.close()
    if watch.problems:
        shown = "\n".join(watch.problems[:10])
        pytest.fail(f"{len(watch.problems)} published message(s) do not match"
                    f" protocols/schemas:\n{shown}", pytrace=False)
