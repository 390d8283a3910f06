# PIR motion (AM312 / HC-SR501 output, 1 = motion). The first motion after a quiet period is
# reported at once; then the device sleeps through a hold-off without listening to the PIR,
# so a busy room costs one advert per hold-off, not one per movement.
import device

from protocols import bthome

HOLDOFF_S = 300  # at most 12 reports an hour; the hub's inactivity rules count in hours
MOTION_BURST_MS = 400  # motion repeats within minutes anyway: a shorter burst than door/bed


def run(dev):
    board = dev.board
    reason, pin = board.wake_reason()
    holdoff = dev.cfg.get("holdoff_s", HOLDOFF_S) * 1000
    last = dev.state.get("mot_t")
    quiet = last is None or dev.clock() - last >= holdoff
    # A timer wake at the end of the hold-off with the PIR still high: motion goes on.
    if quiet and board.pin("motion") and (reason == "pin" or last is not None):
        t = dev.clock()
        dev.send([(bthome.MOTION, 1)], burst_ms=MOTION_BURST_MS)
        dev.state["mot_t"] = t  # after the burst: a reset during it sends it again
    elif dev.heartbeat_due():
        dev.send([], trigger=False, burst_ms=device.HEARTBEAT_BURST_MS)
    last = dev.state.get("mot_t")
    left = None if last is None else last + holdoff - dev.clock()
    if left is not None and left > 0:
        dev.sleep((), left)  # hold-off: the PIR cannot wake us
    dev.sleep(("motion",))
