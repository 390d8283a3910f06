"""`make demo`: the night in the virtual home, end to end (real firmware on virtual boards,
the hub's code, a real Mosquitto, the response centre), and the small fixes around it."""

from __future__ import annotations

import logging
import os
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import requires_mosquitto, requires_node
from tools.sim import demo_night
from tools.sim.demo_night import Expect, Scenario, Step

pytestmark = [requires_node, requires_mosquitto]


def _run(tmp_path: Path, name: str) -> tuple[int, demo_night.Night, list[str]]:
    out: list[str] = []
    rc, night = demo_night.run_demo(tmp_path / "demo-out", name, echo=out.append)
    return rc, night, out


def _nothing_running(night: demo_night.Night) -> None:
    assert night._thread is not None and not night._thread.is_alive()  # the hub stopped
    assert all(b._proc is None for b in night.boards.values())  # no node process left
    assert night.broker is not None and night.broker.proc is None
    assert not [t for t in threading.enumerate() if t.name == "hub"]


def test_bed_exit_raised_then_cleared_at_the_response_centre(tmp_path: Path) -> None:
    rc, night, out = _run(tmp_path, "bed-exit")
    assert rc == 0, "\n".join(out)
    got = [(m["type"], m["state"], m["device"]) for _, m in night.received
           if m["type"] == "bed_exit"]
    assert got == [("bed_exit", "raised", "bed-1"), ("bed_exit", "cleared", "bed-1")]
    raised, cleared = (t for t, m in night.received if m["type"] == "bed_exit")
    left = demo_night.at("02:00").timestamp()
    # Out of bed counts from the mat's 20 s debounce; alarm 30 min later, to the step.
    assert left + 30 * 60 + 20 <= raised <= left + 30 * 60 + 40
    assert demo_night.at("02:45").timestamp() < cleared < demo_night.at("02:46").timestamp()
    text = "\n".join(out)
    assert "02:30:" in text and "bed-exit alarm" in text and "receipt from the response" in text
    svg = ET.parse(tmp_path / "demo-out" / "night.svg").getroot()
    labels = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "bed-1: in bed" in labels and "alarm: bed_exit" in labels
    assert "night.svg" in out[-2]
    _nothing_running(night)


def test_outage_received_from_the_outbox_then_help_is_coming(tmp_path: Path) -> None:
    rc, night, out = _run(tmp_path, "outage")
    assert rc == 0, "\n".join(out)
    (t_centre, alarm), = [(t, m) for t, m in night.received if m["type"] == "alarm_button"]
    # The centre had it only after the broker came back, not when it was pressed.
    assert t_centre >= demo_night.at("04:12").timestamp()
    lights = [p for t, p in night.boards["pendant-1"].indications if p != "off"]
    assert lights[:3] == ["sending", "received", "help_coming"], lights
    t_of = {p: night.t0 + t / 1000 for t, p in reversed(night.boards["pendant-1"].indications)}
    assert t_of["received"] < demo_night.at("04:06").timestamp()  # from the outbox, offline
    assert t_of["help_coming"] >= t_centre
    _nothing_running(night)


def test_a_missing_alarm_makes_the_demo_fail(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The door opens inside the wandering window, but the rule needs 10 minutes: a scenario
    # that ends after 5 expects an alarm that cannot have come.
    sc = Scenario("too-short", "", "03:00", "03:06", [
        Step("03:01", "door-front", "opens the door", demo_night._pin("door-front", "door", 1)),
    ], [Expect("wandering", "raised", "door-front")])
    monkeypatch.setitem(demo_night.BY_NAME, "too-short", sc)
    rc, night, out = _run(tmp_path, "too-short")
    assert rc == 1
    assert "EXPECTED BUT NOT RECEIVED" in out[-1] and "wandering raised" in out[-1]


def test_the_whole_night(tmp_path: Path) -> None:
    rc, night, out = _run(tmp_path, "")
    assert rc == 0, "\n".join(out)
    types = {(m["type"], m["state"]) for _, m in night.received}
    for e in demo_night.NIGHT.expect:
        assert (e.type, e.state) in types
    # One cold reading is no warning: the warning comes after three low reports in a row.
    (t_warn,) = [t for t, m in night.received if m["type"] == "battery_low"]
    assert t_warn > demo_night.at("05:10").timestamp()


def test_scenario_help_lists_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_night.main(["--scenario", "help"]) == 0
    shown = capsys.readouterr().out
    for s in demo_night.SCENARIOS:
        assert s.name in shown
    assert demo_night.main(["--scenario", "no-such"]) == 2


def test_closing_hint_names_a_command_that_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # not in an activated venv
    cmd = demo_night._tryggheim()
    assert cmd != "tryggheim"
    assert os.access(Path(cmd).resolve(), os.X_OK)


def test_virtual_pendant_battery_is_not_empty_by_default() -> None:
    from hub.decode.decoder import inspect
    from tools.sim.vboard import VirtualBoard

    key = "00112233445566778899aabbccddeeff"
    b = VirtualBoard({"id": "p", "role": "pendant", "key": key}).start()
    try:
        b.advance(1000)
        values = inspect(b.adverts[0].service_data, b.mac, {"p": bytes.fromhex(key)})["values"]
    finally:
        b.stop()
    assert values["battery"] >= 50 and values["battery_low"] == 0


def test_missing_default_admin_group_is_no_warning(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from hub.admin.control import DEFAULT_GROUP, ControlServer, admin_gid

    async def handler(req: object) -> None:
        return None

    async def start_stop(path: Path, group: str) -> None:
        s = ControlServer(path, group, handler)
        await s.start()
        await s.stop()

    if admin_gid(DEFAULT_GROUP) is not None:
        pytest.skip(f"group {DEFAULT_GROUP} exists here")
    with caplog.at_level(logging.INFO, logger="hub.admin.control"):
        asyncio.run(start_stop(tmp_path / "c.sock", DEFAULT_GROUP))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        caplog.clear()
        asyncio.run(start_stop(tmp_path / "d.sock", "tryggheim-admn"))  # a typo: say so
        assert [r for r in caplog.records if r.levelno == logging.WARNING]
