"""Hardware in the loop: one device-test interface, the virtual board or a real one."""
