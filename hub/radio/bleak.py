"""The real radio: BlueZ through bleak, supervised by the radio watchdog.

Passive scanning (no scan requests, so the devices' batteries and the air are spared) needs an
advertisement monitor: BlueZ >= 5.56 with experimental features and kernel >= 5.10. In "auto"
mode the scanner tries passive with an or-pattern on the BTHome service-data UUID and falls back
to active scanning when BlueZ refuses; `mode` tells which one runs (docs/INSTALL.md).

bleak gives no sign when BlueZ stalls, when bluetoothd restarts or when the adapter is pulled
(shared/notes/reliability.md 1.2), so a second D-Bus connection watches the adapter and
bluetoothd, and the watchdog (hub/radio/watchdog.py) restarts the scan or power-cycles the
adapter through BlueZ when errors or silence say it is needed.

Acknowledgements to a resident's device go out over GATT (`transmit`): the device advertises
connectable after an alarm and the hub writes the ack frame to its ack characteristic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern, OrPatternLike
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakDBusError, BleakError
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from hub.clock import Clock
from hub.radio.scanner import Advert, AdvertCallback
from hub.radio.watchdog import Action, Decision, Watchdog, WatchdogSettings
from protocols import ack, bthome

log = logging.getLogger(__name__)

BLUEZ = "org.bluez"
ADAPTER_IFACE = "org.bluez.Adapter1"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
SCAN_MODES = ("auto", "passive", "active")
# The GATT characteristic the hub writes acknowledgements to (the device side: firmware/).
ACK_SERVICE_UUID = ack.SERVICE_UUID
ACK_CHAR_UUID = ack.CHAR_UUID
_BTHOME_PATTERN: list[OrPatternLike] = [OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, bthome.UUID_BYTES)]
_START_TIMEOUT_S = 15.0  # BlueZ calls can hang on a wedged controller (habluetooth uses 15 s)
_SMOOTHING = 0.25  # weight of the newest RSSI reading in the per-device average


class TransmitError(Exception):
    """An acknowledgement could not be written to the device (this attempt)."""


@dataclass
class Signal:
    """What the hub hears of one device: for `tryggheim devices` and placement checks."""

    rssi: int
    average: float
    adverts: int
    last_seen: float


@dataclass(frozen=True)
class BleakSettings:
    adapter: str = "hci0"
    scan_mode: str = "auto"
    watchdog: WatchdogSettings = WatchdogSettings()
    connect_timeout_s: float = 20.0  # one GATT connect + write attempt


def _error_kind(e: BaseException) -> str:
    if isinstance(e, BleakDBusError):
        return e.dbus_error.rsplit(".", 1)[-1]  # InProgress, NotReady, Failed, ...
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    text = str(e)
    if "not found" in text or "No Bluetooth adapters" in text:
        return "adapter_gone"
    if "powered" in text.lower():
        return "powered_off"
    return type(e).__name__


def _passive_unsupported(e: BleakError) -> bool:
    return "passive scanning" in str(e) and "requires" in str(e)


class BleakRadio:
    """Scanner on a BlueZ adapter. `provisioned`: MACs whose adverts go further (None: all
    BTHome adverts, for the installer's scan); everything else is counted and dropped."""

    def __init__(
        self,
        clock: Clock,
        settings: BleakSettings = BleakSettings(),
        provisioned: Iterable[str] | None = None,
    ) -> None:
        if settings.scan_mode not in SCAN_MODES:
            raise ValueError(f"scan_mode must be one of {', '.join(SCAN_MODES)}")
        self.clock = clock
        self.settings = settings
        self.adapter_path = f"/org/bluez/{settings.adapter}"
        self._provisioned: frozenset[str] | None = (
            None if provisioned is None else frozenset(m.upper() for m in provisioned)
        )
        self.mode: str | None = None  # "passive" or "active" once a scan runs
        self.passive_unsupported = False
        self.stats: Counter[str] = Counter()
        self.signal: dict[str, Signal] = {}
        # Called with "deaf" / "restored" when the hub stops / starts hearing again.
        self.on_health: Callable[[str, dict[str, Any]], None] | None = None
        self.watchdog = Watchdog(settings.watchdog, clock.now(), bool(self.provisioned))
        self._on_advert: AdvertCallback | None = None
        self._scanner: BleakScanner | None = None
        self._ble_devices: dict[str, BLEDevice] = {}
        self._control: MessageBus | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one scan start/stop/power cycle at a time
        self._stopping = False
        self._heard_mark = float("-inf")
        self._heard_every = min(0.5, settings.watchdog.silence_s / 4)
        self.foreign = 0  # adverts from devices that are not ours (a plain int: hot path)

    # -- Scanner interface --------------------------------------------------------------------
    async def start(self, on_advert: AdvertCallback) -> None:
        self._on_advert = on_advert
        self._stopping = False
        self.watchdog = Watchdog(
            self.settings.watchdog, self.clock.now(), bool(self.provisioned)
        )
        try:
            await self._open_control()
        except Exception as e:  # no system bus yet: the watchdog keeps trying
            log.error("cannot reach BlueZ on the system D-Bus: %s", e)
            self.watchdog.error(self.clock.now(), "dbus")
        async with self._lock:
            await self._start_scan()
        self._task = asyncio.create_task(self._supervise(), name="radio-watchdog")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._lock:
            await self._stop_scan()
        if self._control is not None:
            self._control.disconnect()
            self._control = None

    async def transmit(self, mac: str, service_data: bytes) -> None:
        """Write an acknowledgement frame to the device's ack characteristic over GATT."""
        from bleak_retry_connector import establish_connection

        device = self._ble_devices.get(mac.upper())
        if device is None:
            raise TransmitError(f"{mac}: not heard since the hub started")
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                client = await establish_connection(
                    BleakClient, device, mac, max_attempts=1, use_services_cache=False
                )
                try:
                    await client.write_gatt_char(ACK_CHAR_UUID, service_data, response=True)
                finally:
                    await client.disconnect()
        except (TimeoutError, BleakError, EOFError, BrokenPipeError) as e:
            self.stats["ack_connect_failed"] += 1
            raise TransmitError(f"{mac}: {e or type(e).__name__}") from e
        self.stats["ack_written"] += 1

    # -- what `tryggheim status` / `devices` show ---------------------------------------------
    @property
    def provisioned(self) -> frozenset[str] | None:
        return self._provisioned

    @provisioned.setter
    def provisioned(self, macs: Iterable[str] | None) -> None:
        """Replaced on a configuration reload (hub/admin/server.py)."""
        self._provisioned = None if macs is None else frozenset(m.upper() for m in macs)
        self.watchdog.expect_adverts = bool(self._provisioned)

    def set_provisioned(self, macs: Iterable[str]) -> None:
        self.provisioned = macs

    def status(self) -> dict[str, Any]:
        return {
            "kind": "bleak",
            "adapter": self.settings.adapter,
            "mode": self.mode,
            "passive_unsupported": self.passive_unsupported,
            "scanning": self._scanner is not None,
            "deaf": self.watchdog.deaf,
            "last_heard": self.watchdog.last_heard,
            "counts": {**self.stats, **self.watchdog.counts, "foreign": self.foreign},
            "signal": {
                mac: {"rssi": s.rssi, "average": round(s.average, 1), "adverts": s.adverts,
                      "last_seen": s.last_seen}
                for mac, s in self.signal.items()
            },
        }

    # -- adverts ------------------------------------------------------------------------------
    def _detected(self, device: BLEDevice, adv: AdvertisementData) -> None:
        now = self.clock.now()
        # Any advert at all proves the radio is alive; the watchdog needs no finer resolution.
        if now - self._heard_mark >= self._heard_every or self.watchdog.attempts:
            self._heard_mark = now
            self.watchdog.heard(now)
        # The cheap first filter: a set lookup before anything else is looked at. A busy block
        # of flats is full of other people's BLE chatter. (BlueZ writes addresses upper case.)
        mac = device.address
        if self._provisioned is not None and mac not in self._provisioned:
            self.foreign += 1
            return
        data = adv.service_data.get(bthome.SERVICE_UUID)
        if data is None:
            self.stats["not_bthome"] += 1
            return
        self.stats["accepted"] += 1
        self._ble_devices[mac] = device
        sig = self.signal.get(mac)
        if sig is None:
            self.signal[mac] = Signal(adv.rssi, float(adv.rssi), 1, now)
        else:
            sig.rssi = adv.rssi
            sig.average += _SMOOTHING * (adv.rssi - sig.average)
            sig.adverts += 1
            sig.last_seen = now
        if self._on_advert is not None:
            self._on_advert(Advert(mac, adv.rssi, bytes(data), now))

    # -- scanning -----------------------------------------------------------------------------
    def _new_scanner(self, mode: str) -> BleakScanner:
        if mode == "passive":
            args = BlueZScannerArgs(adapter=self.settings.adapter, or_patterns=_BTHOME_PATTERN)
        else:
            # DuplicateData off: BlueZ reports every advert, not only the first per device.
            args = BlueZScannerArgs(adapter=self.settings.adapter,
                                    filters={"DuplicateData": False})
        return BleakScanner(self._detected, scanning_mode=mode, bluez=args)  # type: ignore[arg-type]

    async def _start_scan(self) -> bool:
        """Start a fresh scanner. Returns False (and tells the watchdog) when BlueZ refuses."""
        modes = [self.settings.scan_mode]
        if modes == ["auto"]:
            modes = ["active"] if self.passive_unsupported else ["passive", "active"]
        for mode in modes:
            scanner = self._new_scanner(mode)
            try:
                await asyncio.wait_for(scanner.start(), _START_TIMEOUT_S)
            except BleakError as e:
                if mode == "passive" and len(modes) > 1 and _passive_unsupported(e):
                    log.warning("passive scanning unavailable (%s); scanning actively", e)
                    self.passive_unsupported = True
                    continue
                return self._scan_failed(e)
            except Exception as e:  # D-Bus down, access denied, ...: retried, never fatal
                return self._scan_failed(e)
            self._scanner = scanner
            if self.mode != mode:
                log.info("scanning %s on %s", mode, self.settings.adapter)
            self.mode = mode
            self.watchdog.scanning(self.clock.now())
            return True
        return False

    def _scan_failed(self, e: BaseException) -> bool:
        kind = _error_kind(e)
        log.warning("scan start on %s failed: %s", self.settings.adapter, e)
        self.stats[f"start_failed_{kind}"] += 1
        self.watchdog.error(self.clock.now(), kind)
        self._wake.set()
        return False

    async def _stop_scan(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is None:
            return
        try:
            await asyncio.wait_for(scanner.stop(), _START_TIMEOUT_S)
        except (TimeoutError, BleakError, OSError, EOFError, AssertionError) as e:
            # The adapter may be gone or BlueZ may have dropped the session already
            # ("No discovery started"): the scan is stopped either way.
            log.debug("scan stop on %s: %s", self.settings.adapter, e)

    async def _power_cycle(self) -> None:
        if self._control is None or not self._control.connected:
            await self._open_control()
        assert self._control is not None
        for on in (False, True):
            reply = await asyncio.wait_for(
                self._control.call(
                    Message(
                        destination=BLUEZ, path=self.adapter_path, interface=PROPERTIES,
                        member="Set", signature="ssv",
                        body=[ADAPTER_IFACE, "Powered", Variant("b", on)],
                    )
                ),
                _START_TIMEOUT_S,
            )
            if reply.message_type == MessageType.ERROR:
                raise BleakDBusError(reply.error_name or "org.bluez.Error.Failed", reply.body)

    async def _recover(self, d: Decision) -> None:
        log.log(logging.INFO if d.routine else logging.WARNING,
                "radio recovery on %s: %s (%s, attempt %d)", self.settings.adapter,
                d.action.value, d.reason, self.watchdog.attempts)
        async with self._lock:
            if self._control is None or not self._control.connected:
                try:
                    await self._open_control()
                except Exception as e:
                    log.warning("cannot watch BlueZ on the system D-Bus: %s", e)
            await self._stop_scan()
            if d.action is Action.POWER_CYCLE:
                try:
                    await self._power_cycle()
                except Exception as e:
                    log.warning("power cycle of %s failed: %s", self.settings.adapter, e)
                    self.watchdog.error(self.clock.now(), _error_kind(e))
                    return
            await self._start_scan()

    async def _supervise(self) -> None:
        tick = max(0.05, min(5.0, self.settings.watchdog.silence_s / 4,
                             self.settings.watchdog.backoff_s))
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)
            self._wake.clear()
            try:
                d = self.watchdog.poll(self.clock.now())
                if d.raise_deaf:
                    log.error("radio deaf: nothing heard on %s for %.0f s", self.settings.adapter,
                              self.clock.now() - self.watchdog.last_heard)
                    self._health("deaf", d)
                if d.clear_deaf:
                    log.warning("radio hears again on %s", self.settings.adapter)
                    self._health("restored", d)
                if d.action is not Action.NONE:
                    await self._recover(d)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watchdog itself must never die
                log.exception("radio watchdog")

    def _health(self, state: str, d: Decision) -> None:
        if self.on_health is not None:
            self.on_health(state, {"adapter": self.settings.adapter, "reason": d.reason,
                                   "last_heard": self.watchdog.last_heard})

    # -- the adapter and bluetoothd, watched on a connection of our own -----------------------
    async def _open_control(self) -> None:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        rules = [
            f"type='signal',sender='{BLUEZ}',interface='{OBJECT_MANAGER}'",
            f"type='signal',sender='{BLUEZ}',interface='{PROPERTIES}',path='{self.adapter_path}'",
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
            f"arg0='{BLUEZ}'",
        ]
        for rule in rules:
            await bus.call(
                Message(
                    destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                    body=[rule],
                )
            )
        bus.add_message_handler(self._on_signal)
        self._control = bus

    def _on_signal(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        now = self.clock.now()
        if msg.member == "InterfacesRemoved" and msg.body[0] == self.adapter_path:
            if ADAPTER_IFACE in msg.body[1]:
                log.error("adapter %s removed", self.settings.adapter)
                self._broken(now, "adapter_gone")
        elif msg.member == "InterfacesAdded" and msg.body[0] == self.adapter_path:
            if ADAPTER_IFACE in msg.body[1]:
                log.warning("adapter %s is back", self.settings.adapter)
                self.watchdog.adapter_returned(now)
                self._wake.set()
        elif msg.member == "PropertiesChanged" and msg.path == self.adapter_path:
            iface, changed = msg.body[0], msg.body[1]
            if iface != ADAPTER_IFACE or self._lock.locked():
                return  # our own stop/power cycle is in progress
            powered = changed.get("Powered")
            discovering = changed.get("Discovering")
            if powered is not None and not powered.value:
                self._broken(now, "powered_off")
            elif (discovering is not None and not discovering.value and self.mode == "active"
                  and self._scanner is not None):
                self._broken(now, "discovery_stopped")
        elif msg.member == "NameOwnerChanged":
            log.error("bluetoothd restarted: its discovery sessions are gone")
            self._broken(now, "bluetoothd_restarted")

    def _broken(self, now: float, kind: str) -> None:
        self.stats[kind] += 1
        self.watchdog.error(now, kind)
        self._wake.set()
