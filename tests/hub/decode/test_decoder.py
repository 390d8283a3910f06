"""Hub decoder: decrypts, rejects forged, replayed, unknown and malformed adverts, never raises;
counters persist across restarts; keys file rules; `tryggheim decode`; capture and replay."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub import cli
from hub.clock import ManualClock
from hub.config import keys
from hub.config.settings import ConfigError, Device
from hub.decode.counters import CounterStore
from hub.decode.decoder import AdvertDecoder
from hub.radio.capture import CaptureWriter, ReplayScanner, parse_line, read
from hub.radio.scanner import Advert
from protocols import bthome
from tests.protocols.test_ccm import Ecb

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
MAC = "C0:FF:EE:00:00:01"
DEV = Device("pendant-1", "pendant", MAC, "hall", KEY)


def frame(counter: int, objs: list[tuple[int, int]] | None = None, key: bytes = KEY,
          mac: str = MAC, trigger: bool = True) -> bytes:
    objs = objs if objs is not None else [(bthome.PACKET_ID, counter & 0xFF),
                                          (bthome.BUTTON, bthome.BUTTON_PRESS)]
    return bthome.encrypt_service_data(Ecb(key), bthome.mac_bytes(mac),
                                       bthome.encode_objects(objs), counter, trigger)


def adv(svc: bytes, mac: str = MAC, t: float = 0.0) -> Advert:
    return Advert(mac, -55, svc, t)


def decoder(tmp_path: Path | None = None) -> AdvertDecoder:
    store = CounterStore(tmp_path / "counters.sqlite") if tmp_path else None
    return AdvertDecoder({MAC: DEV}, store)


def test_accepts_and_reports_values() -> None:
    d = decoder()
    r = d.decode(adv(frame(7), t=12.5))
    assert r is not None
    assert r.values == {"packet_id": 7, "button": 1}
    assert (r.device, r.time, r.rssi, r.packet_id, r.counter, r.trigger) == (
        DEV, 12.5, -55, 7, 7, True)
    assert not r.heartbeat
    hb = d.decode(adv(frame(8, [(bthome.PACKET_ID, 8), (bthome.BATTERY, 80)], trigger=False)))
    assert hb is not None and hb.heartbeat
    assert d.stats == {"accepted": 2}


def test_burst_repeat_is_a_repeat_and_old_counter_is_a_replay() -> None:
    d = decoder()
    first, second = frame(100), frame(101)
    assert d.decode(adv(first)) is not None
    assert d.decode(adv(first)) is None  # the same advert again, within its burst
    assert d.decode(adv(second)) is not None
    assert d.decode(adv(first)) is None  # a recording of an older advert
    assert d.decode(adv(frame(101, [(bthome.PACKET_ID, 9), (bthome.DOOR, 1)]))) is None
    assert d.stats == {"accepted": 2, "repeat": 1, "replay": 2}


def test_forged_unknown_plaintext_and_malformed_are_counted_and_dropped() -> None:
    d = decoder()
    assert d.decode(adv(frame(5, key=bytes(16)))) is None  # wrong key: forged
    # Sealed for another address (the MAC is in the nonce): a relayed or spoofed sender.
    assert d.decode(adv(frame(5, mac="C0:FF:EE:00:00:02"))) is None
    assert d.decode(adv(frame(6), mac="C0:FF:EE:00:00:02")) is None  # unknown MAC
    plain = bthome.service_data(bthome.encode_objects([(bthome.BUTTON, 1)]))
    assert d.decode(adv(plain)) is None  # downgrade to plaintext
    assert d.decode(adv(b"")) is None
    assert d.decode(adv(b"\x41\x00\x01")) is None  # too short to hold counter and MIC
    assert d.decode(adv(b"\xe1" + frame(9)[1:])) is None  # not version 2
    assert d.stats == {"bad_mic": 2, "unknown_device": 1, "plaintext": 1, "malformed": 3}
    assert d.device_stats[("pendant-1", "bad_mic")] == 2
    assert d.decode(adv(frame(5))) is not None  # none of that stops a genuine advert


def test_forged_advert_does_not_move_the_counter() -> None:
    d = decoder()
    assert d.decode(adv(frame(10))) is not None
    forged = bytearray(frame(2**32 - 1))
    forged[-1] ^= 1
    assert d.decode(adv(bytes(forged))) is None
    assert d.decode(adv(frame(11))) is not None


@settings(max_examples=300)
@given(st.binary(max_size=40), st.sampled_from([MAC, "11:22:33:44:55:66"]))
def test_arbitrary_bytes_never_raise_and_are_counted(data: bytes, mac: str) -> None:
    d = decoder()
    assert d.decode(adv(data, mac=mac)) is None  # a random MIC verifies with p = 2**-32
    assert sum(d.stats.values()) == 1 and d.stats["error"] == 0


@given(st.integers(0, 2**32 - 2), st.data())
def test_any_flipped_bit_is_dropped(counter: int, data: st.DataObject) -> None:
    d = decoder()
    svc = bytearray(frame(counter))
    bit = data.draw(st.integers(0, len(svc) * 8 - 1))
    svc[bit // 8] ^= 1 << (bit % 8)
    assert d.decode(adv(bytes(svc))) is None
    assert d.stats["accepted"] == 0


def test_counters_persist_so_a_replay_after_restart_is_refused(tmp_path: Path) -> None:
    d = decoder(tmp_path)
    older, recorded = frame(499), frame(500)
    assert d.decode(adv(older)) is not None
    assert d.decode(adv(recorded)) is not None
    d.counters.close()
    # Hub restart: new decoder, same data directory.
    d2 = decoder(tmp_path)
    assert d2.decode(adv(recorded)) is None  # the last one: its burst may still be on the air
    assert d2.decode(adv(older)) is None
    assert d2.stats == {"repeat": 1, "replay": 1}
    assert d2.decode(adv(frame(501))) is not None
    d2.counters.flush()
    assert CounterStore(tmp_path / "counters.sqlite").last("pendant-1") == 501


def test_replay_and_failing_authentication_alert_once_until_the_device_is_heard() -> None:
    alerts: list[tuple[str, str, dict[str, object]]] = []
    d = AdvertDecoder({MAC: DEV}, on_alert=lambda dev, t, detail: alerts.append((dev.id, t,
                                                                                  detail)))
    assert d.decode(adv(frame(10))) is not None
    assert d.decode(adv(frame(11))) is not None
    d.decode(adv(frame(10)))
    d.decode(adv(frame(9)))
    assert alerts == [("pendant-1", "radio_replay", {"counter": 10, "last_counter": 11})]
    assert d.decode(adv(frame(12))) is not None  # heard properly again: alerts re-arm
    wrong = bytes(16)
    for c in (13, 14):
        d.decode(adv(frame(c, key=wrong)))
    assert len(alerts) == 1  # one or two failures may be noise
    d.decode(adv(bthome.service_data(bthome.encode_objects([(bthome.BUTTON, 1)]))))
    assert alerts[1] == ("pendant-1", "radio_auth_failed", {"reason": "plaintext", "failures": 3})
    for c in (15, 16, 17):
        d.decode(adv(frame(c, key=wrong)))
    assert len(alerts) == 2
    d.decode(adv(frame(99, mac="C0:FF:EE:00:00:02"), mac="C0:FF:EE:00:00:02"))
    assert len(alerts) == 2  # strangers' adverts are counted, not alarmed


def test_unflushed_counter_is_not_on_disk_and_reset_forgets(tmp_path: Path) -> None:
    store = CounterStore(tmp_path / "c.sqlite")
    store.accept("a", 3)
    assert store.dirty
    assert CounterStore(tmp_path / "c.sqlite").last("a") is None
    store.flush()
    assert CounterStore(tmp_path / "c.sqlite").last("a") == 3
    store.reset("a")
    assert CounterStore(tmp_path / "c.sqlite").last("a") is None


def test_plain_device_without_key_uses_packet_id_repeats() -> None:
    d = AdvertDecoder({MAC: Device("p", "pendant", MAC)})
    svc = bthome.service_data(bthome.encode_objects([(bthome.PACKET_ID, 4), (bthome.BUTTON, 1)]))
    assert d.decode(adv(svc)) is not None
    assert d.decode(adv(svc)) is None
    assert d.stats == {"accepted": 1, "repeat": 1}


# -- keys file ------------------------------------------------------------------------


def test_keys_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    keys.write(path, {"pendant-1": KEY, "door-1": bytes(16)})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keys.load(path) == {"pendant-1": KEY, "door-1": bytes(16)}


def test_world_readable_keys_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    keys.write(path, {"pendant-1": KEY})
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"keys\.toml.*every user.*chmod 600"):
        keys.load(path)


def test_bad_key_is_reported_with_file_line_and_field_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[keys]\n"a" = "%s"\n"b" = "%s"\n' % (KEY.hex(), "12" * 15 + "zz"))
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError) as e:
        keys.load(path)
    msg = str(e.value)
    assert f"{path}: line 3: keys.b: expected 32 hex digits" in msg
    assert "zz" not in msg


def test_device_without_key_is_a_config_error(tmp_path: Path) -> None:
    from hub.config import settings as config
    from tools.sim.virtual_home import HomeDevice, write_hub_config

    devs = [HomeDevice("p1", "pendant", "C0:FF:EE:00:00:01")]
    cfg = config.load(write_hub_config(tmp_path, 1883, devs))
    attached = keys.attach(cfg)
    assert attached.devices["p1"].key == devs[0].key
    keys.write(tmp_path / "keys.toml", {"other": KEY})
    with pytest.raises(ConfigError, match="keys.p1: no key for configured device"):
        keys.attach(cfg)


def test_run_refuses_world_readable_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    from tools.sim.virtual_home import HomeDevice, write_hub_config

    config = write_hub_config(tmp_path, 1883, [HomeDevice("p1", "pendant", MAC)])
    os.chmod(tmp_path / "keys.toml", 0o644)
    assert cli.main(["run", "--config", str(config)]) == 2
    assert "keys.toml: keys file is accessible to every user" in capsys.readouterr().err


# -- tryggheim decode -----------------------------------------------------------------


def test_cli_decode_with_key(capsys: pytest.CaptureFixture[str]) -> None:
    svc = frame(42)
    assert cli.main(["decode", svc.hex(), "--mac", MAC, "--key", KEY.hex()]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mic_verified"] is True and out["counter"] == 42
    assert out["values"] == {"packet_id": 42, "button": 1}
    assert out["button_event"] == "press" and out["encrypted"] and out["trigger"]
    assert out["objects"][1] == {"id": "0x3a", "name": "button", "value": 1}


def test_cli_decode_whole_advert_with_keys_file_names_the_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.toml"
    keys.write(path, {"door-1": bytes(16), "pendant-1": KEY})
    whole = bthome.advert(frame(43))
    assert cli.main(["decode", whole.hex(), "--mac", MAC.lower(), "--keys", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key_of"] == "pendant-1" and out["counter"] == 43


def test_cli_decode_wrong_key_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["decode", frame(44).hex(), "--mac", MAC, "--key", "00" * 16]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["mic_verified"] is False and out["counter"] == 44
    assert "MIC does not verify" in out["error"]
    assert cli.main(["decode", "zz", "--mac", MAC]) == 2
    assert cli.main(["decode", "40", "--mac", "nope"]) == 2


def test_cli_decode_plain(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["decode", "d2fc40000901610c020c3a01", "--mac", MAC]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["values"] == {"packet_id": 9, "battery": 97, "voltage_mv": 3074, "button": 1}
    assert out["encrypted"] is False


# -- capture and replay ---------------------------------------------------------------


def test_capture_lines_round_trip_and_bad_lines_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "cap.jsonl"
    w = CaptureWriter(path)
    a = Advert(MAC, -61, frame(1), 1764171234.5)
    w.write(a)
    w.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    line = path.read_text().splitlines()[0]
    assert json.loads(line) == {"t": 1764171234.5, "mac": MAC, "rssi": -61, "uuid": "fcd2",
                                "data": frame(1).hex()}
    assert parse_line(line) == a
    with path.open("a") as f:
        f.write('{"t": 1, "mac": "x", "rssi": "loud", "data": "00"}\n\nnot json\n')
    items = list(read(path))
    assert [n for n, _ in items] == [1, 2, 4]
    assert isinstance(items[1][1], ValueError) and "rssi" in str(items[1][1])


def test_replay_scanner_feeds_the_decoder_and_replays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "cap.jsonl"
    w = CaptureWriter(path)
    for c in (1, 1, 2, 3):
        w.write(Advert(MAC, -60, frame(c), 100.0 + c))
    w.close()
    with path.open("a") as f:
        f.write("garbage\n")
    d = decoder(tmp_path)

    async def play() -> ReplayScanner:
        scanner = ReplayScanner(path, ManualClock(5000.0))
        got: list[Advert] = []
        await scanner.start(got.append)
        await asyncio.wait_for(scanner.done.wait(), 5)
        await scanner.stop()
        for a in got:
            assert a.received_at == 5000.0  # stamped by the hub's clock
            d.decode(a)
        return scanner

    s = asyncio.run(play())
    assert (s.delivered, s.malformed) == (4, 1)
    assert d.stats == {"accepted": 3, "repeat": 1}
    d.counters.close()
    d = decoder(tmp_path)  # restart, then somebody plays the recording again
    asyncio.run(play())
    # The last accepted frame counts as a repeat (its burst may still be on the air), the rest
    # are replays; none is accepted.
    assert d.stats == {"replay": 3, "repeat": 1}


def test_replay_radio_needs_its_file_and_paths_are_beside_the_config(tmp_path: Path) -> None:
    from hub.config import settings as config

    base = '[site]\nid = "s"\n[hub]\nid = "h"\nkeys_file = "secret/k.toml"\n[radio]\n'
    (tmp_path / "a.toml").write_text(base + 'kind = "replay"\n')
    with pytest.raises(ConfigError, match=r"a\.toml(:\d+)?: radio\.replay: missing"):
        config.load(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text(base + 'kind = "replay"\nreplay = "cap.jsonl"\n')
    cfg = config.load(tmp_path / "b.toml")
    assert cfg.radio_replay == str(tmp_path / "cap.jsonl")
    assert cfg.keys_file == tmp_path / "secret" / "k.toml"


def test_capture_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "cap.jsonl"
    w = CaptureWriter(path, max_bytes=1000)
    for c in range(40):
        w.write(Advert(MAC, -60, frame(c), float(c)))
    w.close()
    assert w.written == 40
    rotated = tmp_path / "cap.jsonl.1"
    assert path.stat().st_size <= 1000 and rotated.stat().st_size <= 1000
    assert stat.S_IMODE(os.stat(rotated).st_mode) == 0o600
    last = [a for _, a in read(path)]
    assert isinstance(last[-1], Advert) and last[-1].received_at == 39.0


def test_cli_decodes_a_capture_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cap.jsonl"
    w = CaptureWriter(path)
    w.write(Advert(MAC, -60, frame(5), 10.0))
    w.write(Advert(MAC, -61, frame(6, key=bytes(16)), 11.0))
    w.close()
    with path.open("a") as f:
        f.write("not json\n")
    assert cli.main(["decode", "--capture", str(path), "--key", KEY.hex()]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["line"] for x in lines] == [1, 2, 3]
    assert lines[0]["counter"] == 5 and lines[0]["mic_verified"] and lines[0]["rssi"] == -60
    assert lines[1]["mic_verified"] is False and "error" in lines[1]
    assert lines[2]["error"].startswith(f"{path}:3: not JSON")
    assert cli.main(["decode", "--capture", str(tmp_path / "none.jsonl")]) == 2
    assert cli.main(["decode"]) == 2


def test_a_failing_counter_store_does_not_stop_adverts(tmp_path: Path) -> None:
    store = CounterStore(tmp_path / "c.sqlite")
    d = AdvertDecoder({MAC: DEV}, store)
    assert d.decode(adv(frame(1))) is not None
    store._db.execute("PRAGMA query_only = ON")  # every write now fails, as on a bad disk
    assert d.decode(adv(frame(2))) is not None
    assert store.flush() is False and store.dirty
    assert d.decode(adv(frame(2))) is None  # still refused as a repeat, from memory
    store._db.execute("PRAGMA query_only = OFF")
    assert store.flush() is True
    assert CounterStore(tmp_path / "c.sqlite").last("pendant-1") == 2


def test_each_advert_has_its_own_stable_id_and_a_press_alarm_takes_it() -> None:
    """After the hub lost its database, a pendant's repeat of a press the centre already has
    is accepted again (the counter is gone with it). Before, it became a second alarm with a
    new random id; with the advert's id it is the same alarm, which the centre drops."""
    from hub.rules.engine import RuleEngine
    from tests.hub.rules.test_rules import OSLO

    a1, a1_again, a2 = decoder().decode(adv(frame(7))), decoder().decode(adv(frame(7))), \
        decoder().decode(adv(frame(8)))
    other_key = AdvertDecoder({MAC: Device("pendant-1", "pendant", MAC, "hall", bytes(16))})
    rekeyed = other_key.decode(adv(frame(7, key=bytes(16))))
    assert a1 and a1_again and a2 and rekeyed
    assert a1.advert_id == a1_again.advert_id  # the same frame, by a hub that forgot it
    assert len({a1.advert_id, a2.advert_id, rekeyed.advert_id}) == 3  # new press, new key
    ids = []
    for r in (a1, a1_again):
        engine = RuleEngine("home-1", OSLO)  # a fresh hub each time
        (out,) = engine.on_report(r, 1000.0)
        ids.append(out.msg_id)
    assert ids == [a1.advert_id, a1.advert_id]
