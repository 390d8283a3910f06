"""`make flash` against a simulated ESP32 on a pseudo-terminal (tools/sim/rawrepl_board.py):
the real mpremote and esptool code paths, the files that land on the board, the registration, and a
clear message for each common mistake with nothing half-registered.

esptool's bootloader protocol is not simulated: where a test needs a flash that succeeds, a
stand-in `esptool` (TRYGGHEIM_ESPTOOL) logs its arguments and erases the simulated flash; where
a test needs esptool to fail at a board that is not in bootloader mode, the real esptool runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from hub.config import keys as hub_keys
from hub.config import settings as hub_config
from hub.decode.counters import CounterStore
from hub.installer.provision import LocalHub
from hub.store import DB_NAME
from tests.conftest import requires_node
from tools.installer import flash, provision
from tools.sim.rawrepl_board import SimBoardProcess

ROOT = Path(__file__).resolve().parents[3]
MAC = "24:0A:C4:12:34:56"

HUB_TOML = """\
[site]
id = "storgata-1"

[hub]
id = "hub-1"
data_dir = "var"

[radio]
kind = "virtual"
"""


@pytest.fixture
def board(tmp_path: Path) -> Iterator[SimBoardProcess]:
    b = SimBoardProcess(tmp_path / "board" / "flash", mac=MAC)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def hub_toml(tmp_path: Path) -> Path:
    d = tmp_path / "hub"
    d.mkdir()
    (d / "hub.toml").write_text(HUB_TOML)
    return d / "hub.toml"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "ESP32_GENERIC-v1.29.0.bin"
    img.write_bytes(b"\xe9" + bytes(4095))
    return img


@pytest.fixture
def fake_esptool(tmp_path: Path, board: SimBoardProcess, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stands in for a chip in bootloader mode: logs each call; erase-flash empties the flash."""
    log = tmp_path / "esptool.log"
    script = tmp_path / "fake_esptool.py"
    script.write_text(
        "import json, shutil, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "if 'erase-flash' in sys.argv:\n"
        f"    for p in __import__('pathlib').Path({str(board.flash)!r}).iterdir():\n"
        "        shutil.rmtree(p) if p.is_dir() else p.unlink()\n"
    )
    monkeypatch.setenv("TRYGGHEIM_ESPTOOL", f"{sys.executable} {script}")
    return log


def run(*args: str) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "tools.installer.flash", *args], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    return p.returncode, p.stdout, p.stderr


def board_config(board: SimBoardProcess) -> dict[str, object]:
    cfg: dict[str, object] = json.loads(board.files()["config.json"])
    return cfg


def test_new_board_is_flashed_verified_and_registered(
    board: SimBoardProcess, hub_toml: Path, image: Path, fake_esptool: Path
) -> None:
    rc, out, err = run("--role", "pendant", "--port", board.port, "--id", "pendant-1",
                       "--image", str(image), "--hub-config", str(hub_toml), "--room", "bedroom")
    assert rc == 0, err
    calls = [json.loads(x) for x in fake_esptool.read_text().splitlines()]
    assert [c[-1] if c[-1] == "erase-flash" else c[-3:] for c in calls] == [
        "erase-flash", ["write-flash", "0x1000", str(image)]]
    assert all(c[:4] == ["--chip", "esp32", "--port", board.port] for c in calls)
    files = board.files()
    assert files["main.py"] == (ROOT / "firmware" / "main.py").read_bytes()
    assert files["pinmap.json"] == (ROOT / "hardware" / "pinmap.json").read_bytes()
    for name in ("device.mpy", "pendant.mpy", "protocols/bthome.mpy"):
        assert files[name][:1] == b"M", name  # MicroPython bytecode header
    cfg = board_config(board)
    assert cfg["id"] == "pendant-1" and cfg["role"] == "pendant" and cfg["mac"] == MAC
    pinmap = json.loads((ROOT / "hardware" / "pinmap.json").read_text())
    assert cfg["pins"] == pinmap["roles"]["pendant"]["pins"]
    hub = hub_config.load(hub_toml)
    assert hub.devices["pendant-1"].mac == MAC and hub.devices["pendant-1"].room == "bedroom"
    assert hub_keys.load(hub.keys_file)["pendant-1"].hex() == cfg["key"]
    assert str(cfg["key"]) not in out + err  # the key is never printed
    assert "verify every file" in out and "done: pendant-1" in out


@requires_node
def test_what_was_flashed_boots_in_real_micropython(board: SimBoardProcess, hub_toml: Path) -> None:
    rc, _, err = run("--role", "door", "--port", board.port, "--no-image",
                     "--hub-config", str(hub_toml))
    assert rc == 0, err
    # The compiled .mpy files and config.json, exactly as on the board, in MicroPython (WASM):
    # the firmware's own loader must accept the config the installer wrote.
    script = (
        'import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";\n'
        'import fs from "node:fs"; import path from "node:path";\n'
        "const [dir, code] = process.argv.slice(1);\n"
        "const mp = await loadMicroPython({ stdout: (l) => process.stdout.write(l + '\\n') });\n"
        "function copy(s, d) { mp.FS.mkdirTree(d); for (const n of fs.readdirSync(s)) {\n"
        "  const p = path.join(s, n); if (fs.statSync(p).isDirectory()) copy(p, d + '/' + n);\n"
        "  else mp.FS.writeFile(d + '/' + n, fs.readFileSync(p)); } }\n"
        "copy(dir, '/flash'); mp.FS.chdir('/flash');\n"
        "mp.runPython(\"import sys\\nsys.path.insert(0, '/flash')\\n\" + code);\n"
    )
    code = "import device, json\nprint(device.__file__)\nprint(json.dumps(device.load_config()))"
    p = subprocess.run(["node", "--input-type=module", "-e", script, str(board.flash), code],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    where, loaded = p.stdout.splitlines()[-2:]
    assert where == "/flash/device.mpy"
    cfg = json.loads(loaded)
    assert cfg["id"] == "door-" + MAC.replace(":", "")[-4:].lower() and cfg["role"] == "door"


def test_reflash_keeps_key_and_counter_mark_through_the_erase(
    board: SimBoardProcess, hub_toml: Path, image: Path, fake_esptool: Path
) -> None:
    args = ("--role", "pendant", "--port", board.port, "--id", "pendant-1",
            "--image", str(image), "--hub-config", str(hub_toml))
    assert run(*args)[0] == 0
    key = board_config(board)["key"]
    # The device has been in use: its counter high-water mark is on flash.
    (board.flash / provision.COUNTER_FILE).write_text("4160")
    rc, out, err = run(*args)
    assert rc == 0, err
    assert board_config(board)["key"] == key
    assert board.files()[provision.COUNTER_FILE] == b"4160"
    assert fake_esptool.read_text().count("erase-flash") == 2  # it really was erased again
    assert "key kept" in out
    assert hub_keys.load(hub_config.load(hub_toml).keys_file)["pendant-1"].hex() == key


def test_reflash_with_rotation_gives_a_new_key_everywhere(
    board: SimBoardProcess, hub_toml: Path
) -> None:
    args = ("--role", "pendant", "--port", board.port, "--id", "pendant-1", "--no-image",
            "--hub-config", str(hub_toml))
    assert run(*args)[0] == 0
    old_key = board_config(board)["key"]
    (board.flash / provision.COUNTER_FILE).write_text("4160")
    store = CounterStore(hub_toml.parent / "var" / DB_NAME)
    store.accept("pendant-1", 4100)
    store.close()
    rc, out, err = run(*args, "--rotate-key")
    assert rc == 0, err
    new_key = board_config(board)["key"]
    assert new_key != old_key and "key rotated" in out
    assert provision.COUNTER_FILE not in board.files()  # a new key starts its counter at 0
    assert hub_keys.load(hub_config.load(hub_toml).keys_file)["pendant-1"].hex() == new_key
    store = CounterStore(hub_toml.parent / "var" / DB_NAME)
    assert store.last("pendant-1") is None
    store.close()


def test_a_board_without_the_hubs_key_is_refused_before_the_erase(
    board: SimBoardProcess, hub_toml: Path, image: Path, fake_esptool: Path
) -> None:
    args = ("--role", "pendant", "--port", board.port, "--id", "pendant-1",
            "--hub-config", str(hub_toml))
    assert run(*args, "--no-image")[0] == 0
    (board.flash / "config.json").unlink()  # another board, or this one wiped
    hub_before = hub_toml.read_text()
    before = board.files()
    rc, _, err = run(*args, "--image", str(image))
    assert rc == 2 and "ROTATE_KEY=1" in err
    assert hub_toml.read_text() == hub_before
    assert not fake_esptool.exists()  # esptool never ran: the board is as it was
    assert board.files() == before


def test_dry_run_prints_every_step_and_touches_nothing(
    board: SimBoardProcess, hub_toml: Path, image: Path
) -> None:
    rc, out, err = run("--role", "pendant", "--port", board.port, "--image", str(image),
                       "--hub-config", str(hub_toml), "--dry-run")
    assert rc == 0, err
    for step in ("check the inputs", "read what the board holds", "erase the flash",
                 "write the MicroPython image", "compile the application", "copy the application",
                 "write the device config and key", "verify every file", "register the device",
                 "reset the board"):
        assert step in out
    assert f"--port {board.port} --baud 460800 erase-flash" in out
    assert f"write-flash 0x1000 {image}" in out
    assert "mpremote: write protocols/bthome.mpy" in out and "mpremote: write main.py" in out
    assert "nothing was changed" in out
    assert board.files() == {}
    assert hub_toml.read_text() == HUB_TOML and not (hub_toml.parent / "keys.toml").exists()


def make(*args: str) -> subprocess.CompletedProcess[str]:
    # -o setup: this test already runs in the set-up environment; a concurrent edit of
    # pyproject.toml must not make it reinstall the venv halfway through the suite.
    return subprocess.run(["make", "-s", "-o", "setup", "flash", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_make_flash_dry_run(board: SimBoardProcess, image: Path, hub_toml: Path) -> None:
    p = make("DEVICE=door", f"PORT={board.port}", f"IMAGE={image}", f"HUB_CONFIG={hub_toml}",
             "ID=door-hall", "DRY_RUN=1")
    assert p.returncode == 0, p.stderr
    assert f"would run: {sys.executable} -m esptool --chip esp32 --port {board.port} " \
        "--baud 460800 erase-flash" in p.stdout
    assert "checked: role door" in p.stdout and "id door-hall" in p.stdout
    assert "[12/12] reset the board" in p.stdout
    assert board.files() == {} and hub_toml.read_text() == HUB_TOML


# -- a dry run checks for real, and reports only checks it made ---------------------------
def test_dry_run_finds_a_missing_port() -> None:
    # It used to say "port /dev/ttyUSB7 exists and no other program has it open" and
    # succeed without looking.
    rc, out, err = run("--role", "pendant", "--port", "/dev/ttyUSB7", "--no-image", "--dry-run")
    assert rc == 2 and "no port /dev/ttyUSB7" in err
    assert "nothing was changed" not in out


def test_dry_run_refuses_an_unknown_role(board: SimBoardProcess) -> None:
    p = make("DEVICE=foo", f"PORT={board.port}", "IMAGE=none", "DRY_RUN=1")
    assert p.returncode != 0
    assert "device role 'foo': must be one of pendant, door, pir, bed, wearable" in p.stderr


def test_dry_run_finds_a_bad_image(board: SimBoardProcess, tmp_path: Path) -> None:
    page = tmp_path / "ESP32_GENERIC.bin"
    page.write_text("<!DOCTYPE html><html>... the download page, saved by mistake")
    rc, _, err = run("--role", "pendant", "--port", board.port, "--image", str(page),
                     "--dry-run")
    assert rc == 2 and "image not a firmware image" in err


def test_dry_run_shows_the_ssh_commands_it_checked_with(
    board: SimBoardProcess, hub_toml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh = tmp_path / "ssh"  # runs the remote command here, as the hub would; logs each call
    log = tmp_path / "ssh.log"
    ssh.write_text(f'#!/bin/sh\necho "$*" >> {log}\nshift 5\nexec sh -c "$*"\n')
    ssh.chmod(0o755)
    monkeypatch.setenv("TRYGGHEIM_SSH", str(ssh))
    hub_cmd = f"{sys.executable} -m hub.installer.provision"
    rc, out, err = run("--role", "pir", "--port", board.port, "--no-image", "--id", "pir-hall",
                       "--hub", "installer@hub.local", "--hub-config", str(hub_toml),
                       "--hub-command", hub_cmd, "--dry-run")
    assert rc == 0, err
    calls = log.read_text().splitlines()
    # What ran: the hub's check, and the check of this device as planned; nothing else.
    assert [c.split(" -m hub.installer.provision ")[1].split()[0] for c in calls] == [
        "check", "key-fingerprint", "check"]
    assert f"{hub_cmd} check --config {hub_toml} --id pir-hall --role pir --mac {MAC}" in out
    assert (f"would run: {ssh} -o BatchMode=yes -o ConnectTimeout=10 installer@hub.local "
            f"'{hub_cmd} register --config {hub_toml} --id pir-hall --role pir --mac {MAC}"
            in out)
    assert "< the key on stdin" in out
    assert hub_toml.read_text() == HUB_TOML and board.files() == {}


# -- every check that can fail runs before the board is written -----------------------------
RULES = """
[[device]]
id = "door-front"
role = "door"
mac = "C0:FF:EE:00:00:03"

[[device]]
id = "pir-hall"
role = "pir"
mac = "C0:FF:EE:00:00:04"

[[rules.wandering]]
name = "front door at night"
door = "door-front"
window = "22:00-06:00"
inside = ["pir-hall"]
"""


def test_a_door_in_a_wandering_rule_is_not_flashed_as_a_pendant(
    board: SimBoardProcess, hub_toml: Path, image: Path, fake_esptool: Path
) -> None:
    hub_toml.write_text(HUB_TOML + RULES)
    before = hub_toml.read_text()
    rc, _, err = run("--role", "pendant", "--port", board.port, "--id", "door-front",
                     "--image", str(image), "--hub-config", str(hub_toml))
    assert rc == 2, err
    assert "door-front as a pendant would break the hub config" in err
    assert "is a pendant, expected door" in err
    assert not fake_esptool.exists()  # never erased
    assert board.files() == {} and hub_toml.read_text() == before


def test_a_heartbeat_out_of_range_is_refused_before_the_erase(
    board: SimBoardProcess, hub_toml: Path, image: Path, fake_esptool: Path
) -> None:
    rc, _, err = run("--role", "pendant", "--port", board.port, "--id", "pendant-1",
                     "--image", str(image), "--hub-config", str(hub_toml), "--heartbeat-s", "30")
    assert rc == 2 and "heartbeat_s 30: must be 60..86400" in err
    assert not fake_esptool.exists()
    assert_untouched(board, hub_toml)


def test_an_image_for_another_chip_is_refused_before_the_erase(
    board: SimBoardProcess, hub_toml: Path, tmp_path: Path, fake_esptool: Path
) -> None:
    s3 = tmp_path / "ESP32_GENERIC_S3.bin"
    s3.write_bytes(b"\xe9\x03\x02\x4f" + bytes(8) + b"\x09\x00" + bytes(4082))
    rc, _, err = run("--role", "pendant", "--port", board.port, "--image", str(s3),
                     "--hub-config", str(hub_toml))
    assert rc == 2 and "image for another chip" in err and "ESP32S3, not ESP32" in err
    assert not fake_esptool.exists()
    assert_untouched(board, hub_toml)


def test_no_python_none_in_what_flash_says(
    board: SimBoardProcess, hub_toml: Path, image: Path, fake_esptool: Path
) -> None:
    # A board provisioned but never used: config.json, no counter mark yet.
    assert run("--role", "pendant", "--port", board.port, "--id", "pendant-1", "--no-image",
               "--hub-config", str(hub_toml))[0] == 0
    assert provision.COUNTER_FILE not in board.files()
    for extra in (("--dry-run",), ()):
        rc, out, err = run("--role", "pendant", "--port", board.port, "--image", str(image),
                           "--hub-config", str(hub_toml), *extra)
        assert rc == 0, err
        assert "None" not in out + err
        assert "the board was pendant-1 (pendant); no counter mark yet" in out


def test_make_flash_against_the_simulated_board(board: SimBoardProcess, hub_toml: Path) -> None:
    p = make("DEVICE=bed", f"PORT={board.port}", "IMAGE=none", f"HUB_CONFIG={hub_toml}",
             "ID=bed-1", "ROOM=soverom")
    assert p.returncode == 0, p.stderr
    assert board_config(board)["role"] == "bed"
    assert tomllib.loads(hub_toml.read_text())["device"] == [
        {"id": "bed-1", "role": "bed", "mac": MAC, "room": "soverom"}]


def test_make_flash_without_port_says_what_it_needs() -> None:
    p = make("DEVICE=pendant")
    assert p.returncode != 0
    assert "PORT=/dev/ttyUSB0" in p.stdout


# -- the common mistakes: one clear message each, and nothing registered --------------------
def assert_untouched(board: SimBoardProcess, hub_toml: Path) -> None:
    assert "config.json" not in board.files()
    assert hub_toml.read_text() == HUB_TOML
    assert not (hub_toml.parent / "keys.toml").exists()


def test_no_port(hub_toml: Path, image: Path) -> None:
    rc, _, err = run("--role", "pendant", "--port", "/dev/ttyUSB-none", "--image", str(image),
                     "--hub-config", str(hub_toml))
    assert rc == 2
    assert "no port /dev/ttyUSB-none" in err
    assert hub_toml.read_text() == HUB_TOML


def test_image_missing(board: SimBoardProcess, hub_toml: Path, tmp_path: Path) -> None:
    rc, _, err = run("--role", "pendant", "--port", board.port,
                     "--image", str(tmp_path / "nope.bin"), "--hub-config", str(hub_toml))
    assert rc == 2 and "image missing" in err and "micropython.org/download" in err
    assert_untouched(board, hub_toml)


def test_port_busy(board: SimBoardProcess, hub_toml: Path) -> None:
    with serial.Serial(board.port, exclusive=True):  # a serial monitor left open
        rc, _, err = run("--role", "pendant", "--port", board.port, "--no-image",
                         "--hub-config", str(hub_toml))
    assert rc == 2 and "port busy" in err
    assert_untouched(board, hub_toml)


def test_board_not_in_bootloader_mode_with_the_real_esptool(
    board: SimBoardProcess, hub_toml: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The real esptool talks to a board that runs MicroPython, not the ROM bootloader.
    opts = flash.Options(role="pendant", port=board.port, image=image,
                         hub=LocalHub(hub_toml), connect_attempts=1)
    with pytest.raises(flash.FlashError, match="not in bootloader mode: hold its BOOT button"):
        flash.flash(opts)
    assert_untouched(board, hub_toml)


def test_wrong_chip(tmp_path: Path, hub_toml: Path) -> None:
    with SimBoardProcess(tmp_path / "s3" / "flash", chip="ESP32S3") as s3:
        rc, _, err = run("--role", "pendant", "--port", s3.port, "--no-image",
                         "--hub-config", str(hub_toml))
        assert rc == 2 and "wrong chip" in err and "ESP32S3" in err
        assert_untouched(s3, hub_toml)


@pytest.mark.parametrize(
    ("esptool_says", "we_say"),
    [
        ("A fatal error occurred: This chip is ESP32-S3, not ESP32. Wrong chip argument?",
         "wrong chip: the board on /dev/ttyUSB0 is an ESP32-S3, not an ESP32."),
        ("Wrong boot mode detected (0x13)! The chip needs to be in download mode.",
         "not in bootloader mode"),
        ("Could not open /dev/ttyUSB0, the port is busy or doesn't exist.", "no port"),
        ("A fatal error occurred: Packet content transfer stopped", "esptool failed:\n"),
    ],
)
def test_esptool_failures_are_explained(esptool_says: str, we_say: str) -> None:
    assert we_say in flash.explain_esptool(esptool_says, flash.Options("pendant", "/dev/ttyUSB0"))


def test_hub_unreachable_is_found_before_the_board_is_touched(
    board: SimBoardProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh = tmp_path / "ssh"
    ssh.write_text("#!/bin/sh\necho 'ssh: connect to host hub.local port 22: No route to host' "
                   ">&2\nexit 255\n")
    ssh.chmod(0o755)
    monkeypatch.setenv("TRYGGHEIM_SSH", str(ssh))
    rc, _, err = run("--role", "pendant", "--port", board.port, "--no-image",
                     "--hub", "installer@hub.local")
    assert rc == 2 and "hub unreachable: ssh installer@hub.local" in err
    assert board.files() == {}


def test_a_write_that_does_not_verify_registers_nothing(tmp_path: Path, hub_toml: Path) -> None:
    with SimBoardProcess(tmp_path / "worn" / "flash", failing_files=("pendant.mpy",)) as worn:
        rc, _, err = run("--role", "pendant", "--port", worn.port, "--no-image",
                         "--hub-config", str(hub_toml))
        assert rc == 2 and "verify failed: pendant.mpy" in err
    assert hub_toml.read_text() == HUB_TOML
    assert not (hub_toml.parent / "keys.toml").exists()


def test_flashing_over_ssh_registers_on_the_hub(
    board: SimBoardProcess, hub_toml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ssh = tmp_path / "ssh"  # runs the remote command here, as the hub would
    ssh.write_text('#!/bin/sh\nshift 5\nexec sh -c "$*"\n')
    ssh.chmod(0o755)
    monkeypatch.setenv("TRYGGHEIM_SSH", str(ssh))
    rc, out, err = run("--role", "pir", "--port", board.port, "--no-image", "--id", "pir-hall",
                       "--hub", "installer@hub.local", "--hub-config", str(hub_toml),
                       "--hub-command", f"{sys.executable} -m hub.installer.provision")
    assert rc == 0, err
    assert hub_config.load(hub_toml).devices["pir-hall"].mac == MAC
    assert "over SSH" in out


def test_a_sleeping_board_is_reset_through_the_usb_bridge_and_interrupted() -> None:
    class Lines:  # the modem lines of a USB-serial bridge with the auto-reset circuit
        def __init__(self) -> None:
            self.events: list[tuple[str, object]] = []

        def __setattr__(self, name: str, value: object) -> None:
            if name in ("dtr", "rts"):
                self.events.append((name, value))
            object.__setattr__(self, name, value)

        def write(self, data: bytes) -> None:
            self.events.append(("write", data))

    port = Lines()
    assert flash._reset_and_interrupt(port, interrupt_s=0.05)
    # EN pulsed with IO0 high (a normal boot, not the bootloader), then Ctrl-C while it starts.
    assert port.events[:3] == [("dtr", False), ("rts", True), ("rts", False)]
    assert port.events[3:] and all(e == ("write", b"\r\x03") for e in port.events[3:])


def test_a_port_without_modem_lines_is_not_reset(board: SimBoardProcess) -> None:
    with serial.Serial(board.port) as pty:
        assert not flash._reset_and_interrupt(pty, interrupt_s=0.05)


def test_reflash_keeps_room_heartbeat_and_comments_in_the_hubs_devices_file(
    board: SimBoardProcess, tmp_path: Path
) -> None:
    conf = tmp_path / "etc"  # an installed hub's config directory
    conf.mkdir()
    (conf / "site.toml").write_text(HUB_TOML.replace('data_dir = "var"',
                                                     f'data_dir = "{tmp_path / "var"}"'))
    args = ("--role", "pendant", "--port", board.port, "--id", "pendant-1", "--no-image",
            "--hub-config", str(conf))
    assert run(*args, "--room", "bedroom", "--heartbeat-s", "900")[0] == 0
    devices = conf / "devices.toml"
    # The admin annotates the entry.
    text = devices.read_text().replace('room = "bedroom"',
                                       'room = "bedroom"   # by the window, left side')
    devices.write_text("# Storgata 1, flat 3\n" + text)
    before = devices.read_text()
    rc, _, err = run(*args)  # re-flashed, no ROOM, no heartbeat given
    assert rc == 0, err
    assert devices.read_text() == before
    dev = hub_config.load(conf).devices["pendant-1"]
    assert (dev.room, dev.heartbeat_s, dev.mac) == ("bedroom", 900, MAC)
