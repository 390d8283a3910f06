"""systemd's notify protocol for the hub: READY=1 once it runs, and a watchdog that is pinged
only while the hub makes progress, so that systemd restarts a hub that hangs.

The unit (packaging/tryggheim.service) has `Type=notify` and `WatchdogSec=`; systemd passes
NOTIFY_SOCKET and WATCHDOG_USEC. Without them (tests, `make demo`) nothing is sent.

What counts as progress (each part has its own limit, see `hub_checks`):
- the event loop: the pings are sent from it, so a blocked loop sends none;
- the radio: adverts from the home's devices keep arriving. A quiet home is not a hung hub,
  so the limit is twice the radio's own deaf-alarm threshold: by then the radio watchdog has
  restarted the scan, power-cycled the adapter and raised `radio_deaf`; a restart of the hub
  (new D-Bus connections) is the last thing left to try;
- the MQTT link: paho's network thread keeps working: packets to and from the broker, or
  reconnection attempts while the broker is away. A broker outage is not a hung hub (the
  outbox keeps everything); a dead or stuck network thread is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.admin.running import RunningHub

log = logging.getLogger(__name__)


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification (e.g. "READY=1") to systemd; False when not run by systemd."""
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            # Never block the event loop on a busy systemd: a ping dropped is sent again
            # at the next interval.
            s.setblocking(False)
            s.connect(addr)
            s.send(message.encode())
    except BlockingIOError:
        log.debug("systemd's notify socket is full; %s dropped", message.split("=")[0])
        return False
    except OSError as e:
        log.warning("cannot notify systemd at %s: %s", addr, e)
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """How often to ping: half of WatchdogSec (as sd_watchdog_enabled(3) advises), or None
    when no watchdog is set for this process."""
    e = os.environ if env is None else env
    try:
        usec = int(e.get("WATCHDOG_USEC", "0"))
        pid = int(e.get("WATCHDOG_PID", "0"))
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2e6


@dataclass
class Check:
    """A part of the hub that must make progress: `probe()` returns a value that changes
    whenever it does (a counter); unchanged for longer than `limit_s` means stuck."""

    name: str
    limit_s: float
    probe: Callable[[], object]


class Watchdog:
    def __init__(self, checks: list[Check], interval_s: float,
                 send: Callable[[str], object] = notify,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.checks = checks
        self.interval_s = interval_s
        self.send = send
        self.now = now
        t = now()
        self._seen: dict[str, tuple[object, float]] = {c.name: (c.probe(), t) for c in checks}
        self._stuck: list[str] = []
        self.pings = 0

    def stuck(self) -> list[str]:
        """The parts that made no progress within their limit (and notes the others')."""
        t = self.now()
        out = []
        for c in self.checks:
            value = c.probe()
            last_value, since = self._seen[c.name]
            if value != last_value:
                self._seen[c.name] = (value, t)
            elif t - since > c.limit_s:
                out.append(c.name)
        return out

    def step(self) -> bool:
        """One round: ping if every part made progress. True if it pinged."""
        stuck = self.stuck()
        if stuck != self._stuck:
            if stuck:
                log.error("watchdog: no progress from %s; not pinging systemd, which will "
                          "restart the hub", ", ".join(stuck))
                self.send(f"STATUS=no progress from {', '.join(stuck)}")
            else:
                log.info("watchdog: every part makes progress again")
                self.send("STATUS=running")
            self._stuck = stuck
        if stuck:
            return False
        self.send("WATCHDOG=1")
        self.pings += 1
        return True

    async def run(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(self.interval_s)


class PahoActivity:
    """Counts the calls of paho's on_log, made for every packet and every reconnection try,
    on whichever client the link uses now (the link may replace a stalled client)."""

    def __init__(self, client: Callable[[], Any]) -> None:
        self.client = client
        self.n = 0
        self._hooked: Any = None

    def probe(self) -> int:
        c = self.client()
        if c is not self._hooked:
            before = c.on_log  # whoever else listens keeps hearing

            def hook(*args: Any) -> None:
                self.n += 1
                if before is not None:
                    before(*args)

            c.on_log = hook
            self._hooked = c
            self.n += 1  # a new client is progress of its own
        return self.n


def mqtt_check(client: Callable[[], Any], keepalive_s: float, reconnect_cap_s: float) -> Check:
    """Progress of paho's network thread, seen through its log callback."""
    activity = PahoActivity(client)
    activity.probe()
    # Connected: a PINGREQ at least every keepalive. Away: a try at least every back-off cap.
    return Check("mqtt", max(90.0, 3 * keepalive_s, 3 * reconnect_cap_s), activity.probe)


def radio_silence_limit_s(hub: RunningHub) -> float:
    from hub.radio.watchdog import for_heartbeats

    cfg = hub.cfg
    silent = cfg.rules.silent
    heartbeats = [silent.limit_s(d.role, d.heartbeat_s) / silent.missed_heartbeats
                  for d in cfg.devices.values()]
    deaf = for_heartbeats(heartbeats, cfg.radio.watchdog_s, cfg.radio.deaf_alarm_s)
    return 2 * deaf.deaf_alarm_s


def hub_checks(hub: RunningHub) -> list[Check]:
    from hub.delivery.mqtt_link import RECONNECT_CAP_S

    return [mqtt_check(lambda: hub.link.client, hub.cfg.mqtt.keepalive, RECONNECT_CAP_S),
            Check("radio", radio_silence_limit_s(hub), lambda: radio_progress(hub))]


def radio_progress(hub: RunningHub) -> object:
    """Changes with every advert from the home's devices. Read through `hub` each time: a
    reload replaces the decoder and the config. With no device configured no advert reaches
    the hub, and silence says nothing about the radio."""
    if not hub.cfg.devices:
        return object()  # always new: never stuck
    return (id(hub.decoder), sum(hub.decoder.stats.values()))


def start(hub: RunningHub) -> asyncio.Task[None] | None:
    """Tell systemd the hub runs and, with a watchdog set, ping it while the hub makes
    progress. Returns the pinging task (None without a watchdog)."""
    notify("READY=1\nSTATUS=running")
    interval = watchdog_interval_s()
    if interval is None:
        return None
    dog = Watchdog(hub_checks(hub), interval)
    return asyncio.create_task(dog.run(), name="systemd-watchdog")


async def stop(task: asyncio.Task[None] | None) -> None:
    notify("STOPPING=1")
    if task is not None:
        from hub.tasks import cancel_and_wait

        await cancel_and_wait([task])
