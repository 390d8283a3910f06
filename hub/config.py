"""Hub configuration from TOML. Every problem is reported with file and field path."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ROLES = ("pendant", "door", "pir", "bed", "wearable")


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Device:
    id: str
    role: str
    mac: str
    room: str = ""
    key: bytes | None = None


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive: int = 30
    window: int = 20


@dataclass(frozen=True)
class HubConfig:
    path: Path
    site: str
    timezone: ZoneInfo
    hub_id: str
    data_dir: Path
    mqtt: MqttSettings
    radio_kind: str
    radio_air: str
    devices: dict[str, Device] = field(default_factory=dict)

    def device_by_mac(self) -> dict[str, Device]:
        return {d.mac: d for d in self.devices.values()}


class _Reader:
    """Typed access to a TOML table that records problems instead of stopping at the first."""

    def __init__(self, file: Path, problems: list[str]) -> None:
        self.file = file
        self.problems = problems

    def get(self, table: dict[str, Any], path: str, key: str, kind: type, default: Any = ...) -> Any:
        if key not in table:
            if default is ...:
                self.problems.append(f"{self.file}: {path}.{key}: missing")
            return None if default is ... else default
        value = table[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            self.problems.append(
                f"{self.file}: {path}.{key}: expected {kind.__name__}, got {type(value).__name__}"
            )
            return None if default is ... else default
        return value

    def unknown(self, table: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                self.problems.append(f"{self.file}: {path}.{key}: unknown setting")


def load(path: str | Path) -> HubConfig:
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text())
    except OSError as e:
        raise ConfigError([f"{file}: cannot read: {e.strerror}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{file}: {e}"]) from None
    problems: list[str] = []
    r = _Reader(file, problems)
    r.unknown(raw, "", {"site", "hub", "mqtt", "radio", "device"})
    site = raw.get("site", {})
    hub = raw.get("hub", {})
    mqtt = raw.get("mqtt", {})
    radio = raw.get("radio", {})
    r.unknown(site, "site", {"id", "timezone"})
    r.unknown(hub, "hub", {"id", "data_dir"})
    r.unknown(mqtt, "mqtt", {"host", "port", "keepalive", "window"})
    r.unknown(radio, "radio", {"kind", "air"})
    site_id = r.get(site, "site", "id", str)
    tz_name = r.get(site, "site", "timezone", str, "Europe/Oslo")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{file}: site.timezone: unknown time zone {tz_name!r}")
        tz = ZoneInfo("Europe/Oslo")
    hub_id = r.get(hub, "hub", "id", str)
    data_dir = file.parent / r.get(hub, "hub", "data_dir", str, "var")
    port = r.get(mqtt, "mqtt", "port", int, 1883)
    if not 0 < port < 65536:
        problems.append(f"{file}: mqtt.port: {port} is not a TCP port")
    settings = MqttSettings(
        host=r.get(mqtt, "mqtt", "host", str, "127.0.0.1"),
        port=port,
        keepalive=r.get(mqtt, "mqtt", "keepalive", int, 30),
        window=r.get(mqtt, "mqtt", "window", int, 20),
    )
    radio_kind = r.get(radio, "radio", "kind", str, "bleak")
    if radio_kind not in ("virtual", "bleak", "replay"):
        problems.append(f"{file}: radio.kind: must be virtual, bleak or replay")
    air = r.get(radio, "radio", "air", str, "air.sock")
    devices: dict[str, Device] = {}
    for i, d in enumerate(raw.get("device", [])):
        where = f"device[{i}]"
        r.unknown(d, where, {"id", "role", "mac", "room", "key"})
        dev_id = r.get(d, where, "id", str)
        role = r.get(d, where, "role", str)
        mac = r.get(d, where, "mac", str)
        if role is not None and role not in ROLES:
            problems.append(f"{file}: {where}.role: {role!r} is not one of {', '.join(ROLES)}")
        if mac is not None and not _is_mac(mac):
            problems.append(f"{file}: {where}.mac: {mac!r} is not a MAC address")
        if dev_id in devices:
            problems.append(f"{file}: {where}.id: duplicate device id {dev_id!r}")
        if dev_id and role and mac:
            devices[dev_id] = Device(dev_id, role, mac.upper(), r.get(d, where, "room", str, ""))
    if problems:
        raise ConfigError(problems)
    return HubConfig(
        path=file,
        site=site_id,
        timezone=tz,
        hub_id=hub_id,
        data_dir=data_dir,
        mqtt=settings,
        radio_kind=radio_kind,
        radio_air=str(file.parent / air),
        devices=devices,
    )


def _is_mac(s: str) -> bool:
    parts = s.split(":")
    return len(parts) == 6 and all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    )
