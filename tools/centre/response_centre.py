"""Reference consumer for the response-centre side.

Subscribes with MQTT 5 shared subscriptions (several instances in one group share the load),
keeps a persistent session (messages published while it is away wait for it), de-duplicates
by message id, optionally appends each new message to a journal file (fsync'd) and only then
publishes the end-to-end receipt the hub waits for. A duplicate is receipted again: the hub
may have missed the first receipt.

    python -m tools.centre.response_centre --host 127.0.0.1 --port 1883 [--journal alarms.jsonl]
        [--receipt-keys DIR]   sign receipts with DIR/<site>.key (protocols/MQTT.md)

De-duplication is per process (in memory, seeded from the journal). Several instances in a
group need a shared de-dup store; see docs/DELIVERY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.delivery.mqtt_link import tcp_no_delay
from protocols import mqtt_schema

# Kinds a consumer takes responsibility for; "hub" (state) and "receipt" are not messages.
CONSUMED_KINDS = ("alarm", "alarm_cleared", "technical_alarm", "event", "status")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ResponseCentre:
    def __init__(
        self,
        host: str,
        port: int,
        site: str = "+",
        client_id: str = "response-centre",
        group: str | None = "response-centre",
        receipts: bool = True,
        journal: str | Path | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        session_expiry_s: int = 3600,
        receipt_keys: Mapping[str, bytes] | Callable[[str], bytes | None] | None = None,
        receipt_topic: Callable[[str], str] | None = None,
        receiver: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.site = site
        self.client_id = client_id
        self.group = group
        self.receipts = receipts  # False: take messages but send no receipts (fault tests)
        self.session_expiry_s = session_expiry_s
        # Per-site receipt keys: receipts are signed (HMAC-SHA256, protocols/MQTT.md) when
        # the site has one. None: unsigned receipts (only a hub set to receipts = "unsigned",
        # a lab set-up, takes them).
        self.receipt_keys = receipt_keys
        # A route's receiver (not the centre): its copies on .../to/<receiver>/<kind>, its
        # receipts on .../to/<receiver>/receipt (routes with confirms = true).
        self.receiver = receiver
        self.receipt_topic = receipt_topic or self._default_receipt_topic
        self.unsigned_sites: set[str] = set()
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.all: list[dict[str, Any]] = []  # every new message, in arrival order
        self.hub_states: list[dict[str, Any]] = []
        self.seen_ids: set[str] = set()
        self.duplicates = 0
        self.receipts_sent = 0
        self.malformed = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._journal = None
        if journal is not None:
            path = Path(journal)
            if path.exists():
                for line in path.read_text().splitlines():
                    try:
                        self.seen_ids.add(json.loads(line)["id"])
                    except (ValueError, KeyError, TypeError):
                        continue
            self._journal = open(path, "a", buffering=1)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        self.client.on_socket_open = tcp_no_delay  # receipts go out at once (no Nagle delay)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _filters(self) -> list[str]:
        root = f"{mqtt_schema.TOPIC_ROOT}/{self.site}"
        prefix = f"$share/{self.group}/" if self.group else ""
        if self.receiver is not None:
            return [f"{prefix}{root}/to/{self.receiver}/{k}/#" for k in CONSUMED_KINDS]
        # Retained hub state is not sent to shared subscriptions: subscribe to it plainly.
        return [f"{prefix}{root}/{k}/#" for k in CONSUMED_KINDS] + [f"{root}/hub"]

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any) -> None:
        if rc.is_failure:
            print(f"response centre: broker refused: {rc}", file=sys.stderr)
            return
        client.subscribe([(f, 1) for f in self._filters()])

    def _on_subscribe(self, *args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(msg.payload)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            self.malformed += 1
            return
        payload["_topic"] = msg.topic
        if msg.topic.endswith("/hub"):
            with self._lock:
                self.hub_states.append(payload)
            return
        msg_id = payload.get("id")
        # The site is the one the broker's ACL let this publisher write to (the topic), not
        # what the payload claims: a receipt must never go to another home's hub.
        parts = msg.topic.split("/")
        site = parts[2] if len(parts) > 3 else ""
        if not isinstance(msg_id, str) or payload.get("site") != site or not _plain(site):
            self.malformed += 1
            return
        with self._lock:
            new = msg_id not in self.seen_ids
            if new:
                self.seen_ids.add(msg_id)
                self.all.append(payload)
            else:
                self.duplicates += 1
        if new:
            if self._journal is not None:
                # Responsibility is taken when the message is on our disk, not before.
                self._journal.write(json.dumps(payload, ensure_ascii=False) + "\n")
                self._journal.flush()
                os.fsync(self._journal.fileno())
            self.received.put(payload)
        if self.receipts and payload.get("kind") in mqtt_schema.RECEIPT_KINDS:
            self.send_receipt(site, [msg_id])

    def _default_receipt_topic(self, site: str) -> str:
        if self.receiver is not None:
            return f"{mqtt_schema.TOPIC_ROOT}/{site}/to/{self.receiver}/receipt"
        return str(mqtt_schema.topic(site, "receipt"))

    def key_for(self, site: str) -> bytes | None:
        keys = self.receipt_keys
        if keys is None:
            return None
        return keys(site) if callable(keys) else keys.get(site)

    def send_receipt(self, site: str, ids: list[str]) -> None:
        key = self.key_for(site)
        if self.receipt_keys is not None and key is None:
            # Keys are in use but this site has none: an unsigned receipt would be refused
            # by the hub anyway. Say so once per site.
            if site not in self.unsigned_sites:
                self.unsigned_sites.add(site)
                print(f"response centre: no receipt key for site {site}", file=sys.stderr)
            return
        t = _now_iso()
        body = (mqtt_schema.signed_receipt(ids, site, self.client_id, t, key) if key
                else mqtt_schema.receipt(ids, site, self.client_id, t))
        self.client.publish(self.receipt_topic(site),
                            json.dumps(body, separators=(",", ":")), qos=1)
        with self._lock:
            self.receipts_sent += 1

    def start(self, timeout: float = 10.0) -> ResponseCentre:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        self.client.connect(self.host, self.port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError("response centre could not subscribe")
        return self

    def get(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.received.get(timeout=timeout)

    def ids(self) -> list[str]:
        with self._lock:
            return [m["id"] for m in self.all]

    def wait_for(self, ids: set[str], timeout: float = 30.0) -> set[str]:
        """Wait until every id has arrived; returns those still missing."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                missing = ids - self.seen_ids
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.02)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def key_directory(directory: Path) -> Callable[[str], bytes | None]:
    """Receipt keys as files <site>.key in one directory (read when first needed)."""
    from hub.config.settings import read_receipt_key

    cache: dict[str, bytes | None] = {}

    def lookup(site: str) -> bytes | None:
        if site not in cache:
            path = directory / f"{site}.key"
            try:
                cache[site] = read_receipt_key(path) if _plain(site) else None
            except (OSError, ValueError):
                cache[site] = None
        return cache[site]

    return lookup


def _plain(site: str) -> bool:
    return bool(site) and not any(c in site for c in "+#/\0")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.centre.response_centre", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--site", default="+", help="site id, or + for all sites")
    p.add_argument("--client-id", default="response-centre")
    p.add_argument("--group", default="response-centre", help="shared-subscription group")
    p.add_argument("--journal", help="append each new message here (fsync) before receipting")
    p.add_argument("--tls-ca")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--username")
    p.add_argument("--password-file")
    p.add_argument("--receiver", help="consume a route's copies for this receiver instead"
                   " (receipts on .../to/<receiver>/receipt)")
    p.add_argument("--receipt-keys", metavar="DIR",
                   help="sign receipts with the key in DIR/<site>.key (hex, first line)")
    a = p.parse_args(argv)
    password = None
    if a.password_file:
        password = Path(a.password_file).read_text().splitlines()[0]
    rc = ResponseCentre(
        a.host, a.port, a.site, a.client_id, a.group, journal=a.journal, tls_ca=a.tls_ca,
        tls_cert=a.tls_cert, tls_key=a.tls_key, username=a.username, password=password,
        receipt_keys=key_directory(Path(a.receipt_keys)) if a.receipt_keys else None,
        receiver=a.receiver,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rc.start()
    print(f"response centre: listening on {a.host}:{a.port} for site {a.site}", flush=True)
    while not stop.is_set():
        try:
            m = rc.received.get(timeout=0.2)
        except queue.Empty:
            continue
        print(json.dumps(m, ensure_ascii=False), flush=True)
    rc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
