"""python-dbusmock template: BlueZ 5 plus a radio medium, stalls and injected faults.

Loaded by dbusmock in its own process (tests/hub/radio/bluez_mock.py starts it). It extends
dbusmock's `bluez5` template with what the hub's tests need and the stock template lacks:

- a medium (`org.tryggheim.TestAir.Advertise`): an advert reaches BlueZ's D-Bus objects only
  while the adapter exists, is powered and scans (a discovery session or an advertisement
  monitor), and is not stalled; devices get ServiceData/ManufacturerData with the D-Bus types
  real bluetoothd uses (the stock AddDevice sends arrays where bleak expects a{sv}/a{qv});
- stalls like bluez#1126: level 1 ends when the scan is restarted, level 2 only on power-off;
- faults: the next N calls of an adapter method fail with a given org.bluez.Error;
- BlueZ behaviour the stock template skips: power-off ends discovery, StopDiscovery without a
  session fails, Connect resolves GATT services (objects appear, ServicesResolved), writes to a
  characteristic are recorded (`Writes`).
"""

# ruff: noqa: F403, F405, N802
from __future__ import annotations

import dbus
from dbusmock import OBJECT_MANAGER_IFACE, mockobject
from dbusmock.templates import bluez5
from dbusmock.templates.bluez5 import *  # the mock methods dbusmock picks up by name

AIR_IFACE = "org.tryggheim.TestAir"
GATT_SERVICE_IFACE = "org.bluez.GattService1"
GATT_CHRC_IFACE = "org.bluez.GattCharacteristic1"
MONITOR_MANAGER_IFACE = bluez5.ADVERTISEMENT_MONITOR_MANAGER_IFACE


def load(mock, parameters):
    bluez5.load(mock, parameters)
    mock.writes = []  # (device address, bytes) for every GATT write


def _manager():
    return mockobject.objects["/"]


def _error(name, text=""):
    return dbus.exceptions.DBusException(text or name.rsplit(".", 1)[-1], name=name)


def _check_fault(obj, method):
    queue = obj.faults.get(method)
    if queue:
        raise _error(queue.pop(0))


def _scanning(adapter):
    props = adapter.props[bluez5.ADAPTER_IFACE]
    return bool(props["Powered"]) and (
        bool(props["Discovering"]) or bool(getattr(adapter, "monitors", []))
    )


def _set_discovering(adapter, value):
    adapter.props[bluez5.ADAPTER_IFACE]["Discovering"] = dbus.Boolean(value)
    adapter.EmitSignal(
        dbus.PROPERTIES_IFACE, "PropertiesChanged", "sa{sv}as",
        [bluez5.ADAPTER_IFACE, {"Discovering": dbus.Boolean(value)}, []],
    )


def _start_discovery(adapter):
    _check_fault(adapter, "StartDiscovery")
    if not adapter.props[bluez5.ADAPTER_IFACE]["Powered"]:
        raise _error("org.bluez.Error.NotReady", "Resource Not Ready")
    if adapter.stall == 1:
        adapter.stall = 0
    if not adapter.props[bluez5.ADAPTER_IFACE]["Discovering"]:
        _set_discovering(adapter, True)


def _stop_discovery(adapter):
    _check_fault(adapter, "StopDiscovery")
    if not adapter.props[bluez5.ADAPTER_IFACE]["Discovering"]:
        raise _error("org.bluez.Error.Failed", "No discovery started")
    _set_discovering(adapter, False)


def _set_discovery_filter(adapter, flt):
    _check_fault(adapter, "SetDiscoveryFilter")
    adapter.discovery_filter = dict(flt)


def _register_monitor(adapter, path):
    _check_fault(adapter, "RegisterMonitor")
    if adapter.stall == 1:
        adapter.stall = 0
    bluez5.RegisterMonitor(adapter, path)


def _unregister_monitor(adapter, path):
    _check_fault(adapter, "UnregisterMonitor")
    bluez5.UnregisterMonitor(adapter, path)


def _set(obj, interface, prop, value):
    mockobject.DBusMockObject.Set(obj, interface, prop, value)
    if interface == bluez5.ADAPTER_IFACE and prop == "Powered" and not value:
        # bluetoothd drops every discovery session when the controller powers down.
        obj.stall = 0
        if obj.props[bluez5.ADAPTER_IFACE]["Discovering"]:
            _set_discovering(obj, False)


@dbus.service.method(bluez5.BLUEZ_MOCK_IFACE, in_signature="ss", out_signature="s")
def AddAdapter(self, device_name, system_name):
    path = bluez5.AddAdapter(self, device_name, system_name)
    adapter = mockobject.objects[path]
    adapter.faults = {}
    adapter.stall = 0
    adapter.discovery_filter = {}
    a = bluez5.ADAPTER_IFACE
    adapter.AddMethod(a, "StartDiscovery", "", "", _start_discovery)
    adapter.AddMethod(a, "StopDiscovery", "", "", _stop_discovery)
    adapter.AddMethod(a, "SetDiscoveryFilter", "a{sv}", "", _set_discovery_filter)
    if hasattr(adapter, "monitors"):
        adapter.AddMethod(MONITOR_MANAGER_IFACE, "RegisterMonitor", "o", "", _register_monitor)
        adapter.AddMethod(
            MONITOR_MANAGER_IFACE, "UnregisterMonitor", "o", "", _unregister_monitor
        )
    adapter.AddMethod(dbus.PROPERTIES_IFACE, "Set", "ssv", "", _set)
    return path


@dbus.service.method(AIR_IFACE, in_signature="ssas", out_signature="")
def InjectFault(self, adapter_name, method, errors):
    """The next len(errors) calls of `method` on the adapter fail with these error names."""
    adapter = mockobject.objects["/org/bluez/" + adapter_name]
    adapter.faults.setdefault(str(method), []).extend(str(e) for e in errors)


@dbus.service.method(AIR_IFACE, in_signature="si", out_signature="")
def Stall(self, adapter_name, level):
    mockobject.objects["/org/bluez/" + adapter_name].stall = int(level)


@dbus.service.method(AIR_IFACE, in_signature="s", out_signature="b")
def Scanning(self, adapter_name):
    adapter = mockobject.objects.get("/org/bluez/" + adapter_name)
    return adapter is not None and _scanning(adapter)


@dbus.service.method(AIR_IFACE, in_signature="", out_signature="a(say)")
def Writes(self):
    return dbus.Array(
        [dbus.Struct((a, dbus.ByteArray(bytes(v))), signature="say") for a, v in _manager().writes],
        signature="(say)",
    )


def _device_path(adapter_name, address):
    return f"/org/bluez/{adapter_name}/dev_{address.replace(':', '_').upper()}"


@dbus.service.method(AIR_IFACE, in_signature="sssayib", out_signature="b")
def Advertise(self, adapter_name, address, uuid, data, rssi, connectable):
    """One advert on the air. Returns whether the adapter heard it."""
    adapter = mockobject.objects.get("/org/bluez/" + adapter_name)
    if adapter is None or not _scanning(adapter) or adapter.stall:
        return False
    path = _device_path(adapter_name, address)
    service_data = dbus.Dictionary(
        {str(uuid): dbus.Array(bytes(data), signature="y")}, signature="sv"
    )
    device = mockobject.objects.get(path)
    if device is None:
        _add_device(adapter, path, str(address), service_data, int(rssi))
        device = mockobject.objects[path]
    else:
        device.UpdateProperties(
            bluez5.DEVICE_IFACE, {"ServiceData": service_data, "RSSI": dbus.Int16(rssi)}
        )
    device.connectable = bool(connectable)
    return True


@dbus.service.method(AIR_IFACE, in_signature="ssss", out_signature="")
def AddGatt(self, adapter_name, address, service_uuid, char_uuid):
    """The device offers this writable characteristic once connected."""
    device = mockobject.objects[_device_path(adapter_name, address)]
    device.gatt = (str(service_uuid), str(char_uuid))


def _add_device(adapter, path, address, service_data, rssi):
    props = {
        "Address": dbus.String(address),
        "AddressType": dbus.String("public"),
        "Name": dbus.String("tryggheim"),
        "Alias": dbus.String(address.replace(":", "-")),
        "Adapter": dbus.ObjectPath(adapter.path),
        "Paired": dbus.Boolean(False),
        "Bonded": dbus.Boolean(False),
        "Trusted": dbus.Boolean(False),
        "Blocked": dbus.Boolean(False),
        "Connected": dbus.Boolean(False),
        "ServicesResolved": dbus.Boolean(False),
        "LegacyPairing": dbus.Boolean(False),
        "UUIDs": dbus.Array([], signature="s"),
        "RSSI": dbus.Int16(rssi),
        "ManufacturerData": dbus.Dictionary({}, signature="qv"),
        "ServiceData": service_data,
    }
    adapter.AddObject(
        path, bluez5.DEVICE_IFACE, props,
        [("Connect", "", "", _connect), ("Disconnect", "", "", _disconnect)],
    )
    device = mockobject.objects[path]
    device.faults = {}
    device.gatt = None
    device.connectable = False
    _manager().EmitSignal(
        OBJECT_MANAGER_IFACE, "InterfacesAdded", "oa{sa{sv}}",
        [dbus.ObjectPath(path), {bluez5.DEVICE_IFACE: props}],
    )


def _connect(device):
    _check_fault(device, "Connect")
    if not device.connectable:
        raise _error("org.bluez.Error.Failed", "Software caused connection abort")
    device.UpdateProperties(bluez5.DEVICE_IFACE, {"Connected": dbus.Boolean(True)})
    if device.gatt is not None:
        service_uuid, char_uuid = device.gatt
        spath = device.path + "/service0010"
        cpath = spath + "/char0011"
        if spath not in mockobject.objects:
            sprops = {
                "UUID": dbus.String(service_uuid),
                "Device": dbus.ObjectPath(device.path),
                "Primary": dbus.Boolean(True),
            }
            device.AddObject(spath, GATT_SERVICE_IFACE, sprops, [])
            _manager().EmitSignal(
                OBJECT_MANAGER_IFACE, "InterfacesAdded", "oa{sa{sv}}",
                [dbus.ObjectPath(spath), {GATT_SERVICE_IFACE: sprops}],
            )
            cprops = {
                "UUID": dbus.String(char_uuid),
                "Service": dbus.ObjectPath(spath),
                "Value": dbus.Array([], signature="y"),
                "Flags": dbus.Array(["write"], signature="s"),
                "MTU": dbus.UInt16(23),
            }
            device.AddObject(
                cpath, GATT_CHRC_IFACE, cprops,
                [("WriteValue", "aya{sv}", "", _write_value), ("ReadValue", "a{sv}", "ay", "")],
            )
            mockobject.objects[cpath].device = device
            _manager().EmitSignal(
                OBJECT_MANAGER_IFACE, "InterfacesAdded", "oa{sa{sv}}",
                [dbus.ObjectPath(cpath), {GATT_CHRC_IFACE: cprops}],
            )
    device.UpdateProperties(bluez5.DEVICE_IFACE, {"ServicesResolved": dbus.Boolean(True)})


def _disconnect(device):
    device.UpdateProperties(
        bluez5.DEVICE_IFACE,
        {"ServicesResolved": dbus.Boolean(False), "Connected": dbus.Boolean(False)},
    )


def _write_value(chrc, value, options):
    device = chrc.device
    if not device.props[bluez5.DEVICE_IFACE]["Connected"]:
        raise _error("org.bluez.Error.Failed", "Not connected")
    _manager().writes.append((str(device.props[bluez5.DEVICE_IFACE]["Address"]), bytes(value)))
