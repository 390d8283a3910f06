"""Acknowledgements to the resident's device: "received", then "help is coming".

A resident who presses the alarm button (or whose wearable detects a fall) needs to know the
call got through. Once the hub has stored the alarm durably it tells the device "received";
when the response centre's receipt for that alarm comes back, "delivered" (protocols/ack.py:
frames encrypted and authenticated with the device's key, carrying the alarm advert's counter).

Sending runs beside the alarm path, never in it: an alarm is stored and published whatever
happens here. Each device has at most one sender task; it always sends the newest state the
device is owed (a "delivered" that overtakes a pending "received" replaces it, a newer alarm
replaces an older one), retries with back-off, and a shared limit on concurrent radio
connections keeps one unreachable pendant from starving the others' acknowledgements.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hub.config import Device
from protocols import ack, bthome

log = logging.getLogger(__name__)

ACK_TYPES = frozenset({"alarm_button", "fall"})  # alarms the resident raised or suffered
_MAX_TRACKED = 1000  # alarms awaiting their receipt; the oldest are forgotten beyond this

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


@dataclass(frozen=True, order=True)
class _Owed:
    counter: int
    state: int


class AckSender:
    def __init__(self, transmit: Transmit, settings: AckSettings = AckSettings()) -> None:
        self.transmit = transmit
        self.s = settings
        self.stats: Counter[str] = Counter()
        self._alarms: dict[str, tuple[Device, int]] = {}  # msg_id -> (device, advert counter)
        self._owed: dict[str, tuple[Device, _Owed]] = {}  # device id -> newest state owed
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._aes: dict[str, Any] = {}

    # -- hooks the hub calls ------------------------------------------------------------------
    def track(self, out: _Outgoing, report: _Report) -> None:
        """An alarm was raised from this report (before it is stored)."""
        if out.kind != "alarm" or out.payload.get("type") not in ACK_TYPES:
            return
        if report.counter is None or report.device.key is None:
            self.stats["no_key"] += 1  # nothing to authenticate an ack with
            return
        self._alarms[out.msg_id] = (report.device, report.counter)
        while len(self._alarms) > _MAX_TRACKED:
            del self._alarms[next(iter(self._alarms))]

    def stored(self, out: _Outgoing) -> None:
        """Hub.on_stored: the alarm is durable on the hub."""
        alarm = self._alarms.get(out.msg_id)
        if alarm is not None:
            self._owe(alarm[0], _Owed(alarm[1], ack.RECEIVED))

    def delivered(self, msg_id: str, payload: dict[str, Any] | None = None) -> None:
        """Hub.on_delivered: the response centre's receipt for this alarm came back."""
        alarm = self._alarms.pop(msg_id, None)
        if alarm is not None:
            self._owe(alarm[0], _Owed(alarm[1], ack.DELIVERED))

    async def close(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()
        for task in list(self._workers.values()):
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._workers.clear()

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
            if error is None:
                failures = 0
                self.stats[f"sent_{name}"] += 1
                log.info("ack %s sent to %s (counter %d)", name, dev_id, owed.counter)
                if self._owed.get(dev_id) == entry:
                    del self._owed[dev_id]
                continue
            failures += 1
            self.stats["failed_attempts"] += 1
            if failures >= self.s.attempts:
                self.stats["gave_up"] += 1
                log.warning("ack %s to %s not delivered after %d attempts: %s",
                            name, dev_id, failures, error)
                if self._owed.get(dev_id) == entry:
                    del self._owed[dev_id]
                return
            delay = min(self.s.retry_max_s, self.s.retry_s * 2 ** (failures - 1))
            log.info("ack %s to %s failed (%s); retry in %.1f s", name, dev_id, error, delay)
            await asyncio.sleep(delay)


_NAMES = {ack.RECEIVED: "received", ack.DELIVERED: "delivered"}
