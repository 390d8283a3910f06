"""The Debian package's parts, checked without installing anything
(tests/packaging/test_deb.py installs the package, as root): the unit's hardening score and watchdog, the sudoers syntax, the sample
config, and the lock file against pyproject.toml."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "packaging"
UNIT = PKG / "tryggheim.service"


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_the_unit_is_notify_with_a_watchdog_and_a_reload_that_can_fail() -> None:
    u = unit_settings()
    assert u["Type"] == ["notify"] and u["NotifyAccess"] == ["main"]
    assert int(u["WatchdogSec"][0]) >= 10
    assert u["ExecStart"] == ["/usr/bin/tryggheim run --config /etc/tryggheim"]
    # `tryggheim reload` exits non-zero when the hub rejects the config: systemctl reload
    # then fails, where `kill -HUP` always succeeded.
    assert u["ExecReload"] == ["/usr/bin/tryggheim reload --config /etc/tryggheim"]
    assert u["User"] == ["tryggheim"] and u["UMask"] == ["0027"]


def _exposure(unit: Path) -> float:
    p = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout)
    if m is None:
        pytest.skip(f"systemd-analyze security --offline does not work here: {p.stderr.strip()}")
    return float(m.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_exposure_is_at_most_2_5(tmp_path: Path) -> None:
    assert _exposure(UNIT) <= 2.5
    # The check can fail: the same unit without its sandboxing scores above 2.5.
    weak = tmp_path / "tryggheim.service"
    weak.write_text("\n".join(
        line for line in UNIT.read_text().splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Lock",
                                "UMask", "RemoveIPC", "KeyringMode", "ProcSubset"))))
    assert _exposure(weak) > 2.5


@pytest.mark.skipif(shutil.which("visudo") is None and not Path("/usr/sbin/visudo").exists(),
                    reason="needs visudo (sudo)")
def test_the_sudoers_drop_in_parses() -> None:
    visudo = shutil.which("visudo") or "/usr/sbin/visudo"
    p = subprocess.run([visudo, "-cf", str(PKG / "sudoers")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_sample_config_lacks_only_what_the_installer_adds(tmp_path: Path) -> None:
    conf = tmp_path / "tryggheim"
    shutil.copytree(PKG / "etc", conf)
    p = subprocess.run([sys.executable, "-m", "hub.cli", "config", "check", str(conf), "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    problems = json.loads(p.stdout)["problems"]
    assert len(problems) == 1 and "/etc/tryggheim/keys.toml: missing" in problems[0]
    site = tomllib.loads((conf / "site.toml").read_text())
    assert site["admin"]["socket"].startswith("/run/tryggheim/")  # tmpfiles.conf makes it
    assert "/run/tryggheim" in (PKG / "tmpfiles.conf").read_text()
    assert site["admin"]["remote_commands"] == []  # nothing from outside unless configured


def test_the_lock_pins_what_pyproject_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = {}
    for line in (PKG / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split()[0].split("==")
            locked[name.lower().replace("_", "-")] = version
            assert "--hash=sha256:" in line, line
    for dep in project["dependencies"]:
        name, version = dep.split("==")
        assert locked.get(name.lower()) == version, (
            f"{name}: pyproject pins {version}, packaging/requirements.txt "
            f"{locked.get(name.lower())}; run python packaging/build_deb.py --lock")


def test_the_dbus_policy_names_the_hubs_user_and_bluez() -> None:
    import xml.etree.ElementTree as ET

    text = (PKG / "dbus.conf").read_text()
    assert text.startswith("<!DOCTYPE busconfig")
    policy = ET.fromstring(text.split("\n", 2)[2]).find("policy")
    assert policy is not None and policy.get("user") == "tryggheim"
    rules = [dict(e.attrib) for e in policy]
    assert {"send_destination": "org.bluez"} in rules
    assert {"receive_sender": "org.bluez"} in rules
    sysusers = (PKG / "sysusers.conf").read_text()
    assert "u tryggheim " in sysusers and "g tryggheim-admin " in sysusers


def test_the_package_installs_the_hub_and_protocols_and_nothing_of_tools() -> None:
    """tools/ runs from the repository; an installed `tools` would collide with any other
    project's. Every folder of hub/ must be a package, or the installed hub lacks it."""
    from setuptools import find_packages

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = set(find_packages(str(ROOT), **project["tool"]["setuptools"]["packages"]["find"]))
    hub_dirs = {".".join(p.parent.relative_to(ROOT).parts)
                for p in (ROOT / "hub").rglob("*.py") if "__pycache__" not in p.parts}
    assert hub_dirs <= found, f"hub folders not installed: {sorted(hub_dirs - found)}"
    assert "protocols" in found
    assert not {p for p in found if p.split(".")[0] not in ("hub", "protocols")}, found
    scripts = project["project"]["scripts"]
    assert all(s.split(":")[0].split(".")[0] == "hub" for s in scripts.values()), scripts
