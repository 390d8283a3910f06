"""Reference consumer for the response-centre side: receives alarms, de-duplicates by id."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocols import mqtt_schema


class ResponseCentre:
    def __init__(self, host: str, port: int, site: str = "+", client_id: str = "response-centre"):
        self.host = host
        self.port = port
        self.site = site
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.all: list[dict[str, Any]] = []
        self.seen_ids: set[str] = set()
        self.duplicates = 0
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(f"{mqtt_schema.TOPIC_ROOT}/{self.site}/#", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        payload["_topic"] = msg.topic
        if msg.topic.endswith("/hub"):
            self.all.append(payload)
            return
        if payload.get("id") in self.seen_ids:
            self.duplicates += 1
            return
        self.seen_ids.add(payload.get("id"))
        self.all.append(payload)
        self.received.put(payload)

    def start(self, timeout: float = 10.0) -> ResponseCentre:
        # A persistent session: alarms published while this consumer is away wait for it.
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(self.host, self.port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError("response centre could not subscribe")
        return self

    def get(self, timeout: float = 20.0) -> dict[str, Any]:
        return self.received.get(timeout=timeout)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
