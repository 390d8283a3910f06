"""Provisioning, the hub's side: a device's registration in the hub's config and keys file.

`LocalHub` edits the files on this machine; `main` is the `tryggheim-provision` command that
the installer's laptop runs over SSH (`SshHub` in tools/installer/provision.py), installed on
the hub with the package:
`ssh HUB sudo -n /usr/sbin/tryggheim-provision register --config /etc/tryggheim --id ... < key`.
What goes onto the device (its config.json, key and pins) is made on the laptop.

A registration is all or nothing: the new config and keys files are written next to the old
ones, checked with the hub's own loaders, and only then renamed over them (keys first; the
keys are put back if the config rename fails). The key never appears on a command line, where
other users could read it from the process list: it travels on stdin.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
import tomlkit.items

from hub.admin.audit import AuditLog, Who, diff, user_name
from hub.clock import Clock, SystemClock
from hub.config import keys as hub_keys
from hub.config import settings as hub_config

ROLES = hub_config.ROLES
HEARTBEAT_S = (60, 600, 86400)  # min, default, max: firmware/device.py apply_defaults
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# Stands in for a board's MAC in a check made before the board's MAC can be read.
PLACEHOLDER_MAC = "02:00:00:00:00:00"


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
    model: str = ""  # an off-the-shelf sensor (hub/decode/shelly.py); "" = a Tryggheim device


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


def check_heartbeat(heartbeat_s: int | None) -> None:
    low, _, high = HEARTBEAT_S
    if heartbeat_s is not None and not low <= heartbeat_s <= high:
        raise ProvisionError(f"heartbeat_s {heartbeat_s}: must be {low}..{high} seconds")


# -- the hub's config text ---------------------------------------------------------------
DEVICES_HEADER = "# Devices in the home. The key of device X is keys[X] in the keys file.\n"


def config_with_device(text: str, reg: Registration) -> str:
    """`text` with reg's [[device]] entry updated (same id) or appended.

    Edited with tomlkit, which keeps the file as it was written: comments, order, and what
    the installer did not change (a re-flash without ROOM keeps the room, a device's
    `heartbeat_s` stays unless a new one is given). Only id, role and mac are always set."""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as e:
        # The hub's loader would refuse it too; say where, do not guess.
        raise ProvisionError(f"the hub's device list is not valid TOML: {e}") from None
    devices = doc.get("device")
    if devices is None:
        devices = tomlkit.aot()
        doc.append("device", devices)
    elif not isinstance(devices, tomlkit.items.AoT):
        raise ProvisionError("the hub's config has `device` but not as [[device]] tables")
    entry = next((t for t in devices if t.get("id") == reg.id), None)
    if entry is None:
        if len(devices) and not text.endswith("\n\n"):
            devices[-1].add(tomlkit.nl())  # a blank line between the entries
        entry = tomlkit.table()
        entry["id"] = reg.id
        devices.append(entry)
    entry["role"] = reg.role
    entry["mac"] = reg.mac.upper()
    if reg.room:
        entry["room"] = reg.room
    if reg.heartbeat_s is not None:  # the hub reports a device silent after its heartbeats
        entry["heartbeat_s"] = int(reg.heartbeat_s)
    if reg.model:  # an off-the-shelf sensor: the hub decodes it with hub/decode/shelly.py
        entry["model"] = reg.model
    out = tomlkit.dumps(doc)
    return out if out.endswith("\n") else out + "\n"


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


def _owned_like_dir(directory: Path, paths: Any) -> None:
    """Run as root (sudo), files made in the hub's data directory must be the hub's: a
    root-owned audit log or SQLite journal would stop the hub from writing them."""
    if os.geteuid() != 0:
        return
    st = os.stat(directory)
    for p in paths:
        if os.path.exists(p):
            os.chown(p, st.st_uid, st.st_gid)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the hub's files on this machine -------------------------------------------------------
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

    def check(self, plan: Registration | None = None) -> None:
        cfg = self._load()
        self._keys(cfg.keys_file)
        for d in {self.devices_file.parent, cfg.keys_file.parent}:
            if not os.access(d, os.W_OK):
                raise ProvisionError(f"{d}: not writable by this user; run as the hub's owner")
        if plan is None:
            return
        check_id(plan.id)
        check_role(plan.role)
        check_heartbeat(plan.heartbeat_s)
        known = cfg.devices.get(plan.id)
        # The board's MAC may not be known before the erase: keep the registered one, or use
        # a locally administered address no ESP32 ships with.
        mac = plan.mac or (known.mac if known else PLACEHOLDER_MAC)
        dev_file = self.devices_file
        text = dev_file.read_text() if dev_file.exists() else DEVICES_HEADER
        trial = Registration(plan.id, plan.role, mac, "", plan.room, plan.heartbeat_s)
        self._validate(config_with_device(text, trial),
                       f"{plan.id} as a {plan.role} would break the hub config")

    def key_fingerprint(self, device_id: str) -> str | None:
        cfg = self._load()
        key = self._keys(cfg.keys_file).get(device_id)
        return fingerprint(key.hex()) if key else None

    def _validate(self, devices_text: str,
                  what: str = "registration would break the hub config") -> None:
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
                raise ProvisionError(f"{what}:\n{shown}") from None
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
        from hub.decode.counters import CounterStore
        from hub.store import DB_NAME

        path = cfg.data_dir / DB_NAME  # the hub keeps them in its one database (hub/store.py)
        if path.exists():
            store = CounterStore(path)
            try:
                store.reset(device_id)
            finally:
                store.close()
            _owned_like_dir(cfg.data_dir, path.parent.glob(path.name + "*"))

    def _audit(self, cfg: hub_config.HubConfig, reg: Registration, rotated: bool,
               change: str) -> None:
        # In the hub's own audit log; the key itself never, only its fingerprint.
        uid = os.getuid()
        who = Who(uid, user_name(uid), os.environ.get("SUDO_USER") or os.environ.get("USER"),
                  via="hub.installer.provision")
        AuditLog(cfg.data_dir / "audit.jsonl", cfg.timezone, cfg.retention.audit_days).record(
            self.clock.now(), who, "rotate-device-key" if rotated else "register-device",
            "applied", device=reg.id, role=reg.role, mac=reg.mac.upper(),
            key_fingerprint=fingerprint(reg.key), diff=change)
        _owned_like_dir(cfg.data_dir, [cfg.data_dir / "audit.jsonl"])


def fingerprint(key_hex: str) -> str:
    """A short, one-way name for a key: safe to print, log and compare."""
    return hashlib.sha256(bytes.fromhex(key_hex)).hexdigest()[:16]


# -- the command run on the hub (locally or through SSH) ---------------------------------
class _Once(argparse.Action):
    """An option that may be given only once. The installers' sudoers entry fixes
    `--config /etc/tryggheim` and lets the rest of the line vary: a second --config must
    not override the first (argparse would let the last one win)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        seen: set[str] = namespace.__dict__.setdefault("_given", set())
        if self.dest in seen:
            parser.error(f"{option_string} given twice")
        seen.add(self.dest)
        setattr(namespace, self.dest, values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tryggheim-provision",
                                description="Register devices in a hub's config and keys file.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("check", "register", "key-fingerprint"):
        s = sub.add_parser(name)
        s.add_argument("--config", required=True, action=_Once,
                       help="the hub's configuration directory or file")
        s.add_argument("--id", required=name != "check", action=_Once)
        if name != "key-fingerprint":
            s.add_argument("--role", required=name == "register", choices=ROLES, action=_Once)
            s.add_argument("--mac", required=name == "register", action=_Once)
            s.add_argument("--room", default="", action=_Once)
            s.add_argument("--heartbeat-s", type=int, action=_Once)
    args = p.parse_args(argv)
    hub = LocalHub(args.config)
    try:
        if args.cmd == "check":
            plan = None
            if args.id or args.role:
                if not (args.id and args.role):
                    raise ProvisionError("check: --id and --role go together")
                plan = Registration(args.id, args.role, args.mac or "", "", args.room,
                                    args.heartbeat_s)
            hub.check(plan)
        elif args.cmd == "key-fingerprint":
            print(hub.key_fingerprint(args.id) or "")
        else:
            key = sys.stdin.readline().strip().lower()
            hub.register(Registration(args.id, args.role, args.mac, key, args.room,
                                      args.heartbeat_s))
            print(f"registered {args.id} ({args.role}, {args.mac.upper()})")
    except (ProvisionError, ValueError) as e:
        print(f"tryggheim-provision: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
