"""`make shelly` (hub/installer/add_shelly.py): an off-the-shelf sensor registered in the hub's
config and keys file as `make flash` registers our own, its bindkey never on a command line."""

from __future__ import annotations

import io
import os
import stat
import tomllib
from pathlib import Path

import pytest

from hub.config import keys as hub_keys
from hub.config import settings as hub_config
from hub.decode.decoder import AdvertDecoder
from hub.installer import add_shelly
from hub.radio.scanner import Advert
from tests.hub.decode.test_shelly import HUB, PUB_BUTTON


def test_add_shelly_writes_config_and_keys_like_make_flash(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "site.toml").write_text(HUB)
    monkeypatch.setattr("sys.stdin", io.StringIO("90BF FD73 CB6B 26EF 58A7 A8EB A923 2036\n"))
    rc = add_shelly.main(["--config", str(conf), "--model", "button1", "--mac",
                          "b4:35:22:f5:3d:a4", "--id", "pendant-2", "--room", "bedroom"])
    assert rc == 0
    devices = tomllib.loads((conf / "devices.toml").read_text())["device"]
    assert devices == [{"id": "pendant-2", "role": "pendant", "mac": "B4:35:22:F5:3D:A4",
                        "room": "bedroom", "model": "shelly-blu-button1"}]
    assert stat.S_IMODE(os.stat(conf / "keys.toml").st_mode) == 0o600
    cfg = hub_keys.attach(hub_config.load(conf))
    dev = cfg.devices["pendant-2"]
    assert dev.model == "shelly-blu-button1" and dev.key == PUB_BUTTON[2]
    # The published advert of that button now decodes with what was written.
    r = AdvertDecoder(cfg.device_by_mac()).decode(Advert(dev.mac, -60, PUB_BUTTON[0], 0.0))
    assert r is not None and r.values["button"] == 1
    audit = (cfg.data_dir / "audit.jsonl").read_text()
    assert "register-device" in audit and PUB_BUTTON[2].hex() not in audit


def test_add_shelly_refuses_a_bad_bindkey_and_model(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "hub.toml"
    f.write_text(HUB)
    monkeypatch.setattr("sys.stdin", io.StringIO("not-a-key\n"))
    assert add_shelly.main(["--config", str(f), "--model", "motion", "--mac",
                            "7C:C6:B6:00:00:02", "--id", "pir-1"]) == 2
    assert "bindkey: expected 32 hex digits" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("00" * 16 + "\n"))
    assert add_shelly.main(["--config", str(f), "--model", "plug", "--mac",
                            "7C:C6:B6:00:00:02", "--id", "pir-1"]) == 2
    assert "model 'plug'" in capsys.readouterr().err
    assert f.read_text() == HUB and not (tmp_path / "keys.toml").exists()
