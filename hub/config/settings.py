"""Hub configuration from TOML. Every problem is reported as "file:line: field.path: problem".

Two forms: a config DIRECTORY (what an installed hub uses, edited over SSH)
  site.toml       [site] [hub] [mqtt] [radio] [admin]
  devices.toml    [[device]]
  rules.toml      the resident's rules (hub/rules/settings.py), at top level
  routing.toml    [[route]] (hub/delivery/routing.py)
  retention.toml  how long local logs are kept, at top level
or one FILE with the same tables ([rules.*], [[route]], [retention]) for tests and the demo.
Both are merged into one table and checked by the same code.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.config import home_assistant as ha_settings
from hub.config.home_assistant import HomeAssistantSettings
from hub.config.models import MODELS
from hub.config.tomlcheck import Locator
from hub.config.tomlcheck import Reader as _Reader
from hub.delivery.routing import Route, parse_routes
from hub.rules.settings import RULE_SECTIONS, RulesConfig, parse_rules

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
    heartbeat_s: int | None = None  # the device's heartbeat, if not its role's default
    model: str = ""  # "" = a Tryggheim device; else an off-the-shelf sensor (hub/config/models.py)


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive: int = 30
    window: int = 20
    tls_ca: Path | None = None  # CA file: set it to use TLS
    tls_cert: Path | None = None  # client certificate (optional, with tls_key)
    tls_key: Path | None = None
    username: str | None = None
    password_file: Path | None = None  # must not be readable by others (checked at load)
    receipt_timeout_s: float = 10.0  # no receipt for an alarm in this time: publish it again
    outbox_budget_mb: float = 100.0
    heartbeat_s: int = 60
    # Hex key the response centre signs receipts with (protocols/MQTT.md). Unset: the hub
    # makes one in its data dir at first start (hub/delivery/receipt_key.py). receipts = "unsigned"
    # takes receipts unverified: lab use only, any client allowed to publish can confirm.
    receipt_key_file: Path | None = None
    receipts: str = "signed"
    # Receivers of [[route]] copies: their own window and delivery rule (hub/delivery/routing.py).
    # Not compared: routes stay reloadable; the link takes a changed rule at its next start.
    receivers: tuple[Receiver, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Receiver:
    name: str
    confirms: bool = False  # True: its copies stay until its receipt names them
    receipt_key_file: Path | None = None


@dataclass(frozen=True)
class RadioSettings:
    """[radio] for kind = "bleak" (hub/radio/bleak.py, docs/INSTALL.md)."""

    adapter: str = "hci0"
    scan_mode: str = "auto"  # auto: passive where BlueZ allows it, else active
    watchdog_s: float = 90.0  # silence after which the scan is restarted (cheap)
    # Silence that raises a technical alarm; None: from the devices' heartbeats (>= 600 s).
    deaf_alarm_s: float | None = None
    ack_connections: int = 2  # GATT connections at once for acknowledgements


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
    keys_file: Path = Path("keys.toml")
    radio_replay: str = ""  # capture file replayed as the radio (radio.kind = "replay")
    radio: RadioSettings = field(default_factory=lambda: RadioSettings())
    rules: RulesConfig = RulesConfig()
    routes: tuple[Route, ...] = ()
    retention: Retention = field(default_factory=lambda: Retention())
    admin: AdminSettings = field(default_factory=lambda: AdminSettings())
    root: Path | None = None  # what was loaded: the config directory or the single file
    sources: tuple[Path, ...] = ()  # every file read (audited on reload)
    home_assistant: HomeAssistantSettings | None = None  # off unless configured

    def device_by_mac(self) -> dict[str, Device]:
        return {d.mac: d for d in self.devices.values()}


@dataclass(frozen=True)
class Retention:
    events_days: int = 30  # local event log (what `tryggheim events` shows)
    audit_days: int = 730  # admin changes: kept longer, they answer "who changed what"


@dataclass(frozen=True)
class AdminSettings:
    socket: Path = Path("control.sock")  # relative to data_dir
    group: str = "tryggheim-admin"  # members may use the admin CLI
    # Commands the response centre may send over MQTT (hub/delivery/commands.py); none by default.
    remote_commands: tuple[str, ...] = ()


REMOTE_COMMANDS = ("mute", "ack")

DIR_FILES = {
    # file -> sections it holds; "*" = the whole file is that one section
    "site.toml": ("site", "hub", "mqtt", "radio", "admin", "home_assistant"),
    "devices.toml": ("device",),
    "rules.toml": ("rules*",),
    "routing.toml": ("route",),
    "retention.toml": ("retention*",),
}


class _Sources:
    """Which file (and line) each top-level section came from, to place every problem."""

    def __init__(self) -> None:
        self.by_section: dict[str, tuple[Path, Locator, bool]] = {}
        self.files: list[Path] = []

    def add(self, file: Path, text: str, sections: tuple[str, ...], whole: str | None) -> None:
        self.files.append(file)
        loc = Locator(text)
        for sec in sections:
            self.by_section[sec] = (file, loc, False)
        if whole:
            self.by_section[whole] = (file, loc, True)

    def place(self, problem: str) -> str:
        """"<file>: <path>: <what>" -> "<file of that section>:<line>: <path>: <what>"."""
        m = _PROBLEM.match(problem)
        if not m:
            return problem
        path = m.group("path")
        section = path.split(".")[0].split("[")[0]
        src = self.by_section.get(section)
        if src is None:
            return problem
        file, loc, whole = src
        if whole:
            path = path[len(section) + 1:] if path != section else ""
        line = loc.line(path) if path else None
        shown = path or section
        return f"{file}:{line}: {shown}: {m.group('what')}" if line else f"{file}: {shown}: {m.group('what')}"


_PROBLEM = re.compile(r"^(?P<file>[^\n]+?)(?::\d+)?: (?P<path>[A-Za-z_][\w.\[\]-]*): (?P<what>.*)$", re.S)


def _read(path: Path) -> tuple[dict[str, Any], _Sources, Path]:
    """The merged raw table, where each part came from, and the file paths are relative to."""
    sources = _Sources()

    def parse(file: Path) -> dict[str, Any]:
        try:
            text = file.read_text()
            raw = tomllib.loads(text)
        except OSError as e:
            raise ConfigError([f"{file}: cannot read: {e.strerror}"]) from None
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"^(.*) \(at line (\d+), column (\d+)\)$", str(e))
            where = f"{file}:{m.group(2)}: column {m.group(3)}: {m.group(1)}" if m else f"{file}: {e}"
            raise ConfigError([where]) from None
        sections = DIR_FILES.get(file.name, ()) if path.is_dir() else tuple(raw) + ("rules",)
        whole = next((s[:-1] for s in sections if s.endswith("*")), None)
        sources.add(file, text, tuple(s for s in sections if not s.endswith("*")) or tuple(raw),
                    whole)
        return raw

    if not path.is_dir():
        return parse(path), sources, path
    if not (path / "site.toml").exists():
        raise ConfigError([f"{path}/site.toml: missing (a config directory needs site.toml)"])
    merged: dict[str, Any] = {}
    problems: list[str] = []
    for name, sections in DIR_FILES.items():
        file = path / name
        if not file.exists():
            continue
        raw = parse(file)
        whole = next((s[:-1] for s in sections if s.endswith("*")), None)
        if whole:
            problems += _misplaced(file, name, whole, raw)
            merged[whole] = raw
            continue
        for key, value in raw.items():
            if key not in sections:
                line = Locator(file.read_text()).line(key)
                home = _home_of(key)
                what = (f"does not belong in {name} (put it in {home})" if home else
                        "unknown section" + _did_you_mean(key, sections))
                problems.append(f"{file}{f':{line}' if line else ''}: {key}: {what}")
            elif key in merged:
                problems.append(f"{file}: {key}: already given in another file")
            else:
                merged[key] = value
    if problems:
        raise ConfigError(problems)
    return merged, sources, path / "site.toml"


_RETENTION_KEYS = ("events_days", "audit_days")


def _home_of(section: str) -> str | None:
    """The file of a config directory that holds `section`; None if none does."""
    for name, sections in DIR_FILES.items():
        if section in sections or f"{section}*" in sections:
            return name
    if section in RULE_SECTIONS:
        return "rules.toml"
    if section in _RETENTION_KEYS:
        return "retention.toml"
    return None


def _did_you_mean(key: str, sections: tuple[str, ...]) -> str:
    import difflib

    m = difflib.get_close_matches(key, sorted(sections), n=1, cutoff=0.75)
    return f" (did you mean {m[0]!r}?)" if m else ""


def _misplaced(file: Path, name: str, whole: str, raw: dict[str, Any]) -> list[str]:
    """A file that is one section (rules.toml, retention.toml) holding another file's
    section: name the file it belongs in (and take it out, so it is not also "unknown")."""
    own = set(RULE_SECTIONS) if whole == "rules" else set(_RETENTION_KEYS)
    loc = Locator(file.read_text())
    problems = []
    for key in [k for k in raw if k not in own]:
        home = _home_of(key)
        if home is not None and home != name:
            line = loc.line(key)
            problems.append(f"{file}:{line}: {key}: does not belong in {name} (put it in {home})"
                            if line else f"{file}: {key}: does not belong in {name} (put it in"
                            f" {home})")
            del raw[key]
    return problems


def load(path: str | Path) -> HubConfig:
    root = Path(path)
    raw, sources, file = _read(root)
    problems: list[str] = []
    r = _Reader(file, problems)
    top = {"site", "hub", "mqtt", "radio", "device", "rules", "route", "retention", "admin",
           "home_assistant"}
    for key in [k for k in raw if k not in top and k in RULE_SECTIONS]:
        r.error(key, f"a rule: in a single file it goes under [rules] ([[rules.{key}]] or"
                f" [rules.{key}]), in a config directory in rules.toml")
    r.unknown({k: v for k, v in raw.items() if k not in RULE_SECTIONS}, "", top)
    site = raw.get("site", {})
    hub = raw.get("hub", {})
    mqtt = raw.get("mqtt", {})
    radio = raw.get("radio", {})
    r.unknown(site, "site", {"id", "timezone"})
    r.unknown(hub, "hub", {"id", "data_dir", "keys_file"})
    r.unknown(mqtt, "mqtt", {"host", "port", "keepalive", "window", *_MQTT_DELIVERY_KEYS})
    r.unknown(radio, "radio", {"kind", "air", "replay", "adapter", "scan_mode", "watchdog_s",
                               "deaf_alarm_s", "ack_connections"})
    site_id = r.get(site, "site", "id", str)
    tz_name = r.get(site, "site", "timezone", str, "Europe/Oslo")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{file}: site.timezone: unknown time zone {tz_name!r}")
        tz = ZoneInfo("Europe/Oslo")
    hub_id = r.get(hub, "hub", "id", str)
    data_dir = file.parent / r.get(hub, "hub", "data_dir", str, "var")
    keys_file = file.parent / r.get(hub, "hub", "keys_file", str, "keys.toml")
    if site_id is not None and not SITE_ID.match(site_id):
        r.error("site.id", f"{site_id!r}: use 1-64 letters, digits, - and _ (it is part of"
                " every MQTT topic; +, # and / would change the topic)")
    if hub_id is not None and not SITE_ID.match(hub_id):
        r.error("hub.id", f"{hub_id!r}: use 1-64 letters, digits, - and _ (it is the MQTT"
                " client id)")
    port = r.number(mqtt, "mqtt", "port", 1883, 1, 65535)
    settings = MqttSettings(
        host=r.get(mqtt, "mqtt", "host", str, "127.0.0.1"),
        port=port,
        # 0 would switch keepalive off: a dead link would never be noticed.
        keepalive=r.number(mqtt, "mqtt", "keepalive", 30, 1, 3600),
        window=r.number(mqtt, "mqtt", "window", 20, 1, 1000),
        **_mqtt_delivery(r, mqtt, file),
    )
    radio_kind = r.get(radio, "radio", "kind", str, "bleak")
    if radio_kind not in ("virtual", "bleak", "replay"):
        problems.append(f"{file}: radio.kind: must be virtual, bleak or replay")
    air = r.get(radio, "radio", "air", str, "air.sock")
    replay = r.get(radio, "radio", "replay", str, "")
    if replay:
        replay = str(file.parent / replay)
    elif radio_kind == "replay":
        problems.append(f"{file}: radio.replay: missing (the capture file to replay)")
    scan_mode = r.get(radio, "radio", "scan_mode", str, "auto")
    if scan_mode not in ("auto", "passive", "active"):
        problems.append(f"{file}: radio.scan_mode: must be auto, passive or active")
    radio_settings = RadioSettings(
        adapter=r.get(radio, "radio", "adapter", str, "hci0"),
        scan_mode=scan_mode,
        watchdog_s=r.number(radio, "radio", "watchdog_s", 90.0, 5, 3600, float),
        deaf_alarm_s=r.number(radio, "radio", "deaf_alarm_s", None, 10, 86400, float),
        ack_connections=r.number(radio, "radio", "ack_connections", 2, 1, 8),
    )
    devices: dict[str, Device] = {}
    device_tables = r.tables(raw, "", "device")
    for i, d in enumerate(device_tables):
        where = f"device[{i}]"
        r.unknown(d, where, {"id", "role", "mac", "room", "key", "heartbeat_s", "model"})
        dev_id = r.get(d, where, "id", str)
        role = r.get(d, where, "role", str)
        mac = r.get(d, where, "mac", str)
        if role is not None and role not in ROLES:
            problems.append(f"{file}: {where}.role: {role!r} is not one of {', '.join(ROLES)}")
        if mac is not None and not _is_mac(mac):
            problems.append(f"{file}: {where}.mac: {mac!r} is not a MAC address")
        if dev_id in devices:
            problems.append(f"{file}: {where}.id: duplicate device id {dev_id!r}")
        heartbeat = r.number(d, where, "heartbeat_s", None, 10, 86400)
        model = _device_model(r, d, where, role)
        if dev_id and role and mac:
            devices[dev_id] = Device(dev_id, role, mac.upper(), r.get(d, where, "room", str, ""),
                                     heartbeat_s=heartbeat, model=model)
    declared = frozenset(str(d.get("id")) for d in device_tables)
    rules = parse_rules(r.table(raw, "", "rules"), r, "rules", devices, declared)
    routes = parse_routes(r.tables(raw, "", "route"), r)
    settings = replace(settings, receivers=_receivers(r, routes, file))
    ret = r.table(raw, "", "retention")
    r.unknown(ret, "retention", {"events_days", "audit_days"})
    retention = Retention(r.number(ret, "retention", "events_days", 30, 1, 3650),
                          r.number(ret, "retention", "audit_days", 730, 30, 3650))
    adm = r.table(raw, "", "admin")
    r.unknown(adm, "admin", {"socket", "group", "remote_commands"})
    remote = r.get(adm, "admin", "remote_commands", list, [])
    for i, c in enumerate(remote):
        if c not in REMOTE_COMMANDS:
            r.error(f"admin.remote_commands[{i}]",
                    f"{c!r} is not one of {', '.join(REMOTE_COMMANDS)}")
    admin = AdminSettings(Path(r.get(adm, "admin", "socket", str, "control.sock")),
                          r.get(adm, "admin", "group", str, "tryggheim-admin"),
                          tuple(c for c in remote if c in REMOTE_COMMANDS))
    home_assistant = ha_settings.parse(raw, r, file.parent, set(devices) | set(declared))
    if problems:
        raise ConfigError([sources.place(p) for p in problems])
    return HubConfig(
        path=file,
        site=site_id,
        timezone=tz,
        hub_id=hub_id,
        data_dir=data_dir,
        mqtt=settings,
        radio_kind=radio_kind,
        radio_air=str(file.parent / air),
        keys_file=keys_file,
        radio_replay=replay,
        radio=radio_settings,
        devices=devices,
        rules=rules,
        routes=routes,
        retention=retention,
        admin=admin,
        root=root,
        sources=tuple(sources.files),
        home_assistant=home_assistant,
    )


def _device_model(r: _Reader, d: dict[str, Any], where: str, role: str | None) -> str:
    """[[device]] model: an off-the-shelf sensor (hub/config/models.py), which must play its
    role."""
    model = r.get(d, where, "model", str, "")
    if not model:
        return ""
    spec = MODELS.get(model)
    if spec is None:
        r.error(f"{where}.model", f"{model!r} is not one of {', '.join(MODELS)}")
        return ""
    if role is not None and role != spec.role:
        r.error(f"{where}.role", f"a {spec.product} is a {spec.role}, not a {role}")
    return str(model)


def _is_mac(s: str) -> bool:
    parts = s.split(":")
    return len(parts) == 6 and all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    )


_MQTT_DELIVERY_KEYS = {
    "tls_ca", "tls_cert", "tls_key", "username", "password_file", "receipt_timeout_s",
    "outbox_budget_mb", "heartbeat_s", "receipt_key_file", "receipts",
}


def _mqtt_delivery(r: _Reader, mqtt: dict[str, Any], file: Path) -> dict[str, Any]:
    """[mqtt] settings for TLS, credentials and delivery (docs/DELIVERY.md)."""
    out: dict[str, Any] = {}
    for key in ("tls_ca", "tls_cert", "tls_key", "password_file", "receipt_key_file"):
        path = _secret_path(r, mqtt, "mqtt", key, file)
        if path is not None:
            out[key] = path
    if ("tls_cert" in out) != ("tls_key" in out):
        r.problems.append(f"{file}: mqtt.tls_cert: tls_cert and tls_key go together")
    if ("tls_cert" in out or "tls_key" in out) and "tls_ca" not in out:
        r.problems.append(f"{file}: mqtt.tls_ca: a client certificate needs TLS (set tls_ca)")
    receipts = r.get(mqtt, "mqtt", "receipts", str, "signed")
    if receipts not in ("signed", "unsigned"):
        r.error("mqtt.receipts", f"{receipts!r}: must be \"signed\" or \"unsigned\"")
    elif receipts == "unsigned":
        out["receipts"] = "unsigned"
    username = r.get(mqtt, "mqtt", "username", str, "")
    if username:
        out["username"] = username
    if "password_file" in out and not username:
        r.problems.append(f"{file}: mqtt.username: needed with password_file")
    for key, default, low, high in (
        ("receipt_timeout_s", 10.0, 0.1, 3600), ("outbox_budget_mb", 100.0, 0.01, 100_000),
        ("heartbeat_s", 60, 1, 86400),
    ):
        out[key] = r.number(mqtt, "mqtt", key, default, low, high,
                            float if isinstance(default, float) else int)
    return out


# Topic-safe: no "/", "+", "#" (they would change or widen the topic), no spaces.
SITE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _secret_path(r: _Reader, table: dict[str, Any], where: str, key: str,
                 file: Path) -> Path | None:
    """A file named in the config; keys and passwords must not be readable by others."""
    name = r.get(table, where, key, str, "")
    if not name:
        return None
    path: Path = file.parent / str(name)
    try:
        mode = path.stat().st_mode
    except OSError as e:
        r.error(f"{where}.{key}", f"cannot read {path}: {e.strerror}")
        return None
    if key in ("tls_key", "password_file", "receipt_key_file") and mode & 0o006:
        r.error(f"{where}.{key}", f"{path} is readable by other users"
                f" (mode {mode & 0o777:04o}); fix with: chmod 600 {path}")
    if key == "receipt_key_file":
        try:
            read_receipt_key(path)
        except (OSError, ValueError) as e:
            r.error(f"{where}.{key}", str(e))
            return None
    return path


def read_receipt_key(path: Path) -> bytes:
    """A receipt key file: the key in hex on its first line (at least 16 bytes)."""
    lines = path.read_text().split()
    try:
        key = bytes.fromhex(lines[0]) if lines else b""
    except ValueError:
        raise ValueError(f"{path}: expected the key in hex on the first line") from None
    if len(key) < 16:
        raise ValueError(f"{path}: the key is too short (at least 32 hex digits)")
    return key


def _receivers(r: _Reader, routes: tuple[Route, ...], file: Path) -> tuple[Receiver, ...]:
    out: list[Receiver] = []
    seen: set[str] = set()
    for i, route in enumerate(routes):
        if route.receiver in seen or route.receiver == "centre":
            continue
        seen.add(route.receiver)
        key = None
        if route.receipt_key_file:
            key = _secret_path(r, {"receipt_key_file": route.receipt_key_file}, f"route[{i}]",
                               "receipt_key_file", file)
        out.append(Receiver(route.receiver, route.confirms, key))
    return tuple(out)

