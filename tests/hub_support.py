"""Helpers for the delivery and chaos tests (no tests here).

The hub under test is the real `hub.service.Hub` (outbox, group commit, MQTT link, receipts,
heartbeat) with a silent radio: the tests hand it messages through `Hub.emit`, the same call
the rules path uses, so no radio is needed. Run as a program it is a hub process that reads
commands on stdin and prints `stored <id>` once a message is durable (the moment the hub may
acknowledge to the resident's device) and `delivered <id>` when its receipt came back:

    python -m tests.hub_support CONFIG      stdin: "alarm ID" | "status ID" | "burst PREFIX N"
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from hub.config import settings as config
from hub.radio.scanner import AdvertCallback
from hub.rules.outgoing import Outgoing
from hub.service import Hub
from protocols import mqtt_schema, scaip

SITE = "t-site"
# The receipt key of the tests' hubs: a hub takes only receipts signed with its site's key.
RECEIPT_KEY = bytes(range(32))


def centre_keys(site: str) -> bytes:
    """ResponseCentre(receipt_keys=centre_keys): sign every site's receipts with RECEIPT_KEY."""
    return RECEIPT_KEY


def open_for_broker(path: Path) -> Path:
    """Started as root, Mosquitto drops to its own user and must still reach its files."""
    os.chmod(path, 0o755)
    for p in path.parents:
        if str(p).startswith("/tmp/") and not os.stat(p).st_mode & 0o001:
            os.chmod(p, os.stat(p).st_mode | 0o011)
    return path


def write_config(workdir: Path, port: int, host: str = "127.0.0.1", keepalive: int = 2,
                 window: int = 20, extra_mqtt: str = "", hub_id: str = "hub-t",
                 extra: str = "", receipt_key: bytes | None = RECEIPT_KEY) -> Path:
    """A hub config; the hub takes only receipts signed with `receipt_key` (None: no
    receipt_key_file, the default config)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "hub.toml"
    if receipt_key is not None:
        write_key(workdir / "receipt.key", receipt_key)
        extra_mqtt += 'receipt_key_file = "receipt.key"\n'
    path.write_text(
        f'[site]\nid = "{SITE}"\n\n[hub]\nid = "{hub_id}"\ndata_dir = "var"\n\n'
        f'[mqtt]\nhost = "{host}"\nport = {port}\nkeepalive = {keepalive}\nwindow = {window}\n'
        f"receipt_timeout_s = 0.5\nheartbeat_s = 1\n{extra_mqtt}\n"
        '[radio]\nkind = "virtual"\nair = "air.sock"\n' + extra
    )
    return path


def write_key(path: Path, key: bytes) -> Path:
    path.write_text(key.hex() + "\n")
    path.chmod(0o600)
    return path


def outgoing(kind: str, msg_id: str, pad: int = 0) -> Outgoing:
    """A message as the rules would make it (valid under protocols/schemas: the schema
    watch in tests/conftest.py checks everything the hub publishes)."""
    priority = {"alarm": mqtt_schema.PRIORITY_CRITICAL,
                "alarm_cleared": mqtt_schema.PRIORITY_CRITICAL,
                "technical_alarm": mqtt_schema.PRIORITY_TECHNICAL}.get(
                    kind, mqtt_schema.PRIORITY_INFO)
    fields: dict[str, Any] = {"pad": "x" * pad} if pad else {}
    type_, device = "test", None
    if kind in ("alarm", "alarm_cleared"):
        type_, device = "alarm_button", "pendant-1"
        fields.update(state="raised" if kind == "alarm" else "cleared", alarm_id=msg_id)
    elif kind == "technical_alarm":
        type_, device = "battery_low", "pendant-1"
        fields.update(state="raised")
    payload = mqtt_schema.message(kind, msg_id, SITE, device, type_, priority,
                                  "2026-01-01T00:00:00.000+01:00", **fields)
    scaip.annotate(payload, "pendant" if device else None)
    return Outgoing(kind, device, priority, payload)


class SilentRadio:
    async def start(self, on_advert: AdvertCallback) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def transmit(self, mac: str, service_data: bytes) -> None:
        pass


def make_hub(cfg_path: Path) -> Hub:
    hub = Hub(config.load(cfg_path))
    hub.scanner = SilentRadio()
    return hub


@contextlib.asynccontextmanager
async def running(hub: Hub) -> AsyncIterator[Hub]:
    stop = asyncio.Event()
    task = asyncio.create_task(hub.run(stop))
    try:
        yield hub
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def until(cond: Callable[[], Any], timeout: float = 20.0,
                what: str | Callable[[], str] = "") -> None:
    """Wait for a condition (polling the event loop), never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        await asyncio.sleep(0.01)


def wait_sync(cond: Callable[[], Any], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.01)


def _dump_state(hub: Hub) -> None:
    """SIGUSR1: every thread's and task's stack, and the link's view, to stderr."""
    import faulthandler
    import io

    faulthandler.dump_traceback(all_threads=True)
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(file=out)
    print(out.getvalue(), hub.link.status(), "unconfirmed", len(hub.link._unconfirmed),
          "inflight", len(hub.link._inflight), file=sys.stderr, flush=True)


async def _serve(cfg_path: Path) -> None:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR2, all_threads=True)  # works even if the loop is stuck
    hub = make_hub(cfg_path)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_state, hub)
    hub.on_delivered.append(lambda i, p: print(f"delivered {i}", flush=True))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def store(kind: str, msg_id: str) -> None:
        await hub.emit(outgoing(kind, msg_id))
        print(f"stored {msg_id}", flush=True)

    async with running(hub):
        print("ready", flush=True)
        while line := (await reader.readline()).decode().split():
            if line[0] == "burst":
                # One after another, each acknowledged once durable (like a resident
                # pressing again and again); group commit batches what overlaps.
                tasks = [asyncio.create_task(store("alarm", f"{line[1]}{i}"))
                         for i in range(int(line[2]))]
                await asyncio.gather(*tasks)
            else:
                await store(line[0], line[1])
        await asyncio.Event().wait()  # stdin closed: keep delivering until killed


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1])))
