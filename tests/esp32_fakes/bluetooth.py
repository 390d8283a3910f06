# Simulated `bluetooth` module of the ESP32 port (see _port.py): the radio this machine lacks.
# Adverts and scans go through the host's virtual air; a central's connect, write and
# disconnect arrive as IRQ events while the firmware idles (time.sleep_ms).
import _port

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
_ADV_SCAN_MIN_US = 100000  # ADV_SCAN_IND / ADV_NONCONN_IND on a Bluetooth 4.2 controller
_ADV_CONN_MIN_US = 20000  # ADV_IND


class UUID:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, UUID) and other.value == self.value


class BLE:
    def active(self, active=None):
        if active is None:
            return _port.state["ble"]
        on = bool(active)
        if on != _port.state["ble"]:
            _port.state["ble"] = on
            _port.state["gatts"] = {}
            _port.call("ble_active", on=on)
        return on

    def _need_active(self):
        if not _port.state["ble"]:
            raise OSError("BLE not active")

    def irq(self, handler):
        _port.state["irq"] = handler

    def config(self, name):
        self._need_active()
        if name == "mac":
            return (0, bytes.fromhex(_port.call("mac")["mac"]))
        raise ValueError("unknown config param")

    def gatts_register_services(self, services):
        self._need_active()
        handles = []
        h = 10
        for _uuid, chars in services:
            row = []
            for _c in chars:
                h += 2
                row.append(h)
            handles.append(tuple(row))
        _port.call("gatts", handles=[h for row in handles for h in row])
        return tuple(handles)

    def gatts_read(self, handle):
        return _port.state["gatts"].get(handle, b"")

    def gap_advertise(self, interval_us, adv_data=None, *, resp_data=None, connectable=True):
        self._need_active()
        if interval_us is None:
            _port.call("adv", data=None)
            return
        least = _ADV_CONN_MIN_US if connectable else _ADV_SCAN_MIN_US
        if interval_us < least:
            raise OSError(-interval_us)  # NimBLE: BLE_HS_EINVAL for the advert parameters
        _port.call("adv", data=None if adv_data is None else bytes(adv_data).hex(),
                   interval_us=interval_us, connectable=bool(connectable))

    def gap_scan(self, duration_ms, interval_us=1280000, window_us=11250, active=False):
        self._need_active()
        if duration_ms is None:
            return
        _port.call("scan", ms=duration_ms)
