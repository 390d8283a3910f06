"""Provisioning on the hub: all-or-nothing registration in the hub's config and keys file
(local files, and over SSH with a stand-in `ssh` that runs the hub's command here)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from hub.clock import ManualClock
from hub.config import keys as hub_keys
from hub.config import settings as hub_config
from hub.decode.counters import CounterStore
from hub.installer import provision
from hub.installer.provision import LocalHub, ProvisionError, Registration
from hub.store import DB_NAME
from tools.installer.provision import SshHub

ROOT = Path(__file__).resolve().parents[3]

HUB_TOML = """\
# Hub at Storgata 1 (comment kept by registration)
[site]
id = "storgata-1"

[hub]
id = "hub-1"
data_dir = "var"

[radio]
kind = "virtual"

[[device]]
id = "door-1"
role = "door"
mac = "C0:FF:EE:00:00:02"
room = "hall"
"""


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hub"
    d.mkdir()
    (d / "hub.toml").write_text(HUB_TOML)
    hub_keys.write(d / "keys.toml", {"door-1": bytes(range(16))})
    return d


def reg(key: str | None = None, **kw: object) -> Registration:
    fields: dict[str, object] = {"id": "pendant-1", "role": "pendant", "mac": "24:0a:c4:00:00:01",
                                 "room": "bedroom"}
    fields.update(kw)
    return Registration(key=key or secrets.token_hex(16), **fields)  # type: ignore[arg-type]


def test_config_edit_appends_new_device_and_keeps_everything_else() -> None:
    out = provision.config_with_device(HUB_TOML, reg("00" * 16))
    assert out.startswith(HUB_TOML)  # comments and other devices untouched
    devices = tomllib.loads(out)["device"]
    assert [d["id"] for d in devices] == ["door-1", "pendant-1"]
    assert devices[1] == {"id": "pendant-1", "role": "pendant", "mac": "24:0A:C4:00:00:01",
                          "room": "bedroom"}


def test_config_edit_replaces_the_same_device_in_place() -> None:
    out = provision.config_with_device(HUB_TOML, reg("00" * 16, id="door-1", role="door",
                                                      mac="C0:FF:EE:00:00:09", room=""))
    devices = tomllib.loads(out)["device"]
    # No ROOM given on a re-flash: the room the hub has stays.
    assert devices == [{"id": "door-1", "role": "door", "mac": "C0:FF:EE:00:00:09",
                        "room": "hall"}]
    assert out.count("[[device]]") == 1


DEVICES_TOML = """\
# Devices in the home. The key of device X is keys[X] in the keys file.
[[device]]
id = "pendant-1"   # the resident's own pendant
role = "pendant"
mac = "24:0A:C4:00:00:01"
room = "bedroom"
heartbeat_s = 900   # reports less often: a slow home
# spare pendant below, kept charged in the hall
[[device]]
id = "pendant-2"
role = "pendant"
mac = "24:0A:C4:00:00:02"
"""


def test_reflash_keeps_room_heartbeat_and_comments() -> None:
    # A re-flash gives what the installer typed: a new MAC (board swapped), no ROOM, no
    # heartbeat. Everything else in the file stays as the admin wrote it.
    out = provision.config_with_device(DEVICES_TOML, reg(mac="24:0a:c4:00:00:09", room=""))
    assert out == DEVICES_TOML.replace('"24:0A:C4:00:00:01"', '"24:0A:C4:00:00:09"')
    d = tomllib.loads(out)["device"][0]
    assert d["room"] == "bedroom" and d["heartbeat_s"] == 900


def test_reflash_changes_only_what_is_given() -> None:
    out = provision.config_with_device(DEVICES_TOML, reg(id="pendant-2", room="hall",
                                                         heartbeat_s=1200))
    assert "# the resident's own pendant" in out and "# spare pendant below" in out
    d = tomllib.loads(out)["device"]
    assert d[0] == tomllib.loads(DEVICES_TOML)["device"][0]
    assert d[1] == {"id": "pendant-2", "role": "pendant", "mac": "24:0A:C4:00:00:01",
                    "room": "hall", "heartbeat_s": 1200}


def test_a_new_device_goes_into_an_empty_devices_file() -> None:
    out = provision.config_with_device(provision.DEVICES_HEADER, reg())
    assert out.startswith(provision.DEVICES_HEADER)
    assert tomllib.loads(out)["device"] == [{"id": "pendant-1", "role": "pendant",
                                             "mac": "24:0A:C4:00:00:01", "room": "bedroom"}]


RULES_WITH_DOOR = """\

[[device]]
id = "pir-hall"
role = "pir"
mac = "C0:FF:EE:00:00:03"

[[wandering]]
name = "front door at night"
door = "door-1"
window = "22:00-06:00"
inside = ["pir-hall"]
"""


def test_check_with_a_plan_refuses_a_role_the_rules_cannot_use(hub_dir: Path) -> None:
    toml = hub_dir / "hub.toml"
    toml.write_text(HUB_TOML + RULES_WITH_DOOR.replace("[[wandering]]", "[[rules.wandering]]"))
    before = toml.read_text()
    hub = LocalHub(toml)
    hub.check(Registration("door-1", "door", "", "", "", None))  # as it is: fine
    with pytest.raises(ProvisionError, match=r"(?s)door-1 as a pendant would break.*is a "
                                             r"pendant, expected door"):
        hub.check(Registration("door-1", "pendant", "", "", "", None))
    with pytest.raises(ProvisionError, match="heartbeat_s 5"):
        hub.check(Registration("door-1", "door", "", "", "", 5))
    assert toml.read_text() == before


def test_the_provisioning_command_takes_its_config_once(hub_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # sudoers fixes `--config /etc/tryggheim` and lets the rest vary: a second --config in
    # the rest must not win.
    other = tmp_path / "other"
    other.mkdir()
    (other / "hub.toml").write_text(HUB_TOML)
    with pytest.raises(SystemExit) as e:
        provision.main(["check", "--config", str(hub_dir / "hub.toml"),
                        "--config", str(other / "hub.toml")])
    assert e.value.code == 2 and "--config given twice" in capsys.readouterr().err
    assert provision.main(["check", "--config", str(hub_dir / "hub.toml"), "--id", "door-1",
                           "--role", "door", "--room", ""]) == 0


def test_config_edit_quotes_names_safely() -> None:
    out = provision.config_with_device(HUB_TOML, reg("00" * 16, room='Stue "øst"\n[x]'))
    assert tomllib.loads(out)["device"][1]["room"] == 'Stue "øst"\n[x]'


def test_local_registration_writes_config_keys_and_audit(hub_dir: Path) -> None:
    r = reg()
    LocalHub(hub_dir / "hub.toml", clock=ManualClock(1_790_000_000)).register(r)
    cfg = hub_config.load(hub_dir / "hub.toml")
    assert cfg.devices["pendant-1"].mac == "24:0A:C4:00:00:01"
    assert cfg.devices["pendant-1"].room == "bedroom"
    keys = hub_keys.load(hub_dir / "keys.toml")
    assert keys["pendant-1"] == bytes.fromhex(r.key)
    assert keys["door-1"] == bytes(range(16))  # others kept
    assert stat.S_IMODE(os.stat(hub_dir / "keys.toml").st_mode) == 0o600
    audit_text = (hub_dir / "var" / "audit.jsonl").read_text()  # the hub's own audit log
    audit = [json.loads(x) for x in audit_text.splitlines()]
    assert audit[-1]["action"] == "register-device" and audit[-1]["device"] == "pendant-1"
    assert audit[-1]["time"].startswith("2026-09-21T")
    assert audit[-1]["via"] == "hub.installer.provision"
    assert audit[-1]["key_fingerprint"] == provision.fingerprint(r.key)
    assert '+id = "pendant-1"' in audit[-1]["diff"]
    assert r.key not in audit_text
    assert not [p for p in hub_dir.iterdir() if p.name.startswith(".")]


SITE_TOML = """\
[site]
id = "storgata-1"

[hub]
id = "hub-1"
data_dir = "../var"
keys_file = "keys.toml"

[radio]
kind = "bleak"
"""


def test_an_installed_hubs_config_directory_gets_the_device_in_devices_toml(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "etc-tryggheim"
    conf.mkdir()
    (conf / "site.toml").write_text(SITE_TOML)
    hub = LocalHub(conf)
    hub.check()
    r = reg(heartbeat_s=900)
    hub.register(r)
    assert (conf / "site.toml").read_text() == SITE_TOML
    assert (conf / "devices.toml").read_text().startswith(provision.DEVICES_HEADER)
    cfg = hub_config.load(conf)
    assert cfg.devices["pendant-1"].heartbeat_s == 900
    assert hub_keys.load(conf / "keys.toml")["pendant-1"] == bytes.fromhex(r.key)
    with pytest.raises(ProvisionError, match=r"etc-tryggheim/devices.toml:\d+: device\[1\].mac"):
        hub.register(reg(id="x-2", mac="zz"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert sorted(hub_config.load(conf).devices) == ["pendant-1"]


def test_a_bad_registration_changes_nothing(hub_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in hub_dir.iterdir() if p.is_file()}
    with pytest.raises(ProvisionError, match=r"hub.toml:21: device\[1\].mac: .NOT-A-MAC. is not a MAC"):
        LocalHub(hub_dir / "hub.toml").register(reg(mac="not-a-mac"))
    after = {p.name: p.read_bytes() for p in hub_dir.iterdir() if p.is_file()}
    assert after == before
    assert not (hub_dir / "var" / "audit.jsonl").exists()


def test_an_invalid_hub_config_is_reported_before_anything(hub_dir: Path) -> None:
    (hub_dir / "hub.toml").write_text(HUB_TOML + "\n[mqtt]\nport = 70000\n")
    hub = LocalHub(hub_dir / "hub.toml")
    with pytest.raises(ProvisionError, match="mqtt.port"):
        hub.check()


def test_rotating_a_key_makes_the_hub_forget_the_old_counter(hub_dir: Path) -> None:
    hub = LocalHub(hub_dir / "hub.toml")
    first = reg()
    hub.register(first)
    store = CounterStore(hub_dir / "var" / DB_NAME)
    store.accept("pendant-1", 4242)
    store.accept("door-1", 77)
    store.close()
    hub.register(first)  # same key again (re-flash, key kept): the counter must stay
    store = CounterStore(hub_dir / "var" / DB_NAME)
    assert store.last("pendant-1") == 4242
    store.close()
    hub.register(reg())  # new key
    store = CounterStore(hub_dir / "var" / DB_NAME)
    assert store.last("pendant-1") is None
    assert store.last("door-1") == 77
    store.close()
    actions = [json.loads(x)["action"]
               for x in (hub_dir / "var" / "audit.jsonl").read_text().splitlines()]
    assert actions == ["register-device", "register-device", "rotate-device-key"]


def fake_ssh(tmp_path: Path, exit_code: int | None = None) -> Path:
    """An `ssh` that runs the remote command on this machine, logging its argv."""
    script = tmp_path / "ssh"
    log = tmp_path / "ssh.log"
    if exit_code is not None:
        body = f'echo "ssh: connect to host $5 port 22: Connection refused" >&2\nexit {exit_code}\n'
    else:
        body = 'shift 4\nhost="$1"; shift\nexec sh -c "$*"\n'
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n{body}')
    script.chmod(0o755)
    return script


def test_registration_over_ssh_sends_the_key_on_stdin_only(hub_dir: Path, tmp_path: Path) -> None:
    ssh = fake_ssh(tmp_path)
    hub = SshHub("installer@hub.local", str(hub_dir / "hub.toml"),
                 hub_command=f"{sys.executable} -m hub.installer.provision", ssh=str(ssh))
    hub.check()
    r = reg()
    hub.register(r)
    assert hub_keys.load(hub_dir / "keys.toml")["pendant-1"] == bytes.fromhex(r.key)
    assert "pendant-1" in hub_config.load(hub_dir / "hub.toml").devices
    assert hub.key_fingerprint("pendant-1") == provision.fingerprint(r.key)
    assert hub.key_fingerprint("nobody") is None
    argv_log = (tmp_path / "ssh.log").read_text()
    assert "installer@hub.local" in argv_log and "BatchMode=yes" in argv_log
    assert r.key not in argv_log


def test_remote_problems_come_back_with_the_hub_name(hub_dir: Path, tmp_path: Path) -> None:
    hub = SshHub("hub.local", str(hub_dir / "hub.toml"),
                 hub_command=f"{sys.executable} -m hub.installer.provision",
                 ssh=str(fake_ssh(tmp_path)))
    with pytest.raises(ProvisionError, match=r"(?s)on the hub hub.local: .*hub.toml:21: device\[1\].mac"):
        hub.register(reg(mac="nonsense"))
    assert "pendant-1" not in hub_config.load(hub_dir / "hub.toml").devices


def test_unreachable_hub_is_said_plainly(tmp_path: Path) -> None:
    hub = SshHub("hub.local", "/etc/tryggheim/hub.toml", ssh=str(fake_ssh(tmp_path, 255)))
    with pytest.raises(ProvisionError, match="hub unreachable: ssh hub.local: .*refused"):
        hub.check()
    missing = SshHub("hub.local", "/x", ssh=str(tmp_path / "no-such-ssh"))
    with pytest.raises(ProvisionError, match="hub unreachable: .* is not installed"):
        missing.check()


@pytest.mark.skipif(os.geteuid() != 0, reason="sudo's case: runs as root only")
def test_run_as_root_the_files_it_makes_stay_the_hubs(hub_dir: Path) -> None:
    # `sudo tryggheim-provision register` on a hub that never ran: the audit log it creates
    # must belong to the hub's user, or the hub could not write its own audit log.
    hub_uid, hub_gid = 65534, 65534  # stands in for the tryggheim user
    data = hub_dir / "var"
    data.mkdir()
    os.chown(data, hub_uid, hub_gid)
    os.chown(hub_dir, hub_uid, hub_gid)
    os.chown(hub_dir / "keys.toml", hub_uid, hub_gid)
    LocalHub(hub_dir / "hub.toml").register(reg())
    for name in ("audit.jsonl",):
        st = os.stat(data / name)
        assert (st.st_uid, st.st_gid) == (hub_uid, hub_gid), name
    st = os.stat(hub_dir / "keys.toml")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (hub_uid, 0o600)
