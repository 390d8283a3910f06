"""Receipts only from the response centre, and untrusted input never stops the link.

Against a real Mosquitto with passwords and the shipped ACL (docs/mosquitto/): only the
centre's user can publish a receipt, a receipt that gets through the broker anyway counts only
with the site's receipt key (HMAC-SHA256, protocols/MQTT.md), another tenant cannot take over
the hub's client id, and poison messages (huge, deeply nested, 260,000 ids) are counted and
dropped while delivery goes on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from hashlib import sha256
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.config import settings as config
from hub.delivery.commands import parse_command
from protocols import mqtt_schema
from tests.conftest import requires_mosquitto
from tests.hub_support import (
    SITE,
    centre_keys,
    make_hub,
    open_for_broker,
    outgoing,
    running,
    until,
    write_config,
    write_key,
)
from tools.centre.mosquitto import Mosquitto
from tools.centre.response_centre import ResponseCentre

ROOT = Path(__file__).resolve().parents[3]
SHIPPED_ACL = (ROOT / "docs" / "mosquitto" / "tryggheim.acl").read_text()
RECEIPT = mqtt_schema.topic(SITE, "receipt")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return open_for_broker(tmp_path)


# -- the receipt signature: pure, as a centre would implement it from MQTT.md -----------------
def test_receipt_mac_is_hmac_sha256_over_the_documented_text() -> None:
    key = bytes(range(32))
    ids = ["a1", "b2.cleared"]
    text = "tryggheim/v1/receipt\nsite-1\n2026-01-01T00:00:00+01:00\na1\nb2.cleared"
    want = hmac.new(key, text.encode(), sha256).hexdigest()
    assert mqtt_schema.receipt_mac(key, "site-1", "2026-01-01T00:00:00+01:00", ids) == want
    long_key = bytes(100)  # longer than a block: hashed first, as RFC 2104 says
    assert mqtt_schema.hmac_sha256(long_key, b"x") == hmac.new(long_key, b"x", sha256).digest()
    body = mqtt_schema.signed_receipt(ids, "site-1", "rc", "2026-01-01T00:00:00+01:00", key)
    raw = json.dumps(body).encode()
    assert mqtt_schema.check_receipt(raw, "site-1", key) == (ids, "")
    assert mqtt_schema.check_receipt(raw, "site-1", bytes(32))[1] == "bad signature"
    assert mqtt_schema.check_receipt(raw, "site-2", key)[1] == "for another site"
    unsigned = json.dumps(mqtt_schema.receipt(ids, "site-1", "rc", "t")).encode()
    assert mqtt_schema.check_receipt(unsigned, "site-1", key)[1] == "not signed"
    tampered = json.dumps(dict(body, ids=["a1", "other"])).encode()
    assert mqtt_schema.check_receipt(tampered, "site-1", key)[1] == "bad signature"


@pytest.mark.parametrize("raw,why", [
    (b"[" * 50_000 + b"]" * 50_000, "too large"),
    (b'{"kind": "receipt", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
     "nested too deeply"),
    (json.dumps({"kind": "receipt", "site": SITE,
                 "ids": [str(i) for i in range(5000)]}).encode(), "too many ids"),
    (b"\xff\xfe", "not JSON"),
    (json.dumps({"kind": "receipt", "site": SITE, "ids": [{"$gt": ""}]}).encode(),
     "malformed id"),
])
def test_poison_receipts_are_refused_before_parsing(raw: bytes, why: str) -> None:
    assert mqtt_schema.check_receipt(raw, SITE) == ([], why)


def test_poison_commands_are_refused() -> None:
    assert parse_command(b"[" * 100_000) is None
    assert parse_command(b'{"kind":"command","x":' + b"[" * 5000 + b"]" * 5000 + b"}") is None
    assert parse_command(b'{"kind":"command","command":"mute"}') == {"kind": "command",
                                                                    "command": "mute"}


# -- against a real broker with the shipped ACL ---------------------------------------------
def _client(port: int, user: str, password: str, client_id: str) -> tuple[mqtt.Client,
                                                                         list[Any]]:
    acks: list[Any] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    c.on_publish = lambda cl, u, mid, rc, p: acks.append(rc)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c, acks


@requires_mosquitto
def test_only_the_centre_confirms_under_the_shipped_acl_and_forged_receipts_are_refused(
    workdir: Path,
) -> None:
    key = secrets.token_bytes(32)
    users = {SITE: "hub-pw", "response-centre": "rc-pw", "other-site": "x",
             "relatives-t": "rel-pw"}
    acl = SHIPPED_ACL + (f"\nuser relatives-t\ntopic read tryggheim/v1/{SITE}/to/relatives/#\n"
                         f"topic write tryggheim/v1/{SITE}/to/relatives/receipt\n")

    async def main() -> None:
        with Mosquitto(workdir / "broker", users=users, acl=acl,
                       client_id_is_user=True) as broker:
            pw = workdir / "mqtt.pw"
            pw.write_text("hub-pw\n")
            pw.chmod(0o600)
            cfg = write_config(
                workdir, broker.port, receipt_key=key,
                extra_mqtt=f'username = "{SITE}"\npassword_file = "mqtt.pw"\n',
                extra='\n[admin]\nremote_commands = ["ack"]\n\n[[route]]\n'
                      'receiver = "relatives"\nkinds = ["alarm"]\n')
            centre = ResponseCentre("127.0.0.1", broker.port, client_id="response-centre",
                                    username="response-centre", password="rc-pw",
                                    receipt_keys={SITE: key}).start()
            relatives = ResponseCentre("127.0.0.1", broker.port, site=SITE,
                                       receiver="relatives", client_id="relatives-t",
                                       group=None, receipts=False,
                                       username="relatives-t", password="rel-pw").start()
            try:
                async with running(make_hub(cfg)) as hub:
                    # Delivery, the routed copy and a remote command all pass the ACL.
                    await hub.emit(outgoing("alarm", "acl1"))
                    await hub.emit(outgoing("status", "acl2"))
                    await until(lambda: {"acl1", "acl2"} <= centre.seen_ids, what="delivery")
                    await until(lambda: hub.outbox.depth() == 0, what="signed receipt")
                    await until(lambda: "acl1:relatives" in relatives.seen_ids,
                                what="the relatives' copy")
                    assert hub.link.rejected == 0 and hub.link.refused_receipts == {}
                    cmd = {"schema": 1, "kind": "command", "id": "c1", "site": SITE,
                           "command": "ack", "alarm_id": "nope", "by": "operator"}
                    centre.client.publish(f"tryggheim/v1/{SITE}/command", json.dumps(cmd),
                                          qos=1)
                    assert hub.admin.commands is not None
                    await until(lambda: hub.admin.commands.received == 1, what="command")

                    # A forged receipt that gets through the broker (the centre's own
                    # account, but not its key) is counted and ignored.
                    centre.receipts = False
                    await hub.emit(outgoing("alarm", "acl3"))
                    await until(lambda: "acl3" in centre.seen_ids, what="acl3")
                    forged = mqtt_schema.signed_receipt(["acl3"], SITE, "x", "t",
                                                        secrets.token_bytes(32))
                    centre.client.publish(RECEIPT, json.dumps(forged), qos=1)
                    unsigned = mqtt_schema.receipt(["acl3"], SITE, "x", "t")
                    centre.client.publish(RECEIPT, json.dumps(unsigned), qos=1)
                    await until(lambda: sum(hub.link.refused_receipts.values()) == 2,
                                what="forged receipts refused")
                    assert hub.link.refused_receipts == {"bad signature": 1, "not signed": 1}
                    assert "acl3" in hub.outbox.ids()

                    # Another tenant: cannot publish a receipt (0x87), and connecting with
                    # the hub's client id takes nothing over.
                    connects = hub.link.connects
                    other, acks = _client(broker.port, "other-site", "x", "hub-t")
                    other.publish(RECEIPT, json.dumps(unsigned), qos=1)
                    other.publish(f"tryggheim/v1/{SITE}/alarm", b"{}", qos=1)
                    await until(lambda: len(acks) == 2, what="PUBACKs")
                    assert all(rc.is_failure and rc.value == 0x87 for rc in acks)
                    also, _ = _client(broker.port, "other-site", "x", SITE)
                    centre.receipts = True
                    await hub.emit(outgoing("alarm", "acl4"))
                    await until(lambda: hub.outbox.depth() == 0, what="still delivering")
                    assert hub.link.connects == connects and hub.link.connected
                    for c in (other, also):
                        c.disconnect()
                        c.loop_stop()
            finally:
                centre.stop()
                relatives.stop()

    asyncio.run(main())


@requires_mosquitto
def test_a_hub_with_the_default_config_refuses_unsigned_receipts(workdir: Path) -> None:
    """No receipt_key_file: the hub makes the site's key (0600) and takes only receipts
    signed with it; an unsigned one, from anyone, confirms nothing."""

    async def main() -> None:
        with Mosquitto(workdir / "broker") as broker:
            cfg = write_config(workdir, broker.port, receipt_key=None)
            unsigned = ResponseCentre("127.0.0.1", broker.port, client_id="rc-unsigned").start()
            try:
                async with running(make_hub(cfg)) as hub:
                    await hub.emit(outgoing("alarm", "def1"))
                    await until(lambda: "def1" in unsigned.seen_ids, what="delivery")
                    await until(lambda: hub.link.refused_receipts.get("not signed", 0) >= 1,
                                what="the unsigned receipt refused")
                    assert "def1" in hub.outbox.ids()
                    key_file = workdir / "var" / "receipt.key"
                    assert key_file.stat().st_mode & 0o777 == 0o600
                    unsigned.stop()
                    # The centre that was given the key confirms.
                    key = config.read_receipt_key(key_file)
                    signed = ResponseCentre("127.0.0.1", broker.port, client_id="rc-signed",
                                            receipt_keys={SITE: key}).start()
                    try:
                        await until(lambda: hub.outbox.depth() == 0, what="signed receipt")
                    finally:
                        signed.stop()
                # The key is kept across restarts: the centre's copy stays valid.
                async with running(make_hub(cfg)) as hub:
                    assert hub.link.receipt_key == key
            finally:
                unsigned.stop()

    asyncio.run(main())


@requires_mosquitto
def test_unsigned_receipts_only_by_explicit_lab_opt_out(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        with Mosquitto(workdir / "broker") as broker:
            cfg = write_config(workdir, broker.port, receipt_key=None,
                               extra_mqtt='receipts = "unsigned"\n')
            centre = ResponseCentre("127.0.0.1", broker.port).start()
            try:
                async with running(make_hub(cfg)) as hub:
                    await hub.emit(outgoing("alarm", "lab1"))
                    await until(lambda: hub.outbox.depth() == 0, what="unsigned receipt")
                    assert not (workdir / "var" / "receipt.key").exists()
            finally:
                centre.stop()

    asyncio.run(main())
    assert any(r.levelname == "ERROR" and "NOT verified" in r.getMessage()
               for r in caplog.records)


def test_receipts_setting_is_checked(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 1883, receipt_key=None, extra_mqtt='receipts = "maybe"\n')
    with pytest.raises(config.ConfigError, match=r"hub.toml:\d+: mqtt.receipts: 'maybe'"):
        config.load(cfg)


@requires_mosquitto
def test_refused_receipt_subscription_is_reported_not_silent(workdir: Path) -> None:
    """A broker whose ACL refuses the receipt subscription in the SUBACK (Mosquitto's
    dynamic-security plugin; acl_file grants it and filters instead, see the next test)."""

    if not any(Path(d, "mosquitto_dynamic_security.so").exists()
               for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib")):
        pytest.skip("mosquitto's dynamic-security plugin is not installed")

    async def main() -> None:
        with Mosquitto(workdir / "broker", dynsec=True) as broker:
            broker.ctrl("createClient", SITE, "-p", "hub-pw")
            broker.ctrl("createRole", "hub")
            broker.ctrl("addRoleACL", "hub", "publishClientSend", "tryggheim/v1/#", "allow")
            broker.ctrl("addClientRole", SITE, "hub")
            broker.ctrl("createClient", "response-centre", "-p", "rc-pw")
            broker.ctrl("createRole", "centre")
            broker.ctrl("addRoleACL", "centre", "subscribePattern", "tryggheim/v1/#", "allow")
            broker.ctrl("addClientRole", "response-centre", "centre")
            pw = workdir / "mqtt.pw"
            pw.write_text("hub-pw\n")
            pw.chmod(0o600)
            cfg = write_config(workdir, broker.port,
                               extra_mqtt=f'username = "{SITE}"\npassword_file = "mqtt.pw"\n',
                               extra='\n[admin]\nremote_commands = ["mute"]\n')
            centre = ResponseCentre("127.0.0.1", broker.port, username="response-centre",
                                    password="rc-pw", client_id="rc", receipts=False,
                                    group=None, receipt_keys=centre_keys).start()
            try:
                async with running(make_hub(cfg)) as hub:
                    await until(lambda: hub.link.subscribed.get(RECEIPT) is False,
                                what="SUBACK failure noticed")
                    assert "refused the subscription" in str(hub.link.last_error)
                    tech = await _next_technical(centre)
                    assert tech["type"] == "link_down"
                    assert tech["cause"] == "receipt_subscription_refused"
                    assert hub.link.status()["problems"] == ["receipt_subscription_refused"]
                    # The command subscription is refused too: remote mute cannot work.
                    assert hub.admin.commands is not None
                    await until(lambda: hub.admin.commands.subscribed is False,
                                what="command SUBACK failure noticed")
            finally:
                centre.stop()

    asyncio.run(main())


async def _next_technical(centre: ResponseCentre) -> dict[str, Any]:
    await until(lambda: any(m["kind"] == "technical_alarm" for m in centre.all),
                what="technical alarm at the centre")
    return next(m for m in centre.all if m["kind"] == "technical_alarm")


@requires_mosquitto
def test_poison_receipts_do_not_stop_delivery(workdir: Path) -> None:
    """A 100 kB nested receipt used to kill paho's thread (RecursionError), one naming
    260,000 ids to wedge receipt processing (too many SQL variables)."""

    async def main() -> None:
        with Mosquitto(workdir / "broker") as broker:
            centre = ResponseCentre("127.0.0.1", broker.port, receipts=False,
                                    receipt_keys=centre_keys).start()
            try:
                cfg = write_config(workdir, broker.port,
                                   extra='\n[admin]\nremote_commands = ["ack"]\n')
                async with running(make_hub(cfg)) as hub:
                    await hub.emit(outgoing("alarm", "p1"))
                    await until(lambda: "p1" in centre.seen_ids, what="p1 published")
                    deep = b'{"kind":"receipt","ids":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
                    many = json.dumps(mqtt_schema.receipt(
                        ["p1"] + [f"x{i}" for i in range(260_000)], SITE, "x", "t")).encode()
                    shallow_deep = b'{"kind":"receipt","x":' + b"[" * 3000 + b"]" * 3000 + b"}"
                    for raw in (deep, many, shallow_deep):
                        centre.client.publish(RECEIPT, raw, qos=1)
                    centre.client.publish(f"tryggheim/v1/{SITE}/command", deep, qos=1)
                    await until(lambda: sum(hub.link.refused_receipts.values()) == 3,
                                what=lambda: f"refusals {hub.link.refused_receipts}")
                    assert hub.admin.commands is not None
                    await until(lambda: hub.admin.commands.refused == 1, what="poison command")
                    # The thread lives, receipts still work, nothing is left behind.
                    centre.receipts = True
                    await hub.emit(outgoing("alarm", "p2"))
                    await until(lambda: hub.outbox.depth() == 0, what="p1 and p2 confirmed")
                    assert hub.link.client._thread is not None and hub.link.rebuilds == 0
                    # A receipt at the id limit goes through in batches.
                    centre.receipts = False
                    await hub.emit(outgoing("alarm", "p3"))
                    await until(lambda: "p3" in centre.seen_ids, what="p3 published")
                    ids = [f"y{i}" for i in range(mqtt_schema.MAX_RECEIPT_IDS - 1)] + ["p3"]
                    centre.send_receipt(SITE, ids)
                    await until(lambda: hub.outbox.depth() == 0, what="p3 confirmed")
            finally:
                centre.stop()

    asyncio.run(main())


def test_response_centre_signs_with_keys_from_a_directory(tmp_path: Path) -> None:
    from tools.centre.response_centre import key_directory

    key = secrets.token_bytes(32)
    write_key(tmp_path / f"{SITE}.key", key)
    lookup = key_directory(tmp_path)
    assert lookup(SITE) == key and lookup("other") is None and lookup("../x") is None


@requires_mosquitto
def test_the_shipped_listener_config_runs_as_written(workdir: Path) -> None:
    """docs/mosquitto/tryggheim.conf with only its paths and port replaced: TLS, passwords,
    the ACL and client ids bound to user names, on a real Mosquitto."""
    import os
    import shutil
    import subprocess

    from tools.centre.mosquitto import free_port, make_tls, wait_for_port

    tls = make_tls(workdir / "tls", client_cn="unused")
    d = workdir / "etc"
    d.mkdir()
    (d / "tryggheim.acl").write_text(SHIPPED_ACL)
    pw = d / "tryggheim.passwd"
    pw.write_text(f"{SITE}:hub-pw\nresponse-centre:rc-pw\nother-site:x\n")
    subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
    port = free_port()
    conf = (ROOT / "docs" / "mosquitto" / "tryggheim.conf").read_text()
    conf = (conf.replace("/etc/mosquitto/tryggheim.passwd", str(pw))
            .replace("/etc/mosquitto/tryggheim.acl", str(d / "tryggheim.acl"))
            .replace("/etc/mosquitto/certs/ca.crt", str(tls.ca))
            .replace("/etc/mosquitto/certs/server.crt", str(tls.server_cert))
            .replace("/etc/mosquitto/certs/server.key", str(tls.server_key))
            .replace("listener 8883", f"listener {port} 127.0.0.1")
            + f"persistence_location {d}/\n")
    (d / "mosquitto.conf").write_text(conf)
    if os.geteuid() == 0:  # mosquitto drops to its own user and must read its files
        for p in (d, tls.ca.parent, *d.iterdir(), *tls.ca.parent.iterdir()):
            shutil.chown(p, "mosquitto")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                             str(d / "mosquitto.conf")], stderr=subprocess.PIPE)
    key = secrets.token_bytes(32)

    async def main() -> None:
        hub_pw = workdir / "mqtt.pw"
        hub_pw.write_text("hub-pw\n")
        hub_pw.chmod(0o600)
        cfg = write_config(workdir, port, host="localhost", receipt_key=key,
                           extra_mqtt=f'tls_ca = "{tls.ca}"\nusername = "{SITE}"\n'
                                      'password_file = "mqtt.pw"\n')
        centre = ResponseCentre("localhost", port, client_id="response-centre",
                                username="response-centre", password="rc-pw",
                                tls_ca=str(tls.ca), receipt_keys={SITE: key}).start()
        try:
            async with running(make_hub(cfg)) as hub:
                await hub.emit(outgoing("alarm", "conf1"))
                await until(lambda: hub.outbox.depth() == 0, what="signed receipt")
                connects = hub.link.connects
                intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hub-t",
                                       protocol=mqtt.MQTTv5)
                intruder.tls_set(ca_certs=str(tls.ca))
                intruder.username_pw_set("other-site", "x")
                intruder.connect("localhost", port)
                intruder.loop_start()
                await until(intruder.is_connected, what="the other tenant connected")
                await hub.emit(outgoing("alarm", "conf2"))
                await until(lambda: hub.outbox.depth() == 0, what="still delivering")
                assert hub.link.connects == connects
                intruder.disconnect()
                intruder.loop_stop()
        finally:
            centre.stop()

    try:
        wait_for_port(port)
        asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_a_broken_off_tls_handshake_without_a_client_certificate_is_named() -> None:
    import ssl

    from hub.config.settings import MqttSettings
    from hub.delivery.mqtt_link import explain_connect_error

    e = ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure")
    text = explain_connect_error(e, MqttSettings(tls_ca=Path("ca.crt")))
    assert "client certificate" in text and "mqtt.tls_cert" in text
    with_cert = MqttSettings(tls_ca=Path("ca"), tls_cert=Path("c"), tls_key=Path("k"))
    assert "check mqtt.tls_ca" in explain_connect_error(e, with_cert)
