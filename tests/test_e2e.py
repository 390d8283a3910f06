"""End to end: virtual pendant (real MicroPython) -> hub process -> real Mosquitto -> subscriber."""

from __future__ import annotations

import queue
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import requires_mosquitto, requires_node
from tests.hub_support import RECEIPT_KEY, centre_keys
from tools.centre.mosquitto import Mosquitto
from tools.centre.response_centre import ResponseCentre
from tools.sim.vboard import Air, VirtualBoard
from tools.sim.virtual_home import (
    DEFAULT_DEVICES,
    VirtualHome,
    start_hub,
    stop_process,
    write_hub_config,
)

pytestmark = [requires_node, requires_mosquitto]


def test_button_press_reaches_response_centre_once(tmp_path: Path) -> None:
    with VirtualHome(tmp_path) as home:
        assert home.centre is not None
        pendant = home.boards["pendant-1"]
        pendant.press("button", hold_ms=300)
        pendant.advance(5000)  # the whole advert burst, every repeat on the air
        alarm = home.centre.get(timeout=20)
        assert alarm["kind"] == "alarm"
        assert alarm["type"] == "alarm_button"
        assert alarm["priority"] == 1
        assert alarm["site"] == "demo-home"
        assert alarm["device"] == "pendant-1"
        assert alarm["schema"] == 1
        assert alarm["_topic"] == "tryggheim/v1/demo-home/alarm"
        assert len(alarm["id"]) >= 16
        assert datetime.fromisoformat(alarm["time"]).utcoffset() is not None
        # Repeats of the same advert are one event: no second alarm, not even a duplicate.
        with pytest.raises(queue.Empty):
            home.centre.get(timeout=1.0)
        assert home.centre.duplicates == 0


def test_alarm_kept_while_broker_down_and_delivered_when_it_returns(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    air = Air(tmp_path / "air.sock")
    config = write_hub_config(tmp_path, broker.port, DEFAULT_DEVICES, receipt_key=RECEIPT_KEY)
    hub = start_hub(config, tmp_path / "hub.log")
    pendant = None
    centre = None
    try:
        air.wait_for_listener(proc=hub)
        centre = ResponseCentre("127.0.0.1", broker.port, receipt_keys=centre_keys).start()
        broker.stop()  # the broker is down at the moment of the press
        d = DEFAULT_DEVICES[0]
        pendant = VirtualBoard(d.board_config(), mac=d.mac, radio=air).start()
        pendant.advance(1000)
        pendant.press("button")
        pendant.advance(5000)
        _wait_for_log(tmp_path / "hub.log", "stored alarm")
        broker.start()  # same port, same persistence dir
        alarm = centre.get(timeout=30)
        assert alarm["type"] == "alarm_button" and alarm["device"] == d.id
    finally:
        if centre:
            centre.stop()
        if pendant:
            pendant.stop()
        stop_process(hub)
        air.close()
        broker.close()


def _wait_for_log(path: Path, text: str, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}:\n{path.read_text()}")
