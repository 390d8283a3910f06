"""`make deb`: the hub as a Debian package, for the Raspberry Pi (arm64) and for amd64.

    python packaging/build_deb.py [--arch arm64 --arch amd64] [--out build/deb]
    python packaging/build_deb.py --lock     # re-pin packaging/requirements.txt

How an arm64 package is built on an amd64 machine: nothing is compiled. Every dependency the
hub needs at run time (cryptography, cffi, dbus-fast, ...) is published on PyPI as a manylinux
wheel for both aarch64 and x86_64, so the virtual environment under /opt/tryggheim/venv is made
by unpacking the pinned wheels for the target's platform (`pip install --target --platform
... --only-binary=:all:`, versions and SHA-256 hashes from packaging/requirements.txt). Its
interpreter is Debian's python3.11 (bin/python -> /usr/bin/python3.11, as any venv), so the
package depends on python3.11 (Debian 12 / Raspberry Pi OS bookworm). Bytecode is compiled
here (pyc files do not depend on the CPU) so nothing is written under /opt at run time. A
dependency that one day ships no wheel for a platform makes the build fail with pip's
message, rather than a package that breaks on the Pi.

The package is assembled in a staging tree and built with `dpkg-deb --root-owner-group`; users,
directories and their owners come from sysusers.d and tmpfiles.d in the maintainer scripts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "packaging"
LOCK = PKG / "requirements.txt"
PYTHON = "3.11"  # Debian 12's python3; the wheels' ABI tag (cp311)
VENV = "/opt/tryggheim/venv"
# dpkg architecture -> the wheel platform tags pip may pick for it (glibc 2.36 on bookworm).
PLATFORMS = {
    "arm64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
    "amd64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
}
# Files an admin edits: dpkg keeps their changes on upgrade (conffiles).
ETC_CONFIG = ["site.toml", "rules.toml", "routing.toml", "retention.toml"]
DOCS = ["INSTALL.md", "INSTALLER.md", "ADMIN.md", "DELIVERY.md"]


def run(*cmd: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], check=True, text=True, **kw)  # type: ignore[call-overload,no-any-return]


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def platform_args(arch: str) -> list[str]:
    out = []
    for p in PLATFORMS[arch]:
        out += ["--platform", p]
    return out + ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
                  "--abi", "cp311", "--abi", "abi3", "--abi", "none"]


def project_wheel(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("tryggheim-*.whl"):
        old.unlink()
    # setuptools builds in the tree's build/lib and would keep files deleted from the source.
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)
    run(*pip("wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)))
    (wheel,) = out.glob("tryggheim-*.whl")
    return wheel


def lock(build: Path) -> None:
    """Resolve the hub's run-time dependencies for both platforms; pin versions and hashes."""
    wheel = project_wheel(build / "wheels" / "any")
    pins: dict[str, tuple[str, set[str]]] = {}
    for arch in PLATFORMS:
        report = build / f"resolve-{arch}.json"
        run(*pip("install", "--quiet", "--dry-run", "--ignore-installed", "--report",
                 str(report), "--target", str(build / "resolve-target"), *platform_args(arch),
                 str(wheel)))
        for item in json.loads(report.read_text())["install"]:
            name, version = item["metadata"]["name"].lower(), item["metadata"]["version"]
            if name == "tryggheim":
                continue
            sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
            if name in pins and pins[name][0] != version:
                raise SystemExit(f"{name}: {pins[name][0]} for one platform, {version} for another")
            pins.setdefault(name, (version, set()))[1].add(sha)
    lines = ["# The hub's run-time dependencies as installed by `make deb` into /opt/tryggheim/venv,",
             "# for arm64 and amd64 (one hash per platform's wheel). Regenerate after changing",
             "# pyproject.toml's dependencies: python packaging/build_deb.py --lock"]
    for name, (version, hashes) in sorted(pins.items()):
        lines.append(f"{name}=={version} " + " ".join(f"--hash=sha256:{h}" for h in sorted(hashes)))
    LOCK.write_text("\n".join(lines) + "\n")
    print(f"wrote {LOCK.relative_to(ROOT)}: {len(pins)} packages")


def wheels_for(arch: str, cache: Path) -> Path:
    """The pinned wheels for `arch`, downloaded once into the cache (hashes checked)."""
    d = cache / arch
    d.mkdir(parents=True, exist_ok=True)
    try:  # everything already here: no network
        run(*pip("download", "--quiet", "--no-index", "--find-links", str(d), "--no-deps",
                 "--require-hashes", "-r", str(LOCK), "-d", str(d), *platform_args(arch)),
            capture_output=True)
    except subprocess.CalledProcessError:
        run(*pip("download", "--quiet", "--no-deps", "--require-hashes", "-r", str(LOCK),
                 "-d", str(d), *platform_args(arch)))
    return d


def system_python() -> str | None:
    """An interpreter that writes the same bytecode as the target's python3.11."""
    for p in ("/usr/bin/python3.11", shutil.which("python3.11"), sys.executable):
        if p and subprocess.run([p, "-c", "import sys; assert sys.version_info[:2] == (3, 11)"],
                                capture_output=True).returncode == 0:
            return p
    return None


SCRIPT = """#!{venv}/bin/python -I
# {name}: installed by the tryggheim package.
import sys
from {module} import {func}
sys.exit({func}())
"""


def make_venv(stage: Path, arch: str, wheels: Path, project: Path) -> None:
    venv = stage / VENV.lstrip("/")
    site = venv / "lib" / f"python{PYTHON}" / "site-packages"
    site.mkdir(parents=True)
    common = ["install", "--quiet", "--no-deps", "--no-index", "--no-compile",
              "--find-links", str(wheels), "--target", str(site), *platform_args(arch)]
    run(*pip(*common, "--require-hashes", "-r", str(LOCK)))
    run(*pip(*common, str(project)))  # built here: no hash to pin
    shutil.rmtree(site / "bin", ignore_errors=True)  # pip's scripts name the build machine's python
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\n"
                                     f"version = {PYTHON}\n")
    bin_ = venv / "bin"
    bin_.mkdir()
    (bin_ / "python").symlink_to(f"/usr/bin/python{PYTHON}")
    (bin_ / "python3").symlink_to("python")
    for name, module, func in (("tryggheim", "hub.cli", "main"),
                               ("tryggheim-provision", "hub.installer.provision", "main")):
        script = bin_ / name
        script.write_text(SCRIPT.format(venv=VENV, name=name, module=module, func=func))
        script.chmod(0o755)
    py = system_python()
    if py is None:
        print("warning: no python3.11 here: the package ships no bytecode (slower start)",
              file=sys.stderr)
        return
    # unchecked-hash: valid whatever the files' times; dpkg replaces source and bytecode together.
    run(py, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
        "-s", str(stage), "-p", "/", str(site), capture_output=True)


def stage_files(stage: Path) -> None:
    def put(src: Path, dest: str, mode: int = 0o644) -> None:
        target = stage / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        target.chmod(mode)

    put(PKG / "tryggheim.service", "/lib/systemd/system/tryggheim.service")
    put(PKG / "sysusers.conf", "/usr/lib/sysusers.d/tryggheim.conf")
    put(PKG / "tmpfiles.conf", "/usr/lib/tmpfiles.d/tryggheim.conf")
    put(PKG / "dbus.conf", "/usr/share/dbus-1/system.d/tryggheim.conf")
    put(PKG / "sudoers", "/etc/sudoers.d/tryggheim", 0o440)
    for name in ETC_CONFIG:
        put(PKG / "etc" / name, f"/etc/tryggheim/{name}")
    for example in sorted((ROOT / "docs" / "example-config").glob("*.toml")):
        put(example, f"/usr/share/doc/tryggheim/examples/{example.name}")
    for doc in DOCS:
        put(ROOT / "docs" / doc, f"/usr/share/doc/tryggheim/{doc}")
    put(PKG / "copyright", "/usr/share/doc/tryggheim/copyright")
    for name, target in (("tryggheim", "/usr/bin/tryggheim"),
                         ("tryggheim-provision", "/usr/sbin/tryggheim-provision")):
        link = stage / target.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"{VENV}/bin/{name}")


def installed_size_kib(stage: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(stage):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total // 1024 + 1


def control(stage: Path, arch: str, version: str) -> None:
    debian = stage / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(
        f"Package: tryggheim\n"
        f"Version: {version}\n"
        f"Architecture: {arch}\n"
        "Maintainer: Tryggheim developers <tryggheim@localhost>\n"
        f"Installed-Size: {installed_size_kib(stage)}\n"
        "Depends: python3.11, systemd\n"
        "Recommends: bluez, sudo\n"
        # The sudoers drop-in matches arguments with regular expressions (sudo 1.9.10).
        "Breaks: sudo (<< 1.9.10)\n"
        "Section: misc\n"
        "Priority: optional\n"
        "Homepage: https://tryggheim.invalid/\n"
        "Description: Tryggheim safety hub for municipal safety alarms\n"
        " Receives the encrypted BLE adverts of the home's safety devices (alarm\n"
        " button, door, motion, bed, fall detector), applies the resident's rules and\n"
        " delivers alarms over MQTT to the response centre, buffered on disk.\n")
    (debian / "conffiles").write_text(
        "".join(f"/etc/tryggheim/{n}\n" for n in ETC_CONFIG) + "/etc/sudoers.d/tryggheim\n")
    for script in ("postinst", "prerm", "postrm"):
        shutil.copyfile(PKG / script, debian / script)
        (debian / script).chmod(0o755)
    sums = []
    for dirpath, _, files in sorted(os.walk(stage)):
        for f in sorted(files):
            p = Path(dirpath) / f
            if "DEBIAN" in p.relative_to(stage).parts or p.is_symlink():
                continue
            sums.append(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {p.relative_to(stage)}\n")
    (debian / "md5sums").write_text("".join(sums))


def build(arch: str, out: Path, version: str, cache: Path) -> Path:
    project = project_wheel(cache / "any")
    wheels = wheels_for(arch, cache)
    with tempfile.TemporaryDirectory(prefix=f"tryggheim-deb-{arch}-") as tmp:
        stage = Path(tmp) / "root"
        stage.mkdir()
        stage.chmod(0o755)
        make_venv(stage, arch, wheels, project)
        stage_files(stage)
        control(stage, arch, version)
        out.mkdir(parents=True, exist_ok=True)
        deb = out / f"tryggheim_{version}_{arch}.deb"
        run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z6", "--build", stage, deb,
            capture_output=True)
    print(f"built {deb}")
    return deb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", action="append", choices=sorted(PLATFORMS))
    p.add_argument("--out", type=Path, default=ROOT / "build" / "deb")
    p.add_argument("--version", help="Debian version (default: pyproject's version, -1)")
    p.add_argument("--lock", action="store_true", help="re-pin packaging/requirements.txt")
    a = p.parse_args(argv)
    cache = ROOT / "build" / "wheels"
    if a.lock:
        lock(ROOT / "build")
        return 0
    if shutil.which("dpkg-deb") is None:
        print("make deb: dpkg-deb is missing (Debian's dpkg package)", file=sys.stderr)
        return 2
    version = a.version or os.environ.get("DEB_VERSION") or f"{project_version()}-1"
    for arch in a.arch or ["arm64", "amd64"]:
        build(arch, a.out, version, cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
