"""The hub's MQTT link: feeds paho from the outbox in a bounded window.

paho's own queue lives in memory only, so it never holds more than `window` messages: the
outbox is the buffer. A row leaves the outbox only when `on_publish` reports a successful
PUBACK for it (a v5 PUBACK with a failure reason code is not delivery).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hub.config import MqttSettings
from hub.outbox import Outbox, Row

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        outbox: Outbox,
        hub_topic: str,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.hub_topic = hub_topic
        self.connected = False
        self.delivered = 0
        self.rejected = 0
        self._inflight: dict[int, Row] = {}  # mid -> row; kept across reconnects (paho resends)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        c.max_inflight_messages_set(settings.window)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.will_set(hub_topic, self._hub_state("offline"), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self.client = c

    def _hub_state(self, state: str) -> bytes:
        return json.dumps({"schema": 1, "kind": "hub", "state": state}).encode()

    # -- paho callbacks (paho's network thread) -------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            log.error("MQTT broker refused the connection: %s", rc)
            return
        log.info("MQTT connected to %s:%d", self.settings.host, self.settings.port)
        client.publish(self.hub_topic, self._hub_state("online"), qos=1, retain=True)
        self._call(self._set_connected, True)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        log.warning("MQTT disconnected: %s", rc)
        self._call(self._set_connected, False)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        self._call(self._acked, mid, rc.is_failure, str(rc))

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    # -- event-loop side ------------------------------------------------------------------
    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self._wake.set()

    def _acked(self, mid: int, failed: bool, reason: str) -> None:
        row = self._inflight.pop(mid, None)
        if row is None:
            return  # the retained hub state, or a duplicate ack
        if failed:
            # The broker will not take it (e.g. not authorised for this topic): keep it in the
            # outbox and say so loudly; re-sending now would loop.
            self.rejected += 1
            log.error("broker rejected %s %s: %s", row.kind, row.msg_id, reason)
        else:
            self.outbox.delete([row.seq])
            self.delivered += 1
        self._wake.set()

    def kick(self) -> None:
        """New rows were committed: fill the window."""
        self._wake.set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        self._task = asyncio.create_task(self._pump(), name="mqtt-pump")

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.connected:
                continue
            free = self.settings.window - len(self._inflight)
            exclude = {r.seq for r in self._inflight.values()}
            rows = await asyncio.to_thread(self.outbox.next_batch, free, exclude)
            for row in rows:
                info = self.client.publish(row.topic, row.payload, qos=1)
                if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    # NO_CONN: paho queued it and resends on reconnect with this mid.
                    self._inflight[info.mid] = row
                else:
                    log.error("paho refused to publish %s: rc=%d", row.msg_id, info.rc)
                    break

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.client.disconnect()
        self.client.loop_stop()
