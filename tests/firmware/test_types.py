"""`make lint` checks the firmware's calls against the ESP32 port's stubs: the firmware is
clean, and a wrong name or a wrong signature fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import requires_node
from tools import firmware_types

pytestmark = requires_node


def check(*files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(firmware_types.command(list(files)), capture_output=True, text=True,
                          cwd=firmware_types.ROOT, timeout=300)


def test_firmware_matches_the_port_api(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nimport machine\nimport esp32\n"
        "t = time.monotonic()\n"  # CPython only
        "machine.lightsleep_ms(10)\n"  # no such function
        "esp32.wake_on_ext1(machine.Pin(27), 1, 2)\n")  # wrong arguments
    files = [str(p) for p in sorted((firmware_types.ROOT / "firmware").glob("*.py"))
             if p.name not in firmware_types.SKIP]
    r = check(*files, str(bad))
    errors = [line for line in r.stdout.splitlines() if " - error:" in line]
    assert r.returncode != 0
    assert all("bad.py" in line for line in errors), errors  # the firmware itself is clean
    assert len(errors) == 3, r.stdout


def test_the_module_runs(tmp_path: Path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text("import time\nt = time.ticks_diff(time.ticks_ms(), 0)\n")
    r = subprocess.run([sys.executable, "-m", "tools.firmware_types", str(ok)],
                       capture_output=True, text=True, cwd=firmware_types.ROOT, timeout=300)
    assert r.returncode == 0, r.stdout
