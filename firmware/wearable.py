# Wearable fall detector: LIS3DH at 50 Hz into its FIFO, INT1 at the watermark; the ESP32
# light-sleeps between bursts (the detector's state stays in RAM) and feeds each sample to
# FallDetector (fall_detector.py, its own issue). A fall starts a cancel window
# (fall_alert.py); the fall, unless cancelled, or the alarm button raises an alarm with
# acknowledgement (alarm.py). On the charger it is not worn: sensor off, deep sleep.
#
# Heap (make bench, heap): fall_alert is imported only when a fall needs it, and the
# detector (a few KB of rings) is freed before the cancel window and the alarm run, so the
# sampling loop and the alarm path never hold both.
import os

import alarm
import lis3dh
from fall_detector import FallDetector

RATE_HZ = 50  # what the detector is tuned for
SAMPLE_MS = 1000 // RATE_HZ
WATERMARK = 24  # wake every 25 samples (0.5 s): below the 32-sample FIFO, with margin
WAKE = ("button", "charge", "accel_int")
FALL_MARK = "fall.json"  # fall_alert.MARK_PATH: checked here without importing fall_alert


def _fall_alert():
    import fall_alert

    return fall_alert


def _fall_interrupted(dev):
    try:
        os.stat(FALL_MARK)
    except OSError:
        return None
    return _fall_alert().interrupted(dev)


def run(dev):
    board = dev.board
    reason, pin = board.wake_reason()
    cfg = dev.cfg.get("i2c", {})
    try:
        acc = lis3dh.LIS3DH(board.i2c(), cfg.get("addr", 0x18))
    except OSError as e:
        # A broken sensor must not take the alarm button with it: carry on as a pendant and
        # show "fault" on the LED (problem = 1 on the air would read as a fall).
        board.log("accelerometer: %s" % e)
        acc = None
    pend = alarm.pending(dev)
    if pend is None:
        pend = _fall_interrupted(dev)
    pressed = reason == "pin" and pin == "button"
    charging = board.charging()
    if not pressed and (reason == "power_on" or dev.state.get("chg") != int(charging)):
        pressed = dev.status(trigger=reason != "timer")
    if pressed:
        pend = alarm.on_press(dev, pend)
    if pend is not None:
        if acc is not None:
            acc.power_down()  # the alarm is what matters now; sampling resumes after it
        next_ms = alarm.follow(dev, pend)
        if alarm.pending(dev) is not None:
            dev.sleep(("button", "charge"), next_ms)
    if charging or acc is None:
        if acc is not None:
            acc.power_down()
        if dev.heartbeat_due():
            dev.status(trigger=False)
        board.indicate("off" if acc is not None else "fault")
        dev.sleep(("button", "charge"))
    if dev.heartbeat_due():
        dev.status(trigger=False)
    watch(dev, acc)


def watch(dev, acc):
    """Sample and detect until something needs a deep sleep (charger, an alarm retry)."""
    board = dev.board
    while True:
        det = FallDetector(rate_hz=RATE_HZ)
        acc.start(RATE_HZ, 16, WATERMARK)
        t = 0
        pend = None
        fell = False
        while pend is None:
            left = dev.state["hb_due"] - dev.clock() if "hb_due" in dev.state else 0
            # INT1 may have risen while we were busy (an advert burst): a level already high
            # is no edge to wake on, so read at once or the FIFO overflows.
            pin = "accel_int" if board.pin("accel_int") else board.wait(max(0, left), WAKE)
            board.watchdog_feed()
            if pin == "accel_int" or board.pin("accel_int"):
                for x, y, z in acc.read_fifo():
                    t += SAMPLE_MS
                    event = det.feed(t, x, y, z)
                    if event is not None:
                        board.log("fall: %r" % (event,))
                        fell = True
                        break
                if fell:
                    break
            pressed = pin == "button" and board.pin("button")
            if pin == "charge" and board.charging():
                dev.status(trigger=True)
                acc.power_down()
                board.indicate("off")
                dev.sleep(("button", "charge"))
            if pend is None and not pressed and dev.heartbeat_due():
                pressed = dev.status(trigger=False)
            if pressed:
                pend = alarm.on_press(dev, alarm.pending(dev))
                if pend is None:  # a cancel: nothing to follow, go on sampling
                    break
        det = event = None  # their heap is the cancel window's and the alarm's now
        if fell:
            acc.power_down()  # the window is what matters now
            pend = _fall_alert().after_fall(dev)
            if pend is None:
                continue  # cancelled by the resident: sample afresh
        if pend is not None:
            acc.power_down()  # the alarm is what matters now; sampling resumes after it
            next_ms = alarm.follow(dev, pend)
            if alarm.pending(dev) is not None:
                dev.sleep(("button", "charge"), next_ms)
