# The piece of protocols/ the ESP32 board layer uses (the package itself is tested elsewhere).
class ack:
    SERVICE_UUID = "5e1f0001-7472-7967-6768-65696d000001"
    CHAR_UUID = "5e1f0002-7472-7967-6768-65696d000001"
