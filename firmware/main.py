# Boot entry: runs once per wake (deep sleep reboots the chip), dispatches on the role.
# Every path ends in deep sleep, or in a reset when even that fails: a device must never sit
# awake at the REPL with no watchdog (a flat battery within a day, alarms unheard).
import board as board_layer
import device

APPS = {"pendant": "pendant", "door": "door", "pir": "pir", "bed": "bed",
        "wearable": "wearable"}
# After a config error, show it again this often (an installer may be standing there).
CONFIG_RETRY_MS = 3600000
# A crash (a bug, a sensor gone bad) retries after these pauses, so it never becomes a
# tight reboot loop that drains the battery; the wake inputs still wake it at once.
FAULT_BACKOFF_MS = (10000, 60000, 600000, 3600000)


def _config_error(board, e):
    # A device without a valid config must not reboot-loop: show it, then sleep long.
    board.log("config error: %s" % e)
    board.configure_led(device.default_led())
    board.indicate("config_error")
    board.deep_sleep(CONFIG_RETRY_MS, ())


def _fault(board, cfg, dev, e):
    board.log("fault: %r" % (e,))
    faults = 1
    if dev is not None:
        faults = dev.state.get("faults", 0) + 1
        dev.state["faults"] = faults
        dev.save_state()
    board.indicate("fault")
    board.deep_sleep(FAULT_BACKOFF_MS[min(faults, len(FAULT_BACKOFF_MS)) - 1],
                     cfg.get("wake", ()) if cfg else ())


def main():
    board = board_layer.get_board()
    try:
        cfg = device.load_config()
        app = __import__(APPS[cfg["role"]])
    except Exception as e:  # noqa: BLE001  a config that breaks the loader is a config error
        try:
            _config_error(board, e)
        except Exception as e2:  # noqa: BLE001
            board.log("config error while showing a config error: %r" % (e2,))
            board.reset()
        return
    dev = None
    try:
        dev = device.Device(board, cfg)  # first: the fault count lives in its state
        board.configure(cfg)
        board.watchdog(device.WATCHDOG_MS)
        app.run(dev)
        raise RuntimeError("app returned without sleeping")
    except Exception as e:  # noqa: BLE001  (anything, as long as it is not a reset)
        try:
            _fault(board, cfg, dev, e)
        except Exception as e2:  # noqa: BLE001  the fault path itself failed
            board.log("fault while handling a fault: %r" % (e2,))
            board.reset()


main()
