"""The virtual radio medium between virtual boards and a hub's virtual radio.

A Unix datagram socket stands in for the 2.4 GHz band: boards' adverts are sent to every hub
that said `listen`; frames a hub transmits (acknowledgements to devices) are kept for the
boards' scans. One JSON object per datagram, the same fields a BLE scanner reports.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any


class Air:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._listeners: set[str] = set()
        self._hub_frames: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True, name="air")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, addr = self._sock.recvfrom(4096)
            except OSError:
                return
            try:
                msg = json.loads(data)
                op = msg.get("op")
                if op == "listen" and addr:
                    with self._lock:
                        self._listeners.add(addr)
                elif op == "tx":
                    with self._lock:
                        self._hub_frames[msg["mac"]] = (time.monotonic(), bytes.fromhex(msg["data"]))
            except (ValueError, KeyError, TypeError):
                continue  # the air carries garbage too; ignore it as a radio would

    def wait_for_listener(self, timeout: float = 30.0, proc: Any = None) -> None:
        """Until a hub listens; with `proc` (the hub's Popen), fail at once if it exits.
        Generous by default: a hub's start on a loaded 2-core machine can take seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._listeners:
                    return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the hub exited ({proc.returncode}) before listening")
            time.sleep(0.01)
        raise TimeoutError("no hub is listening on the virtual air")

    def broadcast(self, mac: str, rssi: int, service_data: bytes) -> None:
        frame = json.dumps(
            {"mac": mac, "rssi": rssi, "uuid": "fcd2", "data": service_data.hex()}
        ).encode()
        with self._lock:
            listeners = list(self._listeners)
        for addr in listeners:
            try:
                self._sock.sendto(frame, addr)
            except OSError:
                with self._lock:  # that hub is gone
                    self._listeners.discard(addr)

    def send_raw(self, frame: bytes) -> None:
        """For tests: put arbitrary bytes on the air (malformed or forged frames)."""
        with self._lock:
            listeners = list(self._listeners)
        for addr in listeners:
            self._sock.sendto(frame, addr)

    def hub_frames(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(mac, data) for mac, (_, data) in self._hub_frames.items()]

    def close(self) -> None:
        self._stop = True
        self._sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
