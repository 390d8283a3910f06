# PIR motion (AM312 / HC-SR501 output, 1 = motion). The first motion after a quiet period is
# reported at once; then the device sleeps through a hold-off without listening to the PIR,
# so a busy room costs one advert per hold-off, not one per movement. At the end of the
# hold-off it looks again: still moving is reported as motion (another hold-off), a still
# room as "no motion" (clear), so a motion entity never stays "detected".
# Every advert of the PIR carries the trigger flag set and the motion state: a receiver
# that keys on the flag (Home Assistant's BTHome) sees one kind of device.
import device

from protocols import bthome

HOLDOFF_S = 300  # at most 12 reports an hour; the hub's inactivity rules count in hours
MOTION_BURST_MS = 300  # 3 adverts; motion repeats within minutes anyway: shorter than door/bed
CLEAR_BURST_MS = 200  # "no motion", 2 adverts: the next heartbeat says it again if missed


def run(dev):
    board = dev.board
    reason, pin = board.wake_reason()
    holdoff = dev.cfg.get("holdoff_s", HOLDOFF_S) * 1000
    last = dev.state.get("mot_t")
    quiet = last is None or dev.clock() - last >= holdoff
    moving = board.pin("motion")
    # A timer wake at the end of the hold-off with the PIR still high: motion goes on.
    if quiet and moving and (reason == "pin" or last is not None):
        t = dev.clock()
        dev.send([(bthome.MOTION, 1)], burst_ms=MOTION_BURST_MS)
        dev.state["mot_t"] = t  # after the burst: a reset during it sends it again
        dev.state["mot"] = 1
    elif quiet and not moving and dev.state.get("mot") == 1:
        dev.send([(bthome.MOTION, 0)], burst_ms=CLEAR_BURST_MS)
        dev.state["mot"] = 0  # after the burst, as above
    elif dev.heartbeat_due():
        dev.send([(bthome.MOTION, dev.state.get("mot", 0))] + device.version_objects(),
                 burst_ms=device.HEARTBEAT_BURST_MS)
    last = dev.state.get("mot_t")
    left = None if last is None else last + holdoff - dev.clock()
    if left is not None and left > 0:
        dev.sleep((), left)  # hold-off: the PIR cannot wake us
    dev.sleep(("motion",))
