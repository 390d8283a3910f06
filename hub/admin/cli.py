"""The admin subcommands of `tryggheim` (for hub admins over SSH): config check, reload,
status, devices, alarms, events, outbox, test-alarm, mute, ack, audit. Each takes --json.

All but `config check` talk to the running hub over its control socket (hub/admin/control.py);
the socket is found from the configuration (--config, $TRYGGHEIM_CONFIG, /etc/tryggheim)
or given directly with --socket.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hub.admin.control import ControlError, call, stream
from hub.config import settings as config

DEFAULT_CONFIG = "/etc/tryggheim"


def _config_path(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "config", None) or os.environ.get("TRYGGHEIM_CONFIG")
                or DEFAULT_CONFIG)


def _socket(args: argparse.Namespace) -> Path:
    """The control socket, found from [hub] data_dir and [admin] socket alone: a config that
    is being edited (and may be broken elsewhere) must not keep the admin from the hub."""
    if args.socket:
        return Path(args.socket)
    import tomllib

    root = _config_path(args)
    site = root / "site.toml" if root.is_dir() else root
    try:
        raw = tomllib.loads(site.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise config.ConfigError([f"{site}: {e}"]) from None
    hub = raw.get("hub", {}) if isinstance(raw.get("hub"), dict) else {}
    adm = raw.get("admin", {}) if isinstance(raw.get("admin"), dict) else {}
    data_dir = site.parent / str(hub.get("data_dir", "var"))
    return data_dir / str(adm.get("socket", "control.sock"))


def _out(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else human)


def _age(s: float | None) -> str:
    if s is None:
        return "never"
    s = int(s)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


def _table(rows: list[list[str]], header: list[str]) -> str:
    cols = [header] + rows
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cols)


# -- config check (no hub needed) -------------------------------------------------------------

def cmd_config_check(args: argparse.Namespace) -> int:
    from hub.config import keys

    path = Path(args.path) if args.path else _config_path(args)
    problems: list[str] = []
    notes: list[str] = []
    cfg = None
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        problems += e.problems
    if cfg is not None:
        if not cfg.keys_file.exists():
            problems.append(f"{cfg.keys_file}: missing (hub.keys_file): the hub will not start"
                            " without the devices' keys")
        elif os.access(cfg.keys_file, os.R_OK):
            try:
                keys.attach(cfg)
            except config.ConfigError as e:
                problems += e.problems
        else:
            notes.append(f"{cfg.keys_file}: not readable by you, keys not checked (try sudo)")
    if args.json:
        print(json.dumps({"ok": not problems, "problems": problems, "notes": notes}, indent=2))
    else:
        for p in problems:
            print(p)
        for n in notes:
            print(f"note: {n}")
        if not problems and cfg is not None:
            r = cfg.rules
            print(f"{path}: OK: site {cfg.site}, {len(cfg.devices)} devices, "
                  f"{len(r.bed_exit)} bed-exit, {len(r.wandering)} wandering, "
                  f"{len(r.inactivity)} inactivity rules, {len(cfg.routes)} extra routes")
        elif problems:
            print(f"{len(problems)} problem(s); nothing was changed", file=sys.stderr)
    return 1 if problems else 0


# -- commands to the running hub --------------------------------------------------------------

def _status_text(st: dict[str, Any]) -> str:
    mq = st.get("mqtt", {})
    ob = st.get("outbox", {})
    lines = [
        f"hub {st.get('hub')}  site {st.get('site')}  up {_age(st.get('uptime_s'))}",
        f"config        {st.get('config')}",
        f"mqtt          {'connected' if mq.get('connected') else 'NOT CONNECTED'}"
        + (f" ({mq.get('last_error')})" if mq.get("last_error") else ""),
        f"outbox        {ob.get('depth')} waiting, {ob.get('awaiting_receipt')} awaiting receipt",
        _radio_line(st.get("radio", {})),
        f"alarms        {st.get('active_alarms')} active",
        f"devices       {st.get('devices', {}).get('heard')} of "
        f"{st.get('devices', {}).get('configured')} heard",
    ]
    ha = st.get("home_assistant")
    if ha:
        lines.append(f"home assist.  {'connected' if ha.get('connected') else 'NOT CONNECTED'}"
                     f" to {ha.get('broker')}, publishing {', '.join(ha.get('publish', []))}")
    lr = st.get("last_reload")
    if lr:
        lines.append(f"last reload   {lr.get('time')} by {lr.get('by')}: {lr.get('result')}")
        lines += [f"  {p}" for p in lr.get("problems", [])]
    return "\n".join(lines)


def _radio_line(radio: dict[str, Any]) -> str:
    # What an admin checks first when devices go silent: is the hub itself hearing anything?
    parts = [str(radio.get("kind", "?"))]
    if radio.get("mode"):
        parts.append(f"{radio['mode']} scanning")
    if radio.get("deaf"):
        parts.append("DEAF: hears nothing")
    elif "scanning" in radio and not radio["scanning"]:
        parts.append("NOT SCANNING")
    return "radio         " + ", ".join(parts)


def _devices_text(devs: list[dict[str, Any]]) -> str:
    rows = [[d["id"], d["role"], d["room"] or "-", _age(d["age_s"]),
             "-" if d["battery"] is None else f"{d['battery']}%",
             "-" if d["rssi"] is None else f"{int(d['rssi'])} dBm",
             str(d["decrypt_failures"]),
             " ".join(x for x in ("SILENT" if d["silent"] else "", d.get("note") or "") if x)]
            for d in devs]
    return _table(rows, ["DEVICE", "ROLE", "ROOM", "SEEN", "BATTERY", "SIGNAL", "DECRYPT-FAIL",
                         ""])


def _alarms_text(alarms: list[dict[str, Any]]) -> str:
    if not alarms:
        return "no active alarms"
    rows = [[a["type"], a["device"] or "-", _age(a["age_s"]), a["raised"][11:19],
             a["acknowledged_by"] or "", a["alarm_id"]] for a in alarms]
    return _table(rows, ["ALARM", "DEVICE", "AGE", "RAISED", "ACK BY", "ID"])


def _event_line(e: dict[str, Any]) -> str:
    t = e.get("time", "")
    try:
        t = datetime.fromisoformat(t).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        pass
    extra = " ".join(f"{k}={e[k]}" for k in ("state", "reason", "by", "room") if e.get(k))
    test = " [TEST]" if e.get("test") else ""
    return f"{t}  {e.get('kind', ''):15} {e.get('type', ''):18} {e.get('device') or '-':12} " \
           f"{extra}{test}".rstrip()


def _outbox_text(o: dict[str, Any]) -> str:
    return "\n".join([
        f"waiting            {o['depth']} ({o['awaiting_receipt']} awaiting receipt)",
        f"oldest undelivered {o['oldest_undelivered'] or '-'}"
        + (f" ({_age(o['oldest_age_s'])} ago)" if o["oldest_age_s"] is not None else ""),
        f"last delivery      {o['last_delivery'] or 'none since the hub started'}",
        f"used               {o['used_bytes']} of {o['budget_bytes']} bytes, {o['dropped']}"
        " dropped",
        f"mqtt               {'connected' if o['mqtt'].get('connected') else 'NOT CONNECTED'}",
    ])


def cmd_hub(args: argparse.Namespace) -> int:
    cmd = args.command
    req: dict[str, Any] = {}
    if cmd == "events":
        req = {"n": args.n, "follow": args.follow}
    elif cmd == "test-alarm":
        req = {"wait_s": args.wait}
    elif cmd == "mute":
        req = {"minutes": args.minutes, "door": args.door}
    elif cmd == "ack":
        req = {"alarm_id": args.alarm_id}
    elif cmd == "audit":
        req = {"n": args.n}
    try:
        sock = _socket(args)
        if cmd == "events" and args.follow:
            try:
                for e in stream(sock, cmd, req):
                    print(json.dumps(e, ensure_ascii=False) if args.json else _event_line(e),
                          flush=True)
            except KeyboardInterrupt:
                pass
            return 0
        result = call(sock, cmd, req, timeout=max(30.0, float(req.get("wait_s", 0)) + 10))
    except config.ConfigError as e:
        print(f"tryggheim {cmd}: cannot find the hub's control socket:\n{e}", file=sys.stderr)
        return 2
    except ControlError as e:
        print(f"tryggheim {cmd}: {e}", file=sys.stderr)
        return 1
    human = {
        "status": lambda r: _status_text(r),
        "devices": lambda r: _devices_text(r),
        "alarms": lambda r: _alarms_text(r),
        "events": lambda r: "\n".join(_event_line(e) for e in r) or "no events",
        "outbox": lambda r: _outbox_text(r),
        "test-alarm": lambda r: f"test alarm {r['id']} stored"
        + (f", delivered to the response centre in {r['seconds']} s" if r.get("delivered")
           else (", NOT confirmed by the response centre yet" if args.wait else "")),
        "reload": lambda r: ("configuration applied\n" + r["diff"]) if r.get("changed")
        else "no change",
        "mute": lambda r: f"wandering muted until {r['until']} ({', '.join(r['muted'])})",
        "ack": lambda r: f"acknowledged {r['acknowledged']}",
        "audit": lambda r: "\n".join(f"{e['time']}  {e['who']:24} {e['action']:10} "
                                     f"{e['result']}" for e in r) or "no entries",
    }[cmd](result)
    _out(args, result, human)
    if cmd == "test-alarm" and args.wait and not result.get("delivered"):
        return 1
    return 0


def add_commands(sub: Any) -> None:
    """Register the admin subcommands on the `tryggheim` parser."""
    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--config", help=f"config directory or file (default {DEFAULT_CONFIG},"
                       " or $TRYGGHEIM_CONFIG)")
        p.add_argument("--socket", help="the hub's control socket (instead of --config)")
        return p

    cfg = sub.add_parser("config", help="configuration tools")
    csub = cfg.add_subparsers(dest="config_command", required=True)
    check = common(csub.add_parser("check", help="validate a configuration; exit 1 on errors"))
    check.add_argument("path", nargs="?", help="config directory or file")
    check.set_defaults(func=cmd_config_check)

    helps = {
        "reload": "apply the changed configuration to the running hub (all or nothing)",
        "status": "hub, MQTT, outbox and device summary",
        "devices": "each device: last seen, battery, signal, decrypt failures",
        "alarms": "active alarms with their age",
        "events": "recent events (--follow to keep watching)",
        "outbox": "messages waiting, oldest undelivered, last delivery",
        "test-alarm": "send a test alarm end to end (clearly marked as a test)",
        "mute": "staff visit: mute the wandering rule for a while",
        "ack": "acknowledge an active alarm",
        "audit": "recent admin changes",
    }
    for name, text in helps.items():
        p = common(sub.add_parser(name, help=text))
        if name in ("events", "audit"):
            p.add_argument("-n", type=int, default=20, help="how many recent entries")
        if name == "events":
            p.add_argument("--follow", "-f", action="store_true")
        if name == "test-alarm":
            p.add_argument("--wait", type=float, default=0, metavar="S",
                           help="wait up to S seconds for the response centre's receipt")
        if name == "mute":
            p.add_argument("--minutes", type=float, default=60)
            p.add_argument("--door", help="only the rule for this door sensor")
        if name == "ack":
            p.add_argument("alarm_id")
        p.set_defaults(func=cmd_hub)
