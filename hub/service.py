"""The running hub: radio -> decode -> rules -> outbox -> MQTT, wired in one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal

from hub.clock import Clock, SystemClock
from hub.config import HubConfig
from hub.decode import AdvertDecoder
from hub.mqtt_link import MqttLink
from hub.outbox import GroupCommitter, Outbox
from hub.radio import Advert, Scanner
from hub.rules import Outgoing, RuleEngine
from protocols import mqtt_schema

log = logging.getLogger(__name__)


def make_scanner(cfg: HubConfig, clock: Clock) -> Scanner:
    if cfg.radio_kind == "virtual":
        from hub.radio_virtual import VirtualRadio

        return VirtualRadio(cfg.radio_air, clock)
    raise SystemExit(f"{cfg.path}: radio.kind {cfg.radio_kind!r} is not available yet")


class Hub:
    def __init__(self, cfg: HubConfig, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.decoder = AdvertDecoder(cfg.device_by_mac())
        self.rules = RuleEngine(cfg.site, cfg.timezone)
        self.outbox = Outbox(cfg.data_dir / "outbox.sqlite")
        self.committer = GroupCommitter(self.outbox, self.clock.now)
        self.link = MqttLink(
            cfg.mqtt, cfg.hub_id, self.outbox, mqtt_schema.topic(cfg.site, "hub")
        )
        self.scanner = make_scanner(cfg, self.clock)
        self._tasks: set[asyncio.Task[None]] = set()

    def on_advert(self, advert: Advert) -> None:
        report = self.decoder.decode(advert)
        if report is None:
            return
        for out in self.rules.on_report(report, self.clock.now()):
            task = asyncio.create_task(self.emit(out))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def emit(self, out: Outgoing) -> None:
        topic = mqtt_schema.topic(self.cfg.site, out.kind)
        await self.committer.append(topic, out)  # durable from here on
        log.info("stored %s %s from %s", out.kind, out.payload["type"], out.device)
        self.link.kick()

    async def run(self, stop: asyncio.Event) -> None:
        self.committer.start()
        self.link.start()
        self.link.kick()  # whatever a previous run left undelivered goes first
        await self.scanner.start(self.on_advert)
        log.info("hub %s running for site %s", self.cfg.hub_id, self.cfg.site)
        try:
            await stop.wait()
        finally:
            await self.scanner.stop()
            await self.link.stop()
            await self.committer.stop()
            self.outbox.close()


def run_forever(cfg: HubConfig) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Hub(cfg).run(stop)

    asyncio.run(main())
