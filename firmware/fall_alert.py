# The wearable's answer to a detected fall: beep for CANCEL_WINDOW_S, in which the resident can
# hold the button (the same hold that cancels an alarm) to say "I'm fine". A hold cancels: the hub gets a "fall, cancelled by the
# resident" report (protocols/BTHOME.md), never silence. No hold: the fall alarm goes out with
# acknowledgement (alarm.py). A short press in the window sends the alarm at once.
#
# Board rules this follows (../shared/notes/esp32_port.md): the LED/buzzer pattern blinks
# through the window, so board.wait() polls instead of light-sleeping, and a hold is measured
# by polling (alarm.held_ms), never by waiting for the release edge. A reset inside
# the window must not lose the fall: a flash mark is written first, and a boot that finds it
# raises the alarm at once.
import os

import alarm

from protocols import bthome

CANCEL_WINDOW_S = 30  # beeping, cancellable; the alarm leaves after it
MAX_WINDOW_S = 120  # a config asking for longer is a mistake: the default is used instead
POLL_MS = 50  # button poll period in the window
BEEP_EVERY_MS = 2000  # the buzzer chirps this often while the window runs
MARK_PATH = "fall.json"  # flash: a fall whose window was running


def _mark():
    with open(MARK_PATH, "w") as f:
        f.write("1")


def _unmark():
    try:
        os.remove(MARK_PATH)
    except OSError:
        pass


def interrupted(dev):
    """At boot: a fall whose cancel window a reset cut short is an alarm now."""
    try:
        os.stat(MARK_PATH)
    except OSError:
        return None
    dev.board.log("fall: cancel window interrupted by a reset, raising the alarm")
    pend = alarm.start(dev, [(bthome.FALL, 1)])
    _unmark()  # after alarm.start: the alarm has its own flash record now
    return pend


def after_fall(dev):
    """Run the cancel window. Returns the alarm to follow, or None when the resident
    cancelled (the cancelled fall has been reported)."""
    board = dev.board
    _mark()
    window = dev.cfg.get("fall_cancel_window_s", CANCEL_WINDOW_S)
    if not isinstance(window, int) or not 0 <= window <= MAX_WINDOW_S:
        board.log("fall_cancel_window_s %r invalid, using %d" % (window, CANCEL_WINDOW_S))
        window = CANCEL_WINDOW_S
    window *= 1000
    hold = dev.cfg.get("cancel_hold_ms", alarm.CANCEL_HOLD_MS)  # the one cancel gesture
    start = board.ticks_ms()
    last_beep = None
    while board.ticks_diff(board.ticks_ms(), start) < window:
        now = board.ticks_ms()
        if last_beep is None or board.ticks_diff(now, last_beep) >= BEEP_EVERY_MS:
            board.indicate("fall_check")  # LED blinks, the buzzer chirps
            last_beep = now
        board.watchdog_feed()
        if board.pin("button"):
            if alarm.held_ms(board, "button", hold) >= hold:
                _unmark()
                board.log("fall: cancelled by the resident")
                board.indicate("cancelled")
                dev.send(list(bthome.FALL_CANCELLED), watch=("button",))
                return None
            break  # a short press: help now, no need to wait
        board.wait(POLL_MS, ("button",))  # returns at once on a press
    pend = alarm.start(dev, [(bthome.FALL, 1)])
    _unmark()
    return pend
