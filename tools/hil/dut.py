"""The device-under-test interface: one set of device tests, two backends.

The virtual board (tools.sim.vboard.VirtualBoard, default) implements it directly; a real ESP32
on a serial port implements it through the board's REPL (HIL_PORT, tools/hil/serial_board.py).
"""

from __future__ import annotations

from typing import Protocol

from tools.sim.vboard.board import Advert


class DeviceUnderTest(Protocol):
    now_ms: int
    rtc: bytes  # the board's RTC user memory as last read

    def start(self) -> DeviceUnderTest: ...

    def stop(self) -> None: ...

    def set_pin(self, pin: str, level: int) -> None:
        """Apply a stimulus to a named input now (door opens, person leaves the mat ...)."""
        ...

    def press(self, pin: str = "button", hold_ms: int = 200) -> None: ...

    def advance(self, ms: int) -> None:
        """Let device time pass (virtual: instantly; real board: waits)."""
        ...

    def adverts_since(self, t_ms: int) -> list[Advert]: ...

    def indication(self) -> str:
        """The LED/buzzer pattern shown now (board.INDICATIONS)."""
        ...
