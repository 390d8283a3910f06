# Pendant alarm button: press = alarm, long press = alarm too; holding the button within the
# cancel window after an alarm cancels it (alarm.py). Rechargeable: every advert carries the
# battery and whether it is on the charger; plugging in or out is reported at once.
import alarm

WAKE = ("button", "charge")
STUCK_BUTTON_MS = 10000  # a button held longer than this is stuck: sleep without it


def run(dev):
    board = dev.board
    reason, pin = board.wake_reason()
    pend = alarm.pending(dev)
    pressed = reason == "pin" and pin == "button"
    if not pressed and (reason == "power_on" or dev.state.get("chg") != int(board.charging())):
        pressed = dev.status(trigger=reason != "timer")
    while True:
        if pressed:
            pend = alarm.on_press(dev, pend)
        next_ms = alarm.follow(dev, pend) if pend is not None else None
        pend = alarm.pending(dev)
        pressed = False
        if pend is None and dev.heartbeat_due():
            pressed = dev.status(trigger=False)
        if not pressed:
            break
    wake = WAKE
    if alarm.held_ms(board, "button", STUCK_BUTTON_MS) >= STUCK_BUTTON_MS:
        wake = ("charge",)
    if pend is None:
        board.indicate("off")
    dev.sleep(wake, next_ms)
