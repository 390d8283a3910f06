# Pendant alarm button: press = alarm, long press = alarm too.
from protocols import bthome

LONG_PRESS_MS = 1500


def classify_press(board):
    # Called on the pressing edge: wait for the release to tell a press from a long press.
    if board.wait(LONG_PRESS_MS, ("button",)) is None and board.pin("button"):
        return bthome.BUTTON_LONG_PRESS
    return bthome.BUTTON_PRESS


def run(dev):
    board = dev.board
    reason, pin = board.wake_reason()
    if reason == "pin" and pin == "button" and board.pin("button"):
        event = classify_press(board)
        board.indicate("sending")
        dev.send([(bthome.BUTTON, event)])
    else:
        dev.send([], trigger=False, burst_ms=500)
    board.indicate("off")
    board.deep_sleep(dev.cfg.get("heartbeat_s", 600) * 1000, ("button",))
