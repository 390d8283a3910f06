"""What an installer sees from `tryggheim` itself: the version, and decode's own messages."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from hub import cli


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"tryggheim {metadata.version('tryggheim')}"


def test_version_of_the_installed_command() -> None:
    p = subprocess.run([sys.executable, "-m", "hub.cli", "--version"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("tryggheim ")


def test_decode_without_mac_says_the_mac_is_needed(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["decode", "40d2fc0001"]) == 2
    err = capsys.readouterr().err
    assert "needs the sender's MAC address: --mac AA:BB:CC:DD:EE:FF" in err
    assert "None" not in err


def test_decode_with_a_bad_mac_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["decode", "40d2fc0001", "--mac", "AA:BB"]) == 2
    assert "--mac 'AA:BB' is not a MAC address" in capsys.readouterr().err
