"""Provisioning, the installer's side: a device's config.json and key, and the hub it is
registered with.

The device's config (its key, the role's pins from hardware/pinmap.json) is made here, on the
installer's machine. The registration itself is the hub's (hub/installer/provision.py): on
this machine through its `LocalHub`, or over SSH through `SshHub`, which runs the hub's
`tryggheim-provision` there; the key travels on stdin, never on a command line.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
from pathlib import Path
from typing import Any, Protocol

from hub.installer.provision import (
    HEARTBEAT_S,
    ProvisionError,
    Registration,
    check_heartbeat,
    check_id,
    check_key,
    check_role,
)

ROOT = Path(__file__).resolve().parents[2]
# firmware/device.py COUNTER_HWM_PATH: the device's encryption-counter high-water mark.
COUNTER_FILE = "counter_hwm"

# The pin map the firmware reads (device.apply_defaults): {"roles": {role: {"pins": {...}}}}.
# It goes onto the device flash too; a role's pins are also written into config.json so
# what a device was provisioned with can be read off it.
PINMAP = ROOT / "hardware" / "pinmap.json"


def new_key() -> str:
    """A fresh 128-bit key from the OS's CSPRNG, as 32 hex digits."""
    return secrets.token_hex(16)


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
    check_heartbeat(heartbeat_s)
    hb = HEARTBEAT_S[1] if heartbeat_s is None else heartbeat_s
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


# -- where the hub's files are -----------------------------------------------------------
class Hub(Protocol):
    def describe(self) -> str: ...

    def check(self, plan: Registration | None = None) -> None:
        """Raise ProvisionError unless the config and keys file can be read and replaced, and
        (with `plan`) the hub's own loader accepts the device as planned: its role against
        the rules that name it, its id, room and heartbeat. `plan.key` is not used; an empty
        `plan.mac` means not known yet (checked again when registering)."""
        ...

    def key_fingerprint(self, device_id: str) -> str | None:
        """fingerprint() of the key the hub holds for the device (the key never leaves it)."""
        ...

    def register(self, reg: Registration) -> None: ...


class SshHub:
    """The hub on another machine: `ssh TARGET <hub_command> <subcommand> --config CONFIG`."""

    def __init__(self, target: str, config: str,
                 hub_command: str = "python3 -m hub.installer.provision", ssh: str = "ssh") -> None:
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

    def check(self, plan: Registration | None = None) -> None:
        self._run("check", *self.plan_args(plan))

    @staticmethod
    def plan_args(plan: Registration | None, with_mac: bool = True) -> tuple[str, ...]:
        if plan is None:
            return ()
        args = ["--id", plan.id, "--role", plan.role]
        if with_mac and plan.mac:
            args += ["--mac", plan.mac]
        args += ["--room", plan.room]
        if plan.heartbeat_s is not None:
            args += ["--heartbeat-s", str(plan.heartbeat_s)]
        return tuple(args)

    def register_command(self, reg: Registration) -> list[str]:
        """The ssh command line that registers `reg` (the key goes on its stdin)."""
        return self.command("register", *self.plan_args(reg))

    def key_fingerprint(self, device_id: str) -> str | None:
        return self._run("key-fingerprint", "--id", device_id).strip() or None

    def register(self, reg: Registration) -> None:
        self._run("register", *self.plan_args(reg), stdin=reg.key + "\n")
