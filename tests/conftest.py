"""Shared fixtures: real Mosquitto brokers on free loopback ports, the virtual home."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.mosquitto import Mosquitto
from tools.vboard import node_available

ROOT = Path(__file__).resolve().parents[1]

requires_node = pytest.mark.skipif(
    not node_available(), reason="node and the MicroPython npm package are needed (make setup)"
)
requires_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed (make setup)",
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.close()
