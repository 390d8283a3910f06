"""Type-check the firmware against the ESP32 port's API (`make lint`): pyright with
micropython-esp32-stubs (machine, esp32, bluetooth, ...) and micropython-stdlib-stubs as the
standard library, so `time.ticks_ms`, `machine.lightsleep` and friends are checked by name
and signature, and CPython-only names (time.monotonic, os.environ) are errors.

usage: python -m tools.firmware_types [FILE ...]   (default: every firmware/*.py)
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP: set[str] = set()  # firmware files left out of the check (none)


def command(files: list[str]) -> list[str]:
    site = sysconfig.get_paths()["purelib"]  # the stubs install here; its stdlib/ too
    return [str(Path(sys.executable).with_name("pyright")), "--pythonpath", sys.executable,
            "--typeshedpath", site, "--pythonversion", "3.11", "--level", "error", *files]


def main(argv: list[str] | None = None) -> int:
    files = list(argv if argv is not None else sys.argv[1:]) or [
        str(p) for p in sorted((ROOT / "firmware").glob("*.py")) if p.name not in SKIP]
    return subprocess.run(command(files), cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
