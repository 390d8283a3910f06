"""The Debian package on this machine: build it, `dpkg -i` it, check what it installed, run the
installed hub as its own user against a throwaway Mosquitto on the virtual radio, upgrade it
(the admin's config edits stay), then `dpkg -P` and check that nothing is left.

This changes the machine (a user, a group, /opt, /etc), so it runs only as root with dpkg-deb
and systemd's offline tools present (CI runs as root), and never where a tryggheim package,
user or /etc/tryggheim already exists. The module's fixture purges the package whatever
happens. systemd is not PID 1 here: the unit is checked with `systemd-analyze verify` and
`security --offline`, and the hub is started the way the unit starts it (same user, groups
and command line), by hand.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub.config import keys
from hub.config.settings import read_receipt_key
from hub.installer.provision import ProvisionError, Registration, fingerprint
from protocols import ack, bthome
from tests.conftest import requires_mosquitto
from tools.centre.mosquitto import Mosquitto
from tools.centre.response_centre import ResponseCentre
from tools.installer import flash
from tools.installer.provision import SshHub
from tools.sim.vboard import Air

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("dpkg-deb", "dpkg", "systemd-sysusers", "systemd-tmpfiles", "systemd-analyze",
         "setpriv")
LEFTOVERS = [Path(p) for p in (
    "/etc/tryggheim", "/var/lib/tryggheim", "/run/tryggheim", "/opt/tryggheim",
    "/usr/bin/tryggheim", "/usr/sbin/tryggheim-provision", "/etc/sudoers.d/tryggheim",
    "/lib/systemd/system/tryggheim.service", "/usr/lib/sysusers.d/tryggheim.conf",
    "/usr/lib/tmpfiles.d/tryggheim.conf", "/usr/share/dbus-1/system.d/tryggheim.conf",
    "/usr/share/doc/tryggheim", "/etc/systemd/system/multi-user.target.wants/tryggheim.service",
)]
INSTALLER = "tryggheim-test-installer"


def _already_here() -> str | None:
    if subprocess.run(["dpkg", "-s", "tryggheim"], capture_output=True).returncode == 0:
        return "a tryggheim package is installed"
    for name in ("tryggheim",):
        try:
            pwd.getpwnam(name)
            return f"user {name} exists"
        except KeyError:
            pass
    try:
        grp.getgrnam("tryggheim-admin")
        return "group tryggheim-admin exists"
    except KeyError:
        pass
    if Path("/etc/tryggheim").exists():
        return "/etc/tryggheim exists"
    return None


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "installs a package: runs as root only (CI)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    here = _already_here()
    return f"{here}: not touching a real installation" if here else None


pytestmark = [pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason())),
              pytest.mark.timeout(300)]


def sh(*cmd: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=240, **kw)  # type: ignore[call-overload]
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd}: rc={p.returncode}\n{p.stdout}\n{p.stderr}")
    return p  # type: ignore[no-any-return]


def dpkg(*args: str) -> subprocess.CompletedProcess[str]:
    """dpkg, waiting while another installation holds its lock (CI machines run apt too)."""
    deadline = time.monotonic() + 120
    while True:
        p = sh("dpkg", *args, check=False)
        if "lock" not in p.stderr or time.monotonic() > deadline:
            return p
        time.sleep(1)


def host_arch() -> str:
    return sh("dpkg", "--print-architecture").stdout.strip()


@dataclass
class Installed:
    deb: Path
    install: subprocess.CompletedProcess[str]
    work: Path


def _purge() -> None:
    dpkg("-P", "tryggheim")
    subprocess.run(["userdel", INSTALLER], capture_output=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("deb")
    # Both architectures, as `make deb` builds them; this machine installs its own.
    sh(sys.executable, str(ROOT / "packaging" / "build_deb.py"), "--arch", "arm64",
       "--arch", "amd64", "--out", str(work))
    (deb,) = work.glob(f"tryggheim_*_{host_arch()}.deb")
    try:
        p = dpkg("-i", str(deb))
        assert p.returncode == 0, p.stderr
        yield Installed(deb, p, work)
    finally:
        _purge()


ELF_MACHINE = {"arm64": 0xB7, "amd64": 0x3E}  # e_machine: EM_AARCH64, EM_X86_64


def test_each_package_carries_its_architectures_binaries(installed: Installed) -> None:
    for arch, machine in ELF_MACHINE.items():
        (deb,) = installed.work.glob(f"tryggheim_*_{arch}.deb")
        tree = installed.work / f"x-{arch}"
        sh("dpkg-deb", "-x", str(deb), str(tree))
        libs = list(tree.glob("opt/tryggheim/venv/lib/python3.11/site-packages/**/*.so"))
        names = {p.name.split(".")[0] for p in libs}
        assert {"_cffi_backend", "_rust", "message_bus"} <= names, names
        for lib in libs:
            head = lib.read_bytes()[:20]
            assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == machine, lib
        assert list(tree.glob("**/__pycache__/*.cpython-311.pyc"))  # bytecode shipped
        shutil.rmtree(tree)


def mode_owner(path: str) -> tuple[str, str, str]:
    st = os.stat(path)
    return (oct(stat.S_IMODE(st.st_mode)), pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)


def test_users_directories_and_files(installed: Installed) -> None:
    hub = pwd.getpwnam("tryggheim")
    assert hub.pw_shell == "/usr/sbin/nologin"
    assert "tryggheim" in grp.getgrnam("tryggheim-admin").gr_mem
    assert mode_owner("/etc/tryggheim") == ("0o750", "tryggheim", "tryggheim-admin")
    assert mode_owner("/var/lib/tryggheim") == ("0o750", "tryggheim", "tryggheim-admin")
    assert mode_owner("/run/tryggheim") == ("0o750", "tryggheim", "tryggheim-admin")
    assert mode_owner("/etc/tryggheim/site.toml") == ("0o640", "root", "tryggheim-admin")
    assert mode_owner("/etc/tryggheim/rules.toml") == ("0o660", "root", "tryggheim-admin")
    assert mode_owner("/etc/sudoers.d/tryggheim") == ("0o440", "root", "root")
    for path in LEFTOVERS[3:-1]:
        assert path.exists(), path
    assert sh("/usr/bin/tryggheim", "--version").stdout.strip() == "tryggheim 0.1.0"
    # The venv runs on Debian's python3.11 with the pinned packages, nothing from the system.
    out = sh("/opt/tryggheim/venv/bin/python", "-c",
             "import sys, cryptography, bleak, paho.mqtt, tomlkit;"
             "print(sys.prefix, cryptography.__version__, "
             "any('dist-packages' in p for p in sys.path))").stdout.split()
    assert out == ["/opt/tryggheim/venv", "50.0.2", "False"]
    conffiles = sh("dpkg-query", "-W", "-f", "${Conffiles}", "tryggheim").stdout
    for name in ("site.toml", "rules.toml", "routing.toml", "retention.toml"):
        assert f"/etc/tryggheim/{name} " in conffiles
    assert "/etc/sudoers.d/tryggheim " in conffiles


def test_postinst_says_what_is_missing_and_does_not_start_a_broken_hub(
    installed: Installed
) -> None:
    said = installed.install.stderr
    assert "the hub was NOT started" in said
    assert "/etc/tryggheim/keys.toml: missing" in said
    assert "[mqtt] host is still the example" in said
    assert not Path("/etc/systemd/system/multi-user.target.wants/tryggheim.service").exists()


def test_the_sample_config_checks_except_for_what_the_installer_adds(
    installed: Installed
) -> None:
    p = sh("/usr/bin/tryggheim", "config", "check", "/etc/tryggheim", "--json", check=False)
    assert p.returncode == 1
    problems = json.loads(p.stdout)["problems"]
    assert len(problems) == 1 and "keys.toml: missing" in problems[0]


def test_the_installed_unit(installed: Installed) -> None:
    unit = "/lib/systemd/system/tryggheim.service"
    p = sh("systemd-analyze", "verify", unit, check=False)
    ours = [line for line in (p.stdout + p.stderr).splitlines() if "tryggheim" in line]
    assert p.returncode == 0 and not ours, p.stdout + p.stderr
    p = sh("systemd-analyze", "security", "--offline=yes", unit)
    m = re.search(r"Overall exposure level for tryggheim.service: ([0-9.]+)", p.stdout)
    assert m is not None, p.stdout
    assert float(m.group(1)) <= 2.5, p.stdout


def test_the_sudoers_drop_in_allows_exactly_the_installers_commands(
    installed: Installed
) -> None:
    if shutil.which("visudo") is None:
        pytest.skip("sudo is not installed (tools/system-deps.sh installs it)")
    sh("visudo", "-cf", "/etc/sudoers.d/tryggheim")
    sh("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", "tryggheim-admin",
       INSTALLER)

    def allowed(*cmd: str) -> bool:
        return sh("sudo", "-l", "-U", INSTALLER, *cmd, check=False).returncode == 0

    # What the installer's docs say to run with sudo, as written there.
    for cmd in (
        "/usr/sbin/tryggheim-provision check --config /etc/tryggheim",
        "/usr/sbin/tryggheim-provision check --config /etc/tryggheim --id door-1 --role door "
        "--room hall",
        "/usr/sbin/tryggheim-provision key-fingerprint --config /etc/tryggheim --id pendant-1",
        "/usr/sbin/tryggheim-provision register --config /etc/tryggheim --id pendant-1 --role "
        "pendant --mac 24:0A:C4:12:34:56 --room living room",
        "tryggheim reload", "tryggheim scan --config /etc/tryggheim --seconds 30",
        "tryggheim test-alarm --wait 60", "tryggheim watch --config /etc/tryggheim",
        "systemctl restart tryggheim",
    ):
        assert allowed(*cmd.split()), cmd
    # Found on sudo's secure_path: the installer types `sudo tryggheim ...`.
    listed = sh("sudo", "-l", "-U", INSTALLER, "tryggheim", "reload").stdout
    assert listed.strip() == "/usr/bin/tryggheim reload"
    for cmd in (
        "/usr/sbin/tryggheim-provision register --config /tmp/evil --id x",
        "/usr/sbin/tryggheim-provision register --config /etc/tryggheim-evil --id x",
        "/opt/tryggheim/venv/bin/python -m hub.installer.provision check --config /etc/tryggheim",
        "tryggheim run --config /etc/tryggheim",
        "tryggheim scan --config /tmp/evil --seconds 30",
        "tryggheim test-alarm --wait 60 --config /tmp/evil",
        "tryggheim reload --socket /tmp/evil",
        "tryggheim scan --capture /etc/shadow",
        "systemctl stop tryggheim", "systemctl restart ssh",
    ):
        assert not allowed(*cmd.split()), cmd


SITE = "deb-test-home"
RECEIPT_KEY = Path("/var/lib/tryggheim/receipt.key")
PENDANT = ("pendant-1", "pendant", "C0:FF:EE:00:09:01")
KEY = bytes(range(16))


def _configure_for_the_test(port: int) -> None:
    """The installed config, as the installer completes it: the site, the response centre's
    broker (here a throwaway one), the virtual radio for CI, a registered device and its key."""
    site = Path("/etc/tryggheim/site.toml")
    text = site.read_text()
    text = text.replace('id = "kommune-0301-home-17"', f'id = "{SITE}"')
    text = text.replace('host = "mqtt.responssenter.example"\nport = 8883',
                        f'host = "127.0.0.1"\nport = {port}\nkeepalive = 5')
    text = text.replace('kind = "bleak"', 'kind = "virtual"\nair = "/run/tryggheim/air.sock"')
    site.write_text(text)
    dev_id, role, mac = PENDANT
    devices = Path("/etc/tryggheim/devices.toml")
    devices.write_text(f'[[device]]\nid = "{dev_id}"\nrole = "{role}"\nmac = "{mac}"\n'
                       'room = "bedroom"\n')
    keys.write(Path("/etc/tryggheim/keys.toml"), {dev_id: KEY})
    hub = pwd.getpwnam("tryggheim")
    os.chown("/etc/tryggheim/keys.toml", hub.pw_uid, hub.pw_gid)


def _register_and_reload_as_the_installer(env: dict[str, str]) -> None:
    """What `make flash HUB=installer@hub` runs over SSH, then the reload INSTALLER.md says to
    run: as a member of tryggheim-admin, through the package's sudo rules."""
    try:
        pwd.getpwnam(INSTALLER)
    except KeyError:
        sh("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G",
           "tryggheim-admin", INSTALLER)
    installer = ["setpriv", f"--reuid={INSTALLER}", f"--regid={INSTALLER}", "--init-groups"]
    # An `ssh` that runs the remote command here as the installer, as sshd would on the hub.
    ssh = Path("/run/tryggheim/test-ssh")
    ssh.write_text(f'#!/bin/sh\nshift 5\nexec {" ".join(installer)} sh -c "$*"\n')
    ssh.chmod(0o755)
    try:
        hub = SshHub("installer@hub", flash.DEFAULT_HUB_CONFIG, flash.DEFAULT_HUB_COMMAND,
                     str(ssh))
        reg = Registration("pendant-2", "pendant", "C0:FF:EE:00:09:02",
                           "00112233445566778899aabbccddeeff", "living room")
        hub.check(Registration(reg.id, reg.role, "", "", reg.room))
        assert hub.key_fingerprint(reg.id) is None
        hub.register(reg)
        assert hub.key_fingerprint(reg.id) == fingerprint(reg.key)
        with pytest.raises(ProvisionError, match="heartbeat_s 5: must be"):
            hub.check(Registration(reg.id, reg.role, "", "", "", 5))
    finally:
        ssh.unlink()
    # The admin views (status, devices) need no sudo: the group reads the config and reaches
    # the control socket.
    assert "pendant-1" in sh(*installer, "/usr/bin/tryggheim", "devices", env=env).stdout
    installer += ["sudo", "-n"]
    assert mode_owner("/etc/tryggheim/keys.toml")[:2] == ("0o600", "tryggheim")
    assert mode_owner("/var/lib/tryggheim/audit.jsonl")[1] == "tryggheim"
    assert "pendant-2" in sh(*installer, "tryggheim", "reload", env=env).stdout
    devices = json.loads(sh("/usr/bin/tryggheim", "devices", "--json").stdout)
    assert [d["id"] for d in devices] == ["pendant-1", "pendant-2"]


def as_hub_user(*cmd: str) -> list[str]:
    """How the unit runs a command: user tryggheim, its groups (tryggheim-admin)."""
    return ["setpriv", "--reuid=tryggheim", "--regid=tryggheim", "--init-groups", *cmd]


@requires_mosquitto
def test_the_installed_hub_runs_as_its_user_and_delivers(installed: Installed) -> None:
    broker = Mosquitto(installed.work / "broker").start()
    air: Air | None = None
    # The centre signs with the receipt key the hub makes at its first start, as an installer
    # hands it over (docs/INSTALL.md); read when the first receipt is due.
    centre = ResponseCentre("127.0.0.1", broker.port, site=SITE,
                            receipt_keys=lambda site: read_receipt_key(RECEIPT_KEY)).start()
    hub: subprocess.Popen[bytes] | None = None
    log = installed.work / "hub.log"
    try:
        _configure_for_the_test(broker.port)
        sh("/usr/bin/tryggheim", "config", "check", "/etc/tryggheim")
        air = Air("/run/tryggheim/air.sock")
        os.chmod("/run/tryggheim/air.sock", 0o666)  # the hub (another user) sends to it
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        with open(log, "ab") as out:
            hub = subprocess.Popen(as_hub_user("/usr/bin/tryggheim", "run", "--config",
                                               "/etc/tryggheim"),
                                   stdout=out, stderr=out, env=env)
        air.wait_for_listener(timeout=30)
        deadline = time.monotonic() + 30
        while not Path("/run/tryggheim/control.sock").exists():
            assert hub.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert mode_owner("/run/tryggheim/control.sock") == ("0o660", "tryggheim",
                                                              "tryggheim-admin")
        # What the installer checks (docs/INSTALL.md), then a test alarm end to end.
        status = json.loads(sh("/usr/bin/tryggheim", "status", "--json").stdout)
        assert status["site"] == SITE
        p = sh("/usr/bin/tryggheim", "test-alarm", "--wait", "30", check=False)
        assert p.returncode == 0 and "delivered to the response centre" in p.stdout, \
            p.stdout + p.stderr + log.read_text()
        # The pendant pressed: an alarm at the response centre.
        svc = bthome.encrypt_service_data(
            ack.host_aes(KEY), bthome.mac_bytes(PENDANT[2]),
            bthome.encode_objects([(bthome.PACKET_ID, 1), (bthome.BUTTON, 1)]), 7, True)
        air.broadcast(PENDANT[2], -60, bytes(svc))
        deadline = time.monotonic() + 20
        while True:
            m = centre.get(timeout=max(0.1, deadline - time.monotonic()))
            if m.get("type") == "alarm_button" and m.get("device") == "pendant-1":
                break
        if shutil.which("sudo") is not None:
            _register_and_reload_as_the_installer(env)
        # The data is written by the hub's user; the receipt key only it (and root) reads.
        assert mode_owner("/var/lib/tryggheim/outbox.sqlite")[1] == "tryggheim"
        assert mode_owner(str(RECEIPT_KEY))[:2] == ("0o600", "tryggheim")
        # ExecReload: `tryggheim reload` as the unit runs it, failing on a rejected config.
        reload = as_hub_user("/usr/bin/tryggheim", "reload", "--config", "/etc/tryggheim")
        assert sh(*reload, env=env).returncode == 0
        rules = Path("/etc/tryggheim/rules.toml")
        good = rules.read_text()
        rules.write_text(good + "\n[[bed_exit]]\nbed = \"no-such-bed\"\nwindow = \"20:30-06:00\"\n")
        p = sh(*reload, env=env, check=False)
        assert p.returncode != 0 and "no-such-bed" in p.stdout + p.stderr
        rules.write_text(good)
        assert hub.poll() is None  # a rejected config never stops the hub
    finally:
        if hub is not None and hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(timeout=20)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait()
        centre.stop()
        if air is not None:
            air.close()
        broker.close()


def test_an_upgrade_keeps_the_admins_config(installed: Installed) -> None:
    rules = Path("/etc/tryggheim/rules.toml")
    rules.write_text(rules.read_text() + "# changed by the admin\n")
    site_before = Path("/etc/tryggheim/site.toml").read_text()
    p = dpkg("-i", str(_newer(installed, "0.1.0-2")))
    assert p.returncode == 0, p.stderr
    assert sh("dpkg-query", "-W", "-f", "${Version}", "tryggheim").stdout == "0.1.0-2"
    assert rules.read_text().endswith("# changed by the admin\n")
    assert Path("/etc/tryggheim/site.toml").read_text() == site_before
    assert Path("/etc/tryggheim/keys.toml").exists()  # the keys are the installer's, kept
    assert mode_owner("/etc/tryggheim/rules.toml") == ("0o660", "root", "tryggheim-admin")
    # Complete now: the postinst enables the hub (it would start it under systemd).
    assert "NOT started" not in p.stderr
    wants = Path("/etc/systemd/system/multi-user.target.wants/tryggheim.service")
    assert wants.is_symlink()
    # The admin disables it: the next upgrade keeps that.
    sh("systemctl", "disable", "tryggheim.service")
    assert not wants.is_symlink()
    p = dpkg("-i", str(_newer(installed, "0.1.0-3")))
    assert p.returncode == 0, p.stderr
    assert not wants.is_symlink()


def _newer(installed: Installed, version: str) -> Path:
    """The same package as a newer version (as the next release would be built)."""
    tree = installed.work / f"next-{version}"
    sh("dpkg-deb", "-R", str(installed.deb), str(tree))
    control = tree / "DEBIAN" / "control"
    control.write_text(control.read_text().replace("Version: 0.1.0-1", f"Version: {version}"))
    newer = installed.work / f"tryggheim_{version}.deb"
    sh("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(tree), str(newer))
    shutil.rmtree(tree)
    return newer


def test_postinst_refuses_a_data_dir_the_unit_cannot_write(installed: Installed) -> None:
    site = Path("/etc/tryggheim/site.toml")
    good = site.read_text()
    site.write_text(good.replace('data_dir = "/var/lib/tryggheim"', 'data_dir = "/srv/hub"'))
    try:
        p = sh("/var/lib/dpkg/info/tryggheim.postinst", "configure", "0.1.0-3")
        assert "the hub was NOT started" in p.stderr
        assert "[hub] data_dir /srv/hub is outside what the unit lets the hub write" in p.stderr
    finally:
        site.write_text(good)
    assert "NOT started" not in sh("/var/lib/dpkg/info/tryggheim.postinst", "configure",
                                   "0.1.0-3").stderr


def test_purge_leaves_nothing(installed: Installed) -> None:
    subprocess.run(["userdel", INSTALLER], capture_output=True)
    p = dpkg("-P", "tryggheim")
    assert p.returncode == 0, p.stderr
    assert sh("dpkg", "-s", "tryggheim", check=False).returncode != 0
    left = [str(path) for path in LEFTOVERS if path.exists() or path.is_symlink()]
    assert left == []
    for name in ("tryggheim",):
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
    for group in ("tryggheim", "tryggheim-admin"):
        with pytest.raises(KeyError):
            grp.getgrnam(group)
    state = sh("find", "/etc/systemd", "/var/lib/systemd", "-name", "*tryggheim*").stdout
    assert state.strip() == ""
