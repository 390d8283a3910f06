# Boot entry: runs once per wake (deep sleep reboots the chip), dispatches on the role.
import board as board_layer
import device

APPS = {"pendant": "pendant", "door": "door", "pir": "pir", "bed": "bed",
        "wearable": "wearable"}
# After a config error, show it again this often (an installer may be standing there).
CONFIG_RETRY_MS = 3600000
# A crash (a bug, a sensor gone bad) retries after these pauses, so it never becomes a
# tight reboot loop that drains the battery; the wake inputs still wake it at once.
FAULT_BACKOFF_MS = (10000, 60000, 600000, 3600000)


def main():
    board = board_layer.get_board()
    try:
        cfg = device.load_config()
        app = __import__(APPS[cfg["role"]])
    except (device.ConfigError, KeyError, ImportError) as e:
        # A device without a valid config must not reboot-loop: show it, then sleep long.
        board.log("config error: %s" % e)
        board.indicate("config_error")
        board.deep_sleep(CONFIG_RETRY_MS, ())
        return
    board.configure(cfg)
    board.watchdog(device.WATCHDOG_MS)
    dev = device.Device(board, cfg)
    try:
        app.run(dev)
    except Exception as e:  # noqa: BLE001  (anything, as long as it is not a reset)
        board.log("fault: %r" % (e,))
        faults = dev.state.get("faults", 0) + 1
        dev.state["faults"] = faults
        dev.save_state()
        board.indicate("fault")
        board.deep_sleep(FAULT_BACKOFF_MS[min(faults, len(FAULT_BACKOFF_MS)) - 1],
                         cfg.get("wake", ()))


main()
