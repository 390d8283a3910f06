# The board layer: the one place that touches hardware. Applications only call these
# methods, so the same application runs on an ESP32 (board_esp32) and on the virtual
# board (board_sim, real MicroPython in WebAssembly driven by tools/vboard).
#
# Contract every board implements (times in ms, levels 0/1, pins by role name from config):
#   configure(cfg)                  apply the device config: pin map (name -> GPIO), LED,
#                                   battery ADC + divider, I2C pins; called once per boot
#   ticks_ms()                      monotonic ms since boot (survives nothing)
#   clock_ms()                      ms on the RTC clock: keeps counting through deep sleep
#                                   and watchdog resets, restarts at power loss
#   wake_reason()                   ("power_on"|"timer"|"pin"|"watchdog", pin_name_or_None)
#   pin(name)                       current level of a named input
#   wait(timeout_ms, pins)          light sleep until an edge on one of pins or the timeout;
#                                   returns the pin name, or None on timeout
#   deep_sleep(ms, pins)            sleep until timer (ms None = no timer) or an edge on pins;
#                                   the device reboots after it
#   battery_mv()                    battery voltage through the divider, in mV
#   charging()                      True while on the charger (rechargeable devices), else False
#   advertise(adv, interval_ms, connectable=False)
#                                   start broadcasting adv (bytes); advertise(None) stops.
#                                   connectable: the hub may connect and write the ack
#                                   characteristic (protocols/ACK.md)
#   receive(timeout_ms)             ack frames the hub wrote for this device since the last
#                                   call, waiting up to timeout_ms for the first: list of bytes
#   scan(duration_ms)               hub adverts heard: list of (mac bytes, service data bytes)
#   indicate(pattern)               LED/buzzer pattern name (see INDICATIONS)
#   rtc_load() / rtc_save(bytes)    memory that survives deep sleep, not power loss
#                                   (files on the flash filesystem survive power loss)
#   mac()                           6-byte BLE address in display order
#   aes_ecb(key)                    object with encrypt(16 bytes) -> 16 bytes
#   watchdog(timeout_ms)            start the hardware watchdog (cannot be stopped; deep
#                                   sleep ends it); watchdog_feed() keeps it quiet
#   i2c()                           I2C bus (machine.I2C-like: readfrom_mem, writeto_mem)
#   sleep_ms(ms)                    busy sleep (time.sleep_ms): stays awake, inputs keep their
#                                   level, for polling where light sleep would not do
#   log(msg)

INDICATIONS = ("off", "sending", "received", "help_coming", "not_received", "cancelled",
               "fall_check",
               "config_error", "fault", "low_battery")


def get_board():
    try:
        import machine  # noqa: F401  (only the real port has it)
    except ImportError:
        import board_sim

        return board_sim.SimBoard()
    import board_esp32

    return board_esp32.Esp32Board()
