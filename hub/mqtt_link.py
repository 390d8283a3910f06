"""The hub's MQTT link: feeds paho from the outbox in a bounded window, collects receipts.

paho's own queue lives in memory only, so it never holds more than `window` messages: the
outbox is the buffer. On every (re)connect paho's leftovers are dropped and the outbox is
published again in its own order (alarms first), so a reconnect cannot reorder priorities.

Telemetry leaves the outbox at a successful PUBACK (a v5 PUBACK with a failure reason code is
not delivery; paho's `is_published()` would say it is). Messages that need an end-to-end
receipt stay until the response centre's receipt names their id; without one they are
published again (same id) with back-off, and at once after a reconnect, because a broker can
acknowledge a message and still lose it when it crashes before its next persistence save.

`on_delivered` listeners run in the event loop when a receipt confirms a message: that, not
the PUBACK, is when the resident may be told that help is coming.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import random
import socket
import ssl
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hub.clock import Clock, SystemClock, iso
from hub.config import MqttSettings
from hub.outbox import Outbox, Row
from hub.tasks import cancel_and_wait
from protocols import mqtt_schema

log = logging.getLogger(__name__)

ENVELOPE_FIELDS = frozenset(
    ("schema", "kind", "id", "site", "device", "type", "priority", "time", "hub", "state")
)
SESSION_EXPIRY_S = 7 * 24 * 3600
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 30.0
# Unconfirmed alarms are re-sent at least this often (flow control bounds the load).
RECEIPT_BACKOFF_CAP_S = 60.0
RESCAN_S = 5.0
NO_MATCHING_SUBSCRIBERS = 0x10  # v5 PUBACK: accepted, but nobody was subscribed
# At most this many messages published and not yet confirmed by a receipt (times the
# window, at least 100). End-to-end flow control: without it a hub with a large backlog
# re-sends all of it after every reconnect, floods a slow consumer, the broker drops what
# overflows the consumer's queue, and the backlog never drains.
RECEIPT_WINDOW_FACTOR = 10

DeliveredCallback = Callable[[str, dict[str, Any]], None]
StatusProvider = Callable[[], dict[str, Any]]


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed (paho's loop only
    reports that it failed, and a wrong CA or certificate must be named in the log)."""

    last_connect_error: OSError | None = None

    def reconnect(self) -> MQTTErrorCode:
        try:
            rc = super().reconnect()
        except OSError as e:
            self.last_connect_error = e
            raise
        self.last_connect_error = None
        return rc


def tcp_no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """paho leaves Nagle on. An alarm written right after a small packet (the PUBACK of a
    receipt) then waits for the broker's delayed ACK: about 40 ms per alarm, measured."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (a test double, a Unix socket)


def read_password(path: Path) -> str:
    """The password file's first line. The mode was checked when the config was loaded."""
    lines = path.read_text().splitlines()
    return lines[0] if lines else ""


def explain_connect_error(e: OSError, settings: MqttSettings) -> str:
    where = f"{settings.host}:{settings.port}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate at {where} is not trusted"
                f" ({e.verify_message}); check mqtt.tls_ca")
    if isinstance(e, ssl.SSLError):
        return (f"TLS handshake with {where} failed ({e.reason or e}); check mqtt.tls_ca,"
                " tls_cert and tls_key")
    if isinstance(e, ConnectionRefusedError):
        return f"nothing accepts connections at {where}"
    return f"cannot connect to {where}: {e}"


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        outbox: Outbox,
        hub_topic: str,
        receipt_topic: str | None = None,
        clock: Clock | None = None,
        site: str = "",
        tz: ZoneInfo | None = None,
    ) -> None:
        self.settings = settings
        self.site = site
        self.hub_id = client_id
        self.tz = tz or ZoneInfo("Europe/Oslo")
        self.outbox = outbox
        self.hub_topic = hub_topic
        self.receipt_topic = receipt_topic
        self.clock = clock or SystemClock()
        self.connected = False
        self.published = 0  # successful PUBACKs for outbox rows
        self.delivered = 0  # rows done: PUBACK (telemetry) or receipt (alarms)
        self.rejected = 0
        self.republished = 0  # alarms published again for want of a receipt
        self.receipts = 0
        self.last_error: str | None = None
        self.on_delivered: list[DeliveredCallback] = []
        self.status_provider: StatusProvider | None = None
        self._inflight: dict[int, Row] = {}  # mid -> row, this connection only
        # seq -> priority of rows published this connection with no receipt yet. The limit is
        # per priority, so a backlog of technical alarms never holds back a person's alarm.
        self._unconfirmed: dict[int, int] = {}
        self.receipt_window = max(100, RECEIPT_WINDOW_FACTOR * settings.window)
        self._done: list[int] = []  # seqs to delete (PUBACK of telemetry)
        self._waiting: list[tuple[int, float]] = []  # (seq, next try) for alarms
        self._due: list[float] = []  # heap of next-try times scheduled by this process
        self._receipts: list[str] = []
        self._attempt = 0  # reconnect attempts since the last good connection
        self._make_due = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        c = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(max(settings.window, 1) + 2)  # + hub state + spare
        c.max_queued_messages_set(0)
        self._set_reconnect_delay(c)
        c.will_set(hub_topic, self._hub_state("offline"), qos=1, retain=True)
        if settings.tls_ca is not None:
            c.tls_set(
                ca_certs=str(settings.tls_ca),
                certfile=str(settings.tls_cert) if settings.tls_cert else None,
                keyfile=str(settings.tls_key) if settings.tls_key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if settings.username:
            pw = read_password(settings.password_file) if settings.password_file else None
            c.username_pw_set(settings.username, pw)
        c.on_socket_open = tcp_no_delay
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.client = c

    def _hub_state(self, state: str, **extra: Any) -> bytes:
        # The will is registered at connect time, so its "time" says since when it stands.
        # The envelope's own fields win over a status summary that repeats them.
        fields = {k: v for k, v in extra.items() if k not in ENVELOPE_FIELDS}
        msg = mqtt_schema.hub_state(
            uuid.uuid4().hex, self.site, self.hub_id, state, iso(self.clock.now(), self.tz),
            **fields,
        )
        return json.dumps(msg, separators=(",", ":")).encode()

    def _set_reconnect_delay(self, client: mqtt.Client) -> None:
        # Exponential back-off with jitter, so a thousand hubs do not reconnect in step
        # after the central broker restarts. paho doubles without jitter; we set each delay.
        top = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** min(self._attempt, 16))
        delay = top * random.uniform(0.5, 1.0)
        client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type,unused-ignore]
        self._attempt += 1

    def _error(self, text: str) -> None:
        if text != self.last_error:
            log.error("MQTT: %s (messages stay in the outbox)", text)
        self.last_error = text

    # -- paho callbacks (paho's network thread) -------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            hint = ""
            if rc.value in (0x86, 0x87, 0x8C):  # bad credentials, not authorised, bad auth
                hint = "; check mqtt.username and mqtt.password_file (or the client certificate)"
            self._error(f"broker {self.settings.host}:{self.settings.port} refused the hub:"
                        f" {rc}{hint}")
            self._set_reconnect_delay(client)
            return
        self._attempt = 0
        self._set_reconnect_delay(client)
        if self.last_error is not None:
            log.info("MQTT: connection works again")
        self.last_error = None
        log.info("MQTT connected to %s:%d", self.settings.host, self.settings.port)
        # paho would resend its leftovers before anything new; the outbox decides the order.
        client.drop_out_messages()
        if self.receipt_topic is not None:
            client.subscribe(self.receipt_topic, qos=1)
        self._publish_state(client)
        self._call(self._set_connected, True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        e = self.client.last_connect_error
        self._error(explain_connect_error(e, self.settings) if e else "cannot connect")
        self._set_reconnect_delay(client)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if self.connected and not self._stopping:
            log.warning("MQTT disconnected: %s", rc)
        self._set_reconnect_delay(client)
        self._call(self._set_connected, False)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        self._call(self._acked, mid, rc.is_failure, str(rc),
                   rc.value == NO_MATCHING_SUBSCRIBERS)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            ids = mqtt_schema.receipt_ids(json.loads(msg.payload))
        except ValueError:
            ids = []
        if not ids:
            log.warning("ignored a malformed receipt on %s", msg.topic)
            return
        self._call(self._receipt, ids)

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:
                pass  # the loop closed while paho was still running

    # -- event-loop side ------------------------------------------------------------------
    def _set_connected(self, up: bool) -> None:
        self.connected = up
        if up:
            # A new connection: nothing is in flight any more (paho's leftovers were
            # dropped), and whatever waits for a receipt goes out again now.
            self._inflight.clear()
            self._unconfirmed.clear()
            self._due.clear()
            self._make_due = True
        self._wake.set()

    def _acked(self, mid: int, failed: bool, reason: str, unheard: bool = False) -> None:
        row = self._inflight.pop(mid, None)
        if row is None:
            return  # the retained hub state, or an ack from before a reconnect
        if failed:
            # The broker will not take it (e.g. not authorised for this topic): keep it in the
            # outbox, say so loudly, and try again only after the back-off.
            self.rejected += 1
            self._error(f"broker rejected {row.kind} {row.msg_id} on {row.topic}: {reason}")
            self._wait(row)
        elif row.receipt:
            self.published += 1
            # Nobody subscribed (e.g. the consumer has not re-subscribed after a broker
            # restart): the broker dropped it. Try again soon, without growing the back-off.
            self._wait(row, soon=unheard)
        else:
            self.published += 1
            self.delivered += 1
            self._done.append(row.seq)
        self._wake.set()

    def _wait(self, row: Row, soon: bool = False) -> None:
        backoff = min(RECEIPT_BACKOFF_CAP_S,
                      self.settings.receipt_timeout_s * 2 ** (0 if soon else min(row.attempts, 10)))
        due = self.clock.now() + backoff * random.uniform(0.9, 1.1)
        self._waiting.append((row.seq, due))
        heapq.heappush(self._due, due)

    def _receipt(self, ids: list[str]) -> None:
        self._receipts.extend(ids)
        self._wake.set()

    def kick(self) -> None:
        """New rows were committed: fill the window."""
        self._wake.set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)
        # A persistent session: receipts published while the hub is away wait for it.
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        self._tasks = [
            asyncio.create_task(self._pump(), name="mqtt-pump"),
            asyncio.create_task(self._heartbeat(), name="mqtt-heartbeat"),
        ]

    def _next_timeout(self) -> float:
        # The timers are an optimisation: a round every RESCAN_S finds anything due anyway.
        if not self._due:
            return RESCAN_S
        return min(RESCAN_S, max(0.0, self._due[0] - self.clock.now()))

    async def _pump(self) -> None:
        # Whatever goes wrong in one round, the pump must keep running: a dead pump is an
        # outbox that silently stops delivering.
        while True:
            try:
                await self._pump_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("MQTT pump round failed; retrying")
                await asyncio.sleep(0.5)
                self._wake.set()

    async def _pump_round(self) -> None:
        """One wake-up: write back what happened, then fill the window."""
        # A timer sets the event rather than asyncio.wait_for: on Python 3.11, wait_for can
        # swallow a cancellation that coincides with the wake-up (fixed in 3.12), and the
        # pump then outlives stop() (seen as a 15 s shutdown).
        timer = asyncio.get_running_loop().call_later(self._next_timeout(), self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()
        self._wake.clear()
        now = self.clock.now()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        await self._settle()
        if not self.connected:
            return
        free = self.settings.window - len(self._inflight)
        if free <= 0:
            return
        # Acknowledged but not yet written back: not due again either.
        exclude = {r.seq for r in self._inflight.values()}
        exclude.update(self._done)
        exclude.update(seq for seq, _ in self._waiting)
        # Priorities whose receipt window is full: only their re-sends may go.
        counts: dict[int, int] = {}
        for p in self._unconfirmed.values():
            counts[p] = counts.get(p, 0) + 1
        hold = {p for p, n in counts.items() if n >= self.receipt_window}
        allow = {seq for seq, p in self._unconfirmed.items() if p in hold}
        rows = await asyncio.to_thread(self.outbox.next_batch, free, exclude, now, hold, allow)
        for row in rows:
            if not self.connected:
                break
            if row.receipt and row.seq not in self._unconfirmed:
                if counts.get(row.priority, 0) >= self.receipt_window:
                    # Wait for receipts. Every later row of this priority is held back too,
                    # so the order within the priority is kept.
                    continue
                self._unconfirmed[row.seq] = row.priority
                counts[row.priority] = counts.get(row.priority, 0) + 1
            info = self.client.publish(row.topic, row.payload, qos=1)
            if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self._inflight[info.mid] = row
                if row.attempts:
                    self.republished += 1
            else:
                log.error("paho refused to publish %s: rc=%d", row.msg_id, info.rc)
                break

    async def _settle(self) -> None:
        """Write back what happened since the last round, in one transaction each. If the
        store cannot take it (disk full), it is kept for the next round; meanwhile those
        rows are not published again (they stay excluded)."""
        try:
            if self._done or self._waiting:
                done, waiting = list(self._done), list(self._waiting)
                await asyncio.to_thread(self.outbox.settle, done, waiting)
                del self._done[: len(done)]
                del self._waiting[: len(waiting)]
            # After the back-offs above (some from before a reconnect), so it overrides them.
            if self._make_due:
                self._make_due = False
                try:
                    await asyncio.to_thread(self.outbox.make_due)
                except BaseException:
                    self._make_due = True
                    raise
            if not self._receipts:
                return
            ids = list(self._receipts)
            rows = await asyncio.to_thread(self.outbox.confirm, ids)
            del self._receipts[: len(ids)]
        except Exception as e:
            self._error(f"cannot write delivery state to the outbox: {e}; will retry")
            await asyncio.sleep(0.5)  # a full disk does not clear in a millisecond
            self._wake.set()
            return
        self.receipts += len(ids)
        for row in rows:
            self._unconfirmed.pop(row.seq, None)
            self.delivered += 1
            log.info("receipt: %s %s confirmed by the response centre", row.kind,
                     row.msg_id)
            payload: dict[str, Any] = json.loads(row.payload)
            for cb in list(self.on_delivered):
                try:
                    cb(row.msg_id, payload)
                except Exception:
                    log.exception("on_delivered listener failed for %s", row.msg_id)

    # -- hub state: retained online/offline, refreshed as the heartbeat ---------------------
    def _publish_state(self, client: mqtt.Client) -> None:
        extra: dict[str, Any] = {}
        if self.status_provider is not None:
            try:
                extra = self.status_provider()
            except Exception:
                log.exception("hub status provider failed")
        client.publish(self.hub_topic, self._hub_state("online", **extra), qos=1, retain=True)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            if self.connected:
                self._publish_state(self.client)

    def publish_live(self, topic: str, payload: dict[str, Any]) -> bool:
        """Best effort, not stored: for news that cannot wait for the outbox (the outbox
        itself is failing). False if not connected."""
        if not self.connected:
            return False
        data = json.dumps(payload, separators=(",", ":")).encode()
        return self.client.publish(topic, data, qos=1).rc == mqtt.MQTT_ERR_SUCCESS

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "inflight": len(self._inflight),
            "published": self.published,
            "delivered": self.delivered,
            "republished": self.republished,
            "rejected": self.rejected,
            "last_error": self.last_error,
        }

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._tasks)
        try:
            await self._settle()
        except Exception:
            log.exception("could not write back delivery state (will re-send)")
        if self.connected:
            # A clean stop sends no will: say offline ourselves.
            info = self.client.publish(self.hub_topic, self._hub_state("offline"), qos=1,
                                       retain=True)
            # Operational timeout (loop time), not logic time.
            deadline = asyncio.get_running_loop().time() + 2.0
            while self.connected and asyncio.get_running_loop().time() < deadline:
                try:
                    if info.is_published():
                        break
                except RuntimeError:
                    break
                await asyncio.sleep(0.01)
        self.client.disconnect()
        self.client.loop_stop()
