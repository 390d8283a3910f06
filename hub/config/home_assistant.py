"""[home_assistant] (site.toml): optional MQTT discovery for a family's Home Assistant.

Off unless the section is there with `enabled = true`: what it publishes is health data
about a person at home (when the door opens, when someone moves, when they are in bed).
Only the entity kinds listed in `publish`, for the devices in `devices` (default: all),
leave the home, on the section's own broker connection (never the response centre's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.config.tomlcheck import Reader

# What may be published, per device (the roles that have it):
#   door       door open/closed           (door)
#   motion     motion detected            (pir)
#   occupancy  in bed                     (bed)
#   battery    battery %                  (every device)
#   alarm      an alarm is active for the device (any role)
ENTITIES = ("door", "motion", "occupancy", "battery", "alarm")
_TOPIC_WORD = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class HomeAssistantSettings:
    host: str
    publish: tuple[str, ...]
    port: int = 1883
    keepalive: int = 30
    username: str | None = None
    password_file: Path | None = None
    tls_ca: Path | None = None
    discovery_prefix: str = "homeassistant"
    devices: tuple[str, ...] = ()  # () = every configured device
    client_id: str = ""  # "" = tryggheim-<hub id>-ha


KEYS = {"enabled", "host", "port", "keepalive", "username", "password_file", "tls_ca",
        "discovery_prefix", "publish", "devices", "client_id"}


def parse(raw: dict[str, Any], r: Reader, base: Path,
          device_ids: set[str]) -> HomeAssistantSettings | None:
    """The section, checked; None when it is absent or `enabled = false`."""
    where = "home_assistant"
    section = r.table(raw, "", where)
    if not section:
        return None
    r.unknown(section, where, KEYS)
    enabled = r.get(section, where, "enabled", bool)
    if not enabled:
        return None
    host = r.get(section, where, "host", str)
    port = r.number(section, where, "port", 1883, 1, 65535)
    publish = r.get(section, where, "publish", list)
    if publish is not None:
        for i, item in enumerate(publish):
            if item not in ENTITIES:
                r.error(f"{where}.publish[{i}]", f"{item!r} is not one of {', '.join(ENTITIES)}")
        if not publish:
            r.error(f"{where}.publish", "empty: list what may leave the home, from "
                    + ", ".join(ENTITIES))
    devices = r.get(section, where, "devices", list, [])
    for i, dev in enumerate(devices):
        if dev not in device_ids:
            r.error(f"{where}.devices[{i}]", f"no device {dev!r} in the devices list")
    prefix = r.get(section, where, "discovery_prefix", str, "homeassistant")
    if not all(_TOPIC_WORD.match(p) for p in prefix.split("/")):
        r.error(f"{where}.discovery_prefix", f"{prefix!r}: use letters, digits, '_', '-', '/'")
    paths: dict[str, Path] = {}
    for key in ("password_file", "tls_ca"):
        name = r.get(section, where, key, str, "")
        if not name:
            continue
        path = base / name
        try:
            mode = path.stat().st_mode
        except OSError as e:
            r.error(f"{where}.{key}", f"cannot read {path}: {e.strerror}")
            continue
        if key == "password_file" and mode & 0o006:
            r.error(f"{where}.{key}", f"{path} is readable by other users"
                    f" (mode {mode & 0o777:04o}); fix with: chmod 600 {path}")
        paths[key] = path
    username = r.get(section, where, "username", str, "") or None
    if "password_file" in paths and username is None:
        r.error(f"{where}.username", "needed with password_file")
    if host is None or publish is None:
        return None
    return HomeAssistantSettings(
        host=host, publish=tuple(p for p in ENTITIES if p in publish), port=port,
        keepalive=r.number(section, where, "keepalive", 30, 5, 3600), username=username,
        password_file=paths.get("password_file"), tls_ca=paths.get("tls_ca"),
        discovery_prefix=prefix, devices=tuple(str(d) for d in devices),
        client_id=r.get(section, where, "client_id", str, ""),
    )
