"""Provisioning: a device's config.json and key, and its registration with the hub.

Pure parts (device config, pin maps, editing the hub's config and keys texts) are separate from
the two ways to reach a hub's files: `LocalHub` (the installer runs on the hub, or tests) and
`SshHub` (the laptop reaches the hub over SSH and runs this module's `register` command there:
`ssh HUB python3 -m tools.provision register --config /etc/tryggheim/hub.toml --id ... < key`).

A registration is all or nothing: the new config and keys files are written next to the old
ones, checked with the hub's own loaders, and only then renamed over them (keys first; the
keys are put back if the config rename fails). The key never appears on a command line, where
other users could read it from the process list: it travels on stdin.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hub import config as hub_config
from hub import keys as hub_keys
from hub.audit import AuditLog, Who, diff, user_name
from hub.clock import Clock, SystemClock

ROOT = Path(__file__).resolve().parents[1]
ROLES = hub_config.ROLES
# firmware/device.py COUNTER_HWM_PATH: the device's encryption-counter high-water mark.
COUNTER_FILE = "counter_hwm"

# The pin map the firmware reads (device.apply_defaults): {"roles": {role: {"pins": {...}}}}.
# It goes onto the device flash too; a role's pins are also written into config.json so
# what a device was provisioned with can be read off it.
PINMAP = ROOT / "hardware" / "pinmap.json"
HEARTBEAT_S = (60, 600, 86400)  # min, default, max: firmware/device.py apply_defaults
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class ProvisionError(Exception):
    """A problem the installer can fix; the message says what and how."""


@dataclass(frozen=True)
class Registration:
    id: str
    role: str
    mac: str
    key: str  # 32 hex digits
    room: str = ""
    heartbeat_s: int | None = None  # None: the role's default


def new_key() -> str:
    """A fresh 128-bit key from the OS's CSPRNG, as 32 hex digits."""
    return secrets.token_hex(16)


def check_id(device_id: str) -> None:
    if not _ID.match(device_id):
        raise ProvisionError(
            f"device id {device_id!r}: use 1-32 lower-case letters, digits, '-' or '_'")


def check_key(key: str) -> None:
    if len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
        raise ProvisionError("key: expected 32 lower-case hex digits (128 bits)")


def check_role(role: str) -> None:
    if role not in ROLES:
        raise ProvisionError(f"device role {role!r}: must be one of {', '.join(ROLES)}")


def load_pinmap(role: str, path: Path = PINMAP) -> dict[str, int]:
    """The role's pins (name -> GPIO) from the hardware pin map."""
    try:
        roles = json.loads(path.read_text())["roles"]
    except OSError as e:
        raise ProvisionError(f"{path}: cannot read the pin map: {e.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise ProvisionError(f"{path}: not a pin map (expected {{\"roles\": {{...}}}})") from None
    spec = roles.get(role)
    if not isinstance(spec, dict) or not isinstance(spec.get("pins"), dict):
        raise ProvisionError(f"{path}: roles.{role}.pins: missing")
    pins = spec["pins"]
    for name, gpio in pins.items():
        if isinstance(gpio, bool) or not isinstance(gpio, int) or not 0 <= gpio <= 39:
            raise ProvisionError(f"{path}: roles.{role}.pins.{name}: {gpio!r} is not GPIO 0..39")
    return dict(pins)


def device_config(device_id: str, role: str, key: str, mac: str | None = None,
                  pins: dict[str, int] | None = None,
                  heartbeat_s: int | None = None) -> dict[str, Any]:
    """config.json for the device (the firmware's device.load_config reads it)."""
    check_id(device_id)
    check_role(role)
    check_key(key)
    low, default, high = HEARTBEAT_S
    hb = default if heartbeat_s is None else heartbeat_s
    if not low <= hb <= high:
        raise ProvisionError(f"heartbeat_s {hb}: must be {low}..{high} seconds")
    cfg: dict[str, Any] = {
        "id": device_id,
        "role": role,
        "key": key,
        "pins": pins if pins is not None else load_pinmap(role),
        "heartbeat_s": hb,
    }
    if mac:
        cfg["mac"] = mac.upper()
    return cfg


# -- the hub's config text ---------------------------------------------------------------
_HEADER = re.compile(r"^\s*\[")
_DEVICE_HEADER = re.compile(r"^\s*\[\[\s*device\s*\]\]")


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


DEVICES_HEADER = "# Devices in the home. The key of device X is keys[X] in the keys file.\n"


def device_block(reg: Registration) -> str:
    lines = ["[[device]]", f"id = {_toml_str(reg.id)}", f"role = {_toml_str(reg.role)}",
             f"mac = {_toml_str(reg.mac.upper())}"]
    if reg.room:
        lines.append(f"room = {_toml_str(reg.room)}")
    if reg.heartbeat_s is not None:  # the hub reports a device silent after its heartbeats
        lines.append(f"heartbeat_s = {int(reg.heartbeat_s)}")
    return "\n".join(lines) + "\n"


def config_with_device(text: str, reg: Registration) -> str:
    """`text` with reg's [[device]] block replaced (same id) or appended; other text untouched."""
    lines = text.splitlines(keepends=True)
    blocks: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        if _DEVICE_HEADER.match(lines[i]):
            j = i + 1
            while j < len(lines) and not _HEADER.match(lines[j]):
                j += 1
            blocks.append((i, j))
            i = j
        else:
            i += 1
    for start, end in blocks:
        body = "".join(lines[start + 1:end])
        try:
            existing = tomllib.loads(body)
        except tomllib.TOMLDecodeError:
            continue  # the hub's loader will name the problem; we do not guess
        if existing.get("id") == reg.id:
            trailing = "".join(x for x in lines[start + 1:end] if not x.strip())
            return "".join(lines[:start]) + device_block(reg) + trailing + "".join(lines[end:])
    sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    return text + sep + device_block(reg)


def _write_private(path: Path, data: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _same_owner(new: Path, old: Path, fallback: Path) -> None:
    """Run as root (sudo), a replaced file must stay the hub user's, or the hub could no
    longer read its own keys file (mode 0600)."""
    if os.geteuid() != 0:
        return
    ref = old if old.exists() else fallback
    st = os.stat(ref)
    os.chown(new, st.st_uid, st.st_gid)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- where the hub's files are -----------------------------------------------------------
class Hub(Protocol):
    def describe(self) -> str: ...

    def check(self) -> None:
        """Raise ProvisionError unless the config and keys file can be read and replaced."""
        ...

    def key_fingerprint(self, device_id: str) -> str | None:
        """fingerprint() of the key the hub holds for the device (the key never leaves it)."""
        ...

    def register(self, reg: Registration) -> None: ...


class LocalHub:
    """The hub's config on this machine: a config directory (devices go into devices.toml) or
    one config file (tests, the demo)."""

    def __init__(self, config: str | Path, clock: Clock | None = None) -> None:
        self.config = Path(config)
        self.clock = clock or SystemClock()

    def describe(self) -> str:
        return f"hub config {self.config}"

    @property
    def devices_file(self) -> Path:
        return self.config / "devices.toml" if self.config.is_dir() else self.config

    def _load(self) -> hub_config.HubConfig:
        try:
            return hub_config.load(self.config)
        except hub_config.ConfigError as e:
            raise ProvisionError(f"hub configuration is not valid:\n{e}") from None

    def _keys(self, path: Path) -> dict[str, bytes]:
        if not path.exists():
            return {}
        try:
            return hub_keys.load(path)
        except hub_config.ConfigError as e:
            raise ProvisionError(f"hub keys file is not valid:\n{e}") from None

    def check(self) -> None:
        cfg = self._load()
        self._keys(cfg.keys_file)
        for d in {self.devices_file.parent, cfg.keys_file.parent}:
            if not os.access(d, os.W_OK):
                raise ProvisionError(f"{d}: not writable by this user; run as the hub's owner")

    def key_fingerprint(self, device_id: str) -> str | None:
        cfg = self._load()
        key = self._keys(cfg.keys_file).get(device_id)
        return fingerprint(key.hex()) if key else None

    def _validate(self, devices_text: str) -> None:
        """Load the config as it would be with `devices_text`, with the hub's own loader."""
        target = self.devices_file
        with tempfile.TemporaryDirectory(prefix=".register-", dir=self.config.parent) as tmp:
            if self.config.is_dir():
                # The same directory, devices.toml replaced: relative paths still resolve.
                trial = Path(tmp) / self.config.name
                trial.mkdir()
                for entry in self.config.iterdir():
                    if entry.name != "devices.toml":
                        (trial / entry.name).symlink_to(entry.resolve())
                (trial / "devices.toml").write_text(devices_text)
            else:
                trial = self.config.parent / f".{self.config.name}.check"
                trial.write_text(devices_text)
            try:
                hub_config.load(trial)
            except hub_config.ConfigError as e:
                shown = str(e).replace(str(trial / "devices.toml"), str(target))
                shown = shown.replace(str(trial), str(self.config))
                raise ProvisionError(f"registration would break the hub config:\n{shown}") from None
            finally:
                if not self.config.is_dir():
                    trial.unlink(missing_ok=True)

    def register(self, reg: Registration) -> None:
        check_id(reg.id)
        check_role(reg.role)
        check_key(reg.key)
        cfg = self._load()
        keys_path = cfg.keys_file
        old_keys_text = keys_path.read_text() if keys_path.exists() else None
        keys = self._keys(keys_path)
        rotated = reg.id in keys and keys[reg.id] != bytes.fromhex(reg.key)
        keys[reg.id] = bytes.fromhex(reg.key)
        dev_file = self.devices_file
        old_text = dev_file.read_text() if dev_file.exists() else DEVICES_HEADER
        new_text = config_with_device(old_text, reg)
        self._validate(new_text)
        dev_tmp = dev_file.with_name(f".{dev_file.name}.new")
        keys_tmp = keys_path.with_name(f".{keys_path.name}.new")
        try:
            mode = os.stat(dev_file).st_mode & 0o777 if dev_file.exists() else 0o644
            _write_private(dev_tmp, new_text, mode)
            _same_owner(dev_tmp, dev_file, self.config)
            hub_keys.write(keys_tmp, keys)
            _same_owner(keys_tmp, keys_path, self.config)
            hub_keys.load(keys_tmp)  # what the hub will read back
            os.replace(keys_tmp, keys_path)
            try:
                os.replace(dev_tmp, dev_file)
            except OSError:
                if old_keys_text is None:
                    keys_path.unlink(missing_ok=True)
                else:
                    _write_private(keys_path, old_keys_text, 0o600)
                raise
            for d in {dev_file.parent, keys_path.parent}:
                _fsync_dir(d)
        except hub_config.ConfigError as e:
            raise ProvisionError(f"keys file would not load:\n{e}") from None
        finally:
            dev_tmp.unlink(missing_ok=True)
            keys_tmp.unlink(missing_ok=True)
        if rotated:
            # A new key restarts the device's counter at 0: the hub must forget the old one or
            # it would drop every advert as a replay.
            self._reset_counter(cfg, reg.id)
        self._audit(cfg, reg, rotated, diff({dev_file.name: old_text}, {dev_file.name: new_text}))

    def _reset_counter(self, cfg: hub_config.HubConfig, device_id: str) -> None:
        from hub.counters import CounterStore
        from hub.store import DB_NAME

        path = cfg.data_dir / DB_NAME  # the hub keeps them in its one database (hub/store.py)
        if path.exists():
            store = CounterStore(path)
            try:
                store.reset(device_id)
            finally:
                store.close()

    def _audit(self, cfg: hub_config.HubConfig, reg: Registration, rotated: bool,
               change: str) -> None:
        # In the hub's own audit log; the key itself never, only its fingerprint.
        uid = os.getuid()
        who = Who(uid, user_name(uid), os.environ.get("SUDO_USER") or os.environ.get("USER"),
                  via="tools.provision")
        AuditLog(cfg.data_dir / "audit.jsonl", cfg.timezone, cfg.retention.audit_days).record(
            self.clock.now(), who, "rotate-device-key" if rotated else "register-device",
            "applied", device=reg.id, role=reg.role, mac=reg.mac.upper(),
            key_fingerprint=fingerprint(reg.key), diff=change)


class SshHub:
    """The hub on another machine: `ssh TARGET <hub_command> <subcommand> --config CONFIG`."""

    def __init__(self, target: str, config: str,
                 hub_command: str = "python3 -m tools.provision", ssh: str = "ssh") -> None:
        self.target = target
        self.config = config
        self.hub_command = hub_command
        self.ssh = ssh

    def describe(self) -> str:
        return f"hub {self.target}:{self.config} over SSH"

    def command(self, sub: str, *args: str) -> list[str]:
        remote = " ".join([self.hub_command, sub, "--config", shlex.quote(self.config),
                           *(shlex.quote(a) for a in args)])
        return [*shlex.split(self.ssh), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                self.target, remote]

    def _run(self, sub: str, *args: str, stdin: str = "") -> str:
        cmd = self.command(sub, *args)
        try:
            p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise ProvisionError(f"hub unreachable: {cmd[0]} is not installed") from None
        except subprocess.TimeoutExpired:
            raise ProvisionError(f"hub unreachable: {self.target} did not answer in 60 s") from None
        if p.returncode == 255:  # ssh's own failure: no route, refused, auth
            raise ProvisionError(
                f"hub unreachable: ssh {self.target}: {p.stderr.strip() or 'connection failed'}")
        if p.returncode != 0:
            raise ProvisionError(f"on the hub {self.target}: {p.stderr.strip() or p.stdout}")
        return p.stdout

    def check(self) -> None:
        self._run("check")

    def key_fingerprint(self, device_id: str) -> str | None:
        return self._run("key-fingerprint", "--id", device_id).strip() or None

    def register(self, reg: Registration) -> None:
        extra = () if reg.heartbeat_s is None else ("--heartbeat-s", str(reg.heartbeat_s))
        self._run("register", "--id", reg.id, "--role", reg.role, "--mac", reg.mac,
                  "--room", reg.room, *extra, stdin=reg.key + "\n")


def fingerprint(key_hex: str) -> str:
    """A short, one-way name for a key: safe to print, log and compare."""
    return hashlib.sha256(bytes.fromhex(key_hex)).hexdigest()[:16]


# -- the command run on the hub (locally or through SSH) ---------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.provision",
                                description="Register devices in a hub's config and keys file.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("check", "register", "key-fingerprint"):
        s = sub.add_parser(name)
        s.add_argument("--config", required=True, help="the hub's configuration file")
        if name != "check":
            s.add_argument("--id", required=True)
        if name == "register":
            s.add_argument("--role", required=True, choices=ROLES)
            s.add_argument("--mac", required=True)
            s.add_argument("--room", default="")
            s.add_argument("--heartbeat-s", type=int)
    args = p.parse_args(argv)
    hub = LocalHub(args.config)
    try:
        if args.cmd == "check":
            hub.check()
        elif args.cmd == "key-fingerprint":
            print(hub.key_fingerprint(args.id) or "")
        else:
            key = sys.stdin.readline().strip().lower()
            hub.register(Registration(args.id, args.role, args.mac, key, args.room,
                                      args.heartbeat_s))
            print(f"registered {args.id} ({args.role}, {args.mac.upper()})")
    except (ProvisionError, ValueError) as e:
        print(f"tools.provision: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
