"""The night as a picture (demo-out/night.svg): one lane per device, one per alarm.

Lanes: in bed / out of bed, door open / closed, motion, the carried devices' presses, falls
and lights, every advert the hub heard (small ticks: a silent device is where they stop),
then one lane per alarm from raised (the hub's decision) to cleared, with a black mark
where the response centre got it later than that (held in the outbox while offline).
Plain SVG written by hand: no plotting library for a handful of rectangles.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from tools.sim.demo_night import Night

LEFT = 190
RIGHT = 20
WIDTH = 1200
LANE = 34
TOP = 50
ONE_OFF = ("alarm_button", "fall")  # never "cleared" by the hub: the response centre acts
COLOURS = {"bed": "#4a7fb5", "door": "#c77d2e", "motion": "#5a9e4b", "event": "#7b4fa0",
           "care": "#c0392b", "technical": "#d68910", "heard": "#999999", "light": "#2e86c1"}


def write(night: Night, path: Path) -> Path:
    path.write_text(render(night))
    return path


def render(night: Night) -> str:
    from tools.sim.demo_night import TZ, at

    t0 = at(night.sc.start).timestamp()
    t1 = at(night.sc.end).timestamp()
    span = max(1.0, t1 - t0)

    def x(t: float) -> float:
        return LEFT + (min(max(t, t0), t1) - t0) / span * (WIDTH - LEFT - RIGHT)

    lanes: list[tuple[str, list[str]]] = []
    reports = sorted(night.reports, key=lambda r: r[0])
    by_dev: dict[str, list[tuple[float, dict[str, int], bool]]] = {}
    for t, dev, values, trigger in reports:
        by_dev.setdefault(dev, []).append((t, values, trigger))

    def intervals(dev: str, key: str) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        since: float | None = None
        for t, v, _ in by_dev.get(dev, []):
            if key not in v:
                continue
            if v[key] and since is None:
                since = t
            elif not v[key] and since is not None:
                out.append((since, t))
                since = None
        if since is not None:
            out.append((since, t1))
        return out

    def bars(spans: list[tuple[float, float]], colour: str, y: float, label: str = ""
             ) -> list[str]:
        return [f'<rect x="{x(a):.1f}" y="{y + 6}" width="{max(2.0, x(b) - x(a)):.1f}" '
                f'height="{LANE - 14}" fill="{colour}" opacity="0.85"><title>{escape(label)} '
                f'{_hm(a, TZ)}-{_hm(b, TZ)}</title></rect>' for a, b in spans]

    def ticks(times: list[float], colour: str, y: float, h: float, label: str) -> list[str]:
        return [f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y + LANE - 8 - h}" '
                f'y2="{y + LANE - 8}" stroke="{colour}" stroke-width="2">'
                f'<title>{escape(label)} {_hm(t, TZ, True)}</title></line>' for t in times]

    y = TOP
    for d in night.devices.values():
        items: list[str] = []
        heard = [t for t, _, _ in by_dev.get(d.id, [])]
        items += ticks(heard, COLOURS["heard"], y, 5, "heard")
        if d.role == "bed":
            label = f"{d.id}: in bed"
            items += bars(intervals(d.id, "occupancy"), COLOURS["bed"], y, "in bed")
        elif d.role == "door":
            label = f"{d.id}: open"
            items += bars(intervals(d.id, "door"), COLOURS["door"], y, "open")
        elif d.role == "pir":
            label = f"{d.id}: motion"
            items += ticks([t for t, v, trig in by_dev.get(d.id, []) if trig and v.get("motion")],
                           COLOURS["motion"], y, 18, "motion")
        else:
            label = f"{d.id}: " + ("fall, button" if d.role == "wearable" else "button")
            items += ticks([t for t, v, trig in by_dev.get(d.id, [])
                            if trig and (v.get("button") or v.get("problem"))],
                           COLOURS["event"], y, 18, "alarm")
            items += bars(intervals(d.id, "battery_charging"), "#bbbbbb", y, "on charger")
            board = night.boards.get(d.id)
            if board is not None:
                lit = [night.t0 + t_ms / 1000 for t_ms, p in board.indications
                       if p in ("received", "help_coming")]
                items += ticks(lit, COLOURS["light"], y, 10, "light")
        if d.id in night.off:
            label += " (silent)"
        lanes.append((label, items))
        y += LANE
    # Alarms: raised -> cleared, as the response centre received them.
    alarms: dict[str, dict[str, Any]] = {}
    for t, m in night.received:
        aid = str(m.get("alarm_id") or m.get("id"))
        a = alarms.setdefault(aid, {"type": m.get("type"), "device": m.get("device"),
                                    "kind": m.get("kind"), "raised": None, "cleared": None})
        if m.get("state") == "cleared":
            a["cleared"] = t
        elif a["raised"] is None:
            a["raised"] = night.stored_at.get(str(m.get("id")), t)  # when the hub decided
            a["at_centre"] = t
    for a in sorted(alarms.values(), key=lambda a: a["raised"] or t1):
        if a["raised"] is None:
            continue
        colour = COLOURS["technical"] if a["kind"] == "technical_alarm" else COLOURS["care"]
        end = a["cleared"] if a["cleared"] is not None else t1
        if a["type"] in ONE_OFF:  # the centre takes it over: drawn until it has it
            end = max(a.get("at_centre") or a["raised"], a["raised"] + 60)
        label = f"alarm: {a['type']}"
        items = bars([(a["raised"], end)], colour, y,
                      f"{a['type']} {a['device'] or ''} raised" +
                      (", cleared" if a["cleared"] else ""))
        items.append(f'<text x="{x(a["raised"]) + 3:.1f}" y="{y + 21}" font-size="11" '
                     f'fill="#fff">{escape(_hm(a["raised"], TZ))}'
                     f'{" - " + escape(_hm(a["cleared"], TZ)) if a["cleared"] else ""}</text>')
        if a.get("at_centre") is not None and a["at_centre"] > a["raised"] + 60:
            # Held in the hub's outbox (no broker): the centre had it only here.
            items += ticks([a["at_centre"]], "#000000", y, LANE - 10, "at the response centre")
        lanes.append((label, items))
        y += LANE
    height = y + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="13">',
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           f'<text x="10" y="24" font-size="16" font-weight="bold">'
           f'{escape(_title(night))}</text>']
    # Hour grid in local time.
    start = datetime.fromtimestamp(t0, TZ).replace(minute=0, second=0, microsecond=0)
    step = timedelta(hours=1) if span > 4 * 3600 else timedelta(minutes=15)
    g = start
    while g.timestamp() <= t1:
        if g.timestamp() >= t0:
            gx = x(g.timestamp())
            out.append(f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="{TOP - 8}" y2="{y}" '
                       'stroke="#e5e5e5"/>')
            out.append(f'<text x="{gx:.1f}" y="{y + 16}" text-anchor="middle" '
                       f'fill="#555">{g.strftime("%H:%M")}</text>')
        g += step
    for i, (label, items) in enumerate(lanes):
        ly = TOP + i * LANE
        out.append(f'<text x="10" y="{ly + LANE / 2 + 4}">{escape(label)}</text>')
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ly + LANE - 8}" '
                   f'y2="{ly + LANE - 8}" stroke="#cccccc"/>')
        out += items
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _hm(t: float, tz: Any, seconds: bool = False) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%H:%M:%S" if seconds else "%H:%M")


def _title(night: Night) -> str:
    from tools.sim.demo_night import EVENING

    return (f"Tryggheim virtual home, night of {EVENING.isoformat()} ({night.sc.name}): "
            f"{night.sc.start}-{night.sc.end} Europe/Oslo")
