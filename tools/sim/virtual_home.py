"""The virtual home: a throwaway broker, the hub process, simulated boards and a response centre.

`VirtualHome` runs the hub as a `tryggheim run` process in wall time, for tests; the demo's
night in virtual time (`make demo`) is tools/sim/demo_night.py, which builds on this home.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.centre.mosquitto import Mosquitto
from tools.centre.response_centre import ResponseCentre
from tools.sim.vboard import Air, VirtualBoard

SITE = "demo-home"


@dataclass
class HomeDevice:
    id: str
    role: str
    mac: str
    room: str = ""
    # Provisioned per device; the hub reads it from keys.toml, the board from its config.json.
    key: bytes = field(default_factory=lambda: os.urandom(16))

    def board_config(self, **extra: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {"id": self.id, "role": self.role, "key": self.key.hex()}
        cfg.update(extra)
        return cfg


DEFAULT_DEVICES = [HomeDevice("pendant-1", "pendant", "C0:FF:EE:00:00:01", "living room")]


def write_hub_config(
    workdir: Path, mqtt_port: int, devices: list[HomeDevice], site: str = SITE,
    extra: str = "", receipt_key: bytes | None = None,
) -> Path:
    """hub.toml, keys.toml and receipt.key for these devices; `extra`: more TOML (e.g.
    [rules]). The hub takes only receipts signed with `receipt_key` (protocols/MQTT.md);
    without one a random key is written: read it back with receipt_key_of(path)."""
    if receipt_key is None:
        receipt_key = secrets.token_bytes(32)
    lines = [
        "[site]",
        f'id = "{site}"',
        'timezone = "Europe/Oslo"',
        "",
        "[hub]",
        'id = "hub-demo"',
        'data_dir = "var"',
        "",
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {mqtt_port}",
        "keepalive = 5",
        'receipt_key_file = "receipt.key"',
        "",
        "[radio]",
        'kind = "virtual"',
        'air = "air.sock"',
    ]
    for d in devices:
        lines += ["", "[[device]]", f'id = "{d.id}"', f'role = "{d.role}"', f'mac = "{d.mac}"',
                  f'room = "{d.room}"']
    key_file = workdir / "receipt.key"
    key_file.write_text(receipt_key.hex() + "\n")
    key_file.chmod(0o600)
    path = workdir / "hub.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    from hub.config import keys

    keys.write(workdir / "keys.toml", {d.id: d.key for d in devices})  # mode 0600
    return path


def receipt_key_of(config: Path) -> bytes:
    """The receipt key write_hub_config wrote beside `config`, for the centre to sign with."""
    from hub.config.settings import read_receipt_key

    return read_receipt_key(config.parent / "receipt.key")


def start_hub(
    config: Path, log_path: Path, capture: Path | None = None
) -> subprocess.Popen[bytes]:
    # This interpreter's own hub first: the first `tryggheim` on PATH may be another
    # installation's (a pyenv shim, an installed package).
    own = Path(sys.executable).with_name("tryggheim")
    exe = str(own) if own.exists() else (shutil.which("tryggheim") or str(own))
    log = open(log_path, "ab")
    cmd = [exe, "run", "--config", str(config)]
    if capture is not None:
        cmd += ["--capture", str(capture)]
    return subprocess.Popen(cmd, stdout=log, stderr=log)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class VirtualHome:
    workdir: Path
    devices: list[HomeDevice] = field(default_factory=lambda: list(DEFAULT_DEVICES))
    broker: Mosquitto | None = None
    hub: subprocess.Popen[bytes] | None = None
    air: Air | None = None
    boards: dict[str, VirtualBoard] = field(default_factory=dict)
    centre: ResponseCentre | None = None

    def start(self) -> VirtualHome:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(self.workdir / "broker").start()
        # The demo's centre signs its receipts with the site's key, as a real one must.
        key = secrets.token_bytes(32)
        config = write_hub_config(self.workdir, self.broker.port, self.devices,
                                  receipt_key=key)
        self.air = Air(self.workdir / "air.sock")
        self.centre = ResponseCentre("127.0.0.1", self.broker.port,
                                     receipt_keys={SITE: key}).start()
        self.hub = start_hub(config, self.workdir / "hub.log", self.workdir / "capture.jsonl")
        self.air.wait_for_listener(proc=self.hub)
        for d in self.devices:
            cfg = d.board_config(heartbeat_s=600)
            board = VirtualBoard(cfg, mac=d.mac, radio=self.air).start()
            board.advance(1000)  # boot advert and back to sleep
            self.boards[d.id] = board
        return self

    def stop(self) -> None:
        for b in self.boards.values():
            b.stop()
        if self.hub is not None:
            stop_process(self.hub)
        if self.centre is not None:
            self.centre.stop()
        if self.air is not None:
            self.air.close()
        if self.broker is not None:
            self.broker.close()

    def __enter__(self) -> VirtualHome:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
