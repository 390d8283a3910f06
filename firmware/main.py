# Boot entry: runs once per wake (deep sleep reboots the chip), dispatches on the role.
import board as board_layer
import device

APPS = {"pendant": "pendant"}


def main():
    board = board_layer.get_board()
    try:
        cfg = device.load_config()
        app = __import__(APPS[cfg["role"]])
    except (device.ConfigError, KeyError) as e:
        # A device without a valid config must not reboot-loop: show it and sleep until
        # someone presses a button or re-provisions it.
        board.log("config error: %s" % e)
        board.indicate("config_error")
        board.deep_sleep(None, ())
        return
    app.run(device.Device(board, cfg))


main()
