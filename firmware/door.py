# Door magnet contact: a reed switch that the magnet on the door holds closed; input level
# 1 = door open. Deep sleep wakes on either edge; every change is reported, and a change
# during the advert burst is reported right after it.
import device

from protocols import bthome

WAKE = ("door",)
SETTLE_MS = 20  # reed contacts bounce for well under a millisecond; margin for the door


def run(dev):
    board = dev.board
    reason, _ = board.wake_reason()
    if reason == "pin":
        board.wait(SETTLE_MS, ())
    while True:
        level = board.pin("door")
        if level != dev.state.get("door"):
            dev.send([(bthome.DOOR, level)], burst_ms=device.EVENT_BURST_MS, watch=WAKE)
            # Only now: a reset during the burst (watchdog) makes the next boot send it again.
            dev.state["door"] = level
        elif dev.heartbeat_due():
            dev.send([(bthome.DOOR, level)] + device.version_objects(), trigger=False,
                     burst_ms=device.HEARTBEAT_BURST_MS, watch=WAKE)
        else:
            break
        if board.pin("door") == level:
            break
    dev.sleep(WAKE)
