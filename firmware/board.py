# The board layer: the one place that touches hardware. Applications only call these
# methods. There is one implementation, board_esp32; the virtual board (tools/sim/vboard) runs it
# unchanged on a model of the ESP32 port (tests/esp32_fakes) in real MicroPython.
#
# Contract every board implements (times in ms, levels 0/1, pins by role name from config):
#   configure(cfg)                  apply the device config: pin map (name -> GPIO), LED,
#                                   battery ADC + divider, I2C pins; called once per boot
#   configure_led(gpio)             just the LED (to show a config error)
#   ticks_ms()                      ms since boot, wrapping at 2**30 (survives nothing):
#   ticks_diff(a, b) / ticks_add(t, ms)  the only arithmetic allowed on it
#   clock_ms()                      ms on the RTC clock: keeps counting through deep sleep
#                                   and watchdog resets, restarts at power loss
#   wake_reason()                   ("power_on"|"timer"|"pin"|"watchdog", pin_name_or_None)
#   pin(name)                       current level of a named input
#   wait(timeout_ms, pins)          until an edge on one of pins or the timeout (light sleep
#                                   where the port allows it); returns the pin name, or None
#   reset()                         restart the chip (the last resort of main)
#   deep_sleep(ms, pins)            sleep until timer (ms None = no timer) or an edge on pins;
#                                   the device reboots after it
#   battery_mv()                    battery voltage through the divider, in mV
#   charging()                      True while on the charger, charging or charged
#                                   (rechargeable devices), else False
#   advertise(adv, interval_ms, connectable=False)
#                                   start broadcasting adv (bytes); advertise(None) stops.
#                                   connectable: the hub may connect and write the ack
#                                   characteristic (protocols/ACK.md)
#   receive(timeout_ms)             ack frames the hub wrote for this device since the last
#                                   call, waiting up to timeout_ms for the first: list of bytes
#   scan(duration_ms)               hub adverts heard: list of (mac bytes, service data bytes)
#   indicate(pattern)               LED/buzzer pattern name (see INDICATIONS); deep_sleep
#                                   keeps it visible for its stated time first
#   rtc_load() / rtc_save(bytes)    memory that survives deep sleep, not power loss
#                                   (files on the flash filesystem survive power loss)
#   mac()                           6-byte BLE address in display order
#   aes_ecb(key)                    object with encrypt(16 bytes) -> 16 bytes
#   watchdog(timeout_ms)            start the hardware watchdog (cannot be stopped; deep
#                                   sleep ends it); watchdog_feed() keeps it quiet
#   i2c()                           I2C bus (machine.I2C-like: readfrom_mem, writeto_mem)
#   log(msg)

INDICATIONS = ("off", "sending", "received", "help_coming", "not_received", "cancelled",
               "fall_check",
               "config_error", "fault", "low_battery")


def get_board():
    import board_esp32

    return board_esp32.Esp32Board()
