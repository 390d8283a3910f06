"""Acknowledgements to the resident's device: what is sent, when, and what it never holds up.

The radio here is a recorder standing in for `Scanner.transmit` (the GATT write itself is
tested through bleak in tests/hub/radio/test_bleak.py and end to end in test_acks_bleak.py);
the frames are checked with protocols/ack.py's decoder, as the device checks them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from hub.config.settings import Device
from hub.decode.decoder import Report
from hub.delivery.acks import AckSender, AckSettings
from hub.rules.outgoing import Outgoing
from protocols import ack, bthome

KEY = bytes(range(16))
FAST = AckSettings(max_connections=2, attempts=3, retry_s=0.01, retry_max_s=0.02)


def device(n: int, key: bytes | None = KEY, role: str = "pendant") -> Device:
    return Device(f"pendant-{n}", role, f"D4:00:00:00:00:{n:02X}", key=key)


def alarm(msg_id: str, type_: str = "alarm_button", kind: str = "alarm") -> Outgoing:
    return Outgoing(kind, "x", 1, {"id": msg_id, "type": type_})


def report(dev: Device, counter: int | None) -> Report:
    return Report(dev, 0.0, -60, {"button": 1}, None, counter=counter, trigger=True)


def decode(dev: Device, frame: bytes) -> tuple[int, int]:
    assert dev.key is not None
    counter, state = ack.decode(ack.host_aes(dev.key), bthome.mac_bytes(dev.mac), frame)
    return int(counter), int(state)


class Radio:
    """Records transmissions; can fail the first N, or hold every one until released."""

    def __init__(self, fail: int = 0, hold: bool = False) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail = fail
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.active = 0
        self.peak = 0
        self.attempts = 0

    async def transmit(self, mac: str, frame: bytes) -> None:
        self.attempts += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.release.wait()
            if self.fail > 0:
                self.fail -= 1
                raise OSError("connection failed")
            self.sent.append((mac, frame))
        finally:
            self.active -= 1


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro, 10)

    return asyncio.run(main())


async def settle(sender: AckSender) -> None:
    while sender._workers:
        await asyncio.sleep(0.005)


def test_received_when_stored_then_delivered_on_receipt() -> None:
    async def main() -> None:
        radio = Radio()
        acks = AckSender(radio.transmit, FAST)
        dev = device(1)
        out = alarm("m1")
        acks.track(out, report(dev, 4711))
        assert radio.sent == []  # nothing before the alarm is durable
        acks.stored(out)
        await settle(acks)
        acks.delivered("m1", {})
        await settle(acks)
        assert [m for m, _ in radio.sent] == [dev.mac, dev.mac]
        assert [decode(dev, f) for _, f in radio.sent] == [(4711, ack.RECEIVED),
                                                            (4711, ack.DELIVERED)]
        assert acks.stats["sent_received"] == 1 and acks.stats["sent_delivered"] == 1

    run(main())


def test_only_alarms_the_resident_raised_are_acknowledged() -> None:
    async def main() -> None:
        radio = Radio()
        acks = AckSender(radio.transmit, FAST)
        dev = device(1)
        for out in (alarm("t", "battery_critical", "technical_alarm"), alarm("e", "door", "event"),
                    alarm("w", "wandering")):
            acks.track(out, report(dev, 1))
            acks.stored(out)
        keyless = device(2, key=None)
        acks.track(alarm("k"), report(keyless, None))
        acks.stored(alarm("k"))
        acks.delivered("unknown-id", {})
        await settle(acks)
        assert radio.sent == []
        assert acks.stats["no_key"] == 1
        fall = alarm("f", "fall")
        acks.track(fall, report(device(3, role="wearable"), 9))
        acks.stored(fall)
        await settle(acks)
        assert len(radio.sent) == 1

    run(main())


def test_failed_writes_are_retried_with_back_off() -> None:
    async def main() -> None:
        radio = Radio(fail=2)
        acks = AckSender(radio.transmit, FAST)
        dev = device(1)
        acks.track(alarm("m"), report(dev, 1))
        acks.stored(alarm("m"))
        await settle(acks)
        assert radio.attempts == 3
        assert [decode(dev, f) for _, f in radio.sent] == [(1, ack.RECEIVED)]
        assert acks.stats["failed_attempts"] == 2

    run(main())


def test_gives_up_after_the_attempts_and_acknowledges_the_next_alarm() -> None:
    async def main() -> None:
        radio = Radio(fail=3)
        acks = AckSender(radio.transmit, FAST)
        dev = device(1)
        acks.track(alarm("a"), report(dev, 1))
        acks.stored(alarm("a"))
        await settle(acks)
        assert radio.sent == [] and acks.stats["gave_up"] == 1
        acks.track(alarm("b"), report(dev, 2))
        acks.stored(alarm("b"))
        await settle(acks)
        assert [decode(dev, f) for _, f in radio.sent] == [(2, ack.RECEIVED)]

    run(main())


def test_connections_are_bounded_and_the_newest_state_wins() -> None:
    async def main() -> None:
        radio = Radio(hold=True)
        acks = AckSender(radio.transmit, FAST)
        devs = [device(n) for n in range(1, 6)]
        for n, dev in enumerate(devs):
            out = alarm(f"m{n}")
            acks.track(out, report(dev, 100 + n))
            acks.stored(out)
        await asyncio.sleep(0.05)
        assert radio.active == 2  # two connections; three devices wait for a slot
        # Receipts arrive for every alarm while the radio is still busy: the waiting devices
        # get "delivered" straight away, without a now-stale "received" first.
        for n in range(5):
            acks.delivered(f"m{n}", {})
        radio.release.set()
        await settle(acks)
        assert radio.peak == 2
        by_dev: dict[str, list[tuple[int, int]]] = {}
        for mac, frame in radio.sent:
            dev = next(d for d in devs if d.mac == mac)
            by_dev.setdefault(dev.id, []).append(decode(dev, frame))
        states = sorted(len(v) for v in by_dev.values())
        assert states == [1, 1, 1, 2, 2]  # the two in flight finish "received" first
        for n, dev in enumerate(devs):
            assert by_dev[dev.id][-1] == (100 + n, ack.DELIVERED)

    run(main())


def test_a_hanging_radio_never_holds_up_the_hook_callers() -> None:
    async def main() -> None:
        radio = Radio(hold=True)  # every connection attempt hangs
        acks = AckSender(radio.transmit, FAST)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for n in range(50):
            dev = device(n % 10)
            out = alarm(f"m{n}")
            acks.track(out, report(dev, n))
            acks.stored(out)  # synchronous: returns at once, the alarm path goes on
        assert loop.time() - t0 < 1.0
        assert radio.sent == []
        await acks.close()
        assert not acks._workers

    run(main())


def test_a_repeat_of_the_alarm_advert_after_giving_up_sends_the_ack_again() -> None:
    async def main() -> None:
        radio = Radio(fail=3)  # the device is out of reach for the first three attempts
        acks = AckSender(radio.transmit, AckSettings(attempts=3, retry_s=0.01, retry_max_s=0.02,
                                                     resend_after_s=0.05))
        dev = device(1)
        frame = b"alarm-advert-bytes"
        acks.track(alarm("m"), report(dev, 7), frame)
        acks.stored(alarm("m"))
        await settle(acks)
        assert radio.sent == [] and acks.stats["gave_up"] == 1
        # Still waiting for its ack, the pendant repeats the alarm advert (same bytes).
        acks.heard(dev.mac, frame)  # too soon after giving up: ignored
        await settle(acks)
        assert radio.attempts == 3
        await asyncio.sleep(0.06)
        acks.heard(dev.mac, b"some-other-advert")  # a heartbeat is no reason
        acks.heard("D4:00:00:00:00:99", frame)  # nor another device
        await settle(acks)
        assert radio.attempts == 3
        acks.heard(dev.mac, frame)
        await settle(acks)
        assert [decode(dev, f) for _, f in radio.sent] == [(7, ack.RECEIVED)]
        assert acks.stats["resent_on_repeat"] == 1
        # After the receipt the device is owed "delivered"; a late repeat gets that, the
        # newest state, not the stale "received".
        acks.delivered("m", {})
        await settle(acks)
        await asyncio.sleep(0.06)
        acks.heard(dev.mac, frame)
        await settle(acks)
        assert [decode(dev, f)[1] for _, f in radio.sent] == [ack.RECEIVED, ack.DELIVERED,
                                                               ack.DELIVERED]

    run(main())


def test_a_repeat_of_an_older_alarm_does_not_resend_a_newer_ack() -> None:
    async def main() -> None:
        radio = Radio()
        acks = AckSender(radio.transmit, AckSettings(retry_s=0.01, resend_after_s=0.0))
        dev = device(1)
        acks.track(alarm("a"), report(dev, 1), b"first")
        acks.stored(alarm("a"))
        await settle(acks)
        acks.track(alarm("b"), report(dev, 2), b"second")  # raised, not stored yet
        acks.heard(dev.mac, b"second")
        await settle(acks)
        assert [decode(dev, f) for _, f in radio.sent] == [(1, ack.RECEIVED)]

    run(main())


def test_alarms_awaiting_their_receipt_survive_a_restart(tmp_path: Any) -> None:
    from hub.delivery.acks import AckStore

    dev = device(1)
    devices = {dev.id: dev}

    async def before_restart() -> None:
        radio = Radio()
        acks = AckSender(radio.transmit, FAST, AckStore(tmp_path / "acks.sqlite"), devices)
        acks.track(alarm("m1"), report(dev, 77), b"alarm-advert")
        acks.stored(alarm("m1"))
        await settle(acks)
        assert [decode(dev, f) for _, f in radio.sent] == [(77, ack.RECEIVED)]
        await acks.close()  # the hub stops before the receipt comes back

    async def after_restart() -> None:
        radio = Radio()
        acks = AckSender(radio.transmit, AckSettings(retry_s=0.01, resend_after_s=0.0),
                         AckStore(tmp_path / "acks.sqlite"), devices)
        assert acks.stats["restored"] == 1
        acks.heard(dev.mac, b"alarm-advert")  # the device never got "received"
        await settle(acks)
        acks.delivered("m1", {})  # the outbox re-publishes, the receipt arrives
        await settle(acks)
        assert [decode(dev, f) for _, f in radio.sent] == [(77, ack.RECEIVED),
                                                            (77, ack.DELIVERED)]
        await acks.close()

    async def later() -> None:
        acks = AckSender(Radio().transmit, FAST, AckStore(tmp_path / "acks.sqlite"), devices)
        assert acks.stats["restored"] == 0  # delivered: nothing left to remember
        await acks.close()

    run(before_restart())
    run(after_restart())
    run(later())
