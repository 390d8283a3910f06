# Alarms the resident raises (pendant button, wearable fall), with the acknowledgement
# shown back to them: repeat the alarm advert (same counter) until the hub says "received",
# then "help is coming" when the response centre has it. No answer: keep trying with
# back-off and show "not received". Protocol: protocols/ACK.md.
import json
import os

import device

from protocols import ack, bthome

BURST_MS = device.BURST_MS  # one attempt: fast connectable adverts, listening for the ack
FAST_INTERVAL_MS = 50  # connectable (ADV_IND): legal down to 20 ms; the hub hears it at once
RETRY_MS = (5000, 10000, 20000, 40000, 60000)  # pause after each unanswered attempt; last repeats
RECEIVED_LISTEN_MS = 20000  # after "received", listen this long for "delivered" ...
RECEIVED_RETRY_MS = 30000  # ... then ask again this often (the hub re-sends its state)
SLOW_INTERVAL_MS = 500  # advert interval while only waiting for "delivered"
HELP_SHOW_MS = 10000  # "help is coming" is shown this long before the device sleeps
SLICE_MS = 200  # how often the ack inbox is checked while the button stays watched
POLL_MS = 20  # a held button is looked at this often (a release is seen within it)
LONG_PRESS_MS = 1500
CANCEL_HOLD_MS = 4000  # default cancel gesture: hold this long ...
CANCEL_WINDOW_S = 60  # ... within this long after the alarm
PENDING_PATH = "alarm.json"  # flash: an unacknowledged alarm survives a power loss


def held_ms(board, pin, limit_ms):
    """Called on the pressing edge: how long the input stays pressed, up to limit_ms.
    Measured by polling: a light sleep cannot be woken by the release of a held button (its
    wake level is the pressed one), so a wait for the release would run its whole timeout."""
    start = board.ticks_ms()
    while board.pin(pin):
        held = board.ticks_diff(board.ticks_ms(), start)
        if held >= limit_ms:
            break
        board.wait(min(POLL_MS, limit_ms - held), ())
    return min(limit_ms, board.ticks_diff(board.ticks_ms(), start))


def pending(dev):
    """The alarm still being followed, from RTC memory or, after a power loss, flash."""
    pend = dev.state.get("alarm")
    if pend is None and "alarm_checked" not in dev.state:
        dev.state["alarm_checked"] = 1
        try:
            with open(PENDING_PATH) as f:
                pend = json.load(f)
            pend["n"] = 0
            pend["next"] = 0
            dev.state["alarm"] = pend
        except (OSError, ValueError):
            pend = None
    return pend


def _store(pend):
    tmp = PENDING_PATH + ".new"
    with open(tmp, "w") as f:
        json.dump(pend, f)
    os.rename(tmp, PENDING_PATH)


def _forget(dev):
    dev.state.pop("alarm", None)
    try:
        os.remove(PENDING_PATH)
    except OSError:
        pass


def start(dev, objects):
    """Build the alarm advert once; every attempt repeats these exact bytes."""
    adv = dev.build(objects, True)
    svc = bthome.service_data_from_advert(adv)
    pend = {"adv": adv.hex(), "c": ack.alarm_counter(svc), "ack": 0, "n": 0, "next": 0}
    dev.state["alarm"] = pend
    dev.state["last_alarm"] = dev.clock()
    dev.state["hb_due"] = dev.clock() + dev.cfg["heartbeat_s"] * 1000
    dev.save_state()
    _store(pend)  # one flash write per alarm, one delete when it is done
    dev.board.indicate("sending")
    return pend


def cancel(dev):
    _forget(dev)
    dev.state.pop("last_alarm", None)
    dev.board.indicate("cancelled")
    dev.send([(bthome.BUTTON, bthome.BUTTON_CANCEL)], watch=("button",))


def in_cancel_window(dev):
    # Also after "help is coming": a false alarm is best cancelled before someone drives out.
    t = dev.state.get("last_alarm")
    window = dev.cfg.get("cancel_window_s", CANCEL_WINDOW_S) * 1000
    return t is not None and dev.clock() - t < window


def on_press(dev, pend):
    """The button went down while an alarm may be running. Returns the alarm to follow."""
    window = in_cancel_window(dev)
    limit = dev.cfg.get("cancel_hold_ms", CANCEL_HOLD_MS) if window else LONG_PRESS_MS
    held = held_ms(dev.board, "button", limit)
    if window and held >= limit:
        cancel(dev)
        return None
    if pend is not None:
        pend["n"] = 0  # pressed again while it is followed: the resident waits, try at once
        pend["next"] = 0
        return pend
    # A press after "help is coming" is a new alarm: things may have got worse.
    event = bthome.BUTTON_LONG_PRESS if held >= LONG_PRESS_MS else bthome.BUTTON_PRESS
    return start(dev, [(bthome.BUTTON, event)])


def _inbox(dev, pend):
    aes = dev._cipher()
    if aes is None:
        return  # no key, no way to tell a real ack from a forged one: never trust one
    mac = dev.board.mac()
    for frame in dev.board.receive(0):
        try:
            counter, state = ack.decode(aes, mac, frame)
        except ack.AckError as e:
            dev.board.log("ack dropped: %s" % e)
            continue
        if counter == pend["c"] and state > pend["ack"]:
            pend["ack"] = state
            dev.board.indicate("received" if state == ack.RECEIVED else "help_coming")


def attempt(dev, pend):
    """Advertise the alarm and listen. Returns "press" (button went down: caller decides),
    or "done" when the attempt is over (pend["ack"] tells how far it got)."""
    board = dev.board
    adv = bytes.fromhex(pend["adv"])
    fast = pend["ack"] == 0
    board.advertise(adv, FAST_INTERVAL_MS if fast else SLOW_INTERVAL_MS, True)
    dev.state["hb_due"] = dev.clock() + dev.cfg["heartbeat_s"] * 1000  # an advert is a sign of life
    start = board.ticks_ms()
    limit = BURST_MS if fast else RECEIVED_LISTEN_MS
    try:
        while (pend["ack"] < ack.DELIVERED
               and board.ticks_diff(board.ticks_ms(), start) < limit):
            pin = board.wait(SLICE_MS, ("button",))
            board.watchdog_feed()
            if pin == "button" and board.pin("button"):
                return "press"
            before = pend["ack"]
            _inbox(dev, pend)
            if before == 0 and pend["ack"] == ack.RECEIVED:
                # Received: slow down and keep listening for "delivered".
                board.advertise(adv, SLOW_INTERVAL_MS, True)
                start = board.ticks_ms()
                limit = RECEIVED_LISTEN_MS
    finally:
        board.advertise(None)
    return "done"


def follow(dev, pend):
    """Run attempts while one is due; returns ms until the next one, or None when the alarm
    is finished (delivered or cancelled)."""
    board = dev.board
    while pend is not None:
        wait = pend["next"] - dev.clock()
        if wait > 0:
            return wait
        if attempt(dev, pend) == "press":
            pend = on_press(dev, pend)
            continue
        if pend["ack"] >= ack.DELIVERED:
            _forget(dev)
            # Show it, still watching the button: a new press is a new alarm.
            if board.wait(HELP_SHOW_MS, ("button",)) == "button" and board.pin("button"):
                pend = on_press(dev, None)
                continue
            board.indicate("off")
            return None
        if pend["ack"] == 0:
            board.indicate("not_received")
            pend["next"] = dev.clock() + RETRY_MS[min(pend["n"], len(RETRY_MS) - 1)]
            pend["n"] += 1
        else:
            pend["next"] = dev.clock() + RECEIVED_RETRY_MS
        dev.save_state()
    return None
