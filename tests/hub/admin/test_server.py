"""Admin tooling against a real hub process: a config directory, real Mosquitto, the control
socket, the `tryggheim` CLI as an admin runs it over SSH, reload, audit, test alarm."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.config import keys
from protocols import ack, bthome
from tests.conftest import requires_mosquitto
from tests.hub_support import RECEIPT_KEY, centre_keys, write_key
from tools.centre.mosquitto import Mosquitto
from tools.centre.response_centre import ResponseCentre
from tools.sim.vboard import Air
from tools.sim.virtual_home import start_hub, stop_process

pytestmark = [requires_mosquitto]

SITE = "admin-home"
EXE = str(Path(sys.executable).with_name("tryggheim"))
DEVICES = {
    "pendant-1": ("pendant", "C0:FF:EE:00:01:01", "living room"),
    "bed-1": ("bed", "C0:FF:EE:00:01:02", "bedroom"),
    "door-1": ("door", "C0:FF:EE:00:01:03", "hall"),
}
KEYS = {d: bytes([i + 1]) * 16 for i, d in enumerate(DEVICES)}

RULES = """\
# Besto: in bed 20:30-06:00, alarm if not back within 30 minutes
[[bed_exit]]
bed = "bed-1"
window = "20:30-06:00"
return_min = 30
"""


def write_config_dir(d: Path, port: int, site_extra: str = "", rules: str = RULES) -> None:
    d.mkdir(parents=True, exist_ok=True)
    write_key(d / "receipt.key", RECEIPT_KEY)
    (d / "site.toml").write_text(f"""\
[site]
id = "{SITE}"
timezone = "Europe/Oslo"

[hub]
id = "hub-admin"
data_dir = "var"

[mqtt]
host = "127.0.0.1"
port = {port}
keepalive = 5
receipt_key_file = "receipt.key"

[radio]
kind = "virtual"
air = "air.sock"
""" + site_extra)
    lines = []
    for dev, (role, mac, room) in DEVICES.items():
        lines += ["[[device]]", f'id = "{dev}"', f'role = "{role}"', f'mac = "{mac}"',
                  f'room = "{room}"', ""]
    (d / "devices.toml").write_text("\n".join(lines))
    (d / "rules.toml").write_text(rules)
    (d / "retention.toml").write_text("events_days = 30\naudit_days = 365\n")
    keys.write(d / "keys.toml", KEYS)


@dataclass
class Running:
    dir: Path
    broker: Mosquitto
    air: Air
    centre: ResponseCentre
    hub: subprocess.Popen[bytes]
    counter: int = 100

    @property
    def socket(self) -> Path:
        return self.dir / "var" / "control.sock"

    def cli(self, *args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([EXE, *args, "--config", str(self.dir)], capture_output=True,
                           text=True, timeout=60, env=e)
        if check and p.returncode != 0:
            raise AssertionError(f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.cli(*args, "--json", **kw).stdout)

    def advert(self, dev: str, objs: list[tuple[int, int]], key: bytes | None = None,
               rssi: int = -61) -> None:
        self.counter += 1
        role, mac, _ = DEVICES[dev]
        svc = bthome.encrypt_service_data(
            ack.host_aes(key or KEYS[dev]), bthome.mac_bytes(mac),
            bthome.encode_objects([(bthome.PACKET_ID, self.counter & 0xFF), *objs]),
            self.counter, True)
        self.air.broadcast(mac, rssi, bytes(svc))

    def next_msg(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("expected message did not arrive")
            try:
                m = self.centre.get(timeout=left)
            except queue.Empty:
                continue
            if pred(m):
                return m


def wait_until(cond: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@contextlib.contextmanager
def hub_running(tmp_path: Path, **config: str) -> Iterator[Running]:
    broker = Mosquitto(tmp_path / "broker").start()
    cfg = tmp_path / "etc"
    write_config_dir(cfg, broker.port, **config)
    air = Air(cfg / "air.sock")
    centre = ResponseCentre("127.0.0.1", broker.port, site=SITE, receipt_keys=centre_keys).start()
    hub = start_hub(cfg, tmp_path / "hub.log")
    r = Running(cfg, broker, air, centre, hub)
    try:
        air.wait_for_listener(proc=hub)
        wait_until(lambda: r.socket.exists())
        wait_until(lambda: r.json("status")["mqtt"]["connected"])
        yield r
    finally:
        stop_process(hub)
        centre.stop()
        air.close()
        broker.close()
        if os.environ.get("SHOW_HUB_LOG"):
            print((tmp_path / "hub.log").read_text())


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with hub_running(tmp_path) as r:
        yield r


def test_views_devices_alarms_events_outbox_and_test_alarm(running: Running) -> None:
    r = running
    st = r.json("status")
    assert st["site"] == SITE and st["active_alarms"] == 0 and st["rules"]["bed_exit"] == 1
    # A bed sensor heartbeat, and a forged advert (wrong key) for the door.
    r.advert("bed-1", [(bthome.BATTERY, 87), (bthome.OCCUPANCY, 1)], rssi=-71)
    r.advert("door-1", [(bthome.DOOR, 1)], key=b"\x99" * 16)
    devs = wait_until(lambda: (d := {x["id"]: x for x in r.json("devices")})
                      and d["bed-1"]["last_seen"] and d["door-1"]["decrypt_failures"] and d)
    assert devs["bed-1"]["battery"] == 87 and devs["bed-1"]["rssi"] == -71
    assert devs["bed-1"]["age_s"] < 30
    assert devs["door-1"]["decrypt_failures"] == 1 and devs["door-1"]["last_seen"] is None
    assert devs["pendant-1"]["last_seen"] is None
    human = r.cli("devices").stdout
    assert "bed-1" in human and "87%" in human and "-71 dBm" in human
    # An alarm: active with its age, in the event log, at the response centre.
    r.advert("pendant-1", [(bthome.BUTTON, bthome.BUTTON_PRESS)])
    alarm = r.next_msg(lambda m: m["type"] == "alarm_button")
    alarms = wait_until(lambda: r.json("alarms"))
    assert [(a["type"], a["alarm_id"]) for a in alarms] == [("alarm_button", alarm["alarm_id"])]
    assert alarms[0]["age_s"] >= 0
    events = r.json("events", "-n", "10")
    assert any(e["type"] == "alarm_button" and e["id"] == alarm["id"] for e in events)
    ob = r.json("outbox")
    assert {"depth", "oldest_undelivered", "last_delivery", "awaiting_receipt"} <= set(ob)
    # Follow the events while a test alarm goes end to end.
    follow = subprocess.Popen([EXE, "events", "--follow", "-n", "0", "--json", "--config",
                               str(r.dir)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # let the follower attach (a missed event would only fail the test)
        res = r.json("test-alarm", "--wait", "20")
        assert res["stored"] and res["delivered"], res
        got = r.next_msg(lambda m: m["type"] == "test_alarm")
        assert got["test"] is True and got["kind"] == "alarm" and got["id"] == res["id"]
        assert follow.stdout is not None
        line = json.loads(follow.stdout.readline())
        assert line["type"] == "test_alarm" and line["test"] is True
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    assert r.json("outbox")["last_delivery"] is not None
    assert r.json("audit")[-1]["action"] == "test-alarm"


def test_reload_applies_audits_and_rejects_broken_config(running: Running) -> None:
    r = running
    rules = r.dir / "rules.toml"
    rules.write_text(RULES + '\n[[wandering]]\ndoor = "door-1"\nwindow = "22:00-06:00"\n'
                     'return_min = 10\nbed = "bed-1"\n')
    out = r.json("reload", env={"SUDO_USER": "kari"})
    assert out["changed"] and '+door = "door-1"' in out["diff"]
    assert r.json("status")["rules"]["wandering"] == 1
    applied = r.next_msg(lambda m: m["type"] == "config_applied")
    assert applied["kind"] == "status" and applied["by"] == "kari (via sudo)"
    assert '+window = "22:00-06:00"' in applied["diff"]
    entry = r.json("audit")[-1]
    assert entry["action"] == "reload" and entry["result"] == "applied"
    assert entry["who"] == "kari (via sudo)" and entry["uid"] == os.getuid()
    assert "+return_min = 10" in entry["diff"]

    # A broken file: refused as a whole, the hub keeps the rules it had and says why.
    rules.write_text(RULES.replace("20:30-06:00", "20:30-26:00") + "\n[[wandering]]\n"
                     'door = "door-1"\nwindow = "22:00-06:00"\nbed = "bed-1"\n'
                     "[[inactivity]]\nwindow = \"08:00-22:00\"\n")
    bad = r.cli("reload", check=False)
    assert bad.returncode == 1
    assert f"{rules}:4: bed_exit[0].window" in bad.stderr
    st = r.json("status")
    assert st["rules"] == {"bed_exit": 1, "wandering": 1, "inactivity": 0}
    assert st["last_reload"]["result"] == "rejected"
    rejected = r.next_msg(lambda m: m["type"] == "config_rejected")
    assert any("bed_exit[0].window" in p for p in rejected["problems"])
    assert r.json("audit")[-1]["result"] == "rejected"
    # Alarms still flow on the old configuration.
    r.advert("pendant-1", [(bthome.BUTTON, bthome.BUTTON_PRESS)])
    r.next_msg(lambda m: m["type"] == "alarm_button")

    # A change that needs a restart is refused by reload, not half-applied.
    rules.write_text(RULES)
    site = r.dir / "site.toml"
    site.write_text(site.read_text().replace("keepalive = 5", "keepalive = 7"))
    bad = r.cli("reload", check=False)
    assert bad.returncode == 1 and "mqtt" in bad.stderr and "restart" in bad.stderr
    assert r.json("status")["rules"]["wandering"] == 1

    # SIGHUP, as `systemctl reload` sends it, applies the fixed configuration.
    site.write_text(site.read_text().replace("keepalive = 7", "keepalive = 5"))
    r.hub.send_signal(signal.SIGHUP)
    st = wait_until(lambda: (s := r.json("status"))["last_reload"]["result"] == "applied" and s)
    assert st["rules"]["wandering"] == 0
    assert r.json("audit")[-1]["via"] == "SIGHUP"


def test_control_socket_mode_in_the_running_hub(running: Running) -> None:
    assert stat.S_IMODE(running.socket.stat().st_mode) == 0o660


PROBE = """\
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    sys.exit(3)
try:
    s.sendall(b'{"cmd": "status"}\\n')
except BrokenPipeError:
    pass  # the server may answer and hang up before we have asked
print(s.makefile().readline())
"""


def test_control_socket_refuses_users_outside_the_admin_group() -> None:
    import asyncio
    import tempfile

    from hub.admin.control import ControlServer, Request

    if os.getuid() != 0:
        pytest.skip("needs root to try the socket as another user")
    py = "/usr/bin/python3"  # the venv may live where other users cannot read; stdlib only
    if not os.access(py, os.X_OK):
        pytest.skip("no system python3 to run as another user")
    d = Path(tempfile.mkdtemp(prefix="tg-ctl-"))
    os.chmod(d, 0o755)  # reachable by anyone: only the socket's own protection counts

    async def handler(req: Request) -> Any:
        return {"uid": req.peer.uid}

    async def main() -> tuple[int, int, str]:
        server = ControlServer(d / "control.sock", "no-such-group-tg", handler)
        await server.start()
        try:
            def probe() -> subprocess.CompletedProcess[str]:
                return subprocess.run([py, "-c", PROBE, str(server.path)], user=65534,
                                      group=65534, extra_groups=[],
                                      capture_output=True, text=True, timeout=30, cwd="/")
            first = await asyncio.to_thread(probe)
            # Even with a wrong mode on the socket, the server checks the peer's uid.
            os.chmod(server.path, 0o666)
            second = await asyncio.to_thread(probe)
            return first.returncode, server.refused, second.stdout
        finally:
            await server.stop()

    try:
        rc, refused, out = asyncio.run(main())
    finally:
        os.rmdir(d)
    assert rc == 3  # connect() refused by the socket mode
    reply = json.loads(out)
    assert reply["ok"] is False and "not in the admin group" in reply["error"]
    assert refused == 1


def test_response_centre_mutes_wandering_over_mqtt_only_where_allowed(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    wandering = RULES + ('\n[[wandering]]\ndoor = "door-1"\nwindow = "00:00-24:00"\n'
                         'return_min = 10\nbed = "bed-1"\n')
    with hub_running(tmp_path, site_extra='\n[admin]\nremote_commands = ["mute"]\n',
                     rules=wandering) as r:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="centre-cmd")
        c.connect("127.0.0.1", r.broker.port)
        c.loop_start()
        try:
            def send(**cmd: Any) -> None:
                body = {"schema": 1, "kind": "command", "site": SITE, "by": "operator 7",
                        **cmd}
                c.publish(f"tryggheim/v1/{SITE}/command", json.dumps(body), qos=1)

            # The hub subscribes right after connecting; retry until the first one lands.
            def muted() -> Any:
                send(id="c1", command="mute", minutes=20)
                try:
                    return r.next_msg(lambda m: m["type"] == "wandering_muted", timeout=1)
                except AssertionError:
                    return None
            got = wait_until(muted)
            assert got["by"] == "response centre: operator 7" and got["device"] == "door-1"
            send(id="c2", command="ack", alarm_id="x")  # not allowed for this site
            send(id="c3", command="mute", minutes=20, site="another-home")
            entries = wait_until(lambda: (e := r.json("audit", "-n", "50"))
                                 and [x for x in e if x["result"] == "refused"] and e)
            refused = [e for e in entries if e["result"] == "refused"]
            assert {e["id"] for e in refused} >= {"c2"}
            wait_until(lambda: {e.get("id") for e in r.json("audit", "-n", "50")} >= {"c2", "c3"})
            mutes = [e for e in r.json("audit", "-n", "50") if e["action"] == "mute"]
            assert mutes and all(e["via"] == "mqtt" for e in mutes)
        finally:
            c.loop_stop()
            c.disconnect()


def test_reload_with_a_rotated_key_accepts_the_devices_restarted_counter(running: Running) -> None:
    running.advert("pendant-1", [(bthome.BUTTON, bthome.BUTTON_PRESS)])
    first = running.next_msg(lambda m: m.get("type") == "alarm_button")
    new_key = bytes(range(16))
    keys.write(running.dir / "keys.toml", {**KEYS, "pendant-1": new_key})
    assert running.json("reload")["changed"]
    # A re-flashed device starts counting again from zero under its new key.
    running.counter = 0
    running.advert("pendant-1", [(bthome.BUTTON, bthome.BUTTON_LONG_PRESS)], key=new_key)
    second = running.next_msg(lambda m: m.get("type") == "alarm_button" and m["id"] != first["id"])
    assert second["device"] == "pendant-1"
