"""What every radio source gives the hub: BTHome service data with who sent it and when."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Advert:
    mac: str  # "AA:BB:CC:DD:EE:FF", display order, upper case
    rssi: int
    service_data: bytes  # BTHome service data after the UUID (device-info byte first)
    received_at: float  # hub clock, epoch seconds


AdvertCallback = Callable[[Advert], None]


class Scanner(Protocol):
    """Implemented by the bleak scanner (a real adapter), the virtual radio, and capture replay.
    The callback runs in the hub's event loop and must not block."""

    async def start(self, on_advert: AdvertCallback) -> None: ...

    async def stop(self) -> None: ...

    async def transmit(self, mac: str, service_data: bytes) -> None:
        """Send an acknowledgement frame to a device (protocols/ack.py): the bleak scanner
        writes it to the device's GATT ack characteristic, the virtual radio puts it on the
        air. Raises when this attempt failed; hub/delivery/acks.py retries."""
        ...
