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

Everything from the broker is untrusted: every paho callback catches everything (an exception
would kill paho's network thread and with it the link), receipts are bounded in size, depth
and id count before they are parsed, and with a receipt key only receipts signed by the
response centre count (protocols/MQTT.md). A watchdog rebuilds the client when paho's thread
has died or a connection makes no progress. Each receiver of routed copies has its own
window, so a receiver that never confirms holds back only itself.

Deadlines (re-sends, the watchdog) are on the monotonic clock: a wall-clock step must not
delay a re-send. The injected clock only stamps messages.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hub.clock import Clock, SystemClock, iso
from hub.config.settings import MqttSettings, Receiver, read_receipt_key
from hub.delivery.outbox import Outbox, Row
from hub.delivery.routing import CENTRE, receiver_of
from hub.rules.outgoing import Outgoing, new_id
from hub.store import is_damage
from hub.tasks import cancel_and_wait
from protocols import mqtt_schema

log = logging.getLogger(__name__)

ENVELOPE_FIELDS = frozenset(
    ("schema", "kind", "id", "site", "device", "type", "priority", "time", "hub", "state")
)
SESSION_EXPIRY_S = 7 * 24 * 3600
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 30.0
WATCHDOG_S = 1.0
# A receiver that confirms and has sent no receipt for this long, with copies waiting:
# technical alarm (times receipt_timeout_s, at least RECEIVER_SILENT_MIN_S).
RECEIVER_SILENT_FACTOR = 12
RECEIVER_SILENT_MIN_S = 60.0
# Unconfirmed alarms are re-sent at least this often (flow control bounds the load).
RECEIPT_BACKOFF_CAP_S = 60.0
RESCAN_S = 5.0
SETTLE_EVERY_S = 0.1  # telemetry done at PUBACK is written back at least this often
SETTLE_BATCH = 500  # telemetry rows deleted per write-back (fewer transactions and checkpoints)
FETCH_AHEAD = 2000  # rows fetched beyond the free window: ~100 ms of replay, ~1 MB
INLINE_ROWS = 16  # at most this many read in the event loop (MqttLink._fetch_inline)
NO_MATCHING_SUBSCRIBERS = 0x10  # v5 PUBACK: accepted, but nobody was subscribed
# At most this many messages published and not yet confirmed by a receipt (times the
# window, at least 100). End-to-end flow control: without it a hub with a large backlog
# re-sends all of it after every reconnect, floods a slow consumer, the broker drops what
# overflows the consumer's queue, and the backlog never drains.
RECEIPT_WINDOW_FACTOR = 10

DeliveredCallback = Callable[[str, dict[str, Any]], None]
StatusProvider = Callable[[], dict[str, Any]]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ReconnectPolicy:
    """How long to wait before the next connection attempt.

    After a broker restart every hub reconnects at once unless told otherwise. A hub with
    nothing waiting for the centre ("idle") waits a random time up to `idle_cap_s`, so a
    thousand of them spread over half a minute. A hub holding an alarm ("urgent") tries
    every `urgent_min_s`..`urgent_max_s` while the broker refuses TCP connections (cheap for
    it), so its alarm leaves within about a second of the broker being back. After the
    broker refused the hub itself (credentials, TLS) the back-off doubles, urgent or not."""

    base_s: float = RECONNECT_BASE_S
    idle_cap_s: float = RECONNECT_CAP_S
    urgent_min_s: float = 0.2
    urgent_max_s: float = 1.0

    def delay(self, attempt: int, urgent: bool, refused: bool, rng: random.Random) -> float:
        if refused:
            top = min(self.idle_cap_s, self.base_s * 2 ** min(attempt, 16))
            return float(top * rng.uniform(0.5, 1.0))
        if urgent:
            return rng.uniform(self.urgent_min_s, self.urgent_max_s)
        # Full jitter over the whole window from the first attempt on: hubs that lost the
        # broker together must not come back together.
        return rng.uniform(self.base_s, self.idle_cap_s)


def guarded(fn: F) -> F:
    """For paho callbacks: an exception escaping one kills paho's network thread (the link
    would look connected and deliver nothing). Log it and carry on."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            log.exception("MQTT callback %s failed (ignored)", fn.__name__)
            return None

    return wrapper  # type: ignore[return-value]


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed (paho's loop only
    reports that it failed, and a wrong CA or certificate must be named in the log), with
    the reconnect wait decided by the link (`delay_fn`) and cut short by `hurry`."""

    last_connect_error: OSError | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hurry = threading.Event()
        self.delay_fn: Callable[[], float] = lambda: RECONNECT_BASE_S
        # (topic, callback) given to message_callback_add, so a rebuilt client gets them too.
        self.message_filters: list[tuple[str, Any]] = []
        self.suppress_exceptions = True  # second line of defence behind `guarded`

        # Told after each read of the socket (all the packets it held): the link hands the
        # PUBACKs of one read to the event loop together. Woken per PUBACK, the event loop
        # took the interpreter from paho's thread at every recv and published a few
        # messages per wake-up (tools/bench/link.py).
        self.after_read: Callable[[], None] | None = None
        self.reading = False

    def message_callback_add(self, sub: str, callback: Any) -> None:
        self.message_filters.append((sub, callback))
        super().message_callback_add(sub, callback)

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        self.reading = True
        try:
            return super().loop_read(max_packets)
        finally:
            self.reading = False
            if self.after_read is not None:
                self.after_read()

    def reconnect(self) -> MQTTErrorCode:
        try:
            rc = super().reconnect()
        except OSError as e:
            self.last_connect_error = e
            raise
        self.last_connect_error = None
        return rc

    def _reconnect_wait(self) -> None:
        # Replaces paho's wait (fixed doubling, sleeps in whole seconds): our delay, and a
        # new alarm (`hurry`) shortens it.
        deadline = time.monotonic() + self.delay_fn()
        while (self._state not in (_CS_DISCONNECTING, _CS_DISCONNECTED)
               and not self._thread_terminate):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.hurry.wait(min(remaining, 0.5)):
                self.hurry.clear()
                deadline = min(deadline, time.monotonic() + self.delay_fn())


_CS_DISCONNECTING = mqtt._ConnectionState.MQTT_CS_DISCONNECTING  # type: ignore[attr-defined]
_CS_DISCONNECTED = mqtt._ConnectionState.MQTT_CS_DISCONNECTED  # type: ignore[attr-defined]


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
    if isinstance(e, ssl.SSLError) and "CERTIFICATE_REQUIRED" in str(e).upper().replace(
            " ", "_"):
        return (f"TLS: the broker at {where} demands a client certificate; set"
                " mqtt.tls_cert and mqtt.tls_key")
    if isinstance(e, ssl.SSLError) and settings.tls_cert is None:
        # Not a certificate we distrust: the broker broke off the handshake. Without a client
        # certificate of our own, that is the likeliest reason (TLS 1.2 gives no clearer one).
        why = getattr(e, "reason", None) or e
        return (f"TLS: the broker at {where} broke off the handshake ({why}): it probably"
                " demands a client certificate; set mqtt.tls_cert and mqtt.tls_key")
    if isinstance(e, ssl.SSLError):
        why = getattr(e, "reason", None) or e
        return (f"TLS handshake with {where} failed ({why}); check mqtt.tls_ca, tls_cert and"
                " tls_key")
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
        reconnect: ReconnectPolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.site = site
        self.hub_id = client_id
        self.tz = tz or ZoneInfo("Europe/Oslo")
        self.outbox = outbox
        self.hub_topic = hub_topic
        self.receipt_topic = receipt_topic
        self.clock = clock or SystemClock()
        self.mono = monotonic  # deadlines; self.clock only stamps messages
        self.policy = reconnect or ReconnectPolicy()
        self._rng = random.Random()
        self.connected = False
        self.published = 0  # successful PUBACKs for outbox rows
        self.delivered = 0  # rows done: PUBACK (telemetry) or receipt (alarms)
        self.rejected = 0
        self.republished = 0  # alarms published again for want of a receipt
        self.receipts = 0
        self.refused_receipts: dict[str, int] = {}  # why -> count (unsigned, too large, ...)
        self.refused_commands = 0
        self.rebuilds = 0  # clients replaced by the watchdog
        self.connects = 0  # connections the broker accepted
        self.connected_at: float | None = None  # monotonic time of the last connection
        self.last_error: str | None = None
        self.on_delivered: list[DeliveredCallback] = []
        self.status_provider: StatusProvider | None = None
        self.on_store_damage: Callable[[str], None] | None = None
        self.receipt_key = (read_receipt_key(settings.receipt_key_file)
                            if settings.receipt_key_file else None)
        # Without a key no receipt is taken (the config requires one), unless receipts =
        # "unsigned" says so explicitly: then any client the broker lets publish on the
        # receipt topic can confirm alarms. Lab use only, and said loudly.
        self.unsigned_receipts = settings.receipts == "unsigned"
        if receipt_topic is not None and self.unsigned_receipts:
            log.error("MQTT: mqtt.receipts = \"unsigned\": receipts are NOT verified; any"
                      " client allowed on the receipt topic can confirm alarms (lab use only,"
                      " docs/DELIVERY.md)")
        elif receipt_topic is not None and self.receipt_key is None:
            log.error("MQTT: no mqtt.receipt_key_file: every receipt will be refused"
                      " (docs/DELIVERY.md)")
        self.receivers: dict[str, Receiver] = {r.name: r for r in settings.receivers}
        self._receiver_keys = {r.name: read_receipt_key(r.receipt_key_file)
                               for r in settings.receivers if r.receipt_key_file}
        # receipt topic -> receiver whose receipts arrive there
        self._receipt_topics: dict[str, str] = {}
        if receipt_topic is not None:
            self._receipt_topics[receipt_topic] = CENTRE
            for r in settings.receivers:
                if r.confirms:
                    self._receipt_topics[self.copies_prefix + f"{r.name}/receipt"] = r.name
        self._inflight: dict[int, Row] = {}  # mid -> row, this connection only
        # seq -> (receiver, priority) of rows published this connection with no receipt yet.
        # The limit is per receiver and priority, so a backlog of technical alarms never
        # holds back a person's alarm and a receiver that never confirms holds back only
        # itself.
        self._unconfirmed: dict[int, tuple[str, int]] = {}
        self.receipt_window = max(100, RECEIPT_WINDOW_FACTOR * settings.window)
        self._done: list[int] = []  # seqs to delete (PUBACK of telemetry)
        self._waiting: list[tuple[int, float]] = []  # (seq, next try) for alarms
        self._due: list[float] = []  # heap of next-try times scheduled by this process
        self._receipts: list[tuple[str, list[str]]] = []  # (receiver, ids)
        self._ready: deque[Row] = deque()  # fetched ahead, in delivery order, not yet sent
        self._acks_lock = threading.Lock()
        self._acks_in: list[tuple[int, bool, str, bool]] = []  # from paho's thread
        self._acks_scheduled = False
        self._settled_at = 0.0
        self._settling: asyncio.Task[None] | None = None
        self._prefetch: asyncio.Task[None] | None = None
        self._ready_gen = 0  # bumped whenever what was fetched ahead may be out of order
        self._little = False  # the last fetch found fewer rows than it asked for
        self._attempt = 0  # reconnect attempts since the last good connection
        self._refused = False  # the broker itself refused us last time (back off)
        self._connack = False  # a CONNACK came on the current connection
        self._urgent = False  # something waits for a receipt: reconnect fast
        self._make_due = False
        self._stopping = False
        self._started = False
        self._progress_at = self.mono()  # last sign of life from the broker
        self._receipt_at: dict[str, float] = {}  # receiver -> last receipt (monotonic)
        self._problems: set[str] = set()  # technical alarms raised by the link, not cleared
        self.subscribed: dict[str, bool] = {}  # topic -> SUBACK granted
        self._sub_mids: dict[int, list[str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self.client = self._make_client()

    @property
    def copies_prefix(self) -> str:
        return f"{mqtt_schema.TOPIC_ROOT}/{self.site}/to/"

    def _make_client(self) -> _Client:
        settings = self.settings
        c = _Client(CallbackAPIVersion.VERSION2, client_id=self.hub_id, protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(max(settings.window, 1) + 2)  # + hub state + spare
        c.max_queued_messages_set(0)
        c.delay_fn = self._reconnect_delay
        c.will_set(self.hub_topic, self._hub_state("offline"), qos=1, retain=True)
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
        c.after_read = self._after_read
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        return c

    def _hub_state(self, state: str, **extra: Any) -> bytes:
        # The will is registered at connect time, so its "time" says since when it stands.
        # The envelope's own fields win over a status summary that repeats them.
        fields = {k: v for k, v in extra.items() if k not in ENVELOPE_FIELDS}
        msg = mqtt_schema.hub_state(
            uuid.uuid4().hex, self.site, self.hub_id, state, iso(self.clock.now(), self.tz),
            **fields,
        )
        return json.dumps(msg, separators=(",", ":")).encode()

    def _reconnect_delay(self) -> float:
        # paho's network thread, before each reconnect attempt.
        delay = self.policy.delay(self._attempt, self._urgent, self._refused, self._rng)
        self._attempt += 1
        return delay

    def _error(self, text: str) -> None:
        if text != self.last_error:
            log.error("MQTT: %s (messages stay in the outbox)", text)
        self.last_error = text

    # -- paho callbacks (paho's network thread); a callback from a replaced client is old news
    @guarded
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if client is not self.client:
            return
        self._progress_at = self.mono()
        self._connack = True
        if rc.is_failure:
            hint = ""
            if rc.value in (0x86, 0x87, 0x8C):  # bad credentials, not authorised, bad auth
                hint = "; check mqtt.username and mqtt.password_file (or the client certificate)"
            self._error(f"broker {self.settings.host}:{self.settings.port} refused the hub:"
                        f" {rc}{hint}")
            self._refused = True
            return
        self._attempt = 0
        self._refused = False
        self.connects += 1
        if self.last_error is not None:
            log.info("MQTT: connection works again")
        self.last_error = None
        log.info("MQTT connected to %s:%d", self.settings.host, self.settings.port)
        # paho would resend its leftovers before anything new; the outbox decides the order.
        client.drop_out_messages()
        topics = list(self._receipt_topics)
        if topics:
            rc_, mid = client.subscribe([(t, 1) for t in topics])
            if rc_ == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._sub_mids[mid] = topics
        self._publish_state(client)
        self._call(self._set_connected, True)

    @guarded
    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], props: Any) -> None:
        if client is not self.client:
            return
        topics = self._sub_mids.pop(mid, None)
        if topics is None:
            return  # someone else's subscription (commands)
        for topic, rc in zip(topics, reason_codes, strict=False):
            self._call(self._subscription, topic, not rc.is_failure, str(rc))

    @guarded
    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if client is not self.client:
            return
        e = self.client.last_connect_error
        self._error(explain_connect_error(e, self.settings) if e else "cannot connect")
        # A TLS failure costs the broker a handshake: back off like a refusal.
        self._refused = isinstance(e, ssl.SSLError)
        if isinstance(e, ssl.SSLError):
            self._call(self._raise_problem, "tls_failed", self.last_error)

    @guarded
    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if client is not self.client:
            return
        if self.connected and not self._stopping:
            log.warning("MQTT disconnected: %s", rc)
        if not self._connack and not self._stopping:
            # Closed before it accepted (or refused) us: with TLS that is how a broker that
            # demands a client certificate answers a hub without one (no TLS alert reaches
            # the client under TLS 1.2). Never silent.
            s = self.settings
            if s.tls_ca is not None and s.tls_cert is None:
                text = (f"TLS: the broker at {s.host}:{s.port} closed the connection before"
                        " accepting the hub: it probably demands a client certificate; set"
                        " mqtt.tls_cert and mqtt.tls_key")
            else:
                text = (f"the broker at {s.host}:{s.port} closed the connection before"
                        f" accepting the hub ({rc})")
            self._error(text)
            self._refused = True
            if s.tls_ca is not None:
                self._call(self._raise_problem, "tls_failed", text)
        self._connack = False
        self._call(self._set_connected, False)

    @guarded
    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        if client is not self.client:
            return
        self._progress_at = self.mono()
        ack = (mid, rc.is_failure, str(rc) if rc.is_failure else "",
               rc.value == NO_MATCHING_SUBSCRIBERS)
        # PUBACKs are handed to the event loop in batches: one wake-up for all that came
        # in meanwhile, not one per message (a backlog replay is thousands per second).
        with self._acks_lock:
            self._acks_in.append(ack)
            if self._acks_scheduled or self.client.reading:
                return  # inside a read: handed over when it ends (_after_read)
            self._acks_scheduled = True
        self._call(self._drain_acks)

    @guarded
    def _after_read(self) -> None:
        with self._acks_lock:
            if self._acks_scheduled or not self._acks_in:
                return
            self._acks_scheduled = True
        self._call(self._drain_acks)

    def _drain_acks(self) -> None:
        with self._acks_lock:
            acks, self._acks_in = self._acks_in, []
            self._acks_scheduled = False
        for ack in acks:
            self._acked(*ack)

    @guarded
    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if client is not self.client:
            return
        self._progress_at = self.mono()
        receiver = self._receipt_topics.get(msg.topic)
        if receiver is None:
            return  # not ours (a subscription the broker kept from an older session)
        key = self.receipt_key if receiver == CENTRE else self._receiver_keys.get(receiver)
        if key is None and not (receiver == CENTRE and self.unsigned_receipts):
            self._call(self._refuse_receipt, msg.topic, "no receipt key", len(msg.payload))
            return
        ids, why = mqtt_schema.check_receipt(bytes(msg.payload), self.site, key)
        if ids:
            ids, why = self._own_ids(receiver, ids)
        if not ids:
            self._call(self._refuse_receipt, msg.topic, why, len(msg.payload))
            return
        self._call(self._receipt, receiver, ids)

    def _own_ids(self, receiver: str, ids: list[str]) -> tuple[list[str], str]:
        # A receiver confirms only its own copies (`<id>:<receiver>`), the centre only the
        # messages meant for it: one party's receipt never silences another's delivery.
        if receiver == CENTRE:
            own = [i for i in ids if ":" not in i or i.rpartition(":")[2] not in self.receivers]
        else:
            own = [i for i in ids if i.endswith(":" + receiver)]
        return own, ("" if own else "names no message of this receiver")

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:
                pass  # the loop closed while paho was still running

    # -- event-loop side ------------------------------------------------------------------
    def _set_connected(self, up: bool) -> None:
        self.connected = up
        self._drop_ready()
        if up:
            self.connected_at = self.mono()
            # A new connection: nothing is in flight any more (paho's leftovers were
            # dropped), and whatever waits for a receipt goes out again now.
            self._inflight.clear()
            self._unconfirmed.clear()
            self._due.clear()
            self._make_due = True
            self._progress_at = self.mono()
            if self._problems & {"tls_failed"}:
                self._clear_problem("tls_failed")
        self._wake.set()

    def _subscription(self, topic: str, granted: bool, reason: str) -> None:
        self.subscribed[topic] = granted
        cause = "receipt_subscription_refused"
        if not granted:
            # Receipts cannot arrive: alarms would be re-sent for ever and the resident
            # never hears "help is coming". Loudly.
            self._error(f"broker refused the subscription to {topic}: {reason}; receipts"
                        " cannot arrive (check the broker's ACL: docs/DELIVERY.md)")
            self._raise_problem(cause, self.last_error, topic=topic)
        elif cause in self._problems and all(self.subscribed.values()):
            self._clear_problem(cause)

    def _refuse_receipt(self, topic: str, why: str, size: int) -> None:
        n = self.refused_receipts.get(why, 0)
        self.refused_receipts[why] = n + 1
        if n < 10 or n % 1000 == 0:  # a flood must not flood the log too
            log.warning("ignored a receipt on %s (%d bytes): %s (%d so far)", topic, size,
                        why, n + 1)

    def _acked(self, mid: int, failed: bool, reason: str, unheard: bool = False) -> None:
        row = self._inflight.pop(mid, None)
        if row is None:
            return  # the retained hub state, or an ack from before a reconnect
        if failed:
            # The broker will not take it (e.g. not authorised for this topic): keep it in the
            # outbox, say so loudly, and try again only after the back-off.
            self.rejected += 1
            self._unconfirmed.pop(row.seq, None)
            self._error(f"broker rejected {row.kind} {row.msg_id} on {row.topic}: {reason}")
            self._wait(row)
        elif row.receipt and self._confirms(row.topic):
            self.published += 1
            # Nobody subscribed (e.g. the consumer has not re-subscribed after a broker
            # restart): the broker dropped it. Try again soon, without growing the back-off.
            self._wait(row, soon=unheard)
        else:
            self.published += 1
            self.delivered += 1
            self._unconfirmed.pop(row.seq, None)
            self._done.append(row.seq)
        self._wake.set()

    def _confirms(self, topic: str) -> bool:
        receiver = receiver_of(topic)
        if receiver == CENTRE:
            return True
        r = self.receivers.get(receiver)
        return r is not None and r.confirms

    def _wait(self, row: Row, soon: bool = False) -> None:
        backoff = min(RECEIPT_BACKOFF_CAP_S,
                      self.settings.receipt_timeout_s * 2 ** (0 if soon else min(row.attempts, 10)))
        due = self.mono() + backoff * random.uniform(0.9, 1.1)
        self._waiting.append((row.seq, due))
        heapq.heappush(self._due, due)

    def _receipt(self, receiver: str, ids: list[str]) -> None:
        self._drop_ready()  # a freed receipt window lets other rows go first
        self._receipts.append((receiver, ids))
        self._receipt_at[receiver] = self.mono()
        self._wake.set()

    def kick(self) -> None:
        """New rows were committed: fill the window (a new alarm may go before what was
        fetched ahead)."""
        self._drop_ready()
        self._wake.set()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = True
        self._connect(self.client)
        self._tasks = [
            asyncio.create_task(self._pump(), name="mqtt-pump"),
            asyncio.create_task(self._heartbeat(), name="mqtt-heartbeat"),
            asyncio.create_task(self._watchdog(), name="mqtt-watchdog"),
        ]

    def _connect(self, client: mqtt.Client) -> None:
        props = Properties(PacketTypes.CONNECT)
        # A persistent session: receipts published while the hub is away wait for it.
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=False,
            properties=props,
        )
        client.loop_start()

    def _next_timeout(self) -> float:
        # The timers are an optimisation: a round every RESCAN_S finds anything due anyway.
        top = SETTLE_EVERY_S if self._done else RESCAN_S
        if not self._due:
            return top
        return min(top, max(0.0, self._due[0] - self.mono()))

    async def _pump(self) -> None:
        # Whatever goes wrong in one round, the pump must keep running: a dead pump is an
        # outbox that silently stops delivering.
        while True:
            try:
                await self._pump_round()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("MQTT pump round failed; retrying")
                if is_damage(e) and self.on_store_damage is not None:
                    self.on_store_damage(str(e))  # the hub stops (hub/service.py)
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
        now = self.mono()
        if self._due and self._due[0] <= now:
            self._drop_ready()  # re-sends are due: they may go before what was fetched
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
        # Telemetry that is done is written back in batches (a replay of a backlog would
        # otherwise cost a transaction per few PUBACKs); it stays excluded meanwhile.
        urgent_settle = bool(self._receipts or self._waiting or self._make_due
                             or not self.connected)
        if (urgent_settle or len(self._done) >= SETTLE_BATCH
                or (self._done and not self._inflight)
                or (self._done and now - self._settled_at >= SETTLE_EVERY_S)):
            self._settled_at = now
            busy = self._settling is not None and not self._settling.done()
            if urgent_settle:
                if busy:
                    await asyncio.shield(self._settling)  # type: ignore[arg-type]
                await self._settle()
            elif not busy:
                # Only telemetry to delete: in the background, so the window keeps
                # moving meanwhile (those rows stay excluded until it is written).
                self._settling = asyncio.create_task(self._settle_then_wake())
        if not self.connected:
            await self._check_urgent()
            return
        # Connected: what would make a lost connection urgent is known without a query.
        self._urgent = bool(self._unconfirmed)  # alarms out, waiting for their receipt
        free = self.settings.window - len(self._inflight)
        if free <= 0:
            return
        # (receiver, priority) classes whose receipt window is full: only their re-sends go.
        counts: dict[tuple[str, int], int] = {}
        for cls in self._unconfirmed.values():
            counts[cls] = counts.get(cls, 0) + 1
        if not self._ready:
            # A window and more ahead: the next PUBACKs are answered from memory, without
            # a round trip to the database thread. Anything that could change the order (a
            # new message, a due re-send, a receipt, a reconnect) drops what was fetched.
            # A fetch-ahead still running was asked for rows after ones sent since: its
            # answer may repeat what this fetch returns, so it is dropped too.
            self._ready_gen += 1
            args = self._fetch_args(counts, now)
            rows = self._fetch_inline(free, args)
            if rows is None:
                rows = await asyncio.to_thread(self.outbox.next_batch, free + FETCH_AHEAD,
                                               *args)
                self._little = len(rows) < free + FETCH_AHEAD
            self._ready.extend(rows)
        while free > 0 and self._ready and self.connected:
            row = self._ready.popleft()
            if row.receipt and row.seq not in self._unconfirmed and self._confirms(row.topic):
                cls = (receiver_of(row.topic), row.priority)
                if counts.get(cls, 0) >= self.receipt_window:
                    # Wait for receipts. Every later row of this class is held back too,
                    # so the order within the class is kept.
                    continue
                self._unconfirmed[row.seq] = cls
                counts[cls] = counts.get(cls, 0) + 1
            info = self.client.publish(row.topic, row.payload, qos=1)
            if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self._inflight[info.mid] = row
                free -= 1
                if row.attempts:
                    self.republished += 1
            else:
                log.error("paho refused to publish %s: rc=%d", row.msg_id, info.rc)
                self._drop_ready()
                break
        if (self._ready and len(self._ready) < FETCH_AHEAD // 2 and self.connected
                and (self._prefetch is None or self._prefetch.done())):
            # Streaming a backlog: fetch the next rows while these go out, so a slow write
            # back (a WAL checkpoint holds the database) never leaves the window empty.
            self._prefetch = asyncio.create_task(self._fetch_more(counts, now))

    def _fetch_inline(self, free: int, args: tuple[Any, ...]) -> list[Row] | None:
        """The next few rows, read right here in the event loop: when the outbox held
        little at the last look (a new alarm into an idle hub) and nobody holds the
        database, this is a query of a few rows, cheaper than the hop to a worker thread and
        back (~0.3 ms of an alarm's latency). None: fetch in a thread."""
        lock = self.outbox.store.read_lock
        if not self._little or not lock.acquire(blocking=False):
            return None
        try:
            n = min(free, INLINE_ROWS)
            rows = self.outbox.next_batch(n, *args)
        finally:
            lock.release()
        self._little = len(rows) < n
        return rows

    def _fetch_args(self, counts: dict[tuple[str, int], int], now: float,
                    ahead: bool = False) -> tuple[Any, ...]:
        # Acknowledged but not yet written back: not due again either. Fetching ahead, only
        # what comes after the rows held (they and everything before them are not asked).
        exclude = {r.seq for r in self._inflight.values()}
        exclude.update(self._done)
        exclude.update(seq for seq, _ in self._waiting)
        full = {cls for cls, n in counts.items() if n >= self.receipt_window}
        hold = {p for r, p in full if r == CENTRE}
        hold_copies = {(self.copies_prefix + f"{r}/", p) for r, p in full if r != CENTRE}
        allow = {seq for seq, cls in self._unconfirmed.items() if cls in full}
        after = None
        if ahead and self._ready:
            last = self._ready[-1]
            after = (last.priority, last.seq)
        return exclude, now, hold, allow, hold_copies, self.copies_prefix, after

    async def _fetch_more(self, counts: dict[tuple[str, int], int], now: float) -> None:
        gen = self._ready_gen
        try:
            rows = await asyncio.to_thread(self.outbox.next_batch, FETCH_AHEAD,
                                           *self._fetch_args(counts, now, ahead=True))
        except Exception:
            log.exception("MQTT: fetching ahead from the outbox failed")
            return
        if gen == self._ready_gen and self._ready:
            # Never a row that is held, out or acknowledged since the fetch was asked for.
            have = {r.seq for r in self._ready} | {r.seq for r in self._inflight.values()}
            have.update(self._done)
            have.update(seq for seq, _ in self._waiting)
            self._ready.extend(r for r in rows if r.seq not in have)
            self._wake.set()

    def _drop_ready(self) -> None:
        self._ready.clear()
        self._ready_gen += 1

    async def _settle_then_wake(self) -> None:
        await self._settle()
        self._wake.set()

    async def _check_urgent(self) -> None:
        # Disconnected: does anything wait for a receipt? Then reconnect fast, and cut the
        # current (idle, long) wait short.
        try:
            st = await asyncio.to_thread(self.outbox.stats)
        except Exception:
            return
        urgent = st.awaiting_receipt > 0
        if urgent and not self._urgent:
            self._urgent = True
            self.client.hurry.set()
        self._urgent = urgent

    async def _settle(self) -> None:
        """Write back what happened since the last round, in one transaction each. If the
        store cannot take it (disk full), it is kept for the next round; meanwhile those
        rows are not published again (they stay excluded)."""
        rows: list[Row] = []
        n_ids = 0
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
            while self._receipts:
                _, ids = self._receipts[0]
                rows += await asyncio.to_thread(self.outbox.confirm, ids)  # (SQL in chunks)
                n_ids += len(ids)
                self._receipts.pop(0)
        except Exception as e:
            self._error(f"cannot write delivery state to the outbox: {e}; will retry")
            await asyncio.sleep(0.5)  # a full disk does not clear in a millisecond
            self._wake.set()
        self.receipts += n_ids
        for row in rows:
            self._unconfirmed.pop(row.seq, None)
            self.delivered += 1
            log.info("receipt: %s %s confirmed by %s", row.kind, row.msg_id,
                     receiver_of(row.topic))
            payload: dict[str, Any] = json.loads(row.payload)
            for cb in list(self.on_delivered):
                try:
                    cb(row.msg_id, payload)
                except Exception:
                    log.exception("on_delivered listener failed for %s", row.msg_id)

    # -- technical alarms raised by the link itself ----------------------------------------
    def _raise_problem(self, cause: str, detail: str | None, **fields: Any) -> None:
        if cause in self._problems:
            return
        self._problems.add(cause)
        self._technical("raised", cause, detail=detail or "", **fields)

    def _clear_problem(self, cause: str, **fields: Any) -> None:
        if cause not in self._problems:
            return
        self._problems.discard(cause)
        self._technical("cleared", cause, **fields)

    def _technical(self, state: str, cause: str, **fields: Any) -> None:
        # `link_down` (SCAIP 0032 communication-link monitor): the way to the centre, or to a
        # receiver, cannot be relied on; `cause` says why. Stored like any message.
        payload = mqtt_schema.message(
            "technical_alarm", new_id(), self.site, None, "link_down",
            mqtt_schema.PRIORITY_TECHNICAL, iso(self.clock.now(), self.tz), state=state,
            cause=cause, hub=self.hub_id, **fields)
        out = Outgoing("technical_alarm", None, mqtt_schema.PRIORITY_TECHNICAL, payload)
        topic = mqtt_schema.topic(self.site, "technical_alarm")
        log.error("technical alarm link_down %s: %s %s", state, cause, fields)

        async def store() -> None:
            try:
                await asyncio.to_thread(self.outbox.append_many, [(topic, out)],
                                        self.clock.now())
            except Exception:
                log.exception("cannot store technical alarm %s", cause)
            self.kick()

        if self._loop is not None:
            task = self._loop.create_task(store())
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)

    # -- the watchdog: a dead network thread or a connection without progress ------------
    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_S)
            try:
                why = self._stuck()
                if why:
                    await self._rebuild(why)
                self._check_receivers()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("MQTT watchdog round failed")

    def _stuck(self) -> str:
        if self._stopping or not self._started:
            return ""
        if self.client._thread is None:  # paho clears it when its thread ends
            return "paho's network thread has died"
        stall = max(2.0 * self.settings.keepalive, 10.0)
        if (self.connected and self._inflight
                and self.mono() - self._progress_at > stall):
            return f"no answer from the broker for {stall:.0f} s with messages in flight"
        return ""

    async def _rebuild(self, why: str) -> None:
        self.rebuilds += 1
        log.error("MQTT: %s; rebuilding the client", why)
        old = self.client
        new = self._make_client()
        # Listeners chained on (hub/delivery/commands.py) come along.
        if old.on_connect is not None and old.on_connect != self._on_connect:
            new.on_connect = old.on_connect
        if old.on_subscribe is not None and old.on_subscribe != self._on_subscribe:
            new.on_subscribe = old.on_subscribe
        for sub, cb in old.message_filters:
            new.message_callback_add(sub, cb)
        self.client = new
        self._set_connected(False)
        self._inflight.clear()
        self._unconfirmed.clear()

        def close_old() -> None:
            old.hurry.set()
            try:
                old.disconnect()
            except Exception:
                pass
            try:
                old.loop_stop()
            except Exception:
                pass

        await asyncio.to_thread(close_old)
        self._connect(new)

    def _check_receivers(self) -> None:
        # A receiver that confirms, with copies waiting and no receipt for a long time.
        limit = max(RECEIVER_SILENT_MIN_S,
                    RECEIVER_SILENT_FACTOR * self.settings.receipt_timeout_s)
        now = self.mono()
        if not self.connected or self.connected_at is None:
            return  # a broker outage is not a receiver that fails to confirm
        waiting = {cls[0] for cls in self._unconfirmed.values()}
        confirming = [CENTRE] if self.receipt_topic is not None else []
        confirming += [name for name, r in self.receivers.items() if r.confirms]
        for name in confirming:
            # The centre too: a broker that grants the receipt subscription and then filters
            # every receipt (Mosquitto's acl_file does) shows only as receipts never coming.
            cause = f"receiver_not_confirming:{name}"
            # Counted from the later of its last receipt and the start of this connection.
            receipt = self._receipt_at.get(name)
            since = self.connected_at if receipt is None else max(receipt, self.connected_at)
            if name in waiting and now - since > limit:
                self._raise_problem(cause, f"no receipt from {name} for {now - since:.0f} s",
                                    receiver=name)
            elif cause in self._problems and receipt is not None and now - receipt <= limit:
                self._clear_problem(cause, receiver=name)

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
                try:
                    self._publish_state(self.client)
                except Exception:
                    log.exception("hub heartbeat failed")

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
            "receipts_authenticated": self.receipt_key is not None,
            "refused_receipts": dict(self.refused_receipts),
            "subscribed": dict(self.subscribed),
            "rebuilds": self.rebuilds,
            "problems": sorted(self._problems),
            "last_error": self.last_error,
        }

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait([*self._tasks, self._prefetch])
        try:
            if self._settling is not None:
                await self._settling
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
        self.client.hurry.set()
        self.client.disconnect()
        self.client.loop_stop()
