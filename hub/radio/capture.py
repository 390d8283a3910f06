"""Recording what the radio heard, and playing a recording back as the hub's radio.

A capture file is JSON lines, one advert per line, in the order received:
  {"t": 1764171234.512, "mac": "C0:FF:EE:00:00:01", "rssi": -60, "uuid": "fcd2", "data": "45..."}
t is the hub clock (epoch seconds); data is the BTHome service data after the UUID, hex.
It holds only what was on the air (encrypted adverts stay encrypted), but it still shows
when a home's devices were active: it is created readable by its owner only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from hub.clock import Clock
from hub.radio.scanner import Advert, AdvertCallback
from hub.tasks import cancel_and_wait

log = logging.getLogger(__name__)

UUID = "fcd2"


def to_line(advert: Advert) -> str:
    return json.dumps(
        {"t": round(advert.received_at, 3), "mac": advert.mac, "rssi": advert.rssi,
         "uuid": UUID, "data": advert.service_data.hex()},
        separators=(",", ":"),
    )


def parse_line(line: str) -> Advert:
    """One capture line -> Advert; ValueError naming the field for anything malformed."""
    try:
        rec = json.loads(line)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    if rec.get("uuid", UUID) != UUID:
        raise ValueError(f"uuid: {rec.get('uuid')!r} is not BTHome ({UUID})")
    for name, kind in (("t", (int, float)), ("mac", str), ("rssi", int), ("data", str)):
        if not isinstance(rec.get(name), kind) or isinstance(rec.get(name), bool):
            raise ValueError(f"{name}: missing or wrong type")
    try:
        data = bytes.fromhex(rec["data"])
    except ValueError:
        raise ValueError("data: not hex") from None
    return Advert(str(rec["mac"]).upper(), int(rec["rssi"]), data, float(rec["t"]))


def read(path: str | Path) -> Iterator[tuple[int, Advert | ValueError]]:
    """(line number, advert or the error for that line) for every non-blank line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, parse_line(line)
            except ValueError as e:
                yield n, e


MAX_BYTES = 20 * 1024 * 1024  # about 150 000 adverts; with the rotated file, 40 MB at most


class CaptureWriter:
    """Appends every advert to a capture file. Line-buffered (a crash loses at most the
    line being written), not fsync'd: a capture is a diagnostic, not a record of alarms.
    Bounded: past max_bytes the file becomes FILE.1 (replacing an older one) and a new FILE
    starts, so a forgotten --capture cannot fill the disk the outbox needs."""

    def __init__(self, path: str | Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = None
        self._size = 0
        self._open()
        self.written = 0

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._f = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        self._size = os.fstat(fd).st_size

    def write(self, advert: Advert) -> None:
        if self._f is None:
            return
        line = to_line(advert) + "\n"
        try:
            if self._size + len(line) > self.max_bytes and self._size > 0:
                self._f.close()
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                self._open()
            assert self._f is not None
            self._f.write(line)
            self._size += len(line)
            self.written += 1
        except OSError as e:  # a full disk must not stop the hub from handling alarms
            log.error("capture %s: write failed, capture stopped: %s", self.path, e)
            self.close()

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None


class ReplayScanner:
    """A Scanner that plays a capture file: adverts arrive in file order, stamped with the
    hub's clock. realtime=True keeps the recorded gaps between them (scaled by `speed`);
    otherwise they come as fast as the hub takes them. Bad lines are counted and skipped."""

    def __init__(
        self, path: str | Path, clock: Clock, realtime: bool = False, speed: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.realtime = realtime
        self.speed = speed
        self.malformed = 0
        self.delivered = 0
        self.transmitted: list[tuple[str, bytes]] = []
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, on_advert: AdvertCallback) -> None:
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: capture file to replay does not exist")
        self._task = asyncio.create_task(self._play(on_advert))

    async def _play(self, on_advert: AdvertCallback) -> None:
        prev: float | None = None
        try:
            for n, item in read(self.path):
                if isinstance(item, ValueError):
                    self.malformed += 1
                    log.warning("%s:%d: skipped: %s", self.path, n, item)
                    continue
                if self.realtime and prev is not None and item.received_at > prev:
                    await asyncio.sleep((item.received_at - prev) / self.speed)
                else:
                    await asyncio.sleep(0)  # let the hub's other work run between adverts
                prev = item.received_at
                on_advert(
                    Advert(item.mac, item.rssi, item.service_data, self.clock.now())
                )
                self.delivered += 1
            log.info("replay of %s finished: %d adverts, %d bad lines",
                     self.path, self.delivered, self.malformed)
        finally:
            self.done.set()

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        self._task = None

    async def transmit(self, mac: str, service_data: bytes) -> None:
        # No radio behind a recording: keep what the hub would have sent, for tests.
        self.transmitted.append((mac, service_data))
