"""Commands from the response centre over MQTT: `mute` (staff on a visit) and `ack`.

They arrive on tryggheim/v1/<site>/command, on the hub's existing MQTT connection. Who may
publish there is the broker's ACL, per site (docs/ADMIN.md); the hub in addition accepts
only the commands its site allows ([admin] remote_commands, none by default), only for its
own site, each id once, and audits every command it accepts or refuses.

Payload: {"schema": 1, "kind": "command", "id": "...", "site": "<site>",
          "command": "mute", "minutes": 30, "door": "door-1"?, "by": "<operator>"}
         {"schema": 1, "kind": "command", "id": "...", "site": "<site>",
          "command": "ack", "alarm_id": "...", "by": "<operator>"}
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as mqtt

from protocols import mqtt_schema

log = logging.getLogger(__name__)


def command_topic(site: str) -> str:
    return f"{mqtt_schema.TOPIC_ROOT}/{site}/command"


def parse_command(data: bytes) -> dict[str, Any] | None:
    """A command object from raw bytes, or None. Bounded before parsing (size, nesting):
    a poison message must cost microseconds, not the network thread."""
    if len(data) > mqtt_schema.MAX_INCOMING_BYTES:
        return None
    if mqtt_schema.json_depth(data) > mqtt_schema.MAX_JSON_DEPTH:
        return None
    try:
        cmd = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(cmd, dict) or cmd.get("kind") != "command":
        return None
    return cmd


class CommandListener:
    def __init__(self, client: mqtt.Client, site: str,
                 handler: Callable[[dict[str, Any]], None]) -> None:
        self.client = client
        self.site = site
        self.topic = command_topic(site)
        self.handler = handler
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seen: deque[str] = deque(maxlen=256)
        self.received = 0
        self.refused = 0
        self.subscribed: bool | None = None  # the broker's answer to the subscription
        self._sub_mids: set[int] = set()
        self._sub_lock = threading.Lock()

    def attach(self) -> None:
        """Subscribe on every (re)connect, next to what the MQTT link itself does there.
        The link owns the client; this only chains its on_connect and adds a topic handler."""
        self._loop = asyncio.get_running_loop()
        previous = self.client.on_connect

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any) -> None:
            if previous is not None:
                cast(Any, previous)(client, userdata, flags, rc, props)
            if not rc.is_failure:
                self._subscribe(client)

        previous_sub = self.client.on_subscribe

        def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, codes: Any,
                         props: Any) -> None:
            if previous_sub is not None:
                cast(Any, previous_sub)(client, userdata, mid, codes, props)
            with self._sub_lock:  # the mid is registered once subscribe() returns
                mine = mid in self._sub_mids
                self._sub_mids.discard(mid)
            if mine:
                self.subscribed = not any(c.is_failure for c in codes)
                if not self.subscribed:
                    # Remote mute would silently do nothing: say so.
                    log.error("broker refused the subscription to %s (%s): commands from the"
                              " response centre cannot arrive; check the broker's ACL"
                              " (docs/DELIVERY.md)", self.topic, codes[0])

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.message_callback_add(self.topic, self._on_message)
        if self.client.is_connected():
            self._subscribe(self.client)

    def _subscribe(self, client: mqtt.Client) -> None:
        # From the event loop, paho's thread may read the SUBACK before subscribe()
        # returns the mid: the lock makes on_subscribe wait for it.
        with self._sub_lock:
            rc, mid = client.subscribe(self.topic, qos=1)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._sub_mids.add(mid)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # paho's network thread: nothing may escape (it would kill the thread and the link).
        try:
            cmd = parse_command(bytes(msg.payload))
            if cmd is None:
                self.refused += 1
                if self.refused <= 10 or self.refused % 1000 == 0:
                    log.warning("ignored a malformed command on %s (%d bytes; %d so far)",
                                msg.topic, len(msg.payload), self.refused)
                return
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._deliver, cmd)
        except Exception:
            log.exception("command on %s could not be handled", msg.topic)

    def _deliver(self, cmd: dict[str, Any]) -> None:
        cid = str(cmd.get("id", ""))
        if cid and cid in self._seen:
            return  # QoS 1 may deliver twice
        if cid:
            self._seen.append(cid)
        self.received += 1
        try:
            self.handler(cmd)
        except Exception:
            log.exception("command %s failed", cid)
