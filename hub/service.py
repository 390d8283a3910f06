"""The running hub: radio -> decode -> rules -> outbox -> MQTT, wired in one event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.admin import sdnotify
from hub.admin.server import Admin
from hub.clock import Clock, ClockWatch, SystemClock, iso
from hub.config import keys
from hub.config.settings import Device, HubConfig
from hub.decode.counters import CounterStore
from hub.decode.decoder import AdvertDecoder, Report
from hub.delivery import home_assistant, receipt_key
from hub.delivery.acks import AckSender, AckSettings, AckStore
from hub.delivery.mqtt_link import MqttLink
from hub.delivery.outbox import Decision, GroupCommitter, Outbox
from hub.delivery.routing import route
from hub.radio.capture import CaptureWriter
from hub.radio.scanner import Advert, Scanner
from hub.rules.engine import RuleEngine
from hub.rules.outgoing import Outgoing, new_id
from hub.rules.store import RuleStateStore
from hub.store import DB_NAME, Database, Problem, import_legacy, set_aside
from protocols import mqtt_schema, scaip

log = logging.getLogger(__name__)


def chaos_hook() -> Callable[[str], None] | None:
    """tests/test_chaos.py's hold on a hub process it starts (None in production, where
    neither variable is set). TRYGGHEIM_TEST_SLOW_COMMIT_S: each commit is held that long
    before and after, so kills land in the windows around it. TRYGGHEIM_TEST_DAMAGE_TRIGGER:
    when that file appears, the next commit fails as SQLite fails on a damaged file (the
    file is removed: once), so damage found while the hub runs is counted from the press."""
    slow = float(os.environ.get("TRYGGHEIM_TEST_SLOW_COMMIT_S") or 0)
    trigger = os.environ.get("TRYGGHEIM_TEST_DAMAGE_TRIGGER")
    if not slow and not trigger:
        return None

    def hook(where: str) -> None:
        if slow:
            time.sleep(slow)
        if trigger and where == "before_commit" and os.path.exists(trigger):
            os.unlink(trigger)
            raise sqlite3.DatabaseError("database disk image is malformed (test trigger)")

    return hook


def make_scanner(cfg: HubConfig, clock: Clock) -> Scanner:
    if cfg.radio_kind == "virtual":
        from hub.radio.virtual import VirtualRadio

        return VirtualRadio(cfg.radio_air, clock)
    if cfg.radio_kind == "replay":
        from hub.radio.capture import ReplayScanner

        return ReplayScanner(cfg.radio_replay, clock)
    if cfg.radio_kind == "bleak":
        from hub.radio.bleak import BleakRadio, BleakSettings
        from hub.radio.watchdog import for_heartbeats

        rs = cfg.radio
        silent = cfg.rules.silent  # how often each device reports at the least
        heartbeats = [silent.limit_s(d.role, d.heartbeat_s) / silent.missed_heartbeats
                      for d in cfg.devices.values()]
        watchdog = for_heartbeats(heartbeats, rs.watchdog_s, rs.deaf_alarm_s)
        return BleakRadio(clock, BleakSettings(rs.adapter, rs.scan_mode, watchdog),
                          provisioned=cfg.device_by_mac())
    raise SystemExit(f"{cfg.path}: radio.kind {cfg.radio_kind!r} is not available yet")


class Hub:
    def __init__(
        self, cfg: HubConfig, clock: Clock | None = None, capture: Path | None = None
    ) -> None:
        # Every device gets its key; no key file or a readable one is a ConfigError here.
        if any(d.key is None for d in cfg.devices.values()):
            cfg = keys.attach(cfg)
        self.cfg = cfg
        self.clock = clock or SystemClock()
        # One database for everything a decision changes (hub/store.py): damage found at
        # open is set aside and reported (technical alarms once running), never fatal.
        try:
            self._open_stores()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:  # missed by the quick check
            path = cfg.data_dir / DB_NAME
            if getattr(self, "db", None) is not None:
                self.db.conn.close()
            aside = set_aside(path, str(e))
            self._open_stores()
            self.db.problems.insert(0, Problem("store_damaged", f"{path}: {e}; set aside as"
                                               f" {aside.name}"))
        self.decoder = AdvertDecoder(cfg.device_by_mac(), self.counters, self._radio_alert)
        self.capture = CaptureWriter(capture) if capture is not None else None
        self.clock_watch = ClockWatch(self.clock)  # steps and sync status (docs/ADMIN.md)
        self.committer = GroupCommitter(self.outbox, self.clock.now, self._store_problem)
        self.committer.hook = chaos_hook()
        self.link = MqttLink(
            receipt_key.ensure(cfg.mqtt, cfg.data_dir), cfg.hub_id, self.outbox,
            mqtt_schema.topic(cfg.site, "hub"),
            receipt_topic=mqtt_schema.topic(cfg.site, "receipt"), clock=self.clock,
            site=cfg.site, tz=cfg.timezone,
        )
        self.link.status_provider = self.status
        self.link.on_store_damage = self._store_damaged
        self.fatal = ""  # why the hub stopped by itself (run_forever exits non-zero)
        self._stop: asyncio.Event | None = None
        # Delivery hooks (docs/DELIVERY.md). on_stored: the message is durable on the hub
        # ("received"); on_delivered(msg_id, payload): the response centre's receipt came
        # back ("help is coming"). Both run in the event loop and must not block.
        self.on_stored: list[Callable[[Outgoing], None]] = []
        self.on_delivered = self.link.on_delivered
        # Every accepted report, after the rules saw it (`tryggheim watch`, hub/admin/watch.py).
        # Runs in the event loop and must not block.
        self.on_report: list[Callable[[Report], None]] = []
        self._last_seen: dict[str, float] = {}
        self._fill_alarm = False  # "buffer filling" raised and not yet re-armed
        self._live_sent: set[str] = set()  # held messages already sent live while disk failed
        self._write_alarm_at = float("-inf")
        self.scanner = make_scanner(cfg, self.clock)
        self._tasks: set[asyncio.Task[None]] = set()
        # "Received" / "help is coming" back to the resident's device (hub/delivery/acks.py).
        self.acks = AckSender(self.scanner.transmit,
                              AckSettings(max_connections=cfg.radio.ack_connections),
                              AckStore(self.db), cfg.devices, self.clock.now)
        self.on_delivered.append(self.acks.delivered)
        if hasattr(self.scanner, "on_health"):  # the real radio reports when it goes deaf
            self.scanner.on_health = self._radio_health
        # Admin CLI over the local control socket; reload, audit, event log (hub/admin/server.py).
        self.admin = Admin(self)
        # Optional Home Assistant discovery ([home_assistant]; hub/delivery/home_assistant.py).
        self.home_assistant = home_assistant.attach(lambda: self.cfg, lambda: self.rules,
                                                    self.clock.now)
        if self.home_assistant is not None:
            self.on_stored.append(self.home_assistant.changed_by)

    def _open_stores(self) -> None:
        cfg = self.cfg
        self.db = Database(cfg.data_dir / DB_NAME)
        import_legacy(self.db, cfg.data_dir)  # an older hub's counters and ack state
        self.counters = CounterStore(self.db)
        self.rules = RuleEngine(cfg.site, cfg.timezone, devices=cfg.devices, settings=cfg.rules)
        self.rule_store = RuleStateStore(self.db)
        self.rule_store.load_into(self.rules)  # pending timers resume where they were
        self.outbox = Outbox(self.db, budget_bytes=int(cfg.mqtt.outbox_budget_mb * 1e6))

    def on_advert(self, advert: Advert) -> None:
        if self.capture is not None:
            self.capture.write(advert)
        self.acks.heard(advert.mac, advert.service_data)  # a repeat: the ack did not arrive
        report = self.decoder.decode(advert)
        if report is None:
            return
        self._last_seen[report.device.id] = report.time
        outs = self.rules.on_report(report, self.clock.now())
        for out in outs:
            self.acks.track(out, report, advert.service_data)
        self._dispatch(outs)
        if self.home_assistant is not None:
            self.home_assistant.changed(report.device.id)
        for cb in list(self.on_report):
            try:
                cb(report)
            except Exception:
                log.exception("on_report listener failed")

    def _decision(self, outs: list[Outgoing]) -> tuple[Decision, list[Outgoing]]:
        """Everything one decision changed, taken now, before the next advert changes more:
        its messages (one per receiver), the counters accepted, the rule state after it and
        the acknowledgements it owes."""
        items: list[tuple[str, Outgoing]] = []
        for out in outs:
            dev = self.cfg.devices.get(out.device) if out.device else None
            scaip.annotate(out.payload, dev.role if dev else None)  # dty from the device's role
            items += route(self.cfg.site, self.cfg.routes, out)
        return Decision(items, self.counters.take(), self.rule_store.changes(self.rules),
                        self.acks.rows(outs)), outs

    def _dispatch(self, outs: list[Outgoing]) -> None:
        """Commit one decision: messages, counters, rule state and acknowledgement state in
        one transaction (hub/delivery/outbox.py `Outbox.commit`), queued in the order decisions were
        made. Only then is anything acknowledged."""
        decision, outs = self._decision(outs)
        if not decision:
            return
        fut = self.committer.submit(decision)
        if not outs:
            return
        task = asyncio.create_task(self._stored(fut, outs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stored(self, fut: asyncio.Future[None], outs: list[Outgoing]) -> None:
        await fut  # durable from here on
        for out in outs:
            log.info("stored %s %s from %s", out.kind, out.payload["type"], out.device)
        self.link.kick()
        for out in outs:
            self.acks.stored(out, persisted=True)  # "received" to the resident's device
            for cb in list(self.on_stored):
                try:
                    cb(out)
                except Exception:
                    log.exception("on_stored listener failed for %s", out.msg_id)
        self._check_fill()

    async def _tick_loop(self) -> None:
        """Timers (not back in bed, silent device, ...) are due-times in the rule state; the
        engine fires those that are due at the injected clock's now."""
        while True:
            try:
                now = self.clock.now()
                outs = self.clock_watch.check(self.rules, now)  # before the timers
                self._dispatch(outs + self.rules.tick(now))
            except Exception:
                log.exception("rule tick failed")
            await asyncio.sleep(1.0)

    async def emit(self, out: Outgoing) -> None:
        """Store one message (with whatever state changed since the last decision); returns
        once it is durable and acknowledged."""
        decision, outs = self._decision([out])
        await self._stored(self.committer.submit(decision), outs)

    # -- the outbox watching itself: technical alarms, heartbeat ----------------------------
    def _technical(self, type_: str, **fields: Any) -> Outgoing:
        payload = mqtt_schema.message(
            "technical_alarm", new_id(), self.cfg.site, None, type_,
            mqtt_schema.PRIORITY_TECHNICAL, iso(self.clock.now(), self.cfg.timezone),
            hub=self.cfg.hub_id, **fields,
        )
        return Outgoing("technical_alarm", None, mqtt_schema.PRIORITY_TECHNICAL, payload)

    def _radio_alert(self, device: Device, type_: str, detail: dict[str, Any]) -> None:
        # The decoder found this device's adverts refused (replayed or not authentic): its
        # alarms may not be getting through. Someone must look (hub/decode/decoder.py).
        payload = mqtt_schema.message(
            "technical_alarm", new_id(), self.cfg.site, device.id, type_,
            mqtt_schema.PRIORITY_TECHNICAL, iso(self.clock.now(), self.cfg.timezone),
            state="raised", room=device.room, hub=self.cfg.hub_id, **detail,
        )
        log.warning("technical alarm %s for %s: %s", type_, device.id, detail)
        self._spawn(Outgoing("technical_alarm", device.id, mqtt_schema.PRIORITY_TECHNICAL,
                             payload))

    def _spawn(self, out: Outgoing) -> None:
        task = asyncio.create_task(self.emit(out))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _radio_health(self, state: str, detail: dict[str, Any]) -> None:
        # A hub that hears nothing cannot hear an alarm button: someone must come and look.
        self._spawn(self._technical(
            "radio_deaf", state="raised" if state == "deaf" else "cleared",
            adapter=detail.get("adapter"), reason=detail.get("reason"),
            last_heard=iso(float(detail["last_heard"]), self.cfg.timezone),
        ))

    def _check_fill(self) -> None:
        fill = self.outbox.fill()  # cheap: runs after every stored message
        if not self._fill_alarm and (fill >= 0.8 or self.outbox.dropped):
            st = self.outbox.stats()
            self._fill_alarm = True
            log.error("outbox %.0f%% of its budget, %d dropped", st.fill * 100, st.dropped)
            self._spawn(self._technical(
                "outbox_filling", fill=round(st.fill, 3), depth=st.depth,
                used_bytes=st.used_bytes, budget_bytes=st.budget_bytes, dropped=st.dropped,
            ))
        elif self._fill_alarm and fill < 0.6:
            self._fill_alarm = False  # re-armed: the next filling is news again

    def _store_damaged(self, why: str) -> None:
        """The database is damaged (SQLite says so while the hub runs): stop, so that the
        next start sets it aside and starts on a fresh one (systemd restarts the hub,
        hub/store.py found_damaged). Told to the centre live, best effort, first."""
        if self.fatal:
            return
        self.fatal = f"database damaged: {why}"
        self.db.found_damaged(why)
        tech = self._technical("store_damaged", state="raised", detail=self.fatal,
                               salvaged=0)
        self.link.publish_live(mqtt_schema.topic(self.cfg.site, tech.kind), tech.payload)
        if self._stop is not None:
            self._stop.set()

    def _store_problem(self, problem: str, detail: str, held: list[tuple[str, Outgoing]]) -> None:
        if problem == "damaged":
            self._store_damaged(detail)
            return
        if problem == "disk_full":
            # Stored thanks to the reserve; say so while there is still room to say it.
            self._spawn(self._technical("outbox_disk_full", detail=detail))
            return
        # Nothing can be stored. The messages wait in memory (not acknowledged); meanwhile
        # send them and the news live, best effort, once each.
        now = self.clock.now()
        if now - self._write_alarm_at >= 60:
            self._write_alarm_at = now
            tech = self._technical("outbox_write_failed", detail=detail, held=len(held))
            self.link.publish_live(mqtt_schema.topic(self.cfg.site, tech.kind), tech.payload)
        for topic, out in held:
            if out.msg_id not in self._live_sent and self.link.publish_live(topic, out.payload):
                self._live_sent.add(out.msg_id)

    def status(self) -> dict[str, Any]:
        """The hub heartbeat (retained on the hub topic): outbox depth and device summary."""
        st = self.outbox.stats()
        now = self.clock.now()
        return {
            "hub": self.cfg.hub_id,
            "time": iso(now, self.cfg.timezone),
            # Changes only when the database is replaced; `new`: this run started on a new,
            # empty one (expected once, at installation; else stored messages may be lost).
            "store": {"generation": self.db.generation, "new": self.db.created},
            "outbox": {
                "depth": st.depth, "awaiting_receipt": st.awaiting_receipt,
                "used_bytes": st.used_bytes, "budget_bytes": st.budget_bytes,
                "dropped": st.dropped, "unstored": self.committer.waiting,
                "republished": self.link.republished, "rejected": self.link.rejected,
            },
            "devices": {
                "configured": len(self.cfg.devices),
                "heard": len(self._last_seen),
                "silent_s": {
                    d: round(now - self._last_seen[d]) if d in self._last_seen else None
                    for d in sorted(self.cfg.devices)
                },
            },
            "radio": self.radio_status(detail=False),
        }

    def radio_status(self, detail: bool = True) -> dict[str, Any]:
        """Scan mode (passive/active), watchdog counts; with detail, RSSI per device."""
        get = getattr(self.scanner, "status", None)
        st: dict[str, Any] = get() if get is not None else {"kind": self.cfg.radio_kind}
        if not detail:
            st.pop("signal", None)
        st["acks"] = dict(self.acks.stats)
        return st

    def _store_opened(self) -> None:
        """What opening the database found (damaged and set aside, missing): raised now that
        the outbox can carry it."""
        for p in self.db.problems:
            self._spawn(self._technical(p.type, state="raised", detail=p.detail,
                                        salvaged=self.outbox.salvaged))
        self.db.problems.clear()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.committer.start()
        self._store_opened()
        self.acks.start()
        self.link.start()
        self.link.kick()  # whatever a previous run left undelivered goes first
        await self.scanner.start(self.on_advert)
        ticker = asyncio.create_task(self._tick_loop(), name="rule-tick")
        await self.admin.start()
        if self.home_assistant is not None:
            self.home_assistant.start()
        log.info("hub %s running for site %s", self.cfg.hub_id, self.cfg.site)
        watchdog = sdnotify.start(self)  # systemd: READY=1; pings while the hub progresses
        try:
            await stop.wait()
        finally:
            await sdnotify.stop(watchdog)
            ticker.cancel()
            if self.home_assistant is not None:
                await self.home_assistant.stop()
            await self.admin.stop()
            await self.scanner.stop()
            await self.acks.close()
            await self.link.stop()
            await self.committer.stop()
            self.outbox.close()
            self.counters.close()
            self.db.close()
            log.info("adverts: %s", dict(self.decoder.stats))
            if self.capture is not None:
                self.capture.close()


def run_forever(cfg: HubConfig, capture: Path | None = None) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        hub = Hub(cfg, capture=capture)
        # `systemctl reload` / kill -HUP: re-read the configuration, all or nothing.
        loop.add_signal_handler(signal.SIGHUP, hub.admin.reload_from_signal)
        await hub.run(stop)
        if hub.fatal:
            raise SystemExit(f"tryggheim: stopped: {hub.fatal}")

    asyncio.run(main())
