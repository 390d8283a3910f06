"""Host side of the virtual board: a discrete-event simulator around real MicroPython.

The firmware runs unchanged in the MicroPython WebAssembly port (runner.mjs). Every board
call arrives here as one JSON line and is answered with one; the board blocks meanwhile, so
virtual time only moves when this side says. Tests stimulate pins at exact instants, advance
hours in milliseconds, and read the adverts and LED patterns the device produced.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("runner.mjs")
# Files that exist only on a real ESP32 or only for the host are not copied.
HOST_ONLY = {"board_esp32.py"}


class Radio(Protocol):
    """Where the board's adverts go and where its scans listen (tools.vboard.air.Air)."""

    def broadcast(self, mac: str, rssi: int, service_data: bytes) -> None: ...

    def hub_frames(self) -> list[tuple[str, bytes]]: ...


class BoardCrashed(RuntimeError):
    pass


@dataclass
class Advert:
    t_ms: int
    adv: bytes  # the complete legacy advertising payload

    @property
    def service_data(self) -> bytes:
        from protocols import bthome

        svc = bthome.service_data_from_advert(self.adv)
        assert svc is not None
        return svc


@dataclass
class _Edge:
    t_ms: int
    pin: str
    level: int


@dataclass
class VirtualBoard:
    """One simulated device. `config` becomes /config.json on its flash (None = missing)."""

    config: dict[str, Any] | None
    mac: str = "C0:FF:EE:00:00:01"
    battery_mv: int = 3000
    rssi: int = -60
    radio: Radio | None = None
    repeat_ms: int = 1000  # how often an active advert is re-sent into the air
    firmware_dir: Path = ROOT / "firmware"
    protocols_dir: Path = ROOT / "protocols"
    now_ms: int = 0
    adverts: list[Advert] = field(default_factory=list)
    indications: list[tuple[int, str]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    levels: dict[str, int] = field(default_factory=dict)
    is_charging: bool = False
    rtc: bytes = b""
    sleeping: bool = False
    halted: bool = False

    def __post_init__(self) -> None:
        self._edges: list[_Edge] = []
        self._pending: dict[str, Any] | None = None
        self._wake: tuple[str, str | None] = ("power_on", None)
        self._adv_active: bytes | None = None
        self._next_repeat = 0
        self._proc: subprocess.Popen[str] | None = None
        self._flash: str | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> VirtualBoard:
        self._flash = tempfile.mkdtemp(prefix="vboard-")
        flash = Path(self._flash)
        for src in self.firmware_dir.glob("*.py"):
            if src.name not in HOST_ONLY:
                shutil.copy(src, flash / src.name)
        (flash / "protocols").mkdir()
        for src in self.protocols_dir.glob("*.py"):
            shutil.copy(src, flash / "protocols" / src.name)
        if self.config is not None:
            (flash / "config.json").write_text(json.dumps(self.config))
        self._proc = subprocess.Popen(
            ["node", str(RUNNER), str(flash)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._run(self.now_ms)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            assert self._proc.stderr is not None
            self.log.extend(self._proc.stderr.read().splitlines())
            for f in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                if f is not None:
                    f.close()
            self._proc = None
        if self._flash:
            shutil.rmtree(self._flash, ignore_errors=True)
            self._flash = None

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the device-under-test interface ----------------------------------------------
    def set_pin(self, pin: str, level: int) -> None:
        """Apply a stimulus now and let the device react to it."""
        self.schedule(self.now_ms, pin, level)
        self._run(self.now_ms)

    def schedule(self, t_ms: int, pin: str, level: int) -> None:
        self._edges.append(_Edge(t_ms, pin, level))
        self._edges.sort(key=lambda e: e.t_ms)

    def press(self, pin: str = "button", hold_ms: int = 200) -> None:
        self.set_pin(pin, 1)
        self.advance(hold_ms)
        self.set_pin(pin, 0)

    def advance(self, ms: int) -> None:
        self._run(self.now_ms + ms)

    def indication(self) -> str:
        return self.indications[-1][1] if self.indications else "off"

    def adverts_since(self, t_ms: int) -> list[Advert]:
        return [a for a in self.adverts if a.t_ms >= t_ms]

    # -- simulator core ----------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            assert self._proc.stderr is not None
            raise BoardCrashed("virtual board exited:\n" + self._proc.stderr.read())
        request: dict[str, Any] = json.loads(line)
        return request

    def _reply(self, value: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(value) + "\n")
        self._proc.stdin.flush()

    def _repeat_adverts(self, until: int) -> None:
        while self._adv_active is not None and self._next_repeat <= until:
            self._emit(self._adv_active)
            self._next_repeat += self.repeat_ms

    def _emit(self, adv: bytes) -> None:
        if self.radio is None:
            return
        from protocols import bthome

        svc = bthome.service_data_from_advert(adv)
        if svc is not None:
            self.radio.broadcast(self.mac, self.rssi, svc)

    def _set_time(self, t: int) -> None:
        self._repeat_adverts(t)
        self.now_ms = max(self.now_ms, t)

    def _apply_edges_until(self, t: int, watched: Iterable[str]) -> _Edge | None:
        """Apply due edges up to t; stop at and return the first one on a watched pin."""
        watched = set(watched)
        while self._edges and self._edges[0].t_ms <= t:
            edge = self._edges.pop(0)
            changed = self.levels.get(edge.pin, 0) != edge.level
            self.levels[edge.pin] = edge.level
            if changed and edge.pin in watched:
                return edge
        return None

    def _run(self, until: int) -> None:
        if self.halted:
            return
        while True:
            req = self._pending if self._pending is not None else self._read()
            self._pending = None
            op = req["op"]
            if op in ("wait", "deep_sleep"):
                ms = req.get("ms")
                deadline = math.inf if ms is None else self.now_ms + int(ms)
                horizon = min(deadline, until)
                edge = self._apply_edges_until(int(min(horizon, 2**62)), req.get("pins", []))
                if edge is not None:
                    self._set_time(edge.t_ms)
                    self._finish_wait(op, edge.pin)
                elif deadline <= until:
                    self._set_time(int(deadline))
                    self._finish_wait(op, None)
                else:
                    self._set_time(until)
                    self.sleeping = op == "deep_sleep"
                    self._pending = req
                    return
                continue
            if op == "halt":
                self.halted = True
                return
            if op == "crash":
                self.halted = True
                raise BoardCrashed(req.get("error", ""))
            self._reply(self._immediate(op, req))

    def _finish_wait(self, op: str, pin: str | None) -> None:
        self.sleeping = False
        if op == "deep_sleep":
            self._wake = ("pin", pin) if pin else ("timer", None)
            self._adv_active = None
        self._reply({"pin": pin, "t": self.now_ms})

    def _immediate(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        if op == "boot":
            kind, pin = self._wake
            return {"wake": kind, "pin": pin}
        if op == "ticks":
            return {"t": self.now_ms}
        if op == "pin":
            self._apply_edges_until(self.now_ms, ())
            return {"v": self.levels.get(req["name"], 0)}
        if op == "battery":
            return {"mv": self.battery_mv}
        if op == "charging":
            return {"v": self.is_charging}
        if op == "adv":
            if req["data"] is None:
                self._adv_active = None
            else:
                adv = bytes.fromhex(req["data"])
                self.adverts.append(Advert(self.now_ms, adv))
                self._adv_active = adv
                self._emit(adv)
                self._next_repeat = self.now_ms + self.repeat_ms
            return {}
        if op == "scan":
            frames = self.radio.hub_frames() if self.radio is not None else []
            self._set_time(self.now_ms + int(req["ms"]))
            return {"adverts": [[m.replace(":", ""), d.hex()] for m, d in frames]}
        if op == "indicate":
            self.indications.append((self.now_ms, req["pattern"]))
            return {}
        if op == "rtc":
            if "data" in req:
                self.rtc = bytes.fromhex(req["data"])
            return {"data": self.rtc.hex()}
        if op == "mac":
            return {"mac": self.mac.replace(":", "")}
        if op == "aes":
            enc = Cipher(algorithms.AES(bytes.fromhex(req["key"])), modes.ECB()).encryptor()
            return {"out": (enc.update(bytes.fromhex(req["block"])) + enc.finalize()).hex()}
        raise BoardCrashed(f"unknown board call {op!r}")


def node_available() -> bool:
    return shutil.which("node") is not None and (
        ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
    ).exists()


__all__ = ["VirtualBoard", "Advert", "BoardCrashed", "node_available"]
