# Bed mat: pressure mat contact or FSR through a comparator, input level 1 = someone lies on
# it. A change is reported only once it has lasted its debounce time, so turning over in
# bed (pressure gone for a few seconds) is not "out of bed". The wait is spent in deep sleep
# with the mat still watched: a return in time cancels the pending change.
import device

from protocols import bthome

OUT_DEBOUNCE_S = 20  # off the mat this long = out of bed
IN_DEBOUNCE_S = 5  # on the mat this long = in bed (sitting down on the edge briefly is not)
WAKE = ("mat",)


def run(dev):
    board = dev.board
    while True:
        level = board.pin("mat")
        occ = dev.state.get("occ")
        if occ is None or level == occ:
            dev.state.pop("cand", None)  # back in time (or first boot): nothing pending
            if occ is None:
                _report(dev, level)
                continue
        else:
            cand = dev.state.get("cand")
            if cand is None or cand[0] != level:
                cand = [level, dev.clock()]
                dev.state["cand"] = cand
            if dev.clock() - cand[1] >= _debounce_ms(dev, level):
                _report(dev, level)
                continue
        if dev.heartbeat_due():
            dev.send([(bthome.OCCUPANCY, occ)] + device.version_objects(), trigger=False,
                     burst_ms=device.HEARTBEAT_BURST_MS)
        break
    cand = dev.state.get("cand")
    dev.sleep(WAKE, None if cand is None else cand[1] + _debounce_ms(dev, cand[0]) - dev.clock())


def _debounce_ms(dev, level):
    if level:
        return dev.cfg.get("in_debounce_s", IN_DEBOUNCE_S) * 1000
    return dev.cfg.get("out_debounce_s", OUT_DEBOUNCE_S) * 1000


def _report(dev, level):
    dev.send([(bthome.OCCUPANCY, level)], burst_ms=device.EVENT_BURST_MS)
    dev.state["occ"] = level  # after the burst: a reset during it sends it again
    dev.state.pop("cand", None)
