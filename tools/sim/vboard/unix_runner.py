# Runs the unchanged firmware in the MicroPython unix port, as runner.mjs does in the
# WebAssembly port: started by tools/sim/vboard/board.py with the device's flash directory as
# its working directory and an ESP32-sized heap (-X heapsize). The simulated port modules
# (tests/esp32_fakes) talk to the host over stdin/stdout (_port.py). A reset re-imports main
# with a fresh RAM; an error that escapes main is a crash (the chip would sit at the REPL).
import gc
import sys

sys.path.insert(0, "")
_base = set(sys.modules)
while True:
    for _m in list(sys.modules):
        if _m not in _base:
            del sys.modules[_m]
    gc.collect()  # the chip restarts with an empty heap
    try:
        import main  # noqa: F401
    except BaseException as e:  # noqa: BLE001
        if type(e).__name__ == "Reboot":
            continue
        sys.print_exception(e)
        import _port

        _port._raw('{"op": "crash", "error": "%s: %s"}' % (type(e).__name__,
                                                           str(e).replace('"', "'")))
        sys.exit(1)
    break
import _port  # noqa: E402

_port._raw('{"op": "halt"}')
