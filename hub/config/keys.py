"""Per-device AES keys from the keys file: TOML `[keys]` table, device id -> 32 hex chars.

The keys decide who can raise an alarm in someone's home, so the file must not be readable
by other users: a world-readable (or world-writable) keys file stops the hub at start-up.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import tomllib
from pathlib import Path

from hub.config.settings import ConfigError, HubConfig

KEY_HEX_LEN = 32


def _line_of(text: str, key: str) -> str:
    pattern = re.compile(r'^\s*"?' + re.escape(key) + r'"?\s*=', re.MULTILINE)
    m = pattern.search(text)
    return f"line {text.count(chr(10), 0, m.start()) + 1}: " if m else ""


def check_permissions(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ConfigError([f"{path}: cannot read keys file: {e.strerror}"]) from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError([
            f"{path}: keys file is accessible to every user on this machine "
            f"(mode {stat.S_IMODE(mode):04o}); refusing to start. Fix with: chmod 600 {path}"
        ])


def load(path: str | Path) -> dict[str, bytes]:
    """device id -> 16-byte key. Every problem is reported with file, line and field."""
    file = Path(path)
    check_permissions(file)
    try:
        text = file.read_text()
        raw = tomllib.loads(text)
    except OSError as e:
        raise ConfigError([f"{file}: cannot read keys file: {e.strerror}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{file}: {e}"]) from None
    problems: list[str] = []
    for name in raw:
        if name != "keys":
            problems.append(f"{file}: {_line_of(text, name)}{name}: unknown setting")
    table = raw.get("keys", {})
    if not isinstance(table, dict):
        raise ConfigError([f"{file}: keys: expected a table"])
    keys: dict[str, bytes] = {}
    for dev, value in table.items():
        where = f"{file}: {_line_of(text, dev)}keys.{dev}"
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string of {KEY_HEX_LEN} hex digits")
            continue
        try:
            key = bytes.fromhex(value)
        except ValueError:
            key = b""
        if len(value) != KEY_HEX_LEN or len(key) != KEY_HEX_LEN // 2:
            # Never echo the value: it may be a real key with a typo.
            problems.append(f"{where}: expected {KEY_HEX_LEN} hex digits (a 128-bit key)")
            continue
        keys[dev] = key
    if problems:
        raise ConfigError(problems)
    return keys


def attach(cfg: HubConfig, keys: dict[str, bytes] | None = None) -> HubConfig:
    """The configuration with every device's key filled in from the keys file.
    A configured device without a key is an error: the hub accepts only encrypted adverts."""
    if keys is None:
        keys = load(cfg.keys_file)
    missing = [d for d in cfg.devices if d not in keys]
    if missing:
        raise ConfigError([
            f"{cfg.keys_file}: keys.{d}: no key for configured device {d!r}" for d in missing
        ])
    devices = {d: dataclasses.replace(dev, key=keys[d]) for d, dev in cfg.devices.items()}
    return dataclasses.replace(cfg, devices=devices)


def format_keys(keys: dict[str, bytes]) -> str:
    """The keys file text for `keys` (tools and tests write keys files with this)."""
    lines = ["[keys]"] + [f'"{d}" = "{k.hex()}"' for d, k in keys.items()]
    return "\n".join(lines) + "\n"


def write(path: str | Path, keys: dict[str, bytes]) -> None:
    """Write a keys file readable only by its owner (created 0600, never briefly wider)."""
    file = Path(path)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(format_keys(keys))
        f.flush()
        os.fsync(f.fileno())
