"""Advert -> Report: identify the device, decode BTHome, drop repeats. Never raises."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from hub.config import Device
from hub.radio import Advert
from protocols import bthome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Report:
    """What one device said in one (new) advert."""

    device: Device
    time: float
    rssi: int
    values: dict[str, int]
    packet_id: int | None


class AdvertDecoder:
    def __init__(self, devices_by_mac: dict[str, Device]) -> None:
        self.devices = devices_by_mac
        self.stats: Counter[str] = Counter()
        self._last_packet: dict[str, int] = {}

    def decode(self, advert: Advert) -> Report | None:
        device = self.devices.get(advert.mac)
        if device is None:
            self.stats["unknown_device"] += 1
            return None
        try:
            decoded = bthome.decode_plain(advert.service_data)
        except bthome.DecodeError as e:
            self.stats["malformed"] += 1
            log.debug("malformed advert from %s: %s", device.id, e)
            return None
        packet_id = decoded.get(bthome.PACKET_ID)
        # A device repeats each advert for a few seconds so that one gets through; the packet
        # id tells a repeat from a new event.
        if packet_id is not None:
            if self._last_packet.get(device.id) == packet_id:
                self.stats["repeat"] += 1
                return None
            self._last_packet[device.id] = packet_id
        self.stats["accepted"] += 1
        return Report(device, advert.received_at, advert.rssi, decoded.as_dict(), packet_id)
