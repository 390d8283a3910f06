"""The human-readable status says whether the hub hears its devices at all."""

from hub.admin.cli import _status_text


def test_status_text_shows_scan_mode_and_a_deaf_radio() -> None:
    ok = _status_text({"radio": {"kind": "bleak", "mode": "passive", "scanning": True}})
    assert "radio         bleak, passive scanning" in ok.splitlines()
    deaf = _status_text({"radio": {"kind": "bleak", "mode": "active", "deaf": True}})
    assert "DEAF" in deaf
    stopped = _status_text({"radio": {"kind": "bleak", "mode": "active", "scanning": False}})
    assert "NOT SCANNING" in stopped
