"""A mock BlueZ on a private system bus, for driving the real bleak BlueZ backend in tests.

`dbus-daemon` runs on a private socket with an allow-everything policy (dbusmock's PrivateDBus),
python-dbusmock serves BlueZ on it from tests/hub/radio/bluez_template.py, and
DBUS_SYSTEM_BUS_ADDRESS points at it while the mock runs (bleak reads it when it connects). The test talks to the mock
through dbus-python; bleak and the hub never know the difference. No hardware, no root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

TEMPLATE = str(Path(__file__).with_name("bluez_template.py"))
ENV = "DBUS_SYSTEM_BUS_ADDRESS"
AIR = "org.tryggheim.TestAir"
MOCK = "org.bluez.Mock"


def _available() -> bool:
    if shutil.which("dbus-daemon") is None:
        return False
    try:
        import dbus  # noqa: F401
        import dbusmock  # noqa: F401
    except ImportError:
        return False
    return True


requires_dbus = pytest.mark.skipif(
    not _available(), reason="dbus-daemon and python-dbusmock are needed (make setup)"
)


class BluezMock:
    def __init__(self, workdir: Path, monitor_api: bool = True) -> None:
        self.workdir = workdir
        self.monitor_api = monitor_api
        self._bus: Any = None
        self._mock: Any = None
        self._saved_env: str | None = None
        self._log: Any = None

    def start(self) -> BluezMock:
        from dbusmock.testcase import BusType, PrivateDBus

        self._saved_env = os.environ.get(ENV)
        self._bus = PrivateDBus(BusType.SYSTEM)
        self._bus.start()  # also sets DBUS_SYSTEM_BUS_ADDRESS for this process
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The mock logs every call; a file cannot fill up and block it the way a pipe would.
        self._log = open(self.workdir / "bluez-mock.log", "ab")  # noqa: SIM115
        self._spawn()
        return self

    def _spawn(self) -> None:
        import dbus
        from dbusmock.testcase import BusType, SpawnedMock

        self._mock = SpawnedMock.spawn_with_template(
            TEMPLATE,
            {"enable_monitor_api": dbus.Boolean(self.monitor_api)},
            bustype=BusType.SYSTEM,
            stdout=self._log,
            stderr=self._log,
        )

    def restart_bluetoothd(self) -> None:
        """bluetoothd dies and comes back: a new owner of org.bluez that knows no discovery
        sessions, with no adapter until add_adapter() (the controller is probed again)."""
        self._mock.terminate()
        self._spawn()

    @property
    def address(self) -> str:
        return str(self._bus.address)

    @property
    def obj(self) -> Any:
        return self._mock.obj

    def close(self) -> None:
        if self._mock is not None:
            self._mock.terminate()
            self._mock = None
        if self._bus is not None:
            self._bus.stop()
            self._bus = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._saved_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._saved_env

    # -- the BlueZ side ---------------------------------------------------------------------
    def add_adapter(self, name: str = "hci0") -> str:
        return str(self.obj.AddAdapter(name, "tryggheim-hub", dbus_interface=MOCK))

    def remove_adapter(self, name: str = "hci0") -> None:
        """Like a USB dongle pulled out: the adapter and its devices vanish from BlueZ."""
        self.obj.RemoveAdapterWithDevices(name, dbus_interface=MOCK)

    def advertise(
        self,
        mac: str,
        service_data: bytes,
        rssi: int = -60,
        uuid: str = "0000fcd2-0000-1000-8000-00805f9b34fb",
        connectable: bool = False,
        adapter: str = "hci0",
    ) -> bool:
        """Put one advert on the air; True if the adapter heard it."""
        import dbus

        return bool(
            self.obj.Advertise(
                adapter, mac, uuid, dbus.ByteArray(service_data), rssi, connectable,
                dbus_interface=AIR,
            )
        )

    def scanning(self, adapter: str = "hci0") -> bool:
        return bool(self.obj.Scanning(adapter, dbus_interface=AIR))

    def stall(self, level: int, adapter: str = "hci0") -> None:
        """1: the scan hears nothing until restarted; 2: until the adapter is power-cycled."""
        self.obj.Stall(adapter, level, dbus_interface=AIR)

    def inject(self, method: str, *errors: str, adapter: str = "hci0") -> None:
        """The next calls of an adapter method fail, one per error name given."""
        self.obj.InjectFault(adapter, method, list(errors), dbus_interface=AIR)

    def add_gatt(self, mac: str, service_uuid: str, char_uuid: str, adapter: str = "hci0") -> None:
        self.obj.AddGatt(adapter, mac, service_uuid, char_uuid, dbus_interface=AIR)

    def writes(self) -> list[tuple[str, bytes]]:
        return [(str(a), bytes(v)) for a, v in self.obj.Writes(dbus_interface=AIR)]

    def calls(self, path: str, method: str) -> int:
        """How often a method was called on an object (dbusmock's call log)."""
        import dbus

        bus = dbus.bus.BusConnection(self.address)
        obj = bus.get_object("org.bluez", path)
        return len(obj.GetMethodCalls(method, dbus_interface="org.freedesktop.DBus.Mock"))
