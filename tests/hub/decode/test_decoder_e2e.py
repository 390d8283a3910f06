"""Replay attacks against the running hub (real process, real Mosquitto, MicroPython pendant):
a recorded alarm advert sent again over the air, or played back as the hub's radio after a
restart, never raises a second alarm."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

from tests.conftest import requires_mosquitto, requires_node
from tools.centre.response_centre import ResponseCentre
from tools.sim.virtual_home import VirtualHome, start_hub, stop_process

pytestmark = [requires_node, requires_mosquitto]


def _wait_for(path: Path, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}:\n{content}")


def _no_more_alarms(centre: ResponseCentre, wait: float = 1.5) -> None:
    """Nothing that raises or re-raises an alarm arrives within `wait` seconds."""
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = centre.get(timeout=left)
        except queue.Empty:
            return
        assert msg["kind"] not in ("alarm", "technical_alarm"), msg


def test_recorded_alarm_is_refused_live_and_after_restart(tmp_path: Path) -> None:
    with VirtualHome(tmp_path) as home:
        assert home.centre is not None and home.air is not None and home.hub is not None
        pendant = home.boards["pendant-1"]
        pendant.press("button", hold_ms=300)
        pendant.advance(5000)
        alarm = home.centre.get(timeout=20)
        assert alarm["type"] == "alarm_button"
        capture = tmp_path / "capture.jsonl"
        lines = [json.loads(x) for x in capture.read_text().splitlines()]
        assert lines and all(x["uuid"] == "fcd2" and x["mac"] == pendant.mac for x in lines)
        press = next(x for x in lines if int(x["data"][:2], 16) & 0x04)  # trigger flag set
        assert int(press["data"][:2], 16) & 0x01  # encrypted on the air

        # Live: an attacker re-sends the recorded press frames (and an older one) right away.
        for x in lines:
            home.air.broadcast(x["mac"], -40, bytes.fromhex(x["data"]))
        # No alarm, but a technical alarm: someone is replaying this device's adverts.
        tech = home.centre.get(timeout=20)
        assert (tech["kind"], tech["type"], tech["device"]) == (
            "technical_alarm", "radio_replay", "pendant-1")
        assert tech["scaip"] == {"dty": "0003", "stc": "0125"}
        _no_more_alarms(home.centre)

        # Restart the hub with the recording as its radio: same data directory, new process.
        stop_process(home.hub)
        log = tmp_path / "hub.log"
        _wait_for(log, "adverts: ")
        replay_cfg = tmp_path / "hub-replay.toml"
        replay_cfg.write_text((tmp_path / "hub.toml").read_text().replace(
            'kind = "virtual"', 'kind = "replay"\nreplay = "capture.jsonl"'))
        hub2 = start_hub(replay_cfg, tmp_path / "hub-replay.log")
        try:
            _wait_for(tmp_path / "hub-replay.log", "replay of")
            tech = home.centre.get(timeout=20)
            assert (tech["kind"], tech["type"]) == ("technical_alarm", "radio_replay")
            _no_more_alarms(home.centre)
        finally:
            stop_process(hub2)
        summary = _wait_for(tmp_path / "hub-replay.log", "adverts: ")
        assert "'replay': " in summary and "'accepted'" not in summary
        assert home.centre.duplicates == 0
