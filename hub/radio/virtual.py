"""Scanner on the virtual air (tools/sim/vboard/air.py): a Unix datagram socket."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import tempfile

from hub.clock import Clock
from hub.radio.scanner import Advert, AdvertCallback

log = logging.getLogger(__name__)


class VirtualRadio:
    def __init__(self, air_path: str, clock: Clock, hub_mac: str = "B8:27:EB:00:00:01") -> None:
        self.air_path = air_path
        self.clock = clock
        self.hub_mac = hub_mac
        self._sock: socket.socket | None = None
        self._dir: str | None = None
        self.malformed = 0

    async def start(self, on_advert: AdvertCallback) -> None:
        self._dir = tempfile.mkdtemp(prefix="tryggheim-radio-")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(os.path.join(self._dir, "hub.sock"))
        sock.setblocking(False)
        self._sock = sock
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while True:
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                advert = self._parse(data)
                if advert is not None:
                    on_advert(advert)

        loop.add_reader(sock.fileno(), readable)
        await self._listen()

    async def _listen(self) -> None:
        # The air may start after the hub; keep saying hello until it hears us.
        assert self._sock is not None
        for _ in range(100):
            try:
                self._sock.sendto(b'{"op": "listen"}', self.air_path)
                return
            except (FileNotFoundError, ConnectionRefusedError):
                await asyncio.sleep(0.1)
        log.error("virtual air %s not reachable", self.air_path)

    def _parse(self, data: bytes) -> Advert | None:
        try:
            msg = json.loads(data)
            if msg.get("uuid") != "fcd2":
                return None
            return Advert(
                mac=str(msg["mac"]).upper(),
                rssi=int(msg["rssi"]),
                service_data=bytes.fromhex(msg["data"]),
                received_at=self.clock.now(),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            self.malformed += 1
            return None

    async def stop(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._dir is not None:
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)
            self._dir = None

    async def transmit(self, mac: str, service_data: bytes) -> None:
        if self._sock is None:
            return
        frame = json.dumps({"op": "tx", "mac": mac, "data": service_data.hex()}).encode()
        try:
            self._sock.sendto(frame, self.air_path)
        except OSError as e:
            log.warning("virtual air transmit failed: %s", e)
