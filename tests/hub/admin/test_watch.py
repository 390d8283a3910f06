"""`tryggheim watch` (the installer's walk test) and `tryggheim scan` on the virtual radio and
on a replayed capture: against the real hub process, real firmware on virtual boards."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hub.admin.watch import WatchBoard, render, state_of
from hub.config.settings import Device
from hub.decode.decoder import Report
from tests.conftest import requires_mosquitto, requires_node
from tools.sim.virtual_home import HomeDevice, VirtualHome

TRYGGHEIM = str(Path(sys.executable).with_name("tryggheim"))
DOOR = Device("door-1", "door", "C0:FF:EE:00:00:03", "hall")
PENDANT = Device("pendant-1", "pendant", "C0:FF:EE:00:00:01", "living room")


def _report(dev: Device, t: float, trigger: bool = True, **values: int) -> Report:
    return Report(dev, t, -60, dict(values), 1, None, trigger)


def test_state_in_words() -> None:
    assert state_of({"door": 1}) == {"door": "open"}
    assert state_of({"occupancy": 0, "battery": 50}) == {"bed": "out of bed"}
    assert state_of({"button": 1, "battery_charging": 1}) == {"button": "press",
                                                              "charger": "on charger"}
    assert state_of({"problem": 1}, "wearable") == {"fall": "fall"}


def test_board_marks_a_change_and_keeps_the_last_button_event() -> None:
    b = WatchBoard({DOOR.id: DOOR, PENDANT.id: PENDANT})
    assert b.on_report(_report(DOOR, 100.0, door=0, battery=90)) == ["door"]
    assert b.on_report(_report(DOOR, 700.0, trigger=False, door=0, battery=90)) == []
    assert b.row(DOOR.id, 710.0)["mark"] is False  # a heartbeat is no change
    assert b.on_report(_report(DOOR, 800.0, door=1, battery=90)) == ["door"]
    row = b.row(DOOR.id, 801.0, failures=2)
    assert row["state"] == {"door": "open"} and row["mark"] and row["age_s"] == 1
    assert row["decrypt_failures"] == 2 and row["battery"] == 90
    assert b.row(DOOR.id, 900.0)["mark"] is False  # the mark fades
    b.on_report(_report(PENDANT, 50.0, button=1, battery_charging=0))
    assert b.on_report(_report(PENDANT, 650.0, trigger=False, button=0,
                               battery_charging=0)) == []
    state = b.row(PENDANT.id, 660.0)["state"]
    assert state["button"].startswith("press") and state["charger"] == "off charger"
    never = WatchBoard({DOOR.id: DOOR}).row(DOOR.id, 0.0)
    assert never["age_s"] is None and never["state"] == {}
    text = render([row, never])
    assert "* " in text and "door-1" in text and "open" in text and "never" in text


class Lines:
    """A CLI's stdout, one JSON object per line, read in the background."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.q: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.q.put(json.loads(line))

    def wait_for(self, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.q.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    assert self.proc.stderr is not None
                    raise AssertionError(f"exited: {self.proc.stderr.read()}") from None
                continue
            if pred(item):
                return item
        raise AssertionError("not seen in time")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _wait_for_socket(workdir: Path) -> None:
    """The hub opens its control socket a moment after it starts listening on the air."""
    sock = workdir / "var" / "control.sock"
    deadline = time.monotonic() + 20
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


HOME = [HomeDevice("pendant-1", "pendant", "C0:FF:EE:00:00:01", "living room"),
        HomeDevice("door-1", "door", "C0:FF:EE:00:00:03", "hall"),
        HomeDevice("bed-1", "bed", "C0:FF:EE:00:00:02", "bedroom")]


@requires_node
@requires_mosquitto
def test_watch_follows_the_walk_test_on_the_virtual_home(tmp_path: Path) -> None:
    with VirtualHome(tmp_path, devices=list(HOME)) as home:
        assert home.air is not None
        _wait_for_socket(tmp_path)
        watch = Lines([TRYGGHEIM, "watch", "--json", "--interval", "0.3",
                       "--config", str(tmp_path / "hub.toml")])
        try:
            first = watch.wait_for(lambda i: i["event"] == "snapshot" and i["id"] == "door-1")
            assert first["state"] == {"door": "closed"}  # heard at boot, before the watch
            # The installer opens the door ...
            door = home.boards["door-1"]
            door.set_pin("door", 1)
            door.advance(1500)
            rep = watch.wait_for(lambda i: i["event"] == "report" and i["id"] == "door-1"
                                 and i["state"].get("door") == "open")
            assert rep["changed"] == ["door"] and rep["mark"] is True
            assert rep["rssi"] == door.rssi and rep["age_s"] == 0 and rep["battery"] == 100
            # ... lies on the bed ...
            bed = home.boards["bed-1"]
            bed.set_pin("mat", 1)
            bed.advance(7000)
            watch.wait_for(lambda i: i["event"] == "report" and i["id"] == "bed-1"
                           and i["state"].get("bed") == "in bed")
            # ... presses the pendant.
            home.boards["pendant-1"].press("button")
            home.boards["pendant-1"].advance(1000)
            watch.wait_for(lambda i: i["event"] == "report" and i["id"] == "pendant-1"
                           and i["state"].get("button") == "press" and "button" in i["changed"])
            # An advert in the door's name that does not verify is counted, not reported.
            svc = bytearray(door.adverts[-1].service_data)
            svc[-1] ^= 0xFF
            home.air.broadcast(door.mac, -70, bytes(svc))
            bad = watch.wait_for(lambda i: i["event"] == "decrypt_failure")
            assert bad["id"] == "door-1" and bad["decrypt_failures"] == 1
        finally:
            watch.stop()


@requires_node
@requires_mosquitto
def test_scan_on_the_virtual_air_and_on_a_replayed_capture(tmp_path: Path) -> None:
    with VirtualHome(tmp_path, devices=list(HOME)) as home:
        door = home.boards["door-1"]
        scan = subprocess.Popen([TRYGGHEIM, "scan", "--json", "--seconds", "3", "--config",
                                 str(tmp_path / "hub.toml")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert home.air is not None
        deadline = time.monotonic() + 20
        while len(home.air._listeners) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the scan's radio has said "listen" (the hub is the 1st)
        for level in (1, 0, 1):
            door.set_pin("door", level)
            door.advance(1500)
        out, err = scan.communicate(timeout=30)
    result = json.loads(out)
    assert result["radio"] == "virtual", err
    rows = {r["id"]: r for r in result["devices"]}
    assert rows["door-1"]["heard"] and rows["door-1"]["decrypt"] == "ok"
    assert rows["door-1"]["battery"] == 100
    assert not rows["bed-1"]["heard"]  # asleep during the scan: listed as not heard
    assert scan.returncode == 1  # not every configured device was heard
    # The hub's capture of the same adverts, scanned as a replay.
    replay = subprocess.run([TRYGGHEIM, "scan", "--json", "--radio", "replay", "--replay",
                             str(tmp_path / "capture.jsonl"), "--config",
                             str(tmp_path / "hub.toml")], capture_output=True, text=True,
                            timeout=60)
    result = json.loads(replay.stdout)
    rows = {r["id"]: r for r in result["devices"]}
    assert result["radio"] == "replay"
    assert all(rows[d.id]["heard"] and rows[d.id]["decrypt"] == "ok" for d in HOME), rows
    assert replay.returncode == 0, replay.stderr


@requires_node
@requires_mosquitto
def test_watch_on_a_hub_whose_radio_is_a_replayed_capture(tmp_path: Path, broker: Any) -> None:
    from hub.radio.capture import to_line
    from hub.radio.scanner import Advert
    from tools.sim.vboard import VirtualBoard
    from tools.sim.virtual_home import start_hub, stop_process, write_hub_config

    d = HOME[1]
    board = VirtualBoard(d.board_config(heartbeat_s=600), mac=d.mac, rssi=-71).start()
    try:
        board.advance(1000)
        board.set_pin("door", 1)
        board.advance(1500)
        lines = [to_line(Advert(d.mac, -71, a.service_data, 1000.0 + a.t_ms / 1000))
                 for a in board.adverts]
    finally:
        board.stop()
    (tmp_path / "capture.jsonl").write_text("\n".join(lines) + "\n")
    config = write_hub_config(tmp_path, broker.port, [d])
    text = config.read_text().replace('kind = "virtual"\nair = "air.sock"',
                                      'kind = "replay"\nreplay = "capture.jsonl"')
    config.write_text(text)
    hub = start_hub(config, tmp_path / "hub.log")
    try:
        _wait_for_socket(tmp_path)
        watch = Lines([TRYGGHEIM, "watch", "--json", "--config", str(config)])
        try:
            deadline = time.monotonic() + 20
            while True:  # the replay may still be playing when the watch connects
                item = watch.wait_for(lambda i: i["id"] == d.id)
                if item["state"].get("door") == "open" or time.monotonic() > deadline:
                    break
            assert item["state"] == {"door": "open"} and item["rssi"] == -71
        finally:
            watch.stop()
    finally:
        stop_process(hub)


def test_scan_virtual_without_an_air_socket_is_a_clear_error() -> None:
    r = subprocess.run([TRYGGHEIM, "scan", "--radio", "virtual"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "--air" in r.stderr


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
