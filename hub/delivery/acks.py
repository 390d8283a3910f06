"""Acknowledgements to the resident's device: "received", then "help is coming".

A resident who presses the alarm button (or whose wearable detects a fall) needs to know the
call got through. Once the hub has stored the alarm durably it tells the device "received";
when the response centre's receipt for that alarm comes back, "delivered" (protocols/ack.py:
frames encrypted and authenticated with the device's key, carrying the alarm advert's counter).

Sending runs beside the alarm path, never in it: an alarm is stored and published whatever
happens here. Each device has at most one sender task; it always sends the newest state the
device is owed (a "delivered" that overtakes a pending "received" replaces it, a newer alarm
replaces an older one), retries with back-off, and a shared limit on concurrent radio
connections keeps one unreachable pendant from starving the others' acknowledgements. A device
that did not get its "received" keeps repeating the alarm advert; hearing such a repeat after
the hub sent or gave up sends the ack again. Alarms awaiting their receipt are also kept on disk
(AckStore), so a hub restart in between does not cost the resident "help is coming".
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hub import store
from hub.config.settings import Device
from hub.store import Database, open_db
from hub.tasks import cancel_and_wait
from protocols import ack, bthome

log = logging.getLogger(__name__)

ACK_TYPES = frozenset({"alarm_button", "fall"})  # alarms the resident raised or suffered
_MAX_TRACKED = 1000  # alarms awaiting their receipt; the oldest are forgotten beyond this
_KEEP_S = 7 * 24 * 3600  # as long as the MQTT session keeps an alarm for its receipt

Transmit = Callable[[str, bytes], Awaitable[None]]


class _Outgoing(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def msg_id(self) -> str: ...


class _Report(Protocol):
    @property
    def device(self) -> Device: ...
    @property
    def counter(self) -> int | None: ...


@dataclass(frozen=True)
class AckSettings:
    max_connections: int = 2  # radio connections at once, over all devices
    attempts: int = 6  # per state; then the device shows "not received" and keeps repeating
    retry_s: float = 1.0  # first wait after a failed attempt; doubles
    retry_max_s: float = 20.0
    # The device repeats its alarm advert until "received" arrives: a repeat after the hub
    # sent (or gave up on) the ack means the device did not get it; send again, this often.
    resend_after_s: float = 5.0


@dataclass(frozen=True, order=True)
class _Owed:
    counter: int
    state: int


class AckStore:
    """Alarms the device was told "received" for, until "help is coming" has reached it:
    (msg id, device id, advert counter, advert bytes, delivered). A table in the hub's one
    database (hub/store.py): the row is written in the alarm's own commit, and marked
    delivered in the transaction that removes the confirmed message from the outbox
    (hub/delivery/outbox.py `confirm`), so neither obligation can be lost between two writes."""

    def __init__(self, path: str | Path | Database) -> None:
        self._owns = not isinstance(path, Database)
        self.db = open_db(path)

    def put(self, msg_id: str, device: str, counter: int, advert: bytes | None,
            now: float) -> None:
        with self.db.transaction() as db:
            store.write_acks(db, [(msg_id, device, counter, advert)], now)

    def done(self, device: str, counter: int) -> None:
        """"Help is coming" reached the device for this alarm: the device follows only its
        newest alarm, so older ones of the same device are done too."""
        with self.db.transaction(durable=False) as db:
            db.execute("DELETE FROM awaiting_receipt WHERE device = ? AND counter <= ?",
                       (device, counter))

    def load(self, now: float) -> list[tuple[str, str, int, bytes | None, bool]]:
        with self.db.transaction(durable=False) as db:
            db.execute("DELETE FROM awaiting_receipt WHERE created < ?", (now - _KEEP_S,))
            rows = db.execute(
                "SELECT msg_id, device, counter, advert, delivered FROM awaiting_receipt"
                " ORDER BY created"
            ).fetchall()
        return [(str(m), str(d), int(c), bytes(a) if a is not None else None, bool(v))
                for m, d, c, a, v in rows]

    def close(self) -> None:
        if self._owns:
            self.db.close()


class AckSender:
    def __init__(
        self,
        transmit: Transmit,
        settings: AckSettings = AckSettings(),
        store: AckStore | None = None,
        devices: Mapping[str, Device] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.transmit = transmit
        self.s = settings
        self.store = store
        self.now = now
        self.stats: Counter[str] = Counter()
        self._io: set[asyncio.Task[None]] = set()
        self._alarms: dict[str, tuple[Device, int]] = {}  # msg_id -> (device, advert counter)
        self._adverts: dict[str, bytes | None] = {}  # msg_id -> advert, until stored
        self._owed: dict[str, tuple[Device, _Owed]] = {}  # device id -> newest state owed
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._aes: dict[str, Any] = {}
        # MAC -> (service data, device id, counter) of the device's newest acknowledged alarm
        self._alarm_frame: dict[str, tuple[bytes, str, int]] = {}
        # device id -> the last state sent or given up on, and when (the event loop's clock)
        self._settled: dict[str, tuple[Device, _Owed, float]] = {}
        self._resume: list[tuple[Device, _Owed]] = []
        if store is not None:
            self._restore(store, devices or {})

    def _restore(self, store: AckStore, devices: Mapping[str, Device]) -> None:
        """Alarms stored before a restart: "received" is true for them (a repeat of the advert
        gets it again) and "delivered" goes out when their receipt arrives, or at `start()`
        if it arrived before the restart and the device may not have heard it."""
        for msg_id, dev_id, counter, advert, delivered in store.load(self.now()):
            device = devices.get(dev_id)
            if device is None or device.key is None:
                continue  # removed from the configuration meanwhile
            if advert is not None:
                self._alarm_frame[device.mac] = (advert, dev_id, counter)
            self._settled[dev_id] = (device, _Owed(counter, ack.RECEIVED), float("-inf"))
            if delivered:
                self._resume.append((device, _Owed(counter, ack.DELIVERED)))
            else:
                self._alarms[msg_id] = (device, counter)
            self.stats["restored"] += 1

    def start(self) -> None:
        """In the running event loop: send what was owed when the hub last stopped."""
        resume, self._resume = self._resume, []
        for device, owed in resume:
            self._owe(device, owed)

    # -- hooks the hub calls ------------------------------------------------------------------
    def track(self, out: _Outgoing, report: _Report, advert: bytes | None = None) -> None:
        """An alarm was raised from this report (before it is stored); `advert`: its service
        data, to recognise the device repeating it."""
        if out.kind != "alarm" or out.payload.get("type") not in ACK_TYPES:
            return
        if report.device.model:  # an off-the-shelf button cannot receive acknowledgements
            self.stats["no_feedback"] += 1
            return
        if report.counter is None or report.device.key is None:
            self.stats["no_key"] += 1  # nothing to authenticate an ack with
            return
        self._alarms[out.msg_id] = (report.device, report.counter)
        if advert is not None:
            self._alarm_frame[report.device.mac] = (advert, report.device.id, report.counter)
        self._adverts[out.msg_id] = advert
        while len(self._alarms) > _MAX_TRACKED:
            oldest = next(iter(self._alarms))
            del self._alarms[oldest]
            self._adverts.pop(oldest, None)

    def rows(self, outs: list[Any]) -> list[store.AckRow]:
        """The acknowledgement state these messages create, to commit with them (the hub
        then calls `stored(out, persisted=True)`)."""
        rows: list[store.AckRow] = []
        for out in outs:
            alarm = self._alarms.get(out.msg_id)
            if alarm is not None and out.msg_id in self._adverts:
                rows.append((out.msg_id, alarm[0].id, alarm[1], self._adverts[out.msg_id]))
        return rows

    def stored(self, out: _Outgoing, persisted: bool = False) -> None:
        """Hub.on_stored: the alarm is durable on the hub. `persisted`: its row in the
        AckStore was committed with it (else it is written here, off the event loop)."""
        alarm = self._alarms.get(out.msg_id)
        if alarm is not None:
            self._owe(alarm[0], _Owed(alarm[1], ack.RECEIVED))
            advert = self._adverts.pop(out.msg_id, None)
            if self.store is not None and not persisted:
                self._write(self.store.put, out.msg_id, alarm[0].id, alarm[1], advert,
                            self.now())

    def heard(self, mac: str, service_data: bytes) -> None:
        """Every advert from the radio, before decoding (a dict lookup for all but repeats
        of an acknowledged alarm)."""
        frame = self._alarm_frame.get(mac)
        if frame is None or frame[0] != service_data:
            return
        dev_id = frame[1]
        settled = self._settled.get(dev_id)
        if settled is None or dev_id in self._workers or settled[1].counter != frame[2]:
            return  # not stored yet, being sent right now, or settled for an older alarm
        device, owed, at = settled
        if asyncio.get_running_loop().time() - at < self.s.resend_after_s:
            return
        self.stats["resent_on_repeat"] += 1
        del self._settled[dev_id]
        self._owe(device, owed)

    def delivered(self, msg_id: str, payload: dict[str, Any] | None = None) -> None:
        """Hub.on_delivered: the response centre's receipt for this alarm came back (the
        outbox marked "help is coming" owed in the same transaction). Its row goes once
        the device has heard it."""
        alarm = self._alarms.pop(msg_id, None)
        if alarm is not None:
            self._owe(alarm[0], _Owed(alarm[1], ack.DELIVERED))

    def _write(self, fn: Callable[..., None], *args: Any) -> None:
        # Off the event loop: an fsync must not hold up the next alarm. The in-memory state
        # serves until it lands; the disk copy only matters across a restart.
        async def write() -> None:
            try:
                await asyncio.to_thread(fn, *args)
            except (sqlite3.Error, OSError) as e:
                log.error("acknowledgement state not saved: %s", e)

        task = asyncio.create_task(write())
        self._io.add(task)
        task.add_done_callback(self._io.discard)

    async def close(self) -> None:
        """Stop sending; pending disk writes finish and the store is closed."""
        await cancel_and_wait(list(self._workers.values()))
        self._workers.clear()
        if self._io:
            await asyncio.gather(*self._io)
        if self.store is not None:
            self.store.close()

    # -- sending ------------------------------------------------------------------------------
    def frame(self, device: Device, owed: _Owed) -> bytes:
        assert device.key is not None
        aes = self._aes.get(device.id)
        if aes is None:
            aes = self._aes[device.id] = ack.host_aes(device.key)
        return bytes(ack.encode(aes, bthome.mac_bytes(device.mac), owed.counter, owed.state))

    def _owe(self, device: Device, owed: _Owed) -> None:
        current = self._owed.get(device.id)
        if current is not None and current[1] >= owed:
            return  # already owed something newer or further along
        self._owed[device.id] = (device, owed)
        if device.id not in self._workers:
            self._workers[device.id] = asyncio.create_task(
                self._send(device.id), name=f"ack-{device.id}"
            )

    async def _send(self, dev_id: str) -> None:
        try:
            await self._send_owed(dev_id)
        finally:
            # Synchronously after the last look at _owed: a state owed from now on finds no
            # worker and starts one.
            if self._workers.get(dev_id) is asyncio.current_task():
                del self._workers[dev_id]

    async def _send_owed(self, dev_id: str) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.s.max_connections)
        failures = 0
        while True:
            error: Exception | None = None
            async with self._slots:
                # Looked up only once a connection slot is free: whatever became owed while
                # waiting (a receipt, a newer alarm) is what goes out.
                entry = self._owed.get(dev_id)
                if entry is None:
                    return
                device, owed = entry
                try:
                    await self.transmit(device.mac, self.frame(device, owed))
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    error = e
            name = _NAMES[owed.state]
            settled = (device, owed, asyncio.get_running_loop().time())
            if error is None:
                failures = 0
                self.stats[f"sent_{name}"] += 1
                log.info("ack %s sent to %s (counter %d)", name, dev_id, owed.counter)
                if owed.state == ack.DELIVERED and self.store is not None:
                    self._write(self.store.done, dev_id, owed.counter)
                self._settled[dev_id] = settled
                if self._owed.get(dev_id) == entry:
                    del self._owed[dev_id]
                continue
            failures += 1
            self.stats["failed_attempts"] += 1
            if failures >= self.s.attempts:
                self.stats["gave_up"] += 1
                log.warning("ack %s to %s not delivered after %d attempts: %s",
                            name, dev_id, failures, error)
                self._settled[dev_id] = settled
                if self._owed.get(dev_id) == entry:
                    del self._owed[dev_id]
                return
            delay = min(self.s.retry_max_s, self.s.retry_s * 2 ** (failures - 1))
            log.info("ack %s to %s failed (%s); retry in %.1f s", name, dev_id, error, delay)
            await asyncio.sleep(delay)


_NAMES = {ack.RECEIVED: "received", ack.DELIVERED: "delivered"}
