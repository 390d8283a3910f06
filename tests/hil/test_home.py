"""The acknowledgement end to end: virtual pendant -> real hub process -> real Mosquitto ->
response centre -> receipt -> hub -> ack over the virtual air -> "help is coming" on the
pendant. The board runs in virtual time, the hub in wall time: the test lets device time pass
in small steps while the hub works."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import requires_mosquitto
from tools.sim.virtual_home import VirtualHome

pytestmark = requires_mosquitto


def test_pendant_shows_received_then_help_coming(tmp_path: Path) -> None:
    with VirtualHome(tmp_path) as home:
        assert home.centre is not None
        pendant = home.boards["pendant-1"]
        pendant.indications.clear()
        pendant.press("button", hold_ms=200)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and pendant.indication() != "help_coming":
            pendant.advance(200)  # device time moves on while the hub and broker work
            time.sleep(0.02)
        shown = [i for _, i in pendant.indications]
        assert "help_coming" in shown, (shown, (tmp_path / "hub.log").read_text()[-3000:])
        assert shown[0] == "sending"
        alarm = home.centre.get(timeout=5)
        assert alarm["device"] == "pendant-1"
        n = len(pendant.adverts)
        pendant.advance(5 * 60_000)  # delivered: the pendant stops repeating the alarm
        assert len(pendant.adverts) == n
        assert pendant.indication() == "off"
