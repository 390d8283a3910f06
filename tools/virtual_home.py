"""The virtual home: a throwaway broker, the hub process, simulated boards and a response centre.

`python -m tools.virtual_home` (what `make demo` runs): a resident presses the pendant button
and the alarm as the response centre received it is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.mosquitto import Mosquitto
from tools.response_centre import ResponseCentre
from tools.vboard import Air, VirtualBoard

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
    receipt_key: bytes | None = None,
) -> Path:
    """With `receipt_key` the hub takes only receipts signed with it (protocols/MQTT.md)."""
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
        *(['receipt_key_file = "receipt.key"'] if receipt_key is not None else []),
        "",
        "[radio]",
        'kind = "virtual"',
        'air = "air.sock"',
    ]
    for d in devices:
        lines += ["", "[[device]]", f'id = "{d.id}"', f'role = "{d.role}"', f'mac = "{d.mac}"',
                  f'room = "{d.room}"']
    if receipt_key is not None:
        key_file = workdir / "receipt.key"
        key_file.write_text(receipt_key.hex() + "\n")
        key_file.chmod(0o600)
    path = workdir / "hub.toml"
    path.write_text("\n".join(lines) + "\n")
    from hub import keys

    keys.write(workdir / "keys.toml", {d.id: d.key for d in devices})  # mode 0600
    return path


def start_hub(
    config: Path, log_path: Path, capture: Path | None = None
) -> subprocess.Popen[bytes]:
    exe = shutil.which("tryggheim") or str(Path(sys.executable).with_name("tryggheim"))
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
        self.air.wait_for_listener()
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


def demo(workdir: Path) -> int:
    if workdir.exists():
        shutil.rmtree(workdir)
    with VirtualHome(workdir) as home:
        assert home.centre is not None
        pendant = home.boards["pendant-1"]
        print("Virtual home is up: broker on 127.0.0.1:%d, hub running, pendant asleep."
              % (home.broker.port if home.broker else 0))
        print("The resident presses the alarm button ...")
        t0 = time.monotonic()
        pendant.press("button", hold_ms=300)
        for _ in range(20):  # the advert burst in device time, while the hub works in wall time
            pendant.advance(200)
            time.sleep(0.01)
        alarm: dict[str, Any] = home.centre.get(timeout=20)
        ms = (time.monotonic() - t0) * 1000
        alarm.pop("_topic", None)
        print(f"The response centre received (after {ms:.0f} ms wall time):")
        print(json.dumps(alarm, indent=2, ensure_ascii=False))
        # The centre sent its receipt; the alarm is done only when the hub has it.
        confirmed = f"receipt: alarm {alarm['id']} confirmed"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and confirmed not in (
                workdir / "hub.log").read_text():
            time.sleep(0.02)
        if confirmed in (workdir / "hub.log").read_text():
            print(f"The hub has the response centre's receipt (after "
                  f"{(time.monotonic() - t0) * 1000:.0f} ms): delivered end to end.")
        else:
            print("The hub has not seen the response centre's receipt yet (see hub.log).")
        # The resident sees it too: the hub's acks reach the pendant (protocols/ACK.md).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and pendant.indication() != "help_coming":
            pendant.advance(200)  # device time moves on while the hub works
            time.sleep(0.02)
        shown = dict.fromkeys(i for _, i in pendant.indications if i != "off")
        print("The pendant showed the resident: " + " -> ".join(shown))
    print(f"Logs are in {workdir}/ (hub.log, broker/mosquitto.log). Every advert the hub heard"
          f" is in {workdir}/capture.jsonl; read it with: tryggheim decode --capture"
          f" {workdir}/capture.jsonl --keys {workdir}/keys.toml")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", default=os.environ.get("DEMO_DIR", "demo-out"))
    args = p.parse_args(argv)
    return demo(Path(args.workdir).resolve())


if __name__ == "__main__":
    sys.exit(main())
