# The board layer: the one place that touches hardware. Applications only call these
# methods, so the same application runs on an ESP32 (board_esp32) and on the virtual
# board (board_sim, real MicroPython in WebAssembly driven by tools/vboard).
#
# Contract every board implements (times in ms, levels 0/1, pins by role name from config):
#   ticks_ms()                      monotonic ms since boot (survives nothing)
#   wake_reason()                   ("power_on"|"timer"|"pin", pin_name_or_None)
#   pin(name)                       current level of a named input
#   wait(timeout_ms, pins)          light sleep until an edge on one of pins or the timeout;
#                                   returns the pin name, or None on timeout
#   deep_sleep(ms, pins)            sleep until timer or pin edge; the device reboots after it
#   battery_mv()                    battery voltage through the divider, in mV
#   charging()                      True while on the charger (rechargeable devices), else False
#   advertise(adv, interval_ms)     start broadcasting adv (bytes); advertise(None) stops
#   scan(duration_ms)               hub adverts heard: list of (mac bytes, service data bytes)
#   indicate(pattern)               LED/buzzer pattern name (see INDICATIONS)
#   rtc_load() / rtc_save(bytes)    memory that survives deep sleep, not power loss
#   mac()                           6-byte BLE address in display order
#   aes_ecb(key)                    object with encrypt(16 bytes) -> 16 bytes
#   watchdog_feed()
#   i2c()                           I2C bus (machine.I2C-like) for sensors, or None
#   log(msg)

INDICATIONS = ("off", "sending", "received", "help_coming", "not_received", "config_error",
               "low_battery")


def get_board():
    try:
        import machine  # noqa: F401  (only the real port has it)
    except ImportError:
        import board_sim

        return board_sim.SimBoard()
    import board_esp32

    return board_esp32.Esp32Board()
