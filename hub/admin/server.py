"""Hub-side admin: the commands behind `tryggheim status/devices/alarms/events/outbox/
test-alarm/reload/mute/ack`, served on the control socket (hub/admin/control.py).

Reload is all or nothing: the new configuration is loaded and checked completely (keys too)
before anything changes; if it is not valid the hub keeps running on the old one and says
why (log, a status message, the audit log, and the CLI's exit code). Changes that need a
restart (site, hub, MQTT, radio, admin) are refused by reload rather than half-applied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.admin.audit import AuditLog, Who, diff, read_sources
from hub.admin.control import ControlError, ControlServer, Request, aiter_queue
from hub.admin.eventlog import EventLog
from hub.clock import iso
from hub.config import keys, models
from hub.config import settings as config
from hub.config.settings import HubConfig
from hub.decode.decoder import AdvertDecoder
from hub.delivery.commands import CommandListener
from hub.rules.outgoing import Outgoing
from protocols import mqtt_schema

if TYPE_CHECKING:
    from hub.admin.running import RunningHub

log = logging.getLogger(__name__)

# Sections a reload cannot apply (they need new connections or a new radio): a change
# there is refused by reload, with the advice to restart.
RESTART_FIELDS = ("site", "timezone", "hub_id", "data_dir", "mqtt", "radio_kind", "radio_air",
                  "radio_replay", "radio", "keys_file", "admin", "home_assistant")
FAILURE_REASONS = ("bad_mic", "plaintext", "replay", "malformed")


def socket_path(cfg: HubConfig) -> Path:
    return cfg.data_dir / cfg.admin.socket


class Admin:
    def __init__(self, hub: RunningHub) -> None:
        self.hub = hub
        cfg = hub.cfg
        self.audit = AuditLog(cfg.data_dir / "audit.jsonl", cfg.timezone,
                              cfg.retention.audit_days)
        self.events = EventLog(cfg.data_dir / "events.jsonl", cfg.timezone,
                               cfg.retention.events_days)
        self.applied = read_sources(cfg.sources)
        self._audit_startup(hub.clock.now())
        self.server = ControlServer(socket_path(cfg), cfg.admin.group, self.handle)
        self.started = hub.clock.now()
        self.last_reload: dict[str, Any] | None = None
        self.last_delivery: float | None = None
        self._delivered_waiters: dict[str, asyncio.Future[float]] = {}
        self._prune_task: asyncio.Task[None] | None = None
        self.commands: CommandListener | None = None
        hub.on_stored.append(self.events.outgoing)
        hub.on_delivered.append(self._delivered)

    def _audit_startup(self, now: float) -> None:
        """A configuration changed while the hub was stopped is audited too (who edited it
        is unknown here; the SSH log has it), so no applied change goes unrecorded."""
        path = self.hub.cfg.data_dir / "applied_config.json"
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError):
            before = None
        if isinstance(before, dict) and before != self.applied:
            who = Who(None, "unknown (edited while the hub was stopped)", None, via="restart")
            self.audit.record(now, who, "start", "applied", diff=diff(before, self.applied))
        if before != self.applied:
            self._remember_applied()

    def _remember_applied(self) -> None:
        path = self.hub.cfg.data_dir / "applied_config.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.applied, ensure_ascii=False))
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)
        except OSError as e:
            log.error("cannot record the applied configuration: %s", e)

    async def start(self) -> None:
        try:
            await self.server.start()
        except OSError as e:  # e.g. a path too long for a Unix socket: alarms matter more
            log.error("admin control socket %s not available: %s", self.server.path, e)
        if self.hub.cfg.admin.remote_commands:
            self.commands = CommandListener(self.hub.link.client, self.hub.cfg.site,
                                            self.remote_command)
            self.commands.attach()
        self._prune_task = asyncio.create_task(self._prune_hourly(), name="log-retention")

    async def stop(self) -> None:
        if self._prune_task is not None:
            self._prune_task.cancel()
        await self.server.stop()

    async def _prune_hourly(self) -> None:
        while True:
            now = self.hub.clock.now()
            try:
                self.events.prune(now)
                self.audit.prune(now)
            except OSError as e:
                log.error("log retention: %s", e)
            await asyncio.sleep(3600)

    def _delivered(self, msg_id: str, payload: dict[str, Any]) -> None:
        now = self.hub.clock.now()
        self.last_delivery = now
        fut = self._delivered_waiters.pop(msg_id, None)
        if fut is not None and not fut.done():
            fut.set_result(now)

    # -- dispatch ------------------------------------------------------------------------------
    async def handle(self, req: Request) -> Any:
        who = Who.from_peer(req.peer.uid, req.claimed_user)
        a = req.args
        match req.cmd:
            case "status":
                return self.status()
            case "devices":
                return self.devices()
            case "alarms":
                return self.hub.rules.active_alarms(self.hub.clock.now())
            case "events":
                return self.events_cmd(int(a.get("n", 20)), bool(a.get("follow")))
            case "outbox":
                return await asyncio.to_thread(self.outbox)
            case "test-alarm":
                return await self.test_alarm(who, float(a.get("wait_s", 0)))
            case "reload":
                return self.reload(who)
            case "mute":
                return self.mute(who, float(a.get("minutes", 60)), a.get("door"))
            case "ack":
                return self.ack(who, str(a.get("alarm_id", "")))
            case "audit":
                return self.audit.entries()[-int(a.get("n", 20)):]
            case "watch":
                from hub.admin import watch

                return watch.stream(self.hub, max(0.2, float(a.get("interval_s", 1.0))))
        raise ControlError(f"unknown command {req.cmd!r}")

    # -- views ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        hub = self.hub
        now = hub.clock.now()
        st = hub.status()
        st.update(
            site=hub.cfg.site,
            uptime_s=round(now - self.started),
            config=str(hub.cfg.root or hub.cfg.path),
            mqtt=hub.link.status(),
            active_alarms=len(hub.rules.active_alarms(now)),
            last_reload=self.last_reload,
            rules={"bed_exit": len(hub.cfg.rules.bed_exit),
                   "wandering": len(hub.cfg.rules.wandering),
                   "inactivity": len(hub.cfg.rules.inactivity)},
            home_assistant=hub.home_assistant.status() if hub.home_assistant else None,
        )
        return st

    def devices(self) -> list[dict[str, Any]]:
        hub = self.hub
        now = hub.clock.now()
        eng = hub.rules
        active = {a["cause"] for a in eng.active_alarms(now)}
        out = []
        for dev in sorted(hub.cfg.devices.values(), key=lambda d: d.id):
            seen = eng.seen.get(dev.id)
            values = eng.last_values.get(dev.id, {})
            failures = {r: hub.decoder.device_stats.get((dev.id, r), 0) for r in FAILURE_REASONS}
            out.append({
                "id": dev.id, "role": dev.role, "room": dev.room, "mac": dev.mac,
                "last_seen": iso(seen[0], hub.cfg.timezone) if seen else None,
                "age_s": round(now - seen[0]) if seen else None,
                "rssi": seen[1] if seen else None,
                "battery": values.get("battery"),
                "charging": values.get("battery_charging"),
                "decrypt_failures": failures["bad_mic"] + failures["plaintext"],
                "dropped": failures,
                "silent": f"device_silent:{dev.id}" in active,
                "model": dev.model or None, "note": models.note(dev),
            })
        return out

    def events_cmd(self, n: int, follow: bool) -> Any:
        backlog = self.events.tail(n)
        if not follow:
            return backlog
        q = self.events.follow()

        async def gen() -> AsyncIterator[dict[str, Any]]:
            try:
                async for item in aiter_queue(q, backlog):
                    yield item
            finally:
                self.events.unfollow(q)

        return gen()

    def outbox(self) -> dict[str, Any]:
        hub = self.hub
        st = hub.outbox.stats()
        oldest = None
        try:  # a read-only look of our own: the outbox's writer is not disturbed
            db = sqlite3.connect(f"file:{hub.outbox.path}?mode=ro", uri=True, timeout=2)
            try:
                (t,) = db.execute("SELECT MIN(created) FROM outbox").fetchone()
            finally:
                db.close()
            oldest = None if t is None else float(t)
        except sqlite3.Error as e:
            log.debug("outbox read: %s", e)
        now = hub.clock.now()
        tz = hub.cfg.timezone
        return {
            "depth": st.depth, "awaiting_receipt": st.awaiting_receipt,
            "used_bytes": st.used_bytes, "budget_bytes": st.budget_bytes, "dropped": st.dropped,
            "oldest_undelivered": iso(oldest, tz) if oldest is not None else None,
            "oldest_age_s": round(now - oldest) if oldest is not None else None,
            "last_delivery": iso(self.last_delivery, tz) if self.last_delivery else None,
            "mqtt": hub.link.status(),
        }

    # -- actions (audited) ---------------------------------------------------------------------
    def _status_event(self, type_: str, **fields: Any) -> None:
        hub = self.hub
        now = hub.clock.now()
        payload = mqtt_schema.message("status", hub.rules.new_id(), hub.cfg.site, None, type_,
                                      mqtt_schema.PRIORITY_INFO, iso(now, hub.cfg.timezone),
                                      hub=hub.cfg.hub_id, **fields)
        hub._dispatch([Outgoing("status", None, mqtt_schema.PRIORITY_INFO, payload)])

    async def test_alarm(self, who: Who, wait_s: float) -> dict[str, Any]:
        hub = self.hub
        now = hub.clock.now()
        outs = hub.rules.test_alarm(now, who.name)
        msg_id = outs[0].msg_id
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._delivered_waiters[msg_id] = fut
        self.audit.record(now, who, "test-alarm", "sent", id=msg_id)
        await asyncio.gather(*(hub.emit(o) for o in outs))  # stored durably before we answer
        result: dict[str, Any] = {"id": msg_id, "stored": True, "delivered": False}
        if wait_s > 0:
            try:
                t = await asyncio.wait_for(fut, wait_s)
                result.update(delivered=True, seconds=round(t - now, 3))
            except TimeoutError:
                pass
        self._delivered_waiters.pop(msg_id, None)
        return result

    def mute(self, who: Who, minutes: float, door: str | None) -> dict[str, Any]:
        hub = self.hub
        if not hub.cfg.rules.wandering:
            raise ControlError("no wandering rule is configured")
        if not 0 < minutes <= 24 * 60:
            raise ControlError("minutes must be between 1 and 1440")
        now = hub.clock.now()
        outs = hub.rules.mute_wandering(now, minutes, who.name, door)
        if not outs:
            raise ControlError(f"no wandering rule for door {door!r}")
        hub._dispatch(outs)
        self.audit.record(now, who, "mute", "applied", minutes=minutes, door=door)
        return {"muted": [o.device for o in outs], "until": outs[0].payload["until"]}

    def ack(self, who: Who, alarm_id: str) -> dict[str, Any]:
        now = self.hub.clock.now()
        outs = self.hub.rules.acknowledge(alarm_id, now, who.name)
        if not outs:
            raise ControlError(f"no active, unacknowledged alarm with id {alarm_id!r}")
        self.hub._dispatch(outs)
        self.audit.record(now, who, "ack", "applied", alarm_id=alarm_id)
        return {"acknowledged": alarm_id}

    def reload(self, who: Who) -> dict[str, Any]:
        hub = self.hub
        now = hub.clock.now()
        root = hub.cfg.root or hub.cfg.path
        old = hub.cfg
        try:
            new = keys.attach(config.load(root))
            moved = [f for f in RESTART_FIELDS if getattr(new, f) != getattr(old, f)]
            if moved:
                raise config.ConfigError([f"{root}: {', '.join(moved)}: changed; these take"
                                          " effect only after a restart (systemctl restart"
                                          " tryggheim)"])
        except config.ConfigError as e:
            log.error("reload refused, still running the previous configuration:\n%s", e)
            self.last_reload = {"time": iso(now, old.timezone), "by": who.name,
                                "result": "rejected", "problems": e.problems}
            self.audit.record(now, who, "reload", "rejected", problems=e.problems)
            self.events.note(now, "config_rejected", by=who.name, problems=e.problems)
            self._status_event("config_rejected", by=who.name, problems=e.problems)
            raise ControlError("configuration not valid; the hub keeps running on the previous"
                               " one:\n" + "\n".join(e.problems)) from None
        texts = read_sources(new.sources)
        change = diff(self.applied, texts)
        if not change and new == old:
            self.last_reload = {"time": iso(now, old.timezone), "by": who.name,
                                "result": "unchanged"}
            return {"changed": False}
        # Apply: plain assignments with no await in between, so no advert or tick ever sees
        # half of the old configuration and half of the new one.
        engine, outs = hub.rules.reconfigured(new.devices, new.rules, now)
        if new.devices != old.devices:
            # A re-provisioned device starts its counter again under its new key.
            for dev_id, dev in new.devices.items():
                prev = old.devices.get(dev_id)
                if prev is not None and prev.key != dev.key:
                    hub.counters.reset(dev_id)
            hub.decoder = AdvertDecoder(new.device_by_mac(), hub.counters, hub.decoder.on_alert)
            if hasattr(hub.scanner, "provisioned") and hub.scanner.provisioned is not None:
                hub.scanner.provisioned = frozenset(new.device_by_mac())
        hub.rules = engine
        hub.cfg = new
        self.applied = texts
        self._remember_applied()
        self.audit.retention_days = new.retention.audit_days
        self.events.retention_days = new.retention.events_days
        hub._dispatch(outs)
        self.last_reload = {"time": iso(now, new.timezone), "by": who.name, "result": "applied"}
        self.audit.record(now, who, "reload", "applied", diff=change)
        self.events.note(now, "config_applied", by=who.name)
        self._status_event("config_applied", by=who.name, diff=change,
                           files=sorted({line[6:] for line in change.splitlines()
                                         if line.startswith("+++ b/")}))
        log.info("configuration reloaded by %s", who.name)
        return {"changed": True, "diff": change, "cleared": [o.msg_id for o in outs]}

    def remote_command(self, cmd: dict[str, Any]) -> None:
        """A command from the response centre (hub/delivery/commands.py): allowed per site,
        audited."""
        now = self.hub.clock.now()
        by = str(cmd.get("by") or "")[:60]
        who = Who(None, f"response centre{': ' + by if by else ''}", None, via="mqtt")
        name = str(cmd.get("command"))
        allowed = self.hub.cfg.admin.remote_commands
        if cmd.get("site") != self.hub.cfg.site or name not in allowed:
            why = ("for another site" if cmd.get("site") != self.hub.cfg.site
                   else f"{name!r} is not allowed for this site ([admin] remote_commands)")
            log.warning("refused a command from the response centre: %s", why)
            self.audit.record(now, who, f"remote {name}", "refused", reason=why,
                              id=cmd.get("id"))
            return
        try:
            if name == "mute":
                self.mute(who, float(cmd.get("minutes", 60)), cmd.get("door"))
            elif name == "ack":
                self.ack(who, str(cmd.get("alarm_id", "")))
        except (ControlError, ValueError, TypeError) as e:
            log.warning("command %s from the response centre failed: %s", name, e)
            self.audit.record(now, who, f"remote {name}", "failed", error=str(e),
                              id=cmd.get("id"))

    def reload_from_signal(self) -> None:
        import pwd

        try:
            self.reload(Who(None, pwd.getpwuid(os.getuid()).pw_name, None, via="SIGHUP"))
        except ControlError:
            pass  # already logged, audited and published
